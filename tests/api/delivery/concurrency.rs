//! Concurrency.

use super::*;

#[test]
fn concurrent_exchanges_of_one_node_apply_exactly_once_and_never_share_numbers() {
    const THREADS: usize = 8;
    let app = TestApp::spawn();
    let b = app.register("B");
    let url = app.url("/api/sync/exchange");

    // Round 1: the same packet number with different changes, all at once.
    let ids: Vec<String> = (0..THREADS).map(|_| new_uuid()).collect();
    let packets: Vec<Value> = ids
        .iter()
        .map(|u| b.packet(1, 0, vec![upsert("Doc", u, 0, json!({"u": u}))]))
        .collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = packets
            .iter()
            .map(|p| {
                let barrier = barrier.clone();
                let url = url.clone();
                let token = b.token.clone();
                s.spawn(move || {
                    barrier.wait();
                    post_exchange(&url, &token, p)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut server_numbers = Vec::new();
    let mut applied = Vec::new();
    for (i, (s, body)) in results.iter().enumerate() {
        assert!(*s == 200 || *s == 409, "{s} {body}");
        if *s == 409 {
            assert_eq!(body["error"], "packet_gap");
            continue;
        }
        let p = decode(body["packet_data"].as_str().unwrap());
        server_numbers.push(p["packet_no"].as_u64().unwrap());
        if body["duplicate"] == false {
            assert_eq!(body["processed_count"], 1);
            applied.push(i);
        } else {
            assert_eq!(body["processed_count"], 0);
        }
    }
    assert_eq!(applied.len(), 1, "exactly one copy of packet 1 is applied");
    for (i, u) in ids.iter().enumerate() {
        let v = server_version(&app, "Doc", u);
        if i == applied[0] {
            assert_eq!(v, Some(1));
        } else {
            assert_eq!(v, None, "a duplicate's change was applied");
        }
    }
    let distinct: HashSet<u64> = server_numbers.iter().copied().collect();
    assert_eq!(distinct.len(), server_numbers.len(), "{server_numbers:?}");
    let st = app.node_status(&b);
    assert_eq!(st["received_packet_no"], 1);
    assert_eq!(st["sent_packet_no"], server_numbers.len() as u64);

    // Round 2: consecutive numbers at once; each thread resends its packet after a gap.
    let ids2: Vec<String> = (0..THREADS).map(|_| new_uuid()).collect();
    let packets: Vec<Value> = ids2
        .iter()
        .enumerate()
        .map(|(i, u)| b.packet(2 + i as u64, 0, vec![upsert("Doc", u, 0, json!({}))]))
        .collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let results: Vec<Vec<(u16, Value)>> = std::thread::scope(|s| {
        let handles: Vec<_> = packets
            .iter()
            .map(|p| {
                let barrier = barrier.clone();
                let url = url.clone();
                let token = b.token.clone();
                s.spawn(move || {
                    barrier.wait();
                    let mut answers = Vec::new();
                    for _ in 0..5000 {
                        let (s, body) = post_exchange(&url, &token, p);
                        let done = s == 200;
                        answers.push((s, body));
                        if done {
                            return answers;
                        }
                        std::thread::yield_now();
                    }
                    panic!("packet never accepted: {:?}", answers.last());
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for answers in &results {
        for (s, body) in answers {
            match s {
                200 => {
                    assert_eq!(body["duplicate"], false, "{body}");
                    assert_eq!(body["processed_count"], 1);
                    let p = decode(body["packet_data"].as_str().unwrap());
                    server_numbers.push(p["packet_no"].as_u64().unwrap());
                }
                409 => assert_eq!(body["error"], "packet_gap", "{body}"),
                other => panic!("{other} {body}"),
            }
        }
    }
    let distinct: HashSet<u64> = server_numbers.iter().copied().collect();
    assert_eq!(distinct.len(), server_numbers.len(), "{server_numbers:?}");
    let st = app.node_status(&b);
    assert_eq!(st["received_packet_no"], 1 + THREADS as u64);
    assert_eq!(st["sent_packet_no"], server_numbers.len() as u64);
    let expect: HashSet<u64> = (1..=server_numbers.len() as u64).collect();
    assert_eq!(
        distinct, expect,
        "server numbers are consecutive, none skipped"
    );
    for u in &ids2 {
        assert_eq!(server_version(&app, "Doc", u), Some(1));
    }
}
