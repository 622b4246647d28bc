//! The exchange loop (PROTOCOL §3 and §8): send the oldest unacknowledged stored packet byte for
//! byte, or number a new one; take the answer's acknowledgment first, then its changes; go on
//! while either side said `more`; retry network failures with capped exponential backoff.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::events::NodeEvent;
use super::store::{AnswerMeta, AnswerOutcome, ConfigRow};
use super::transport::TransportError;
use super::types::SyncReport;
use super::{Node, NodeError};
use starsync_protocol::api::{ExchangeRequest, ExchangeResponse};
use starsync_protocol::ErrorCode;
use starsync_protocol::{decode_hex_packet, schema_major, Packet};

/// Extra exchanges made only to acknowledge the last server packet (so the server can drop
/// what it delivered). Bounded, so a server that keeps receiving changes from other nodes
/// cannot keep one sync going forever.
const MAX_ACK_ROUNDS: u32 = 3;
/// `packet_gap` recoveries allowed in one sync before giving up.
const MAX_GAPS: u64 = 16;
/// Sends of one stored packet within one sync before the server is considered broken.
const MAX_SENDS_UNACKED: u32 = 64;

enum Exchanged {
    Answer(Box<ExchangeResponse>),
    Gap(u64),
    Cancelled,
}

impl Node {
    /// Exchanges packets with the server until neither side has more. Local writes may go on
    /// meanwhile (they land in later packets). On failure nothing is lost: the next call
    /// resends what was not acknowledged, byte for byte.
    pub fn sync(&self) -> Result<SyncReport, NodeError> {
        let _one_at_a_time = self.inner.sync_lock.lock();
        self.inner.events.emit(NodeEvent::SyncStarted);
        let _ = self.inner.store.record_attempt();
        let mut report = SyncReport::default();
        let result = self.sync_loop(&mut report);
        match &result {
            Ok(()) => {
                let _ = self.inner.store.record_outcome(None);
                self.inner
                    .events
                    .emit(NodeEvent::SyncCompleted(report.clone()));
            }
            Err(e) => {
                let _ = self.inner.store.record_outcome(Some(&e.to_string()));
                self.inner.events.emit(NodeEvent::SyncFailed {
                    reason: e.to_string(),
                    retryable: e.is_retryable(),
                });
            }
        }
        self.emit_status();
        result.map(|_| report)
    }

    fn sync_loop(&self, report: &mut SyncReport) -> Result<(), NodeError> {
        let cfg = self.config()?;
        let mut ack_rounds = 0u32;
        let mut sends: HashMap<i64, u32> = HashMap::new();
        loop {
            if self.stop_requested() {
                report.cancelled = true;
                return Ok(());
            }
            let (packet, _was_stored) = self.inner.store.next_packet(&cfg)?;
            let n = sends.entry(packet.packet_no).or_insert(0);
            *n += 1;
            if *n > MAX_SENDS_UNACKED {
                return Err(NodeError::Protocol(format!(
                    "the server answered packet {} {} times without acknowledging it",
                    packet.packet_no, MAX_SENDS_UNACKED
                )));
            }
            let hex = hex::encode(&packet.bytes);
            let resp = match self.exchange_with_retry(&cfg, hex, report)? {
                Exchanged::Answer(r) => r,
                Exchanged::Gap(expected) => {
                    tracing::info!(
                        expected,
                        sent = packet.packet_no,
                        "packet_gap: resending stored packets from the expected number"
                    );
                    self.inner.store.handle_gap(expected)?;
                    report.gaps_recovered += 1;
                    if report.gaps_recovered > MAX_GAPS {
                        return Err(NodeError::Protocol(format!(
                            "the server keeps answering packet_gap (expected {expected})"
                        )));
                    }
                    continue;
                }
                Exchanged::Cancelled => {
                    report.cancelled = true;
                    return Ok(());
                }
            };
            report.exchanges += 1;
            report.packets_sent += 1;
            report.sent += packet.change_count as u64;
            if resp.duplicate {
                report.duplicates += 1;
            }
            let server_packet = decode_hex_packet(&resp.packet_data, cfg.max_packet_bytes as usize)
                .map_err(|e| {
                    NodeError::Protocol(format!("the server's answer packet is unusable: {e}"))
                })?;
            let meta = AnswerMeta {
                errors: &resp.errors,
                conflicts: &resp.conflicts,
            };
            let outcome = self.apply_packet(&cfg, &server_packet, Some(meta), &mut |_, _| {})?;
            report.received += outcome.received;
            report.kept_local += outcome.kept_local;
            report.errors.extend(outcome.failed);
            report.conflicts.extend(outcome.conflicts);
            let had_changes = !server_packet.changes.is_empty();
            let server_more = server_packet.more;
            drop(server_packet);

            let st = self.inner.store.status()?;
            if st.stored_packets > 0 || server_more || st.pending > 0 {
                continue;
            }
            if had_changes && ack_rounds < MAX_ACK_ROUNDS {
                ack_rounds += 1;
                continue;
            }
            return Ok(());
        }
    }

