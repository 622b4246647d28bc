//! Setting a node up: registering it with the server, or attaching to an existing
//! registration. Needs the server once; everything after works offline.

use std::path::Path;
use std::sync::Arc;

use starsync_protocol::api::RegisterRequest;
use starsync_protocol::{self, NodeCode};

use crate::store::{ConfigRow, Store};
use crate::{
    http_transport, normalize_url, InitOptions, Node, NodeError, NodeOptions, Transport,
    TransportError, DB_FILE, DEFAULT_MAX_PACKET_BYTES,
};

impl Node {
    /// Sets up a node in `dir`: registers it with the server (or attaches to an existing
    /// registration) and stores what it needs. Needs the server once; everything after works
    /// offline.
    pub fn init(dir: impl AsRef<Path>, opts: InitOptions) -> Result<Node, NodeError> {
        Self::init_with(dir, opts, None, NodeOptions::default())
    }

    /// [`Node::init`] with a custom transport (None: HTTP) and tuning.
    pub fn init_with(
        dir: impl AsRef<Path>,
        opts: InitOptions,
        transport: Option<Arc<dyn Transport>>,
        options: NodeOptions,
    ) -> Result<Node, NodeError> {
        let dir = dir.as_ref().to_path_buf();
        let server_url = normalize_url(&opts.server_url)?;
        NodeCode::parse(&opts.code).map_err(|e| NodeError::Invalid(e.message))?;
        if opts.packet_timeout < 1 || opts.batch_size < 1 || opts.max_retries < 0 {
            return Err(NodeError::Invalid(
                "packet timeout and batch size must be at least 1, max retries at least 0".into(),
            ));
        }
        let db = dir.join(DB_FILE);
        if db.exists() {
            let existing = Store::open(&db)?.config()?;
            if let Some(cfg) = existing {
                if !opts.force {
                    return Err(NodeError::AlreadyInitialized {
                        dir,
                        code: cfg.code,
                    });
                }
            }
        }
        let ca_cert = opts
            .ca_cert
            .as_deref()
            .map(crate::transport::checked_ca_path)
            .transpose()?;
        let transport = match transport {
            Some(t) => t,
            None => http_transport(opts.packet_timeout, ca_cert.as_deref())?,
        };
        let unreachable = |e: TransportError| match e {
            TransportError::Certificate(m) => NodeError::Certificate {
                url: server_url.clone(),
                message: m,
            },
            TransportError::Network(m) => NodeError::Unreachable {
                url: server_url.clone(),
                message: m,
            },
            TransportError::Http { status, body } => NodeError::Rejected {
                status,
                message: body.message,
                code: body.error,
            },
        };
        let now = starsync_protocol::now_ts();
        let (cfg, sent, received) = match &opts.attach {
            None => {
                let resp = transport
                    .register(
                        &server_url,
                        opts.admin_token.as_deref(),
                        &RegisterRequest {
                            code: opts.code.clone(),
                            name: opts.name.clone(),
                            description: opts.description.clone(),
                            scopes: None,
                            types: None,
                        },
                    )
                    .map_err(unreachable)?;
                let cfg = ConfigRow {
                    id: 1,
                    server_url: server_url.clone(),
                    node_id: resp.node_id,
                    auth_token: resp.auth_token,
                    server_node_id: resp.server_node_id,
                    server_code: "server".into(),
                    code: opts.code.clone(),
                    name: opts.name.clone().unwrap_or_else(|| opts.code.clone()),
                    schema_version: opts.schema_version.clone().unwrap_or(resp.schema_version),
                    packet_timeout: opts.packet_timeout,
                    max_retries: opts.max_retries,
                    batch_size: opts.batch_size,
                    max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
                    created_at: now,
                    ca_cert: ca_cert.clone(),
                };
                (cfg, 0, 0)
            }
            Some((node_id, token)) => {
                let status = transport
                    .node_status(&server_url, token, node_id)
                    .map_err(unreachable)?;
                let server_node_id =
                    match (&opts.server_node_id, &opts.admin_token) {
                        (Some(id), _) => id.clone(),
                        (None, Some(admin)) => {
                            transport
                                .server_status(&server_url, admin)
                                .map_err(unreachable)?
                                .server_node_id
                        }
                        (None, None) => return Err(NodeError::Invalid(
                            "attaching needs the server's node id: pass --server-node-id (shown \
                             by `starsync status` on the server) or --admin-token"
                                .into(),
                        )),
                    };
                let cfg = ConfigRow {
                    id: 1,
                    server_url: server_url.clone(),
                    node_id: node_id.clone(),
                    auth_token: token.clone(),
                    server_node_id,
                    server_code: "server".into(),
                    code: status.node_code.clone(),
                    name: opts.name.clone().unwrap_or(status.node_name.clone()),
                    schema_version: opts
                        .schema_version
                        .clone()
                        .unwrap_or_else(|| "1.0.0".into()),
                    packet_timeout: opts.packet_timeout,
                    max_retries: opts.max_retries,
                    batch_size: opts.batch_size,
                    max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
                    created_at: now,
                    ca_cert: ca_cert.clone(),
                };
                (cfg, status.received_packet_no, status.acked_packet_no)
            }
        };
        // Only now that the server accepted the registration (or attachment) is the old local
        // database replaced: a failed `init --force` leaves it untouched.
        if db.exists() {
            for suffix in ["", "-wal", "-shm"] {
                let p = dir.join(format!("{DB_FILE}{suffix}"));
                if p.exists() {
                    std::fs::remove_file(&p)?;
                }
            }
        }
        let store = Store::open(&db)?;
        store.initialize(&cfg, sent, received)?;
        restrict_permissions(&db);
        Ok(Self::from_parts(dir, store, transport, options))
    }
}

/// The database holds the node's token: keep it private to its owner.
fn restrict_permissions(db: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(db, std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = db;
}
