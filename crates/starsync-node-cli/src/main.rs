//! The `starsync-node` command line: a thin layer over [`starsync_node::Node`]. Every command prints
//! human text, or one JSON document with `--json`.
//!
//! Exit codes: 0 success; 1 usage or local error; 2 server unreachable (nothing lost, try
//! again); 3 the server refused the request (see the message for the fix).

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};

use starsync_node::types::{ImportProgress, SyncReport};
use starsync_node::{DaemonOptions, DaemonTick};
use starsync_node::{InitOptions, Node, NodeError};

#[derive(Debug, Parser)]
#[command(
    name = "starsync-node",
    version,
    about = "starsync desktop node: local data that works offline and syncs with a starsync server"
)]
pub struct Cli {
    /// Where the node keeps its database (default: the per-user data directory).
    #[arg(long, global = true, env = "STARSYNC_NODE_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register this node with a server (or attach to an existing registration).
    Init {
        /// The server's base URL, like http://127.0.0.1:8080.
        #[arg(long)]
        server: String,
        /// The node's unique code (1-64 of A-Z a-z 0-9 . _ -). Taken from the server when
        /// attaching.
        #[arg(long, required_unless_present = "node_id")]
        code: Option<String>,
        /// Human-readable name (default: the code).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Admin token for registration (unless the server has open registration).
        #[arg(long, env = "STARSYNC_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Attach to an existing registration: its node token (with --node-id).
        #[arg(
            long,
            requires = "node_id",
            env = "STARSYNC_NODE_TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
        /// Attach to an existing registration: its node id (with --token).
        #[arg(long, requires = "token")]
        node_id: Option<String>,
        /// The server's node id (needed to attach without --admin-token).
        #[arg(long)]
        server_node_id: Option<String>,
        /// Application schema version (default: the server's).
        #[arg(long)]
        schema_version: Option<String>,
        /// HTTP timeout of one exchange, seconds (like sync.packet_timeout).
        #[arg(long, default_value_t = starsync_node::DEFAULT_PACKET_TIMEOUT)]
        packet_timeout: i64,
        /// Immediate retries of one exchange before a sync is reported failed.
        #[arg(long, default_value_t = starsync_node::DEFAULT_MAX_RETRIES)]
        max_retries: i64,
        /// Most changes in one packet.
        #[arg(long, default_value_t = starsync_node::DEFAULT_BATCH_SIZE)]
        batch_size: i64,
        /// Replace a node already set up in this data directory (its unsynced changes are lost).
        #[arg(long)]
        force: bool,
    },
    /// Create or replace an entity locally (queues the change).
    Put {
        entity_type: String,
        uuid: String,
        /// A JSON object; `-` reads standard input, `@FILE` reads a file.
        #[arg(value_name = "JSON")]
        data: String,
    },
    /// Create an entity with a new uuid (printed).
    Create {
        entity_type: String,
        /// A JSON object; `-` reads standard input, `@FILE` reads a file.
        #[arg(value_name = "JSON")]
        data: String,
    },
    /// Delete an entity locally (queues the delete).
    Delete { entity_type: String, uuid: String },
    /// Show one local entity.
    Get { entity_type: String, uuid: String },
    /// List the local entities of a type.
    List {
        entity_type: String,
        /// Include deleted entities (tombstones).
        #[arg(long)]
        deleted: bool,
    },
    /// Queue a raw change as given (for scripts and tests; not validated locally).
    Queue {
        entity_id: String,
        entity_type: String,
        /// INSERT, UPDATE or DELETE.
        action: String,
        /// The data (a JSON object; `null` for DELETE).
        #[arg(value_name = "JSON", default_value = "null")]
        data: String,
    },
    /// Exchange packets with the server until neither side has more.
    Sync,
    /// Sync periodically and after local changes until SIGINT/SIGTERM.
    Daemon {
        /// Seconds between syncs when nothing happens.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Longest wait between attempts while the server is unreachable, seconds.
        #[arg(long, default_value_t = 60)]
        max_backoff: u64,
    },
    /// Write unacknowledged packets as .syncpkt files to carry to the server by hand.
    Export {
        #[arg(long)]
        out: PathBuf,
    },
    /// Apply server packet files (a directory: in packet_no order).
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Outbox, packet counters, last sync times and last error.
    Status,
    /// Conflicts the server reported for this node's changes.
    Conflicts {
        /// Ask the server's history instead of the local record.
        #[arg(long)]
        server: bool,
    },
    /// Changes the server rejected; retry or drop them.
    Failed {
        #[command(subcommand)]
        action: Option<FailedAction>,
    },
    /// Show the node's settings, or change one (`config KEY VALUE`).
    Config {
        key: Option<String>,
        value: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FailedAction {
    /// Queue a failed change again (by id from `failed`, change id, or `all`).
    Retry { id: String },
    /// Discard a failed change; the entity returns to the last known server state.
    Drop { id: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let json_out = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if json_out {
                println!(
                    "{}",
                    json!({"ok": false, "error": e.to_string(), "kind": kind(&e)})
                );
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn kind(e: &NodeError) -> &'static str {
    match e {
        NodeError::Unreachable { .. } => "unreachable",
        NodeError::Rejected { .. } => "rejected",
        NodeError::NotInitialized { .. } => "not_initialized",
        NodeError::NotFound(_) => "not_found",
        NodeError::Invalid(_) | NodeError::AlreadyInitialized { .. } => "invalid",
        _ => "error",
    }
}

fn exit_code(e: &NodeError) -> u8 {
    match e {
        NodeError::Unreachable { .. } => 2,
        NodeError::Rejected { .. } => 3,
        _ => 1,
    }
}

fn print<T: Serialize>(json_out: bool, value: &T, text: impl FnOnce() -> String) {
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("serializable")
        );
    } else {
        let t = text();
        if !t.is_empty() {
            println!("{t}");
        }
    }
}

/// A JSON argument: inline, `-` for standard input, `@FILE` for a file.
fn read_json(arg: &str) -> Result<Value, NodeError> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path)
            .map_err(|e| NodeError::Invalid(format!("cannot read {path}: {e}")))?
    } else {
        arg.to_string()
    };
    serde_json::from_str(&text).map_err(|e| {
        NodeError::Invalid(format!(
            "not valid JSON ({e}); quote it for the shell, like '{{\"name\": \"Roof\"}}'"
        ))
    })
}