    /// One exchange with up to `max_retries` immediate retries on network errors.
    fn exchange_with_retry(
        &self,
        cfg: &ConfigRow,
        packet_hex: String,
        report: &mut SyncReport,
    ) -> Result<Exchanged, NodeError> {
        let req = ExchangeRequest {
            packet_data: packet_hex,
        };
        let mut attempt: u32 = 0;
        loop {
            match self
                .inner
                .transport
                .exchange(&cfg.server_url, &cfg.auth_token, &req)
            {
                Ok(r) => return Ok(Exchanged::Answer(Box::new(r))),
                Err(TransportError::Http { status, body })
                    if status == 409 && body.error == ErrorCode::PacketGap =>
                {
                    let expected = body.expected_packet_no.ok_or_else(|| {
                        NodeError::Protocol("packet_gap answer without expected_packet_no".into())
                    })?;
                    return Ok(Exchanged::Gap(expected));
                }
                Err(TransportError::Http { status, body }) => {
                    return Err(NodeError::Rejected {
                        status,
                        message: body.message,
                        code: body.error,
                    })
                }
                // Retrying does not make a certificate trusted.
                Err(TransportError::Certificate(m)) => {
                    return Err(NodeError::Certificate {
                        url: cfg.server_url.clone(),
                        message: m,
                    })
                }
                Err(TransportError::Network(m)) => {
                    attempt += 1;
                    if attempt as i64 > cfg.max_retries {
                        return Err(NodeError::Unreachable {
                            url: cfg.server_url.clone(),
                            message: format!("{m} (gave up after {} retries)", attempt - 1),
                        });
                    }
                    report.retries += 1;
                    let delay = backoff(
                        self.inner.options.retry_base_delay,
                        self.inner.options.retry_max_delay,
                        attempt,
                    );
                    tracing::debug!(attempt, ?delay, error = %m, "exchange failed; retrying");
                    if self.sleep_unless_stopped(delay) {
                        return Ok(Exchanged::Cancelled);
                    }
                }
            }
        }
    }

    /// Sleeps, waking early only for a stop request. Returns true when stopped.
    pub(crate) fn sleep_unless_stopped(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        let mut guard = self.inner.writes.lock();
        while !self.stop_requested() {
            if self.inner.wake.wait_until(&mut guard, deadline).timed_out() {
                break;
            }
        }
        self.stop_requested()
    }

    /// Applies one server packet (answer or file): addressing check, the conflict hook for
    /// local changes it meets, then one transaction (acknowledgment first, then changes), then
    /// events.
    pub(crate) fn apply_packet(
        &self,
        cfg: &ConfigRow,
        packet: &Packet,
        meta: Option<AnswerMeta<'_>>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<AnswerOutcome, NodeError> {
        if packet.sender_node_id != cfg.server_node_id || packet.receiver_node_id != cfg.node_id {
            return Err(NodeError::Protocol(format!(
                "server packet {} goes from {} to {}, but this node is {} of server {}",
                packet.packet_no,
                packet.sender_node_id,
                packet.receiver_node_id,
                cfg.node_id,
                cfg.server_node_id
            )));
        }
        if schema_major(&packet.schema_version) != schema_major(&cfg.schema_version) {
            return Err(NodeError::Protocol(format!(
                "server packet {} has schema_version {}, this node speaks {} (major versions \
                 differ): upgrade the application, then `starsync-node config schema_version …`",
                packet.packet_no, packet.schema_version, cfg.schema_version
            )));
        }
        let local = self.inner.store.local_conflicts(packet)?;
        let mut decisions = HashMap::new();
        if !local.is_empty() {
            let hook = self.inner.hook.read().clone();
            for c in &local {
                let d = hook.local_conflict(c);
                decisions.insert((c.entity_type.clone(), c.entity_uuid.clone()), d);
            }
        }
        let outcome = self
            .inner
            .store
            .apply_server_packet(packet, meta, &decisions, progress)?;
        let events = &self.inner.events;
        for f in &outcome.failed {
            tracing::warn!(change_id = %f.change_id, entity = %format!("{}/{}", f.entity_type, f.entity_uuid), error = %f.error, "server rejected a change");
            events.emit(NodeEvent::ChangeRejected(f.clone()));
        }
        if !outcome.conflicts.is_empty() {
            let hook = self.inner.hook.read().clone();
            for c in &outcome.conflicts {
                hook.server_conflict(c);
                events.emit(NodeEvent::ConflictDetected(c.clone()));
            }
        }
        for (conflict, decision) in &outcome.local_conflicts {
            events.emit(NodeEvent::LocalConflict {
                conflict: conflict.clone(),
                decision: decision.clone(),
            });
        }
        if outcome.received > 0 {
            events.emit(NodeEvent::DataChanged {
                count: outcome.received as usize,
                entity_types: outcome.entity_types.iter().cloned().collect(),
            });
        }
        Ok(outcome)
    }
}

/// `base * 2^(attempt-1)`, capped.
pub(crate) fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        assert_eq!(backoff(b, cap, 1), Duration::from_millis(100));
        assert_eq!(backoff(b, cap, 2), Duration::from_millis(200));
        assert_eq!(backoff(b, cap, 4), Duration::from_millis(800));
        assert_eq!(backoff(b, cap, 5), cap);
        assert_eq!(backoff(b, cap, 60), cap);
    }
}
