//! `starsync-node queue`: Queue a raw change as given (for scripts and tests; not validated locally).

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The entity's id, sent as is (not checked here).
    pub entity_id: String,
    /// Entity type, sent as is (not checked here).
    pub entity_type: String,
    /// INSERT, UPDATE or DELETE.
    pub action: String,
    /// The data (a JSON object; `null` for DELETE).
    #[arg(value_name = "JSON", default_value = "null")]
    pub data: String,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args {
        entity_id,
        entity_type,
        action,
        data,
    } = args;
    let node = Node::open(dir)?;
    let q = node.queue_raw(&entity_id, &entity_type, &action, read_json(&data)?)?;
    print(j, &q, || {
        format!(
            "queued {} {}/{} (change {})",
            q.operation, q.entity_type, q.entity_uuid, q.change_id
        )
    });
    Ok(ExitCode::SUCCESS)
}
