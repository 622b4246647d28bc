//! Batching and `more`.

use super::*;

/// Exchanges empty packets until `more` is false; returns (changes per packet, more flags).
fn drain_batches(app: &TestApp, node: &mut TestNode) -> (Vec<Vec<Value>>, Vec<bool>) {
    let mut batches = Vec::new();
    let mut mores = Vec::new();
    loop {
        let ex = node.sync(app, vec![]);
        ok(&ex);
        batches.push(ex.changes());
        mores.push(ex.more());
        if !ex.more() {
            return (batches, mores);
        }
        assert!(batches.len() < 100, "more never ends");
    }
}

#[test]
fn batches_of_default_size_deliver_every_entity_once_in_order() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let mut order = create_items(&app, &mut a, 130);
    order.extend(create_items(&app, &mut a, 130));
    assert_eq!(pending(&app, &b), 260);

    let (batches, mores) = drain_batches(&app, &mut b);
    let sizes: Vec<usize> = batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes, vec![100, 100, 60]);
    assert_eq!(mores, vec![true, true, false]);
    let all: Vec<Value> = batches.into_iter().flatten().collect();
    assert_eq!(
        uuids(&all),
        order,
        "every entity once, in order of application"
    );
    for c in &all {
        assert_eq!(c["operation"], "INSERT");
        assert_eq!(c["version"], 1);
    }
    // The last packet is acknowledged by the next exchange: nothing more.
    let ex = b.sync(&app, vec![]);
    assert!(ex.changes().is_empty());
    assert!(!ex.more());
    assert_eq!(pending(&app, &b), 0);
    assert_eq!(b.entities.len(), 260);

    // A node registered afterwards gets the same through initial synchronization.
    let mut c = app.register("C");
    assert_eq!(pending(&app, &c), 260);
    let (batches, mores) = drain_batches(&app, &mut c);
    let sizes: Vec<usize> = batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes, vec![100, 100, 60]);
    assert_eq!(mores, vec![true, true, false]);
    let all: Vec<Value> = batches.into_iter().flatten().collect();
    assert_eq!(uuids(&all), order);
    assert!(all.iter().all(|c| c["operation"] == "INSERT"));
    assert!(c.sync(&app, vec![]).changes().is_empty());
}

#[test]
fn batch_size_from_env_limits_packets_and_sets_more() {
    let app = TestApp::spawn_with("", &[("STARSYNC_BATCH_SIZE", "7")]);
    let mut a = app.register("A");
    let mut b = app.register("B");
    let mut order = Vec::new();
    for _ in 0..3 {
        order.extend(create_items(&app, &mut a, 10));
    }
    let (batches, mores) = drain_batches(&app, &mut b);
    let sizes: Vec<usize> = batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes, vec![7, 7, 7, 7, 2]);
    assert_eq!(mores, vec![true, true, true, true, false]);
    let all: Vec<Value> = batches.into_iter().flatten().collect();
    assert_eq!(uuids(&all), order);

    // Exactly a multiple of the batch size: the last full packet says more = false.
    let order: Vec<String> = create_items(&app, &mut a, 14);
    let (batches, mores) = drain_batches(&app, &mut b);
    let sizes: Vec<usize> = batches.iter().map(|b| b.len()).collect();
    // The first exchange also acknowledges the previous drain's last packet.
    assert_eq!(sizes, vec![7, 7]);
    assert_eq!(mores, vec![true, false]);
    let all: Vec<Value> = batches.into_iter().flatten().collect();
    assert_eq!(uuids(&all), order);
    assert!(b.sync(&app, vec![]).changes().is_empty());
    assert_eq!(pending(&app, &b), 0);
    assert_eq!(b.entities.len(), 44);
}

#[test]
fn changes_during_a_long_drain_arrive_at_their_latest_position_once() {
    let app = TestApp::spawn_with("", &[("STARSYNC_BATCH_SIZE", "7")]);
    let mut a = app.register("A");
    let mut b = app.register("B");
    let e = create_items(&app, &mut a, 20);

    let ex = b.sync(&app, vec![]);
    assert_eq!(uuids(&ex.changes()), e[0..7].to_vec());
    assert!(ex.more());

    // e0 was delivered (not yet acknowledged), e10 not yet: both change.
    ok(&a.sync(
        &app,
        vec![
            upsert("Item", &e[0], 1, json!({"n": 0, "v": 2})),
            upsert("Item", &e[10], 1, json!({"n": 10, "v": 2})),
        ],
    ));

    let ex = b.sync(&app, vec![]);
    let mut expect: Vec<String> = vec![e[7].clone(), e[8].clone(), e[9].clone()];
    expect.extend(e[11..15].iter().cloned());
    assert_eq!(uuids(&ex.changes()), expect);
    assert!(ex.more());

    let ex = b.sync(&app, vec![]);
    let mut expect: Vec<String> = e[15..20].to_vec();
    expect.push(e[0].clone());
    expect.push(e[10].clone());
    let ch = ex.changes();
    assert_eq!(uuids(&ch), expect);
    assert!(!ex.more());
    assert_eq!(ch[5]["version"], 2);
    assert_eq!(ch[5]["operation"], "UPDATE");
    assert_eq!(ch[6]["version"], 2);
    assert_eq!(ch[6]["data"], json!({"n": 10, "v": 2}));

    assert!(b.sync(&app, vec![]).changes().is_empty());
    assert_eq!(b.entities.len(), 20);
    assert_eq!(b.version_of("Item", &e[0]), 2);
    assert_eq!(b.version_of("Item", &e[10]), 2);
}
