//! Administrative operations: registration, node management, conflict resolution and direct
//! entity writes by the admin, one file per kind (`nodes`, `conflicts`, `entities`).

pub(crate) mod conflicts;
pub mod entities;
pub(crate) mod nodes;

/// Version string reported to registering nodes.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
