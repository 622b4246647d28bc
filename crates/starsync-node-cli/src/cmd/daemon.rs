//! `starsync-node daemon`: Sync periodically and after local changes until SIGINT/SIGTERM.

use std::time::Duration;

use starsync_node::{DaemonOptions, DaemonTick};

use super::prelude::*;
use super::sync::sync_text;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds between syncs when nothing happens.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
    /// Longest wait between attempts while the server is unreachable, seconds.
    #[arg(long, default_value_t = 60)]
    pub max_backoff: u64,
    /// Do not keep the server's event stream open: poll every --interval only (by default the
    /// daemon syncs the moment the server says a change is waiting, and polls only while the
    /// stream is down).
    #[arg(long)]
    pub no_stream: bool,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args {
        interval,
        max_backoff,
        no_stream,
    } = args;
    let node = Node::open(dir)?;
    let stopper = node.clone();
    ctrlc::set_handler(move || stopper.request_stop()).map_err(|e| {
        NodeError::Invalid(format!("cannot install the SIGINT/SIGTERM handler: {e}"))
    })?;
    let info = node.info()?;
    if !j {
        eprintln!(
            "starsync-node daemon: node {} syncing with {} {} (Ctrl-C to stop)",
            info.code,
            info.server_url,
            if no_stream {
                format!("every {interval}s")
            } else {
                format!("as changes arrive (event stream; every {interval}s while it is down)")
            }
        );
    }
    let opts = DaemonOptions {
        interval: Duration::from_secs(interval.max(1)),
        max_backoff: Duration::from_secs(max_backoff.max(1)),
        stream: !no_stream,
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
    Ok(ExitCode::SUCCESS)
}
