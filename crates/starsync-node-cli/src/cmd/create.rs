//! `starsync-node create`: Create an entity with a new uuid (printed).

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Entity type, like Estimate.
    pub entity_type: String,
    /// A JSON object; `-` reads standard input, `@FILE` reads a file.
    #[arg(value_name = "JSON")]
    pub data: String,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args { entity_type, data } = args;
    let node = Node::open(dir)?;
    let (uuid, q) = node.create(&entity_type, &read_json(&data)?)?;
    print(j, &json!({"uuid": uuid, "change": q}), || uuid.clone());
    Ok(ExitCode::SUCCESS)
}
