//! Echo suppression.

use super::*;

#[test]
fn author_never_receives_its_own_change_back() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();

    let ex = a.sync(&app, vec![upsert("Note", &u, 0, json!({"t": "v1"}))]);
    ok(&ex);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    // A edits its own entity twice more; still nothing comes back.
    let ex = a.sync(&app, vec![upsert("Note", &u, 1, json!({"t": "v2"}))]);
    ok(&ex);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    let ex = a.sync(&app, vec![upsert("Note", &u, 2, json!({"t": "v3"}))]);
    ok(&ex);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    assert_eq!(pending(&app, &a), 0);
    assert_eq!(server_version(&app, "Note", &u), Some(3));

    // B gets the latest state once.
    let ex = b.sync(&app, vec![]);
    assert_eq!(uuids(&ex.changes()), vec![u.clone()]);
    assert_eq!(ex.changes()[0]["version"], 3);
    assert_eq!(ex.changes()[0]["data"], json!({"t": "v3"}));

    // Empty exchanges by A: still nothing of its own.
    for _ in 0..2 {
        let ex = a.sync(&app, vec![]);
        assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    }

    // Suppression is per author, not per entity: B's edit reaches A.
    let ex = b.sync(&app, vec![upsert("Note", &u, 3, json!({"t": "by B"}))]);
    ok(&ex);
    assert!(
        ex.changes().is_empty(),
        "B got its own change: {:?}",
        ex.changes()
    );
    let ex = a.sync(&app, vec![]);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![u.clone()]);
    assert_eq!(ch[0]["version"], 4);
    assert_eq!(ch[0]["operation"], "UPDATE");
    assert_eq!(ch[0]["data"], json!({"t": "by B"}));

    // A deletes: B gets the tombstone, A does not.
    let ex = a.sync(&app, vec![delete("Note", &u, 4)]);
    ok(&ex);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    let ex = b.sync(&app, vec![]);
    assert_eq!(uuids(&ex.changes()), vec![u.clone()]);
    assert_eq!(ex.changes()[0]["operation"], "DELETE");
    assert!(a.sync(&app, vec![]).changes().is_empty());
}
