//! `starsync-node conflicts`: Conflicts the server reported for this node's changes.

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ask the server's history instead of the local record.
    #[arg(long)]
    pub server: bool,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args { server } = args;
    let node = Node::open(dir)?;
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
    Ok(ExitCode::SUCCESS)
}
