//! starsync: a star-topology replication server for offline-first desktop applications.
//!
//! Layers, each in one place: [`protocol`] (packet types, codec, validation; pure), [`store`]
//! (diesel schema, models, queries), [`engine`] (the rules of PROTOCOL.md), [`api`] (thin actix
//! handlers), [`startup`] (building the server on a bound listener), [`cli`]; [`node`] is the
//! desktop node client (library and `starsync-node`).

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod node;
pub mod protocol;
pub mod startup;
pub mod store;
