//! `starsync-node init`: Register this node with a server (or attach to an existing registration).

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's base URL, like http://127.0.0.1:8080.
    #[arg(long)]
    pub server: String,
    /// The node's unique code (1-64 of A-Z a-z 0-9 . _ -). Taken from the server when
    /// attaching.
    #[arg(long, required_unless_present = "node_id")]
    pub code: Option<String>,
    /// Human-readable name (default: the code).
    #[arg(long)]
    pub name: Option<String>,
    /// Free text the server shows in node lists.
    #[arg(long)]
    pub description: Option<String>,
    /// Admin token for registration (unless the server has open registration).
    #[arg(long, env = "STARSYNC_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Attach to an existing registration: its node token (with --node-id).
    #[arg(
        long,
        requires = "node_id",
        env = "STARSYNC_NODE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Attach to an existing registration: its node id (with --token).
    #[arg(long, requires = "token")]
    pub node_id: Option<String>,
    /// The server's node id (needed to attach without --admin-token).
    #[arg(long)]
    pub server_node_id: Option<String>,
    /// Application schema version (default: the server's).
    #[arg(long)]
    pub schema_version: Option<String>,
    /// HTTP timeout of one exchange, seconds (like sync.packet_timeout).
    #[arg(long, default_value_t = starsync_node::DEFAULT_PACKET_TIMEOUT)]
    pub packet_timeout: i64,
    /// Immediate retries of one exchange before a sync is reported failed.
    #[arg(long, default_value_t = starsync_node::DEFAULT_MAX_RETRIES)]
    pub max_retries: i64,
    /// Most changes in one packet.
    #[arg(long, default_value_t = starsync_node::DEFAULT_BATCH_SIZE)]
    pub batch_size: i64,
    /// PEM file of the private CA that signed an https server's certificate. Trusted instead
    /// of the public roots, and stored so later syncs use it (`config ca_cert FILE` changes it).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Replace a node already set up in this data directory (its unsynced changes are lost).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args {
        server,
        code,
        name,
        description,
        admin_token,
        token,
        node_id,
        server_node_id,
        schema_version,
        packet_timeout,
        max_retries,
        batch_size,
        ca_cert,
        force,
    } = args;
    let opts = InitOptions {
        server_url: server,
        code: code.unwrap_or_else(|| "attached".into()),
        name,
        description,
        admin_token,
        attach: node_id.zip(token),
        server_node_id,
        schema_version,
        packet_timeout,
        max_retries,
        batch_size,
        force,
        ca_cert,
    };
    let node = Node::init(dir, opts)?;
    let info = node.info()?;
    print(j, &info, || {
        format!(
            "node {} ({}) set up in {}\nserver {} (server node {})\nnext: `starsync-node sync`",
            info.code, info.node_id, info.data_dir, info.server_url, info.server_node_id
        )
    });
    Ok(ExitCode::SUCCESS)
}
