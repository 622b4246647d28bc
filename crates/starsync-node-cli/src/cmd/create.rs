//! `starsync-node create`: Create an entity with a new uuid (printed), or with the id given.

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Entity type, like Estimate.
    pub entity_type: String,
    /// A JSON object; `-` reads standard input, `@FILE` reads a file.
    #[arg(value_name = "JSON")]
    pub data: String,
    /// The new entity's id instead of a random UUID: 1-128 characters of A-Z a-z 0-9 . _ : -
    /// starting with a letter or digit (like task-1 or ns:thing.1); a UUID must be lowercase.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args {
        entity_type,
        data,
        id,
    } = args;
    let node = Node::open(dir)?;
    let data = read_json(&data)?;
    let (uuid, q) = match id {
        None => node.create(&entity_type, &data)?,
        Some(id) => {
            // `create` never replaces: an existing live entity is an error, `put` replaces.
            if node.get(&entity_type, &id)?.is_some_and(|e| !e.deleted) {
                return Err(NodeError::Invalid(format!(
                    "{entity_type}/{id} already exists on this node; `put` replaces it"
                )));
            }
            let q = node.put(&entity_type, &id, &data)?;
            (id, q)
        }
    };
    print(j, &json!({"uuid": uuid, "change": q}), || uuid.clone());
    Ok(ExitCode::SUCCESS)
}
