//! One exchange (PROTOCOL §3): take the acknowledgment, apply the node's packet exactly once and
//! in order, then answer with the hub's next packet — all in one transaction.

use std::time::Instant;

use crate::store::models::{InPacketReport, Node};
use crate::store::{nodes, pending, queue, scopes, Conn};
use starsync_protocol::api::{ChangeError, ConflictReport};
use starsync_protocol::{
    self, echo_field, schema_major, validate_change, validate_text, ClockRule, Packet,
};
use starsync_protocol::{ErrorCode, RejectReason};

use super::apply::{Applied, SeqAlloc};
use super::live::AdminEvent;
use super::outbound::Budget;
use super::{outbound, Engine, EngineError, EngineResult};

/// Most rejected changes, and most conflicts, listed in one answer (and kept for repeating it
/// to a duplicate); `error_count` and `conflict_count` still count them all.
///
/// Why: a packet of tiny invalid changes could otherwise make an answer, and a stored report
/// (kept for a node's newest 32 packets), many times larger than the packet. A node's packet
/// holds `batch_size` changes (100 by default), far below this.
pub const MAX_LISTED: usize = 1000;

/// What applying (or recognising) a node packet did.
#[derive(Debug, Default, Clone)]
pub struct ReceiveReport {
    pub duplicate: bool,
    pub processed_count: u64,
    /// The first [`MAX_LISTED`] rejected changes.
    pub errors: Vec<ChangeError>,
    /// The first [`MAX_LISTED`] conflicts.
    pub conflicts: Vec<ConflictReport>,
    /// Every rejected change, listed or not.
    pub error_count: u64,
    /// Every conflict, listed or not.
    pub conflict_count: u64,
}

impl ReceiveReport {
    fn reject(&mut self, e: ChangeError) {
        self.error_count += 1;
        if self.errors.len() < MAX_LISTED {
            self.errors.push(e);
        }
    }

    fn conflict(&mut self, c: ConflictReport) {
        self.conflict_count += 1;
        if self.conflicts.len() < MAX_LISTED {
            self.conflicts.push(c);
        }
    }
}

/// The part of a report kept for answering duplicates.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredReport {
    errors: Vec<ChangeError>,
    conflicts: Vec<ConflictReport>,
    /// Totals (absent in reports stored before lists were bounded: then the lists' lengths).
    #[serde(default)]
    error_count: Option<u64>,
    #[serde(default)]
    conflict_count: Option<u64>,
}

/// The result of a full exchange: the report and the hub's answer packet.
#[derive(Debug)]
pub struct ExchangeOutcome {
    pub report: ReceiveReport,
    pub node_code: String,
    pub answer: Packet,
}

impl Engine {
    /// Checks what needs no database: addressing and schema.
    fn check_packet_header(&self, node: &Node, p: &Packet) -> EngineResult<()> {
        if p.sender_node_id != node.id {
            return Err(EngineError::Forbidden(format!(
                "sender_node_id {} is not the calling node {}",
                trunc(&p.sender_node_id),
                node.id
            )));
        }
        if p.receiver_node_id != self.server_node_id {
            return Err(EngineError::Forbidden(format!(
                "receiver_node_id {} is not this server ({})",
                trunc(&p.receiver_node_id),
                self.server_node_id
            )));
        }
        let ours = &self.settings.sync.schema_version;
        if schema_major(&p.schema_version) != schema_major(ours) {
            return Err(EngineError::SchemaMismatch(format!(
                "packet schema_version {} does not match the server's {} (major versions differ); \
                 upgrade the node or the server",
                trunc(&p.schema_version),
                ours
            )));
        }
        Ok(())
    }

    /// Runs a packet's transaction (`run(false)`); when the database refused one of its
    /// statements, runs it again applying the changes one at a time (`run(true)`), so that a
    /// change the database refuses is rejected alone. Why: a packet cannot change once numbered,
    /// so failing the whole packet would fail every resend and stop its node for good.
    pub(crate) fn apply_once_or_isolated<T>(
        &self,
        run: impl Fn(bool) -> EngineResult<T>,
    ) -> EngineResult<T> {
        match run(false) {
            Err(EngineError::Store(e)) if e.is_statement_refusal() => {
                tracing::warn!(
                    error = %e,
                    "the database refused a statement of a packet; applying its changes one at a time"
                );
                run(true)
            }
            other => other,
        }
    }

