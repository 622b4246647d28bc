//! Scopes through the node library: stamping comes back into the local store, another
//! tenant's data never arrives, a scope move removes the entity and its data locally, and a
//! forbidden write is marked failed with its reason.

use super::*;
use starsync_node::{InitOptions, Node};

fn attach(app: &TestApp, dir: &std::path::Path, t: &TestNode) -> Node {
    let opts = InitOptions {
        attach: Some((t.id.clone(), t.token.clone())),
        server_node_id: Some(app.server_id.clone()),
        ..InitOptions::register(&app.base, &t.code)
    };
    Node::init(dir, opts).expect("attach the node")
}

#[test]
fn two_tenants_through_the_node_library() {
    let app = scoped_app();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = attach(&app, da.path(), &node_with(&app, "A", &["fam-1"], None));
    let b = attach(&app, db.path(), &node_with(&app, "B", &["fam-2"], None));

    // A writes without naming its tenant: the server stamps it, A receives the stamped state.
    let (u, _) = a.create("Doc", &json!({"title": "Roof"})).unwrap();
    a.sync().unwrap();
    a.sync().unwrap();
    let local: Value = a.get("Doc", &u).unwrap().unwrap().data.parse().unwrap();
    assert_eq!(local["tenant_id"], "fam-1", "{local}");
    b.sync().unwrap();
    assert!(
        b.get("Doc", &u).unwrap().is_none(),
        "B never receives fam-1's data"
    );

    // A writes into B's tenant: refused, marked failed with the reason, nothing reaches B.
    let (v, _) = a
        .create("Doc", &json!({"tenant_id": "fam-2", "title": "intrusion"}))
        .unwrap();
    a.sync().unwrap();
    let failed = a.failed().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].reason, "forbidden_scope");
    b.sync().unwrap();
    assert!(b.get("Doc", &v).unwrap().is_none());

    // The admin moves A's document to fam-2: A drops it (no data kept), B gets it.
    admin_put(
        &app,
        "Doc",
        &u,
        json!({"tenant_id": "fam-2", "title": "Roof"}),
    );
    a.sync().unwrap();
    let gone = a.get("Doc", &u).unwrap().unwrap();
    assert!(gone.deleted);
    assert!(
        !gone.data.as_str().contains("Roof"),
        "{}",
        gone.data.as_str()
    );
    b.sync().unwrap();
    let there: Value = b.get("Doc", &u).unwrap().unwrap().data.parse().unwrap();
    assert_eq!(there["title"], "Roof");
}
