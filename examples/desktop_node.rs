//! A desktop program embedding two starsync nodes: local writes, sync, events for the UI, a
//! conflict and a conflict hook.
//!
//! ```sh
//! cargo run --example desktop_node
//! ```
//!
//! Without settings it starts its own throwaway server (port 0, temporary database), so it runs
//! anywhere. To use a real server instead:
//! `STARSYNC_SERVER=http://127.0.0.1:8080 STARSYNC_ADMIN_TOKEN=… cargo run --example desktop_node`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use starsync_node::{
    ConflictHook, ConflictRecord, InitOptions, LocalConflict, LocalDecision, Node, NodeEvent,
};

/// What the program shows the user when a conflict happens. Here: print it, and keep local
/// edits (the server decides by its configured strategy).
struct ShowConflicts;

impl ConflictHook for ShowConflicts {
    fn local_conflict(&self, c: &LocalConflict) -> LocalDecision {
        println!(
            "  [hook] {}/{} changed on the server while edited here; keeping the local edit",
            c.entity_type, c.entity_uuid
        );
        LocalDecision::KeepLocal
    }

    fn server_conflict(&self, c: &ConflictRecord) {
        println!(
            "  [hook] the server resolved a conflict on {}/{}: {}{}",
            c.entity_type,
            c.entity_uuid,
            c.conflict_resolution,
            if c.node_lost() {
                " - our version is kept in the server's history"
            } else {
                ""
            }
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server, admin_token, _embedded) = match std::env::var("STARSYNC_SERVER") {
        Ok(url) => (
            url,
            std::env::var("STARSYNC_ADMIN_TOKEN").unwrap_or_default(),
            None,
        ),
        Err(_) => {
            let s = EmbeddedServer::start()?;
            (s.base.clone(), s.admin_token.clone(), Some(s))
        }
    };
    println!("server: {server}");
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];

    // 1. Set up two nodes (once per installation; afterwards `Node::open(dir)`).
    let alice = Node::init(
        dirs.0.path(),
        InitOptions::register(&server, &format!("alice-{suffix}"))
            .name("Alice's laptop")
            .admin_token(&admin_token),
    )?;
    let bob = Node::init(
        dirs.1.path(),
        InitOptions::register(&server, &format!("bob-{suffix}"))
            .name("Bob's desktop")
            .admin_token(&admin_token),
    )?;
    bob.set_conflict_hook(Arc::new(ShowConflicts));

    // 2. A UI listens to events on its own thread.
    let events = bob.subscribe();
    let ui = std::thread::spawn(move || {
        for e in events {
            match e {
                NodeEvent::SyncStarted => println!("  [bob ui] syncing…"),
                NodeEvent::SyncCompleted(r) => println!(
                    "  [bob ui] synced: sent {}, received {}, {} conflict(s)",
                    r.sent,
                    r.received,
                    r.conflicts.len()
                ),
                NodeEvent::SyncFailed { reason, .. } => println!("  [bob ui] offline: {reason}"),
                NodeEvent::DataChanged { entity_types, .. } => {
                    println!("  [bob ui] refresh views of {entity_types:?}")
                }
                NodeEvent::StatusChanged(s) => {
                    println!(
                        "  [bob ui] {} change(s) waiting to sync",
                        s.pending + s.in_flight
                    )
                }
                _ => {}
            }
        }
    });

    // 3. Work offline: local writes are instant and queued.
    let (roof, _) = alice.create("Estimate", &json!({"name": "Roof", "value": 150}))?;
    alice.create("Estimate", &json!({"name": "Windows", "value": 80}))?;
    println!(
        "alice wrote 2 estimates offline; {} change(s) wait in her outbox",
        alice.status()?.pending
    );

    // 4. Sync: alice sends, bob receives.
    let r = alice.sync()?;
    println!("alice synced: sent {}", r.sent);
    bob.sync()?;
    let names: HashMap<String, serde_json::Value> = bob
        .list("Estimate")?
        .into_iter()
        .map(|e| (e.entity_uuid, e.data.to_value()["name"].clone()))
        .collect();
    println!("bob now has {} estimates: {names:?}", names.len());

    // 5. Both edit the roof estimate while apart: alice syncs first, bob's edit conflicts.
    alice.put("Estimate", &roof, &json!({"name": "Roof", "value": 175}))?;
    bob.put("Estimate", &roof, &json!({"name": "Roof", "value": 190}))?;
    alice.sync()?;
    bob.sync()?;
    let shown = bob.get("Estimate", &roof)?.expect("bob has the roof");
    println!(
        "after the conflict bob shows value {} (server's strategy decided)",
        shown.data.to_value()["value"]
    );

    drop(bob);
    let _ = ui.join();
    Ok(())
}

/// A throwaway starsync server in this process, so the example runs without setup.
struct EmbeddedServer {
    base: String,
    admin_token: String,
    _dir: tempfile::TempDir,
}

impl EmbeddedServer {
    fn start() -> Result<EmbeddedServer, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let admin_token = "example-admin-token-0123456789abcdef".to_string();
        let mut env = HashMap::new();
        env.insert("STARSYNC_BIND".to_string(), "127.0.0.1:0".to_string());
        env.insert(
            "STARSYNC_DATA_DIR".to_string(),
            dir.path().display().to_string(),
        );
        env.insert(
            "DATABASE_URL".to_string(),
            dir.path().join("server.db").display().to_string(),
        );
        env.insert("STARSYNC_ADMIN_TOKEN".to_string(), admin_token.clone());
        let settings = starsync::config::Settings::load_from(
            std::path::Path::new("config/default.toml"),
            &env,
        )?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let app = starsync::startup::Application::build(settings)
                    .await
                    .expect("embedded server starts");
                tx.send(app.port()).expect("main thread waits");
                let _ = app.run_until_stopped().await;
            })
        });
        let port = rx.recv()?;
        Ok(EmbeddedServer {
            base: format!("http://127.0.0.1:{port}"),
            admin_token,
            _dir: dir,
        })
    }
}
