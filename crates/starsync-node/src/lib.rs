//! The node client: what a desktop program embeds (or runs beside itself, as `starsync-node`)
//! to work offline and stay in sync with a starsync server (PROTOCOL.md §8).
//!
//! A [`Node`] owns a local SQLite database (its credentials, local entities, the outbox of
//! changes on their way, the numbered packets kept until acknowledged, counters, reported
//! conflicts). Local reads and writes never touch the network; [`Node::sync`] exchanges packets
//! with the server until neither side has more. A UI subscribes to [`NodeEvent`]s and may plug
//! in a [`ConflictHook`]. See `docs/node.md` and `examples/desktop_node.rs`.
//!
//! ```no_run
//! use starsync_node::{InitOptions, Node};
//! let node = Node::init("/tmp/my-node", InitOptions::register("http://127.0.0.1:8080", "DESKTOP-1")
//!     .admin_token("…"))?;
//! let (uuid, _) = node.create("Estimate", &serde_json::json!({"name": "Roof"}))?;
//! let report = node.sync()?;
//! println!("{uuid}: sent {}, received {}", report.sent, report.received);
//! # Ok::<(), starsync_node::NodeError>(())
//! ```

#![forbid(unsafe_code)]

mod daemon;
mod error;
pub mod events;
mod init;
mod live;
mod offline;
mod options;
pub mod schema;
pub mod store;
mod sync;
pub mod transport;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use serde_json::Value;

pub use daemon::{DaemonHandle, DaemonOptions, DaemonTick};
pub use error::NodeError;
pub use events::{ConflictHook, KeepLocal, LocalConflict, LocalDecision, NodeEvent};
pub use options::{
    InitOptions, NodeOptions, DEFAULT_BATCH_SIZE, DEFAULT_MAX_PACKET_BYTES, DEFAULT_MAX_RETRIES,
    DEFAULT_PACKET_TIMEOUT,
};

pub use offline::{node_packet_file_name, server_packet_file_name};
pub use transport::{HttpTransport, Transport, TransportError};
pub use types::*;

use events::Subscribers;
use starsync_protocol::api::ConflictRow;
use starsync_protocol::{self, EntityId, EntityType};
use store::{ConfigRow, LocalOp, Store};

/// Name of the database file inside a node's data directory.
pub const DB_FILE: &str = "node.db";

/// A handle on one node. Cheap to clone; every clone is the same node (share it between a UI
/// thread and a sync thread).
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    store: Store,
    transport: Arc<dyn Transport>,
    options: NodeOptions,
    hook: RwLock<Arc<dyn ConflictHook>>,
    events: Subscribers,
    /// One sync at a time; local writes do not wait for it.
    sync_lock: Mutex<()>,
    /// Bumped by every local write; the daemon waits on it.
    writes: Mutex<u64>,
    wake: Condvar,
    stop: AtomicBool,
    /// Set by [`Node::request_sync`]: the daemon syncs at once, even while backing off.
    sync_requested: AtomicBool,
}

impl Node {
    /// The per-user default data directory (`~/.local/share/starsync-node` on Linux,
    /// `~/Library/Application Support/starsync-node` on macOS, `%APPDATA%\starsync-node`).
    pub fn default_data_dir() -> PathBuf {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("starsync-node")
    }

    /// Opens a node set up earlier with [`Node::init`], talking HTTP to its server.
    pub fn open(dir: impl AsRef<Path>) -> Result<Node, NodeError> {
        Self::open_with(dir, None, NodeOptions::default())
    }

    /// Opens a node with a custom transport (None: HTTP with the stored `packet_timeout`).
    pub fn open_with(
        dir: impl AsRef<Path>,
        transport: Option<Arc<dyn Transport>>,
        options: NodeOptions,
    ) -> Result<Node, NodeError> {
        let dir = dir.as_ref().to_path_buf();
        let db = dir.join(DB_FILE);
        if !db.exists() {
            return Err(NodeError::NotInitialized { dir });
        }
        let store = Store::open(&db)?;
        let cfg = store
            .config()?
            .ok_or_else(|| NodeError::NotInitialized { dir: dir.clone() })?;
        let transport = match transport {
            Some(t) => t,
            None => http_transport(cfg.packet_timeout, cfg.ca_cert.as_deref())?,
        };
        Ok(Self::from_parts(dir, store, transport, options))
    }

