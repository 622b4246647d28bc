//! `starsync-node sync`: Exchange packets with the server until neither side has more.

use starsync_node::types::SyncReport;

use super::prelude::*;

pub fn run(dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let node = Node::open(dir)?;
    let r = node.sync()?;
    print(j, &r, || sync_text(&r));
    // Everything was exchanged, but a script must still learn that some changes will never
    // reach the server as they are.
    Ok(if r.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_CHANGES_REJECTED)
    })
}

/// One sync report as text (also printed by `daemon` after each sync).
pub(crate) fn sync_text(r: &SyncReport) -> String {
    let mut t = format!(
        "sync: sent {} change(s) in {} packet(s), received {}{}, {} error(s), {} conflict(s){}",
        r.sent,
        r.packets_sent,
        r.received,
        if r.kept_local > 0 {
            format!(" ({} kept local: pending local edits)", r.kept_local)
        } else {
            String::new()
        },
        r.errors.len(),
        r.conflicts.len(),
        if r.cancelled { " (stopped early)" } else { "" }
    );
    for e in &r.errors {
        t.push_str(&format!(
            "\n  rejected {} {}/{}: {} (see `starsync-node failed`)",
            e.operation, e.entity_type, e.entity_uuid, e.error
        ));
    }
    for c in &r.conflicts {
        t.push_str(&format!(
            "\n  conflict on {}/{}: {}{}",
            c.entity_type,
            c.entity_uuid,
            c.conflict_resolution,
            if c.node_lost() {
                " (this node's change lost; it is kept in the server's history)"
            } else {
                ""
            }
        ));
    }
    t
}
