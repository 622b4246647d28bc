//! The wire protocol of PROTOCOL.md: packet types, the gzip/hex codec and validation.
//!
//! Pure code, no I/O beyond in-memory buffers: both the server and the node client use it, so
//! they can never disagree about what a packet looks like.

#![forbid(unsafe_code)]

pub mod api;
pub mod codec;
pub mod data;
pub mod fields;
pub mod files;
pub mod packet;
pub mod validate;
pub mod vocab;

pub use codec::{decode_hex_packet, decode_packet_bytes, encode_packet, CodecError};
pub use data::EntityData;
pub use packet::{Change, Operation, Packet, PACKET_FORMAT};
pub use validate::{
    validate_change, validate_data, validate_entity_data, validate_text, ChangeRejection,
    ClockRule, ValidChange, MAX_DATA_DEPTH,
};
pub use vocab::{
    echo_field, EntityId, EntityType, ErrorCode, InvalidId, NodeCode, OutboxState, RejectReason,
    Resolution, Strategy, Winner,
};

/// Largest integer a packet may carry: JSON numbers beyond 2^53 − 1 lose precision in
/// JavaScript clients, so the protocol forbids them outright.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Formats a timestamp the way every starsync timestamp is written: RFC 3339, UTC, `Z` suffix,
/// microsecond precision and fixed width, so stored timestamps also sort as text.
pub fn format_ts(ts: chrono::DateTime<chrono::Utc>) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Current time in the starsync timestamp format.
pub fn now_ts() -> String {
    format_ts(chrono::Utc::now())
}

/// Parses any RFC 3339 timestamp (any offset) into UTC.
pub fn parse_ts(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// True when `s` is a lowercase hyphenated UUID, the form of node ids and server-made ids
/// (entity ids are wider: [`EntityId`]).
pub fn is_canonical_uuid(s: &str) -> bool {
    s.len() == 36
        && uuid::Uuid::parse_str(s)
            .map(|u| u.hyphenated().to_string() == s)
            .unwrap_or(false)
}

/// Major component of a semantic version string (`"1.2.3"` → `"1"`).
pub fn schema_major(v: &str) -> &str {
    v.split('.').next().unwrap_or(v).trim()
}