    /// Inside a write transaction: acknowledgment, then the packet's changes (`isolate`: each
    /// change in its own savepoint, see [`super::apply::apply_change_isolated`]).
    fn receive_in_tx(
        &self,
        conn: &mut Conn,
        node: &mut Node,
        p: &Packet,
        seq: &mut SeqAlloc,
        now: &str,
        isolate: bool,
    ) -> EngineResult<ReceiveReport> {
        let ack = p.ack_packet_no as i64;
        if ack > node.sent_packet_no {
            return Err(EngineError::InvalidAck(format!(
                "ack_packet_no {ack} acknowledges a packet never sent (the server has sent {} to \
                 this node). If the server was restored from an older backup, this node's \
                 numbers are ahead of it: register the node again (or attach it with a new \
                 token) to resume",
                node.sent_packet_no
            )));
        }
        let packet_no = p.packet_no as i64;
        if packet_no > node.received_packet_no + 1 {
            return Err(EngineError::PacketGap {
                expected: (node.received_packet_no + 1) as u64,
                got: p.packet_no,
            });
        }
        // Acknowledgments only move forward.
        if ack > node.acked_packet_no {
            if let Some((packet_no, high_seq)) = queue::settle_acked(conn, &node.id, ack)? {
                node.acked_seq = node.acked_seq.max(high_seq);
                if self.settings.scopes.is_some() {
                    // Every stream the packet was built from settles up to its high_seq; a
                    // loss with nothing left to drain goes.
                    scopes::raise(conn, &node.id, high_seq, packet_no)?;
                    for l in scopes::losses_of(conn, &node.id)? {
                        if pending::loss_drained(conn, &l)? {
                            scopes::drop_loss(conn, &node.id, &l.scope)?;
                        }
                    }
                }
            }
            node.acked_packet_no = ack;
            queue::prune(conn, &node.id, node.acked_seq)?;
        }
        node.last_sync_in = Some(now.to_string());

        let mut report = ReceiveReport::default();
        if packet_no <= node.received_packet_no {
            // Repeat what applying it reported: the node may never have seen that answer.
            report.duplicate = true;
            if let Some(text) = queue::report(conn, &node.id, packet_no)? {
                if let Ok(stored) = serde_json::from_str::<StoredReport>(&text) {
                    report.error_count = stored.error_count.unwrap_or(stored.errors.len() as u64);
                    report.conflict_count = stored
                        .conflict_count
                        .unwrap_or(stored.conflicts.len() as u64);
                    report.errors = stored.errors;
                    report.conflicts = stored.conflicts;
                    // Reports stored before lists were bounded may hold more.
                    report.errors.truncate(MAX_LISTED);
                    report.conflicts.truncate(MAX_LISTED);
                }
            }
            return Ok(report);
        }
        node.received_packet_no = packet_no;
        // Every rule that needs no database runs first, so only valid values reach a query
        // (PostgreSQL refuses a NUL in any text: one in an id used to fail the packet forever).
        let clock = ClockRule::now(self.settings.sync.max_clock_skew_secs);
        let checked: Vec<_> = p
            .changes
            .iter()
            .map(|c| validate_change(c, &clock))
            .collect();
        let mut ctx = self.node_ctx(&node.id, now, seq);
        // With scopes: who this node is allowed to write as (its view; unscoped and free
        // without `[scopes]`), and each new state's scope.
        let view = self.view(conn, node)?;
        ctx.preload(
            conn,
            p.changes
                .iter()
                .zip(&checked)
                .filter(|(_, v)| v.is_ok())
                .map(|(c, _)| (c.entity_type.as_str(), c.entity_uuid.as_str())),
        )?;
        for (c, checked) in p.changes.iter().zip(checked) {
            // The change's own fields are echoed so the node can match the error to its change;
            // valid ones are at most 128 characters, so only invalid ones are cut.
            let rejected = |reason: RejectReason, message: String| ChangeError {
                change_id: echo_field(&c.change_id),
                entity_type: echo_field(&c.entity_type),
                entity_uuid: echo_field(&c.entity_uuid),
                error: ErrorCode::InvalidChange,
                reason,
                message,
            };
            let valid = match checked {
                Ok(v) => v,
                Err(r) => {
                    report.reject(rejected(r.reason, r.message));
                    continue;
                }
            };
            // The scope rules, then the conflict rules (`node_write`).
            let applied = self.apply_node_change(conn, &mut ctx, &view, c, &valid, isolate)?;
            match applied {
                Ok(Applied::Done) => report.processed_count += 1,
                Ok(Applied::Conflict(r)) => {
                    report.processed_count += 1;
                    report.conflict(r);
                }
                Err(r) => report.reject(rejected(r.reason, r.message)),
            }
        }
        ctx.flush(conn)?;
        if report.error_count > 0 || report.conflict_count > 0 {
            let stored = StoredReport {
                errors: report.errors.clone(),
                conflicts: report.conflicts.clone(),
                error_count: Some(report.error_count),
                conflict_count: Some(report.conflict_count),
            };
            queue::save_report(
                conn,
                &InPacketReport {
                    node_id: node.id.clone(),
                    packet_no,
                    report: serde_json::to_string(&stored).expect("serializable"),
                    created_at: now.to_string(),
                },
            )?;
        }
        Ok(report)
    }

