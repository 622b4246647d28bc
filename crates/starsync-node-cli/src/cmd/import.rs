//! `starsync-node import`: Apply server packet files (a directory: in packet_no order).

use std::path::PathBuf;

use starsync_node::types::ImportProgress;

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Packet files (`*.syncpkt`) from the server, or directories holding them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args { paths } = args;
    let node = Node::open(dir)?;
    let quiet = j;
    let r = node.import(&paths, &mut |p| {
        if quiet {
            return;
        }
        match p {
            ImportProgress::File {
                index,
                total,
                path,
                bytes,
            } => eprintln!("[{index}/{total}] {path} ({bytes} bytes)"),
            ImportProgress::Changes { done, total } if total >= 5000 => {
                eprintln!("    {done}/{total} changes applied")
            }
            ImportProgress::Changes { .. } => {}
        }
    })?;
    print(j, &r, || {
        let mut t = String::new();
        for f in &r.files {
            t.push_str(&format!(
                "{}: packet {}: {}\n",
                f.file,
                f.packet_no,
                if f.skipped {
                    "already applied".to_string()
                } else {
                    format!(
                        "{} applied, {} kept local (pending local edits)",
                        f.received, f.kept_local
                    )
                }
            ));
        }
        t.push_str(&format!(
            "import: {} file(s), {} changes applied, {} kept local",
            r.files.len(),
            r.received,
            r.kept_local
        ));
        t
    });
    Ok(ExitCode::SUCCESS)
}
