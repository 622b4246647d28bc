//! `starsync-node config`: Show the node's settings, or change one (`config KEY VALUE`).

use super::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Setting to change: server_url, packet_timeout, max_retries, batch_size, max_packet_bytes, schema_version, name, token, ca_cert (a PEM file of the server's private CA; "" for the public roots).
    pub key: Option<String>,
    /// Its new value.
    pub value: Option<String>,
}

pub fn run(args: Args, dir: &Path, j: bool) -> Result<ExitCode, NodeError> {
    let Args { key, value } = args;
    // Settings are local: open without the stored CA, so a CA file that went missing can be
    // replaced here (a plain transport, never used by this command).
    let node = Node::open_with(
        dir,
        Some(std::sync::Arc::new(starsync_node::HttpTransport::new(
            std::time::Duration::from_secs(1),
        ))),
        starsync_node::NodeOptions::default(),
    )?;
    let info = match (key, value) {
        (Some(k), Some(v)) => node.set_setting(&k, &v)?,
        (None, None) => node.info()?,
        _ => {
            return Err(NodeError::Invalid(
                "give both a setting and a value: `config KEY VALUE`".into(),
            ))
        }
    };
    print(j, &info, || {
        serde_json::to_string_pretty(&info).unwrap_or_default()
    });
    Ok(ExitCode::SUCCESS)
}