    /// Upper bound of the JSON size of the node's next answer packet, read without the writer
    /// lock: the HTTP layer sets this much memory aside before [`Engine::exchange`] builds it.
    ///
    /// `node` as its caller authenticated it, a moment ago, not read again: the bound only
    /// sizes memory (the answer is cut to what was set aside whatever it says), and the
    /// exchange itself reloads the node and refuses a disabled one.
    pub fn next_answer_bytes(&self, node: &Node) -> EngineResult<usize> {
        self.read(|conn| self.answer_bytes_on(conn, node))
    }

    pub(crate) fn answer_bytes_on(&self, conn: &mut Conn, node: &Node) -> EngineResult<usize> {
        let budget = Budget::new(self.settings.sync.batch_size, self.settings.answer_budget());
        let view = self.view(conn, node)?;
        Ok(outbound::next_packet_bytes(conn, &view, budget)?)
    }

    /// The full HTTP exchange for an authenticated node. The answer packet holds at most
    /// `reserved` bytes of JSON (the memory the caller set aside; see
    /// [`Engine::next_answer_bytes`]), besides the answer budget.
    pub fn exchange(
        &self,
        caller: &Node,
        packet: Packet,
        reserved: usize,
    ) -> EngineResult<ExchangeOutcome> {
        let started = Instant::now();
        self.check_packet_header(caller, &packet)?;
        let now = starsync_protocol::now_ts();
        let (report, answer, node) = self.apply_once_or_isolated(|isolate| {
            self.write_sequenced(|conn, seq| {
                let mut node = self.reload_active(conn, &caller.id)?;
                let report = self.receive_in_tx(conn, &mut node, &packet, seq, &now, isolate)?;
                let budget = Budget {
                    reserved,
                    ..Budget::new(self.settings.sync.batch_size, self.settings.answer_budget())
                };
                let view = self.view(conn, &node)?;
                let answer = outbound::build_packet(
                    conn,
                    &mut node,
                    &view,
                    &self.server_node_id,
                    &self.settings.sync.schema_version,
                    budget,
                    seq.last(),
                    &now,
                )?;
                nodes::save_counters(conn, &node)?;
                let events = exchange_events(&node, &packet, Some(&answer), &report);
                Ok(((report, answer, node), events))
            })
        })?;
        tracing::info!(
            node = %node.code,
            packet_in = packet.packet_no,
            packet_out = answer.packet_no,
            duplicate = report.duplicate,
            changes_in = packet.changes.len(),
            processed = report.processed_count,
            errors = report.error_count,
            conflicts = report.conflict_count,
            changes_out = answer.changes.len(),
            more = answer.more,
            ms = format!("{:.2}", started.elapsed().as_secs_f64() * 1000.0),
            "exchange"
        );
        Ok(ExchangeOutcome {
            report,
            node_code: node.code,
            answer,
        })
    }

