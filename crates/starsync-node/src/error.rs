//! The node's one error type.

use std::path::PathBuf;

use starsync_protocol::ErrorCode;

/// Everything that can go wrong in the node. Messages say what happened; what to do about it
/// depends on the program embedding the node (the `starsync-node` CLI adds its commands), so
/// the variants carry what a program needs to decide: the server's [`ErrorCode`], the path.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no node is set up in {dir}")]
    NotInitialized { dir: PathBuf },
    #[error("a node ({code}) is already set up in {dir}")]
    AlreadyInitialized { dir: PathBuf, code: String },
    #[error("cannot open the node database {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("local database error: {0}")]
    Db(#[from] diesel::result::Error),
    #[error(
        "server {url} is unreachable: {message} (nothing is lost; sync again when it is back)"
    )]
    Unreachable { url: String, message: String },
    /// The server's TLS certificate is not trusted (unknown CA, wrong name, expired): a
    /// configuration problem that waiting does not fix, so not retryable.
    #[error("the TLS certificate of {url} is not trusted: {message}")]
    Certificate { url: String, message: String },
    #[error("the server refused: {message} ({status} {code})")]
    Rejected {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl NodeError {
    /// True when trying again later may succeed without changing anything (network trouble).
    pub fn is_retryable(&self) -> bool {
        matches!(self, NodeError::Unreachable { .. })
    }
}
