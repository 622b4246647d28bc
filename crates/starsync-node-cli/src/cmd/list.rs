//! `starsync-node list`: List the local entities of a type.

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Entity type to list.
    pub entity_type: String,
    /// Include deleted entities (tombstones).
    #[arg(long)]
    pub deleted: bool,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args {
        entity_type,
        deleted,
    } = args;
    let node = Node::open(dir)?;
    let list = if deleted {
        node.list_page(&entity_type, None, i64::MAX, true)?
    } else {
        node.list(&entity_type)?
    };
    print(j, &list, || {
        let mut out = String::new();
        for e in &list {
            out.push_str(&format!(
                "{}  {}{}\n",
                e.entity_uuid,
                if e.deleted { "(deleted) " } else { "" },
                e.data
            ));
        }
        out.push_str(&format!("{} {entity_type} entities", list.len()));
        out
    });
    Ok(ExitCode::SUCCESS)
}
