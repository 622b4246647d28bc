//! `starsync-node get`: Show one local entity.

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
    Ok(ExitCode::SUCCESS)
}
