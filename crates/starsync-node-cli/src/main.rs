//! The `starsync-node` command line: a thin layer over [`starsync_node::Node`]. Every command prints
//! human text, or one JSON document with `--json`.
//!
//! Exit codes: 0 success; 1 usage or local error; 2 server unreachable (nothing lost, try
//! again); 3 the server refused the request (see the message for the fix); 4 `sync` finished but
//! the server rejected some changes (they are listed by `starsync-node failed`).

#![forbid(unsafe_code)]

mod cmd;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};

use starsync_node::{Node, NodeError};
use starsync_protocol::ErrorCode;

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
    Init(cmd::init::Args),
    /// Create or replace an entity locally (queues the change).
    Put(cmd::put::Args),
    /// Create an entity with a new uuid (printed), or with `--id`.
    Create(cmd::create::Args),
    /// Delete an entity locally (queues the delete).
    Delete(cmd::delete::Args),
    /// Show one local entity.
    Get(cmd::get::Args),
    /// List the local entities of a type.
    List(cmd::list::Args),
    /// Queue a raw change as given (for scripts and tests; not validated locally).
    Queue(cmd::queue::Args),
    /// Exchange packets with the server until neither side has more.
    Sync,
    /// Sync periodically and after local changes until SIGINT/SIGTERM.
    Daemon(cmd::daemon::Args),
    /// Write unacknowledged packets as .syncpkt files to carry to the server by hand.
    Export(cmd::export::Args),
    /// Apply server packet files (a directory: in packet_no order).
    Import(cmd::import::Args),
    /// Outbox, packet counters, last sync times and last error.
    Status,
    /// Conflicts the server reported for this node's changes.
    Conflicts(cmd::conflicts::Args),
    /// Changes the server rejected; retry or drop them.
    Failed(cmd::failed::Args),
    /// Show the node's settings, or change one (`config KEY VALUE`).
    Config(cmd::config::Args),
}

/// `sync` exchanged everything, but the server rejected at least one change.
pub(crate) const EXIT_CHANGES_REJECTED: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let json_out = cli.json;
    let registering = matches!(cli.command, Command::Init(_));
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let text = match advice(&e, registering) {
                Some(fix) => format!("{e}; {fix}"),
                None => e.to_string(),
            };
            if json_out {
                println!("{}", json!({"ok": false, "error": text, "kind": kind(&e)}));
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn kind(e: &NodeError) -> &'static str {
    match e {
        NodeError::Unreachable { .. } => "unreachable",
        NodeError::Rejected { .. } => "rejected",
        NodeError::Certificate { .. } => "certificate",
        NodeError::NotInitialized { .. } => "not_initialized",
        NodeError::NotFound(_) => "not_found",
        NodeError::Invalid(_) | NodeError::AlreadyInitialized { .. } => "invalid",
        _ => "error",
    }
}

/// What to do about an error, in this program's commands. The library's errors say what
/// happened; the fix belongs here, where the commands are known. `registering`: the error came
/// from `init`, where a refused admin token means something else than during a sync.
fn advice(e: &NodeError, registering: bool) -> Option<String> {
    Some(match e {
        NodeError::NotInitialized { .. } => "run `starsync-node init --server URL --code CODE` \
            first (or pass the right --data-dir)"
            .into(),
        NodeError::AlreadyInitialized { .. } => "use another --data-dir, or `init --force` to \
            discard it (unsynced changes are lost)"
            .into(),
        NodeError::Certificate { .. } => "if the server's certificate comes from a private CA, \
            give its CA certificate with `starsync-node config ca_cert FILE` (or `init --ca-cert \
            FILE`); otherwise check the server's certificate (host name, expiry)"
            .into(),
        NodeError::Rejected { code, .. } => match code {
            ErrorCode::Unauthorized if registering => "registration needs the admin token \
                (--admin-token or STARSYNC_ADMIN_TOKEN), unless the server runs with open \
                registration"
                .into(),
            ErrorCode::Unauthorized => "the node's token was refused (node disabled or token \
                rotated): ask the admin to enable the node, or store the rotated token with \
                `starsync-node config token NEW_TOKEN` (local data and unsynced changes are kept)"
                .into(),
            ErrorCode::CodeTaken => "choose another --code, or attach to the existing \
                registration with --node-id and --token"
                .into(),
            ErrorCode::SchemaMismatch => "set the node's schema with `starsync-node config \
                schema_version X.Y.Z` after upgrading the application"
                .into(),
            ErrorCode::PacketTooLarge => {
                "lower the node's batch size with `starsync-node config batch_size N`".into()
            }
            _ => return None,
        },
        _ => return None,
    })
}

fn exit_code(e: &NodeError) -> u8 {
    match e {
        NodeError::Unreachable { .. } => 2,
        NodeError::Rejected { .. } => 3,
        // A certificate error included: a configuration problem, not "retry later".
        _ => 1,
    }
}

pub(crate) fn print<T: Serialize>(json_out: bool, value: &T, text: impl FnOnce() -> String) {
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
pub(crate) fn read_json(arg: &str) -> Result<Value, NodeError> {
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
        Command::Init(args) => cmd::init::run(args, &dir, j),
        Command::Put(args) => cmd::put::run(args, &dir, j),
        Command::Create(args) => cmd::create::run(args, &dir, j),
        Command::Delete(args) => cmd::delete::run(args, &dir, j),
        Command::Get(args) => cmd::get::run(args, &dir, j),
        Command::List(args) => cmd::list::run(args, &dir, j),
        Command::Queue(args) => cmd::queue::run(args, &dir, j),
        Command::Sync => cmd::sync::run(&dir, j),
        Command::Daemon(args) => cmd::daemon::run(args, &dir, j),
        Command::Export(args) => cmd::export::run(args, &dir, j),
        Command::Import(args) => cmd::import::run(args, &dir, j),
        Command::Status => cmd::status::run(&dir, j),
        Command::Conflicts(args) => cmd::conflicts::run(args, &dir, j),
        Command::Failed(args) => cmd::failed::run(args, &dir, j),
        Command::Config(args) => cmd::config::run(args, &dir, j),
    }
}