    /// Applies a node packet that arrived as a file (offline transfer): the same rules as
    /// HTTP, without an answer packet (the operator exports one when the node needs it).
    pub fn import_packet(&self, packet: Packet) -> EngineResult<(String, ReceiveReport)> {
        let unknown = || {
            EngineError::NotFound(format!(
                "packet sender {} is not a registered node",
                trunc(&packet.sender_node_id)
            ))
        };
        validate_text("sender_node_id", &packet.sender_node_id).map_err(|_| unknown())?;
        let node = self
            .read(|c| Ok(nodes::by_id(c, &packet.sender_node_id)?))?
            .ok_or_else(unknown)?;
        if !node.active {
            return Err(EngineError::Forbidden(format!(
                "node {} is disabled; enable it before importing its packets",
                node.code
            )));
        }
        self.check_packet_header(&node, &packet)?;
        let now = starsync_protocol::now_ts();
        let report = self.apply_once_or_isolated(|isolate| {
            self.write_sequenced(|conn, seq| {
                let mut node = self.reload_active(conn, &node.id)?;
                let report = self.receive_in_tx(conn, &mut node, &packet, seq, &now, isolate)?;
                nodes::save_counters(conn, &node)?;
                let events = exchange_events(&node, &packet, None, &report);
                Ok((report, events))
            })
        })?;
        tracing::info!(
            node = %node.code,
            packet_in = packet.packet_no,
            duplicate = report.duplicate,
            processed = report.processed_count,
            errors = report.error_count,
            conflicts = report.conflict_count,
            "import"
        );
        Ok((node.code, report))
    }

    /// Builds the next hub packet for a node without receiving one (offline export), and hands
    /// it to `deliver` (which writes the file) before the transaction commits: when delivery
    /// fails, the packet number and the node's counters stay as they were, so a failed export
    /// changes nothing and the next one builds the same number again.
    pub fn export_packet(
        &self,
        code: &str,
        deliver: impl FnOnce(&Node, &Packet) -> std::io::Result<()>,
    ) -> EngineResult<(Node, Packet)> {
        let now = starsync_protocol::now_ts();
        self.write(|conn| {
            let mut node = nodes::by_code(conn, code)?
                .ok_or_else(|| EngineError::NotFound(format!("no node with code {code:?}")))?;
            // A disabled node's queue waits until it is enabled again (PROTOCOL §4), whatever
            // the transport.
            if !node.active {
                return Err(EngineError::Forbidden(format!(
                    "node {} is disabled; enable it before exporting packets for it",
                    node.code
                )));
            }
            let last = crate::store::last_seq(conn)?;
            // A file carries what an answer would: the same byte budget, so the node can
            // import it under the same limit.
            let view = self.view(conn, &node)?;
            let packet = outbound::build_packet(
                conn,
                &mut node,
                &view,
                &self.server_node_id,
                &self.settings.sync.schema_version,
                Budget::new(self.settings.sync.batch_size, self.settings.answer_budget()),
                last,
                &now,
            )?;
            nodes::save_counters(conn, &node)?;
            deliver(&node, &packet)?;
            Ok((node, packet))
        })
    }

    fn reload_active(&self, conn: &mut Conn, id: &str) -> EngineResult<Node> {
        match nodes::by_id(conn, id)? {
            Some(n) if n.active => Ok(n),
            Some(_) => Err(EngineError::Unauthorized("this node is disabled".into())),
            None => Err(EngineError::Unauthorized("unknown node".into())),
        }
    }
}

/// What a dashboard hears of one exchange (or imported packet): an `exchange` event, and a
/// `conflict` event per conflict it listed.
fn exchange_events(
    node: &Node,
    packet: &Packet,
    answer: Option<&Packet>,
    report: &ReceiveReport,
) -> Vec<AdminEvent> {
    let mut events = vec![AdminEvent::new(
        "exchange",
        serde_json::json!({
            "node_id": node.id,
            "node_code": node.code,
            "transport": if answer.is_some() { "http" } else { "file" },
            "packet_in": packet.packet_no,
            "packet_out": answer.map(|a| a.packet_no),
            "duplicate": report.duplicate,
            "changes_in": packet.changes.len(),
            "processed": report.processed_count,
            "errors": report.error_count,
            "conflicts": report.conflict_count,
            "changes_out": answer.map_or(0, |a| a.changes.len()),
            "more": answer.is_some_and(|a| a.more),
        }),
    )];
    if !report.duplicate {
        events.extend(
            report
                .conflicts
                .iter()
                .map(|c| AdminEvent::conflict(node, c)),
        );
    }
    events
}

fn trunc(s: &str) -> String {
    s.chars().take(80).collect()
}
