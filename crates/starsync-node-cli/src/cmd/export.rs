//! `starsync-node export`: Write unacknowledged packets as .syncpkt files to carry to the server by hand.

use std::path::PathBuf;

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the packet files into (created when missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args { out } = args;
    let node = Node::open(dir)?;
    let r = node.export(&out)?;
    print(j, &r, || {
        let mut t = String::new();
        for f in &r.files {
            t.push_str(&format!(
                "wrote {} (packet {}, {} changes, {} bytes)\n",
                f.file, f.packet_no, f.changes, f.bytes
            ));
        }
        t.push_str(&format!(
            "{} packet file(s); apply them on the server with `starsync import {}`",
            r.files.len(),
            out.display()
        ));
        t
    });
    Ok(ExitCode::SUCCESS)
}
