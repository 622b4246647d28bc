//! A node's scopes and types: at registration, by `PATCH /api/sync/nodes/{id}`, by the
//! `starsync nodes scopes|types` CLI; shown in listings and status; validated (422).

use super::*;

fn listed(app: &TestApp, id: &str) -> Value {
    let (s, body) = app.get("/api/sync/nodes", Some(ADMIN));
    assert_eq!(s, 200, "{body}");
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == json!(id))
        .cloned()
        .expect("the node is listed")
}

#[test]
fn scopes_and_types_given_at_registration_show_in_listing_and_status() {
    let app = scoped_app();
    let a = node_with(
        &app,
        "A",
        &["fam-1", "fam-2", "fam-1"],
        Some(&["Doc", "Note"]),
    );
    let b = app.register("B");
    let s = node_with(&app, "S", &["*"], None);

    let la = listed(&app, &a.id);
    assert_eq!(
        la["scopes"],
        json!(["fam-1", "fam-2"]),
        "deduplicated, sorted"
    );
    assert_eq!(la["types"], json!(["Doc", "Note"]));
    // Default: no scopes (global types only) and every type.
    let lb = listed(&app, &b.id);
    assert_eq!(lb["scopes"], json!([]));
    assert_eq!(lb["types"], Value::Null);
    assert_eq!(listed(&app, &s.id)["scopes"], json!(["*"]));

    // The node's own token reads its status, scopes included.
    let (st, own) = app.get(&format!("/api/sync/status/{}", a.id), Some(&a.token));
    assert_eq!(st, 200, "{own}");
    assert_eq!(own["scopes"], json!(["fam-1", "fam-2"]));
    assert_eq!(own["types"], json!(["Doc", "Note"]));
}

#[test]
fn bad_scopes_or_types_are_422_and_register_nothing() {
    let app = scoped_app();
    let long = "x".repeat(129);
    for (i, extra) in [
        json!({"scopes": [""]}),
        json!({"scopes": [long]}),
        json!({"scopes": ["*", "fam-1"]}),
        json!({"scopes": ["fam\n1"]}),
        json!({"scopes": [5]}),
        json!({"scopes": "fam-1"}),
        json!({"types": []}),
        json!({"types": ["1Bad"]}),
        json!({"types": [null]}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut req = json!({ "code": format!("BAD{i}") });
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let (s, body) = app.post("/api/sync/register", Some(ADMIN), &req);
        assert_eq!(s, 422, "{req}: {body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
        assert!(body["message"].as_str().unwrap().len() > 10, "{body}");
    }
    let (_, list) = app.get("/api/sync/nodes", Some(ADMIN));
    assert_eq!(list["nodes"], json!([]), "nothing was registered");
    // 128 characters is still a scope.
    let ok = node_with(&app, "OK", &[&"y".repeat(128)], None);
    assert_eq!(listed(&app, &ok.id)["scopes"][0], json!("y".repeat(128)));
}

#[test]
fn a_hub_without_scopes_refuses_scopes_and_patch_and_lists_none() {
    let app = TestApp::spawn();
    let (s, body) = app.post(
        "/api/sync/register",
        Some(ADMIN),
        &json!({"code": "A", "scopes": ["fam-1"]}),
    );
    assert_eq!(s, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("[scopes]"),
        "{body}"
    );
    let b = app.register("B");
    // Listings are as before scopes existed: no scopes or types fields.
    let lb = listed(&app, &b.id);
    assert!(
        lb.get("scopes").is_none() && lb.get("types").is_none(),
        "{lb}"
    );
    let (s, body) = app.patch(
        &format!("/api/sync/nodes/{}", b.id),
        Some(ADMIN),
        &json!({"scopes": ["fam-1"]}),
    );
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"], "invalid_request");
}

#[test]
fn patch_is_admin_only_validated_and_answers_the_node() {
    let app = scoped_app();
    let a = node_with(&app, "A", &["fam-1"], None);
    let path = format!("/api/sync/nodes/{}", a.id);
    let body = json!({"scopes": ["fam-2"]});
    assert_eq!(app.patch(&path, None, &body).0, 401);
    let (s, e) = app.patch(&path, Some(&a.token), &body);
    assert_eq!((s, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    let (s, e) = app.patch(
        &format!("/api/sync/nodes/{}", new_uuid()),
        Some(ADMIN),
        &body,
    );
    assert_eq!((s, e["error"].as_str()), (404, Some("not_found")), "{e}");
    for bad in [
        json!([]),
        json!({}),
        json!({"scopes": ["*", "x"]}),
        json!({"scopes": [""]}),
        json!({"types": []}),
        json!({"types": "Doc"}),
    ] {
        let (s, e) = app.patch(&path, Some(ADMIN), &bad);
        assert_eq!(s, 422, "{bad}: {e}");
        assert_eq!(e["error"], "invalid_request", "{e}");
    }
    // Nothing of the refused requests stuck.
    assert_eq!(listed(&app, &a.id)["scopes"], json!(["fam-1"]));

    let (s, n) = app.patch(
        &path,
        Some(ADMIN),
        &json!({"scopes": ["fam-2", "fam-3"], "types": ["Doc"]}),
    );
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["scopes"], json!(["fam-2", "fam-3"]));
    assert_eq!(n["types"], json!(["Doc"]));
    // `"types": null` is every type again; scopes untouched.
    let (s, n) = app.patch(&path, Some(ADMIN), &json!({"types": null}));
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["types"], Value::Null);
    assert_eq!(n["scopes"], json!(["fam-2", "fam-3"]));
    let (s, n) = app.patch(&path, Some(ADMIN), &json!({"scopes": []}));
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["scopes"], json!([]));
}

#[test]
fn the_cli_sets_scopes_and_types() {
    let app = scoped_app();
    let a = node_with(&app, "A", &["fam-1"], None);
    let out = app.cli(&["nodes", "scopes", "A", "fam-7, fam-9"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fam-7,fam-9"), "{text}");
    let out = app.cli(&["nodes", "types", "A", "Doc,Note"]);
    assert!(out.status.success(), "{out:?}");
    let l = listed(&app, &a.id);
    assert_eq!(l["scopes"], json!(["fam-7", "fam-9"]));
    assert_eq!(l["types"], json!(["Doc", "Note"]));
    let out = app.cli(&["nodes", "types", "A", "*"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(listed(&app, &a.id)["types"], Value::Null);
    // A bad value is refused with the rule, and exits non-zero.
    let out = app.cli(&["nodes", "scopes", "A", "*,fam-1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give it alone"),
        "{out:?}"
    );
    // Registration through the CLI takes them too.
    let out = app.cli(&[
        "--json", "nodes", "register", "C", "--scopes", "fam-1", "--types", "Doc",
    ]);
    assert!(out.status.success(), "{out:?}");
    let (_, list) = app.get("/api/sync/nodes", Some(ADMIN));
    let c = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["code"] == "C")
        .unwrap()
        .clone();
    assert_eq!(c["scopes"], json!(["fam-1"]));
    assert_eq!(c["types"], json!(["Doc"]));
}
