//! How a node is set up ([`InitOptions`]) and tuned ([`NodeOptions`]).

use std::path::PathBuf;
use std::time::Duration;

/// Defaults that match the server's `[sync]` section (config/default.toml).
pub const DEFAULT_PACKET_TIMEOUT: i64 = 30;
pub const DEFAULT_MAX_RETRIES: i64 = 3;
pub const DEFAULT_BATCH_SIZE: i64 = 100;
pub const DEFAULT_MAX_PACKET_BYTES: i64 = 64 * 1024 * 1024;

/// How to set up a node: register it, or attach to an existing registration.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub server_url: String,
    pub code: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Admin token for registration (not needed when the server runs open registration).
    pub admin_token: Option<String>,
    /// Attach to an existing registration: (node id, node token).
    pub attach: Option<(String, String)>,
    /// The server's node id (needed to attach without an admin token).
    pub server_node_id: Option<String>,
    /// Application schema version this node speaks (default: what the server says, or 1.0.0).
    pub schema_version: Option<String>,
    pub packet_timeout: i64,
    pub max_retries: i64,
    pub batch_size: i64,
    /// Replace an existing node in the same directory (its unsynced changes are lost).
    pub force: bool,
    /// A PEM file of the private CA that signed the server's certificate, trusted instead of
    /// the public roots; stored (as an absolute path) so every later sync uses it.
    pub ca_cert: Option<PathBuf>,
}

impl InitOptions {
    /// Register a new node with this code.
    pub fn register(server_url: &str, code: &str) -> InitOptions {
        InitOptions {
            server_url: server_url.to_string(),
            code: code.to_string(),
            name: None,
            description: None,
            admin_token: None,
            attach: None,
            server_node_id: None,
            schema_version: None,
            packet_timeout: DEFAULT_PACKET_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            batch_size: DEFAULT_BATCH_SIZE,
            force: false,
            ca_cert: None,
        }
    }

    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_string());
        self
    }

    /// Trust this private CA (a PEM file) instead of the public roots.
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
}

/// Tuning that is not stored in the database (mostly for tests and embedding programs).
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// First delay between immediate retries of one exchange; doubles up to `retry_max_delay`.
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(8),
        }
    }
}