fn run(cli: Cli) -> Result<ExitCode, NodeError> {
    let dir = cli.data_dir.clone().unwrap_or_else(Node::default_data_dir);
    let j = cli.json;
    match cli.command {
        Command::Init {
            server,
            code,
            name,
            description,
            admin_token,
            token,
            node_id,
            server_node_id,
            schema_version,
            packet_timeout,
            max_retries,
            batch_size,
            force,
        } => {
            let opts = InitOptions {
                server_url: server,
                code: code.unwrap_or_else(|| "attached".into()),
                name,
                description,
                admin_token,
                attach: node_id.zip(token),
                server_node_id,
                schema_version,
                packet_timeout,
                max_retries,
                batch_size,
                force,
            };
            let node = Node::init(&dir, opts)?;
            let info = node.info()?;
            print(j, &info, || {
                format!(
                    "node {} ({}) set up in {}\nserver {} (server node {})\nnext: `starsync-node sync`",
                    info.code, info.node_id, info.data_dir, info.server_url, info.server_node_id
                )
            });
        }
        Command::Put {
            entity_type,
            uuid,
            data,
        } => {
            let node = Node::open(&dir)?;
            let q = node.put(&entity_type, &uuid, &read_json(&data)?)?;
            print(j, &q, || {
                format!(
                    "queued {} {}/{} (change {})",
                    q.operation, q.entity_type, q.entity_uuid, q.change_id
                )
            });
        }
        Command::Create { entity_type, data } => {
            let node = Node::open(&dir)?;
            let (uuid, q) = node.create(&entity_type, &read_json(&data)?)?;
            print(j, &json!({"uuid": uuid, "change": q}), || uuid.clone());
        }
        Command::Delete { entity_type, uuid } => {
            let node = Node::open(&dir)?;
            let q = node.delete(&entity_type, &uuid)?;
            print(j, &json!({"queued": q}), || match &q {
                Some(q) => format!(
                    "queued DELETE {}/{} (change {})",
                    q.entity_type, q.entity_uuid, q.change_id
                ),
                None => format!("{entity_type}/{uuid} is already deleted"),
            });
        }
        Command::Get { entity_type, uuid } => {
            let node = Node::open(&dir)?;
            match node.get(&entity_type, &uuid)? {
                Some(e) => print(j, &e, || {
                    format!(
                        "{}\n({}{}, server version {}, updated {})",
                        serde_json::to_string_pretty(&e.data).unwrap_or_default(),
                        if e.deleted { "deleted, " } else { "" },
                        serde_json::to_value(e.sync_state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        e.server_version,
                        e.updated_at
                    )
                }),
                None => {
                    return Err(NodeError::NotFound(format!(
                        "no entity {entity_type}/{uuid} on this node"
                    )))
                }
            }
        }
        Command::List {
            entity_type,
            deleted,
        } => {
            let node = Node::open(&dir)?;
            let list = if deleted {
                node.list_page(&entity_type, None, i64::MAX, true)?
            } else {
                node.list(&entity_type)?
            };
            print(j, &list, || {
                let mut out = String::new();
                for e in &list {
                    out.push_str(&format!(
                        "{}  {}{}\n",
                        e.entity_uuid,
                        if e.deleted { "(deleted) " } else { "" },
                        e.data
                    ));
                }
                out.push_str(&format!("{} {entity_type} entities", list.len()));
                out
            });
        }
        Command::Queue {
            entity_id,
            entity_type,
            action,
            data,
        } => {
            let node = Node::open(&dir)?;
            let q = node.queue_raw(&entity_id, &entity_type, &action, read_json(&data)?)?;
            print(j, &q, || {
                format!(
                    "queued {} {}/{} (change {})",
                    q.operation, q.entity_type, q.entity_uuid, q.change_id
                )
            });
        }
        Command::Sync => {
            let node = Node::open(&dir)?;
            let r = node.sync()?;
            print(j, &r, || sync_text(&r));
        }
        Command::Daemon {
            interval,
            max_backoff,
        } => {
            let node = Node::open(&dir)?;
            let stopper = node.clone();
            ctrlc::set_handler(move || stopper.request_stop()).map_err(|e| {
                NodeError::Invalid(format!("cannot install the SIGINT/SIGTERM handler: {e}"))
            })?;
            let info = node.info()?;
            if !j {
                eprintln!(
                    "starsync-node daemon: node {} syncing with {} every {interval}s (Ctrl-C to stop)",
                    info.code, info.server_url
                );
            }
            let opts = DaemonOptions {
                interval: Duration::from_secs(interval.max(1)),
                max_backoff: Duration::from_secs(max_backoff.max(1)),
                ..DaemonOptions::default()
            };
            let mut failing = false;
            node.run_daemon(opts, &mut |tick| {
                let ts = starsync_protocol::now_ts();
                if j {
                    println!("{}", json!({"at": ts, "tick": tick}));
                    return;
                }
                match tick {
                    DaemonTick::Synced { report } => {
                        let busy = report.sent > 0
                            || report.received > 0
                            || !report.errors.is_empty()
                            || !report.conflicts.is_empty();
                        if busy || failing {
                            println!("{ts} {}", sync_text(report).replace('\n', "; "));
                        }
                        failing = false;
                    }
                    DaemonTick::Failed {
                        error,
                        retry_in_secs,
                        ..
                    } => {
                        failing = true;
                        println!("{ts} sync failed: {error}; next attempt in {retry_in_secs:.0}s");
                    }
                }
            })?;
            if !j {
                let s = node.status()?;
                eprintln!(
                    "stopped cleanly: {} pending, {} in flight, {} stored packets kept for the next sync",
                    s.pending, s.in_flight, s.stored_packets
                );
            }
        }
        Command::Export { out } => {
            let node = Node::open(&dir)?;
            let r = node.export(&out)?;
            print(j, &r, || {
                let mut t = String::new();
                for f in &r.files {
                    t.push_str(&format!(
                        "wrote {} (packet {}, {} changes, {} bytes)\n",
                        f.file, f.packet_no, f.changes, f.bytes
                    ));
                }
                t.push_str(&format!(
                    "{} packet file(s); apply them on the server with `starsync import {}`",
                    r.files.len(),
                    out.display()
                ));
                t
            });
        }
        Command::Import { paths } => {
            let node = Node::open(&dir)?;
            let quiet = j;
            let r = node.import(&paths, &mut |p| {
                if quiet {
                    return;
                }
                match p {
                    ImportProgress::File {
                        index,
                        total,
                        path,
                        bytes,
                    } => eprintln!("[{index}/{total}] {path} ({bytes} bytes)"),
                    ImportProgress::Changes { done, total } if total >= 5000 => {
                        eprintln!("    {done}/{total} changes applied")
                    }
                    ImportProgress::Changes { .. } => {}
                }
            })?;
            print(j, &r, || {
                let mut t = String::new();
                for f in &r.files {
                    t.push_str(&format!(
                        "{}: packet {}: {}\n",
                        f.file,
                        f.packet_no,
                        if f.skipped {
                            "already applied".to_string()
                        } else {
                            format!(
                                "{} applied, {} kept local (pending local edits)",
                                f.received, f.kept_local
                            )
                        }
                    ));
                }
                t.push_str(&format!(
                    "import: {} file(s), {} changes applied, {} kept local",
                    r.files.len(),
                    r.received,
                    r.kept_local
                ));
                t
            });
        }
        Command::Status => {
            let node = Node::open(&dir)?;
            let info = node.info()?;
            let s = node.status()?;
            print(j, &json!({"node": info, "status": s}), || {
                format!(
                    "node {} ({}) -> {}\n\
                     outbox: {} pending, {} in flight, {} failed\n\
                     packets: sent up to {}, server acknowledged {}, {} stored unacknowledged; \
                     server packets applied up to {}\n\
                     conflicts reported: {}\n\
                     last attempt: {}\nlast success: {}\nlast error: {}{}",
                    info.code,
                    info.node_id,
                    info.server_url,
                    s.pending,
                    s.in_flight,
                    s.failed,
                    s.sent_packet_no,
                    s.server_acked_packet_no,
                    s.stored_packets,
                    s.received_packet_no,
                    s.conflicts,
                    s.last_attempt_at.as_deref().unwrap_or("never"),
                    s.last_success_at.as_deref().unwrap_or("never"),
                    s.last_error.as_deref().unwrap_or("none"),
                    s.last_error_at
                        .as_deref()
                        .map(|t| format!(" (at {t})"))
                        .unwrap_or_default(),
                )
            });
        }
        Command::Conflicts { server } => {
            let node = Node::open(&dir)?;
            if server {
                let rows = node.server_conflicts()?;
                print(j, &rows, || {
                    let mut t = String::new();
                    for r in &rows {
                        t.push_str(&format!(
                            "{} {}/{} {} (server version {}, {})\n    stored: {}\n",
                            r.id,
                            r.entity_type,
                            r.entity_uuid,
                            r.conflict_resolution,
                            r.server_version,
                            r.arrival_time,
                            r.serialized_data
                        ));
                    }
                    t.push_str(&format!(
                        "{} conflict(s) in the server's history",
                        rows.len()
                    ));
                    t
                });
            } else {
                let rows = node.conflicts()?;
                print(j, &rows, || {
                    let mut t = String::new();
                    for r in &rows {
                        t.push_str(&format!(
                            "{} {}/{} {} (server version {}, {}){}\n    sent: {}\n",
                            r.conflict_id,
                            r.entity_type,
                            r.entity_uuid,
                            r.conflict_resolution,
                            r.server_version,
                            r.reported_at,
                            if r.node_lost() {
                                " - this node's change lost"
                            } else {
                                " - this node's change won"
                            },
                            r.local_data
                                .as_ref()
                                .map(|d| d.to_string())
                                .unwrap_or_else(|| "(delete)".into())
                        ));
                    }
                    t.push_str(&format!("{} conflict(s) reported to this node", rows.len()));
                    t
                });
            }
        }
        Command::Failed { action } => {
            let node = Node::open(&dir)?;
            match action {
                None => {
                    let rows = node.failed()?;
                    print(j, &rows, || {
                        let mut t = String::new();
                        for f in &rows {
                            t.push_str(&format!(
                                "[{}] {} {}/{} (change {}): {} [{}]\n",
                                f.id,
                                f.operation,
                                f.entity_type,
                                f.entity_uuid,
                                f.change_id,
                                f.error,
                                f.reason
                            ));
                        }
                        if rows.is_empty() {
                            t.push_str("no failed changes");
                        } else {
                            t.push_str(&format!(
                                "{} failed change(s): `starsync-node failed retry ID` queues one \
                                 again, `starsync-node failed drop ID` discards it (ID or `all`)",
                                rows.len()
                            ));
                        }
                        t
                    });
                }
                Some(FailedAction::Retry { id }) => {
                    let ids = expand_ids(&node, &id)?;
                    let mut done = Vec::new();
                    for i in ids {
                        done.push(node.retry_failed(&i)?);
                    }
                    print(j, &done, || {
                        format!("{} change(s) queued again; run `sync`", done.len())
                    });
                }
                Some(FailedAction::Drop { id }) => {
                    let ids = expand_ids(&node, &id)?;
                    let mut done = Vec::new();
                    for i in ids {
                        done.push(node.drop_failed(&i)?);
                    }
                    print(j, &done, || {
                        format!("{} failed change(s) dropped", done.len())
                    });
                }
            }
        }
        Command::Config { key, value } => {
            let node = Node::open(&dir)?;
            let info = match (key, value) {
                (Some(k), Some(v)) => node.set_setting(&k, &v)?,
                (None, None) => node.info()?,
                _ => {
                    return Err(NodeError::Invalid(
                        "give both a setting and a value: `config KEY VALUE`".into(),
                    ))
                }
            };
            print(j, &info, || {
                serde_json::to_string_pretty(&info).unwrap_or_default()
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn expand_ids(node: &Node, id: &str) -> Result<Vec<String>, NodeError> {
    if id == "all" {
        Ok(node
            .failed()?
            .into_iter()
            .map(|f| f.id.to_string())
            .collect())
    } else {
        Ok(vec![id.to_string()])
    }
}

fn sync_text(r: &SyncReport) -> String {
    let mut t = format!(
        "sync: sent {} change(s) in {} packet(s), received {}{}, {} error(s), {} conflict(s){}",
        r.sent,
        r.packets_sent,
        r.received,
        if r.kept_local > 0 {
            format!(" ({} kept local: pending local edits)", r.kept_local)
        } else {
            String::new()
        },
        r.errors.len(),
        r.conflicts.len(),
        if r.cancelled { " (stopped early)" } else { "" }
    );
    for e in &r.errors {
        t.push_str(&format!(
            "\n  rejected {} {}/{}: {} (see `starsync-node failed`)",
            e.operation, e.entity_type, e.entity_uuid, e.error
        ));
    }
    for c in &r.conflicts {
        t.push_str(&format!(
            "\n  conflict on {}/{}: {}{}",
            c.entity_type,
            c.entity_uuid,
            c.conflict_resolution,
            if c.node_lost() {
                " (this node's change lost; it is kept in the server's history)"
            } else {
                ""
            }
        ));
    }
    t
}
