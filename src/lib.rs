//! starsync: a star-topology replication server for offline-first desktop applications.
//!
//! Layers, each in one place: [`store`] (diesel schema, models, queries), [`engine`] (the
//! rules of PROTOCOL.md), [`api`] (thin actix handlers), [`startup`] (building the server on a
//! bound listener), [`cli`]. The wire protocol is the `starsync-protocol` crate, shared with the
//! desktop node library (`starsync-node`), which never depends on this crate.

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod startup;
pub mod store;
pub mod tls;