    fn from_parts(
        dir: PathBuf,
        store: Store,
        transport: Arc<dyn Transport>,
        options: NodeOptions,
    ) -> Node {
        Node {
            inner: Arc::new(Inner {
                dir,
                store,
                transport,
                options,
                hook: RwLock::new(Arc::new(KeepLocal)),
                events: Subscribers::default(),
                sync_lock: Mutex::new(()),
                writes: Mutex::new(0),
                wake: Condvar::new(),
                stop: AtomicBool::new(false),
                sync_requested: AtomicBool::new(false),
            }),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.dir
    }

    fn config(&self) -> Result<ConfigRow, NodeError> {
        self.inner
            .store
            .config()?
            .ok_or_else(|| NodeError::NotInitialized {
                dir: self.inner.dir.clone(),
            })
    }

    /// Who this node is and where its server is (never the token).
    pub fn info(&self) -> Result<NodeInfo, NodeError> {
        let c = self.config()?;
        Ok(NodeInfo {
            data_dir: self.inner.dir.display().to_string(),
            server_url: c.server_url,
            node_id: c.node_id,
            code: c.code,
            name: c.name,
            server_node_id: c.server_node_id,
            server_code: c.server_code,
            schema_version: c.schema_version,
            packet_timeout: c.packet_timeout,
            max_retries: c.max_retries,
            batch_size: c.batch_size,
            max_packet_bytes: c.max_packet_bytes,
            created_at: c.created_at,
            ca_cert: c.ca_cert,
        })
    }

    /// Changes one stored setting: `server_url`, `packet_timeout`, `max_retries`,
    /// `batch_size`, `max_packet_bytes`, `schema_version`, `name`, or `token` (the node token
    /// after an admin rotated it: local data, the outbox and stored packets are kept, unlike a
    /// new `init`), or `ca_cert` (a PEM file of the private CA to trust instead of the public
    /// roots; empty: the public roots again). A new timeout or CA applies the next time the node
    /// is opened.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<NodeInfo, NodeError> {
        let mut c = self.config()?;
        let num = |min: i64| -> Result<i64, NodeError> {
            value
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= min)
                .ok_or_else(|| NodeError::Invalid(format!("{key} must be a whole number >= {min}")))
        };
        match key {
            "server_url" | "server" => c.server_url = normalize_url(value)?,
            "packet_timeout" => c.packet_timeout = num(1)?,
            "max_retries" => c.max_retries = num(0)?,
            "batch_size" => c.batch_size = num(1)?,
            "max_packet_bytes" => c.max_packet_bytes = num(1024)?,
            "schema_version" => c.schema_version = value.trim().to_string(),
            "name" => c.name = value.trim().to_string(),
            "ca_cert" => {
                c.ca_cert = match value.trim() {
                    "" => None,
                    path => Some(crate::transport::checked_ca_path(Path::new(path))?),
                }
            }
            "token" | "auth_token" => {
                let token = value.trim();
                if token.is_empty() || token.len() > 512 || !token.is_ascii() {
                    return Err(NodeError::Invalid(
                        "a node token is the text `starsync nodes rotate-token` printed".into(),
                    ));
                }
                c.auth_token = token.to_string();
            }
            _ => {
                return Err(NodeError::Invalid(format!(
                    "unknown setting {key:?}; settings are server_url, packet_timeout, \
                     max_retries, batch_size, max_packet_bytes, schema_version, name, token, ca_cert"
                )))
            }
        }
        self.inner.store.save_config(&c)?;
        self.info()
    }

    // ---- local reads and writes ----

    /// Creates or replaces an entity locally and queues the change (one transaction).
    pub fn put(
        &self,
        entity_type: &str,
        entity_uuid: &str,
        data: &Value,
    ) -> Result<QueuedChange, NodeError> {
        check_key(entity_type, entity_uuid)?;
        if !data.is_object() {
            return Err(NodeError::Invalid(
                "entity data must be a JSON object, like {\"name\": \"Roof\"}".into(),
            ));
        }
        let q = self
            .inner
            .store
            .local_write(entity_type, entity_uuid, LocalOp::Put(data.to_string()))?
            .expect("a put always queues a change");
        self.after_write();
        Ok(q)
    }

    /// Creates an entity with a new random uuid; returns the uuid.
    pub fn create(
        &self,
        entity_type: &str,
        data: &Value,
    ) -> Result<(String, QueuedChange), NodeError> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let q = self.put(entity_type, &uuid, data)?;
        Ok((uuid, q))
    }

    /// Deletes an entity locally and queues the delete. `Ok(None)` when it was already deleted.
    pub fn delete(
        &self,
        entity_type: &str,
        entity_uuid: &str,
    ) -> Result<Option<QueuedChange>, NodeError> {
        check_key(entity_type, entity_uuid)?;
        let q = self
            .inner
            .store
            .local_write(entity_type, entity_uuid, LocalOp::Delete)?;
        if q.is_some() {
            self.after_write();
        }
        Ok(q)
    }

    /// Queues a raw change exactly as given (for scripts and tests): the operation and data are
    /// not checked here, so the server's per-change rules can be exercised. The local entity
    /// follows when the change is well-formed.
    pub fn queue_raw(
        &self,
        entity_uuid: &str,
        entity_type: &str,
        operation: &str,
        data: Value,
    ) -> Result<QueuedChange, NodeError> {
        let operation = operation.trim().to_ascii_uppercase();
        if operation.is_empty() {
            return Err(NodeError::Invalid(
                "the action must be INSERT, UPDATE or DELETE".into(),
            ));
        }
        let well_formed = check_key(entity_type, entity_uuid).is_ok()
            && match operation.as_str() {
                "DELETE" => true,
                "INSERT" | "UPDATE" => data.is_object(),
                _ => false,
            };
        let data = if data.is_null() {
            None
        } else {
            Some(data.to_string())
        };
        let q = self
            .inner
            .store
            .local_write(
                entity_type,
                entity_uuid,
                LocalOp::Raw {
                    operation,
                    data,
                    apply_locally: well_formed,
                },
            )?
            .expect("a raw change always queues");
        self.after_write();
        Ok(q)
    }

    /// One local entity (deleted ones too, flagged).
    pub fn get(&self, entity_type: &str, entity_uuid: &str) -> Result<Option<Entity>, NodeError> {
        self.inner.store.get_entity(entity_type, entity_uuid)
    }

    /// Every live local entity of a type, ordered by uuid.
    pub fn list(&self, entity_type: &str) -> Result<Vec<Entity>, NodeError> {
        self.inner
            .store
            .list_entities(entity_type, false, None, None)
    }

    /// A page of a type's entities (uuid > `after`), for big sets; `include_deleted` adds
    /// tombstones.
    pub fn list_page(
        &self,
        entity_type: &str,
        after: Option<&str>,
        limit: i64,
        include_deleted: bool,
    ) -> Result<Vec<Entity>, NodeError> {
        self.inner
            .store
            .list_entities(entity_type, include_deleted, after, Some(limit))
    }

    /// Entity types this node holds.
    pub fn entity_types(&self) -> Result<Vec<String>, NodeError> {
        self.inner.store.entity_types()
    }

    fn after_write(&self) {
        {
            let mut n = self.inner.writes.lock();
            *n += 1;
        }
        self.inner.wake.notify_all();
        if self.inner.events.has_subscribers() {
            if let Ok(s) = self.status() {
                self.inner.events.emit(NodeEvent::StatusChanged(s));
            }
        }
    }

    // ---- status, failed, conflicts ----

    pub fn status(&self) -> Result<Status, NodeError> {
        self.inner.store.status()
    }

    /// Changes the server rejected, with its message.
    pub fn failed(&self) -> Result<Vec<FailedChange>, NodeError> {
        self.inner.store.failed()
    }

    /// Queues a failed change again (by outbox id or change id).
    pub fn retry_failed(&self, key: &str) -> Result<QueuedChange, NodeError> {
        let q = self.inner.store.retry_failed(key)?;
        self.after_write();
        Ok(q)
    }

    /// Discards a failed change; the local entity returns to the last known server state.
    pub fn drop_failed(&self, key: &str) -> Result<FailedChange, NodeError> {
        let f = self.inner.store.drop_failed(key)?;
        self.emit_status();
        Ok(f)
    }

    /// Conflicts the server reported for this node's changes, newest first.
    pub fn conflicts(&self) -> Result<Vec<ConflictRecord>, NodeError> {
        self.inner.store.conflicts()
    }

    /// This node's conflicts as the server's history shows them (needs the server).
    pub fn server_conflicts(&self) -> Result<Vec<ConflictRow>, NodeError> {
        let c = self.config()?;
        self.inner
            .transport
            .conflicts(&c.server_url, &c.auth_token, &c.node_id)
            .map(|l| l.conflicts)
            .map_err(|e| transport_error(&c.server_url, e))
    }

    // ---- events and hooks ----

    /// A channel of [`NodeEvent`]s; drop the receiver to unsubscribe.
    pub fn subscribe(&self) -> std::sync::mpsc::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Replaces the conflict hook (default: [`KeepLocal`]).
    pub fn set_conflict_hook(&self, hook: Arc<dyn ConflictHook>) {
        *self.inner.hook.write() = hook;
    }

    fn emit_status(&self) {
        if self.inner.events.has_subscribers() {
            if let Ok(s) = self.status() {
                self.inner.events.emit(NodeEvent::StatusChanged(s));
            }
        }
    }

    /// Asks a running sync or daemon to stop at the next safe point (between exchanges, or
    /// during a retry wait). Everything already done stays done.
    pub fn request_stop(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let _guard = self.inner.writes.lock();
        self.inner.wake.notify_all();
    }

    /// Asks a running daemon to sync at once, even while it backs off from an unreachable
    /// server (a UI's "sync now" button: the user knows the network is back before the probe
    /// does). Without a daemon the request waits for the next one to start.
    pub fn request_sync(&self) {
        self.inner.sync_requested.store(true, Ordering::SeqCst);
        let _guard = self.inner.writes.lock();
        self.inner.wake.notify_all();
    }

    /// Wakes a running daemon to look at its schedule again (without asking for a sync).
    fn wake_daemon(&self) {
        let _guard = self.inner.writes.lock();
        self.inner.wake.notify_all();
    }

    /// Clears a stop request so the node can sync again.
    pub fn clear_stop(&self) {
        self.inner.stop.store(false, Ordering::SeqCst);
    }

    fn stop_requested(&self) -> bool {
        self.inner.stop.load(Ordering::SeqCst)
    }
}

