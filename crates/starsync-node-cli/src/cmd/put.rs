//! `starsync-node put`: Create or replace an entity locally (queues the change).

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Entity type, like Estimate (^[A-Za-z][A-Za-z0-9_]{0,63}$).
    pub entity_type: String,
    /// The entity's id: 1-128 characters of A-Z a-z 0-9 . _ : - starting with a letter or
    /// digit (a UUID, task-1, ns:thing.1); a UUID must be lowercase.
    #[arg(value_name = "ID")]
    pub uuid: String,
    /// A JSON object; `-` reads standard input, `@FILE` reads a file.
    #[arg(value_name = "JSON")]
    pub data: String,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args {
        entity_type,
        uuid,
        data,
    } = args;
    let node = Node::open(dir)?;
    let q = node.put(&entity_type, &uuid, &read_json(&data)?)?;
    print(j, &q, || {
        format!(
            "queued {} {}/{} (change {})",
            q.operation, q.entity_type, q.entity_uuid, q.change_id
        )
    });
    Ok(ExitCode::SUCCESS)
}
