//! `starsync-node failed`: Changes the server rejected; retry or drop them.

use clap::Subcommand;

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<FailedAction>,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args { action } = args;
    let node = Node::open(dir)?;
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
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum FailedAction {
    /// Queue a failed change again (by id from `failed`, change id, or `all`).
    Retry {
        /// Outbox id from `failed`, a change id, or `all`.
        id: String,
    },
    /// Discard a failed change; the entity returns to the last known server state.
    Drop {
        /// Outbox id from `failed`, a change id, or `all`.
        id: String,
    },
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
