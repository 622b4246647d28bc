//! Admin commands on the database: nodes, status, conflicts.

use std::process::ExitCode;

use clap::Subcommand;

use super::CliResult;
use crate::engine::{Caller, Engine};
use crate::store::history::HistoryFilter;
use starsync_protocol::api::{RegisterRequest, ResolveRequest};

#[derive(Debug, Subcommand)]
pub enum NodesCmd {
    /// List registered nodes.
    List,
    /// Register a node and print its token (shown only once).
    Register {
        /// The node's unique code (1-64 of A-Z a-z 0-9 . _ -).
        code: String,
        /// Human-readable name (default: the code).
        #[arg(long)]
        name: Option<String>,
        /// Free text shown in node lists.
        #[arg(long)]
        description: Option<String>,
        /// Its scopes, comma-separated (`*` = all; default none: global types only). Needs a
        /// [scopes] configuration.
        #[arg(long)]
        scopes: Option<String>,
        /// The entity types it synchronizes, comma-separated (default every type).
        #[arg(long)]
        types: Option<String>,
    },
    /// Set a node's scopes (comma-separated, `*` = all, empty = none): it is sent a gained
    /// scope's entities and DELETEs for a lost scope's.
    Scopes {
        /// The node's code or id.
        node: String,
        /// The new scopes, e.g. `family-7,family-9`.
        scopes: String,
    },
    /// Set the entity types a node synchronizes (comma-separated; `*` = every type).
    Types {
        /// The node's code or id.
        node: String,
        /// The types, e.g. `Estimate,Customer`.
        types: String,
    },
    /// Disable a node: its token gets 401; its queue keeps filling.
    Disable {
        /// The node's code or id.
        node: String,
    },
    /// Enable a disabled node.
    Enable {
        /// The node's code or id.
        node: String,
    },
    /// Issue a new token for a node; the old one stops working at once.
    RotateToken {
        /// The node's code or id.
        node: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConflictsCmd {
    /// List conflicts, newest first.
    List {
        /// Only manual conflicts not resolved yet.
        #[arg(long)]
        unresolved: bool,
        /// Only conflicts on this entity type.
        #[arg(long)]
        entity_type: Option<String>,
        /// Only conflicts on this entity id.
        #[arg(long)]
        entity_uuid: Option<String>,
        /// Node id or code whose changes met the conflicts.
        #[arg(long)]
        node: Option<String>,
        /// Most rows to show.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Resolve a manual conflict.
    Resolve {
        /// The conflict (history row) id, from `conflicts list`.
        id: String,
        /// New data for the entity (a JSON object).
        #[arg(long, conflicts_with = "use_")]
        data: Option<String>,
        /// `history` (the stored losing version) or `server` (keep the server state).
        #[arg(long = "use", value_parser = ["history", "server"])]
        use_: Option<String>,
    },
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

pub fn nodes(engine: &Engine, cmd: NodesCmd, json: bool) -> CliResult {
    match cmd {
        NodesCmd::List => {
            let list = engine.list_nodes()?;
            if json {
                print_json(&serde_json::json!({ "nodes": list }));
            } else if list.is_empty() {
                println!("no nodes registered");
            } else {
                println!(
                    "{:<36}  {:<20} {:<7} {:>8}  {:<27}  SCOPES",
                    "NODE ID", "CODE", "ACTIVE", "PENDING", "LAST SYNC IN"
                );
                for n in list {
                    println!(
                        "{:<36}  {:<20} {:<7} {:>8}  {:<27}  {}",
                        n.node_id,
                        n.code,
                        if n.active { "yes" } else { "no" },
                        n.pending_changes,
                        n.last_sync_in.unwrap_or_else(|| "never".into()),
                        n.scopes.as_deref().unwrap_or(&["*".to_string()]).join(",")
                    );
                }
            }
        }
        NodesCmd::Register {
            code,
            name,
            description,
            scopes,
            types,
        } => {
            let r = engine.register(RegisterRequest {
                code,
                name,
                description,
                scopes: scopes.as_deref().map(comma_list),
                types: types.as_deref().map(comma_list),
            })?;
            if json {
                print_json(&r);
            } else {
                println!("node_id:        {}", r.node_id);
                println!(
                    "auth_token:     {}  (shown only now; store it on the node)",
                    r.auth_token
                );
                println!("server_node_id: {}", r.server_node_id);
                println!("schema_version: {}", r.schema_version);
            }
        }
        NodesCmd::Scopes { node, scopes } => {
            let n = engine.patch_node(&node, Some(comma_list(&scopes)), None)?;
            print_view(&n, json);
        }
        NodesCmd::Types { node, types } => {
            let types = (types.trim() != "*").then(|| comma_list(&types));
            let n = engine.patch_node(&node, None, Some(types))?;
            print_view(&n, json);
        }
        NodesCmd::Disable { node } => {
            let n = engine.set_node_active(&node, false)?;
            if json {
                print_json(&n);
            } else {
                println!("node {} disabled", n.code);
            }
        }
        NodesCmd::Enable { node } => {
            let n = engine.set_node_active(&node, true)?;
            if json {
                print_json(&n);
            } else {
                println!("node {} enabled", n.code);
            }
        }
        NodesCmd::RotateToken { node } => {
            let r = engine.rotate_token(&node)?;
            if json {
                print_json(&r);
            } else {
                println!("node_id:    {}", r.node_id);
                println!(
                    "auth_token: {}  (shown only now; the old token no longer works)",
                    r.auth_token
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(engine: &Engine, node: Option<String>, json: bool) -> CliResult {
    match node {
        Some(n) => {
            let id = engine.find_node(&n)?.id;
            let s = engine.node_status(&Caller::Admin, &id)?;
            if json {
                print_json(&s);
            } else {
                println!(
                    "node {} ({}) {}",
                    s.node_code,
                    s.node_id,
                    if s.active { "active" } else { "DISABLED" }
                );
                println!("  pending changes:      {}", s.pending_changes);
                println!("  unresolved conflicts: {}", s.unresolved_conflicts);
                println!(
                    "  packets: sent {} / received {} / acknowledged {}",
                    s.sent_packet_no, s.received_packet_no, s.acked_packet_no
                );
                println!(
                    "  last sync in:  {}",
                    s.last_sync_in.unwrap_or_else(|| "never".into())
                );
                println!(
                    "  last sync out: {}",
                    s.last_sync_out.unwrap_or_else(|| "never".into())
                );
            }
        }
        None => {
            let s = engine.server_status()?;
            if json {
                print_json(&s);
            } else {
                println!("server node {}", s.server_node_id);
                println!(
                    "  nodes: {}   live entities: {}   unresolved conflicts: {}",
                    s.total_nodes, s.entities, s.unresolved_conflicts
                );
                for (id, p) in s.pending_counts {
                    println!(
                        "  {:<20} {id}  pending {:>8}  last sync in {}",
                        p.code,
                        p.pending_changes,
                        p.last_sync_in.unwrap_or_else(|| "never".into())
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn conflicts(engine: &Engine, cmd: ConflictsCmd, json: bool) -> CliResult {
    match cmd {
        ConflictsCmd::List {
            unresolved,
            entity_type,
            entity_uuid,
            node,
            limit,
        } => {
            let node_id = match node {
                Some(n) => Some(engine.find_node(&n)?.id),
                None => None,
            };
            let rows = engine.list_conflicts(
                HistoryFilter {
                    entity_type,
                    entity_uuid,
                    node_id,
                    unresolved_only: unresolved,
                    before_seq: None,
                    limit: limit.clamp(1, 1000),
                },
                None,
                None,
            )?;
            if json {
                print_json(&serde_json::json!({ "conflicts": rows }));
            } else if rows.is_empty() {
                println!("no conflicts");
            } else {
                for r in rows {
                    println!(
                        "{}  {}/{}  {}  server v{}  {}  {}",
                        r.id,
                        r.entity_type,
                        r.entity_uuid,
                        r.conflict_resolution,
                        r.server_version,
                        r.arrival_time,
                        r.serialized_data
                    );
                }
            }
        }
        ConflictsCmd::Resolve { id, data, use_ } => {
            let data = match data {
                Some(d) => Some(
                    starsync_protocol::EntityData::from_json(d)
                        .map_err(|e| format!("--data is not JSON: {e}"))?,
                ),
                None => None,
            };
            let view = engine.resolve_conflict(&id, ResolveRequest { data, use_ })?;
            if json {
                print_json(&view);
            } else {
                println!(
                    "resolved: {}/{} is now version {}: {}",
                    view.entity_type,
                    view.entity_uuid,
                    view.version,
                    view.data.map_or("null".to_string(), |d| d.into_string())
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `a, b,,c` → `["a", "b", "c"]` (blanks dropped, so an empty text is an empty list).
fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

fn print_view(n: &starsync_protocol::api::NodeInfo, json: bool) {
    if json {
        print_json(n);
    } else {
        let scopes = match n.scopes.as_deref() {
            Some([]) => "(none: global types only)".to_string(),
            Some(list) => list.join(","),
            None => "* (no [scopes] configuration)".to_string(),
        };
        let types = n
            .types
            .as_ref()
            .map_or("(every type)".to_string(), |t| t.join(","));
        println!("node {}: scopes {scopes}; types {types}", n.code);
    }
}
