//! What a UI hears from a node: events on a channel, and the conflict hook it can plug in.

use std::sync::mpsc;

use parking_lot::Mutex;
use serde::Serialize;

use super::types::{ConflictRecord, FailedChange, Status, SyncReport};

/// Something that happened in the node. Subscribe with [`super::Node::subscribe`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeEvent {
    /// A sync (a series of exchanges) began.
    SyncStarted,
    /// A sync finished; the counts of everything it did.
    SyncCompleted(SyncReport),
    /// A sync stopped early. Nothing is lost: the next attempt resumes where this one stopped.
    /// `retryable` is false when the server refused the node (bad token, schema mismatch…) and
    /// retrying without a fix will not help.
    SyncFailed { reason: String, retryable: bool },
    /// The server reported a conflict for one of this node's changes.
    ConflictDetected(ConflictRecord),
    /// An incoming server change met a local change the server has not accepted yet; the
    /// conflict hook decided what the node shows.
    LocalConflict {
        conflict: LocalConflict,
        decision: LocalDecision,
    },
    /// The server rejected one of this node's changes (see `failed`).
    ChangeRejected(FailedChange),
    /// Server changes were applied to local entities (refresh the views of these types).
    DataChanged {
        count: usize,
        entity_types: Vec<String>,
    },
    /// Outbox or packet counters changed (after a local write, a sync, an import or export).
    StatusChanged(Status),
    /// The daemon's live stream (PROTOCOL §12) opened (`true`: changes arrive within
    /// milliseconds) or closed (`false`: the daemon polls until it reconnects). A UI's
    /// "live" indicator.
    LiveStream { connected: bool },
}

/// An incoming server change for an entity that still has a local change on its way.
#[derive(Debug, Clone, Serialize)]
pub struct LocalConflict {
    pub entity_type: String,
    pub entity_uuid: String,
    /// The local state (None: deleted locally).
    pub local_data: Option<serde_json::Value>,
    /// The server's state (None: deleted on the server).
    pub server_data: Option<serde_json::Value>,
    pub server_version: u64,
    /// The local change is already numbered into a packet: it cannot be withdrawn, so only
    /// [`LocalDecision::KeepLocal`] applies.
    pub in_flight: bool,
}

/// What the node shows after a [`LocalConflict`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", content = "data", rename_all = "snake_case")]
pub enum LocalDecision {
    /// Keep the local data; the local change goes to the server, which decides by its
    /// strategy and sends the outcome back (PROTOCOL §8). The default.
    KeepLocal,
    /// Drop the local pending change and show the server's state now (the local edit is
    /// discarded deliberately, never sent).
    TakeServer,
    /// Replace the local pending change with this merged object, now based on the server's
    /// version (so the server applies it as a normal update, not a conflict).
    Merge(serde_json::Value),
}

/// Plug-in point for what the node shows the user when it meets a conflict.
///
/// Called outside any lock, so an implementation may read the node; it should return quickly
/// (it runs on the syncing thread).
pub trait ConflictHook: Send + Sync {
    /// An incoming server change meets a local change not yet accepted by the server.
    fn local_conflict(&self, conflict: &LocalConflict) -> LocalDecision {
        let _ = conflict;
        LocalDecision::KeepLocal
    }

    /// The server reported a conflict on one of this node's changes. Its decision stands;
    /// the winning state reaches the node through the normal packets.
    fn server_conflict(&self, conflict: &ConflictRecord) {
        let _ = conflict;
    }
}

/// The default hook: keep local changes, let the server decide.
pub struct KeepLocal;

impl ConflictHook for KeepLocal {}

/// Fan-out of events to every live subscriber; a dropped receiver unsubscribes itself.
#[derive(Default)]
pub(crate) struct Subscribers {
    senders: Mutex<Vec<mpsc::Sender<NodeEvent>>>,
}

impl Subscribers {
    pub fn subscribe(&self) -> mpsc::Receiver<NodeEvent> {
        let (tx, rx) = mpsc::channel();
        self.senders.lock().push(tx);
        rx
    }

    pub fn emit(&self, event: NodeEvent) {
        let mut senders = self.senders.lock();
        if senders.is_empty() {
            return;
        }
        senders.retain(|s| s.send(event.clone()).is_ok());
    }

    pub fn has_subscribers(&self) -> bool {
        !self.senders.lock().is_empty()
    }
}
