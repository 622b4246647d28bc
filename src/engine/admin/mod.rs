//! Administrative operations: registration, node management, conflict resolution and direct
//! entity writes by the admin, one file per kind (`nodes`, `conflicts`, `entities`).

mod conflicts;
pub mod entities;
mod nodes;

/// Version string reported to registering nodes.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
