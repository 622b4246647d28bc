//! One module per subcommand: its arguments and what it does.

pub mod config;
pub mod conflicts;
pub mod create;
pub mod daemon;
pub mod delete;
pub mod export;
pub mod failed;
pub mod get;
pub mod import;
pub mod init;
pub mod list;
pub mod put;
pub mod queue;
pub mod status;
pub mod sync;

/// What every subcommand uses.
pub mod prelude {
    pub(crate) use std::path::Path;
    pub(crate) use std::process::ExitCode;

    pub(crate) use serde_json::json;
    pub(crate) use starsync_node::{InitOptions, Node, NodeError};

    pub(crate) use crate::{print, read_json};
}
