//! `starsync-node status`: Outbox, packet counters, last sync times and last error.

use super::prelude::*;

pub fn run(dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let node = Node::open(dir)?;
    let info = node.info()?;
    let s = node.status()?;
    print(j, &json!({"node": info, "status": s}), || {
        format!(
            "node {} ({}) -> {}\n\
             outbox: {} pending, {} in flight, {} failed\n\
             packets: sent up to {}, server acknowledged {}, {} stored unacknowledged; \
             server packets applied up to {}\n\
             conflicts reported: {}\n\
             last attempt: {}\nlast success: {}\nlast error: {}{}",
            info.code,
            info.node_id,
            info.server_url,
            s.pending,
            s.in_flight,
            s.failed,
            s.sent_packet_no,
            s.server_acked_packet_no,
            s.stored_packets,
            s.received_packet_no,
            s.conflicts,
            s.last_attempt_at.as_deref().unwrap_or("never"),
            s.last_success_at.as_deref().unwrap_or("never"),
            s.last_error.as_deref().unwrap_or("none"),
            s.last_error_at
                .as_deref()
                .map(|t| format!(" (at {t})"))
                .unwrap_or_default(),
        )
    });
    Ok(ExitCode::SUCCESS)
}