/// The HTTP transport of a stored configuration: its timeout, and its private CA when one is
/// set (read now, so a replaced CA file counts from the next open).
pub(crate) fn http_transport(
    packet_timeout: i64,
    ca_cert: Option<&str>,
) -> Result<Arc<dyn Transport>, NodeError> {
    let timeout = Duration::from_secs(packet_timeout.max(1) as u64);
    Ok(Arc::new(match ca_cert {
        Some(path) => HttpTransport::with_ca_cert(timeout, Path::new(path))?,
        None => HttpTransport::new(timeout),
    }))
}

fn check_key(entity_type: &str, entity_uuid: &str) -> Result<(), NodeError> {
    let invalid = |e: starsync_protocol::InvalidId| NodeError::Invalid(e.message);
    EntityType::parse(entity_type).map_err(invalid)?;
    EntityId::parse(entity_uuid).map_err(invalid)?;
    Ok(())
}

/// Maps a transport error of an exchange-less call.
pub(crate) fn transport_error(url: &str, e: TransportError) -> NodeError {
    match e {
        TransportError::Network(m) => NodeError::Unreachable {
            url: url.to_string(),
            message: m,
        },
        TransportError::Certificate(m) => NodeError::Certificate {
            url: url.to_string(),
            message: m,
        },
        TransportError::Http { status, body } => NodeError::Rejected {
            status,
            message: body.message,
            code: body.error,
        },
    }
}

pub(crate) fn normalize_url(url: &str) -> Result<String, NodeError> {
    let u = url.trim().trim_end_matches('/');
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 10 {
        return Err(NodeError::Invalid(format!(
            "server URL {url:?} must look like http://host:port"
        )));
    }
    Ok(u.to_string())
}
