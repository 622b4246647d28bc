//! `starsync-node delete`: Delete an entity locally (queues the delete).

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Entity type.
    pub entity_type: String,
    /// The entity's id (a UUID, task-1, ns:thing.1, …).
    #[arg(value_name = "ID")]
    pub uuid: String,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args { entity_type, uuid } = args;
    let node = Node::open(dir)?;
    let q = node.delete(&entity_type, &uuid)?;
    print(j, &json!({"queued": q}), || match &q {
        Some(q) => format!(
            "queued DELETE {}/{} (change {})",
            q.entity_type, q.entity_uuid, q.change_id
        ),
        None => format!("{entity_type}/{uuid} is already deleted"),
    });
    Ok(ExitCode::SUCCESS)
}
