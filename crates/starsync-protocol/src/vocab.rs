//! The typed vocabulary both sides share: error codes, rejection reasons, conflict
//! resolutions, outbox states, and ids that are validated once, in `parse`.
//!
//! The wire carries these as strings (PROTOCOL §5, §6, §8); in code they are enums, so a
//! misspelt code is a compile error instead of a silently failed comparison, and the node can
//! `match` on what the server said.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements `as_str`, `Display`, `FromStr` and string serde for a unit-variant enum whose
/// wire names are listed once, here.
macro_rules! wire_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        kind: stringify!($name),
                        name: s.chars().take(64).collect(),
                    }),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        /// A string enum of the wire names, so the API description lists every value.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                string_enum(Self::ALL.iter().map(|v| v.as_str().to_string()))
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }
    };
}

/// The schema of a string restricted to `values`.
#[cfg(feature = "openapi")]
fn string_enum(
    values: impl Iterator<Item = String>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

/// A wire name that is not part of the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {name:?}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
}

wire_enum! {
    /// The `error` of every error answer (PROTOCOL §6). The HTTP status of each is decided in
    /// one place on the server (`api/error.rs`).
    pub enum ErrorCode {
        InvalidRequest => "invalid_request",
        InvalidPacket => "invalid_packet",
        /// On a rejected change inside an accepted packet (`errors[].error`).
        InvalidChange => "invalid_change",
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        NotFound => "not_found",
        MethodNotAllowed => "method_not_allowed",
        CodeTaken => "code_taken",
        PacketGap => "packet_gap",
        SchemaMismatch => "schema_mismatch",
        PacketTooLarge => "packet_too_large",
        PayloadTooLarge => "payload_too_large",
        /// An admin write whose entity `data` is over the server's entity size limit.
        EntityTooLarge => "entity_too_large",
        /// The request body did not arrive in time (a stalled or too slow upload: 408).
        RequestTimeout => "request_timeout",
        InvalidAck => "invalid_ack",
        AlreadyResolved => "already_resolved",
        /// A WatermelonDB push (PROTOCOL §11.1) carries a record that changed on the hub after
        /// the push's `last_pulled_at`: nothing was applied; the client pulls, merges, pushes.
        Conflict => "conflict",
        DatabaseUnavailable => "database_unavailable",
        /// `/health`: the database answers, but this process's last write to it failed (a full
        /// disk, a read-only file system); reported until a write succeeds again.
        DatabaseWriteFailed => "database_write_failed",
        InternalError => "internal_error",
        /// `GET /api/sync/events`: the server's limit of open streams is reached (503); poll
        /// meanwhile and try again later.
        TooManyStreams => "too_many_streams",
        /// A request carries more changes than the server takes at once (413): split it.
        TooManyChanges => "too_many_changes",
        /// A code this version does not know (a newer server); the message still explains it.
        Unknown => "unknown",
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    /// Lenient: an unknown code becomes [`ErrorCode::Unknown`], so a node keeps working against
    /// a newer server that added a code.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(s.parse().unwrap_or(ErrorCode::Unknown))
    }
}

wire_enum! {
    /// Why one change was rejected (`errors[].reason`), finer than its `invalid_change`.
    #[derive(Default)]
    pub enum RejectReason {
        InvalidEntityType => "invalid_entity_type",
        InvalidEntityUuid => "invalid_entity_uuid",
        InvalidChangeId => "invalid_change_id",
        UnknownOperation => "unknown_operation",
        DataNotObject => "data_not_object",
        /// `data` is over the server's entity size limit (`server.max_entity_bytes`): larger
        /// entities could not always be delivered to other nodes.
        EntityTooLarge => "entity_too_large",
        /// `data` that could not be read back as written: a number beyond the range of a
        /// double, a lone UTF-16 surrogate, nesting deeper than
        /// [`MAX_DATA_DEPTH`](crate::validate::MAX_DATA_DEPTH), or a key twice in one object.
        InvalidData => "invalid_data",
        /// Not an RFC 3339 timestamp, or further ahead of the server's clock than it allows.
        InvalidUpdatedAt => "invalid_updated_at",
        /// `base_version` ahead of the server's version.
        VersionAhead => "version_ahead",
        /// A node change to a server-only type.
        ImmutableType => "immutable_type",
        /// `fields` (PROTOCOL §5.1) that cannot be applied: on an INSERT or DELETE, or naming a
        /// field twice.
        InvalidFields => "invalid_fields",
        /// The database refused to store this change although it passed every check (the
        /// rest of the packet was applied; details are in the server log).
        DatabaseRefused => "database_refused",
        /// The entity is outside the node's scopes, before or after the change (PROTOCOL §10);
        /// the same message whether the entity exists or not.
        ForbiddenScope => "forbidden_scope",
        /// A type the node does not synchronize (its `types`).
        ForbiddenType => "forbidden_type",
        /// The data names no scope and the node has several (or `*`): it must name one.
        ScopeRequired => "scope_required",
        /// The scope field holds something other than a string of 1–128 characters (or `*`).
        InvalidScope => "invalid_scope",
        /// A reason this version does not know (a newer server), or none given.
        #[default]
        Unknown => "unknown",
    }
}

impl<'de> Deserialize<'de> for RejectReason {
    /// Lenient like [`ErrorCode`]; a missing reason (older servers) is handled by the field's
    /// `#[serde(default)]`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(s.parse().unwrap_or(RejectReason::Unknown))
    }
}

wire_enum! {
    /// How a conflict was decided (PROTOCOL §5): the configured strategies, plus `delete_wins`,
    /// which the server applies to deletes on its own.
    pub enum Strategy {
        ServerWins => "server_wins",
        TimestampWins => "timestamp_wins",
        ClientWins => "client_wins",
        Manual => "manual",
        DeleteWins => "delete_wins",
    }
}

impl<'de> Deserialize<'de> for Strategy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

wire_enum! {
    /// Which side a conflict's resolution kept.
    pub enum Winner {
        /// The server's state stayed.
        Server => "server",
        /// The node's change was applied.
        Client => "client",
        /// `manual`, not resolved yet.
        Pending => "pending",
        /// Resolved by an admin.
        Admin => "admin",
    }
}

/// A conflict's resolution, written `<strategy>:<winner>` in history rows and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resolution {
    pub strategy: Strategy,
    pub winner: Winner,
}

impl Resolution {
    pub fn new(strategy: Strategy, winner: Winner) -> Resolution {
        Resolution { strategy, winner }
    }

    /// Decided at once (every strategy but an unresolved `manual`).
    pub fn is_automatic(self) -> bool {
        self.winner != Winner::Pending
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.strategy, self.winner)
    }
}

impl FromStr for Resolution {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        let bad = || UnknownName {
            kind: "Resolution",
            name: s.chars().take(64).collect(),
        };
        let (strategy, winner) = s.split_once(':').ok_or_else(bad)?;
        Ok(Resolution {
            strategy: strategy.parse().map_err(|_| bad())?,
            winner: winner.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for Resolution {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Every `<strategy>:<winner>` pair, as an enum of strings.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Resolution {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_enum(
            Strategy::ALL
                .iter()
                .flat_map(|s| Winner::ALL.iter().map(move |w| Resolution::new(*s, *w)))
                .map(|r| r.to_string()),
        )
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Resolution {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Resolution")
    }
}

impl<'de> Deserialize<'de> for Resolution {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

wire_enum! {
    /// Where a change stands in a node's outbox (PROTOCOL §8).
    pub enum OutboxState {
        /// Waiting for a packet.
        Pending => "pending",
        /// Numbered into a packet: immutable until acknowledged.
        InFlight => "in_flight",
        /// Rejected by the server; kept, with its message, until the user retries or drops it.
        Failed => "failed",
    }
}

/// An id or name that breaks its rule; the message says the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidId {
    pub reason: RejectReason,
    pub message: String,
}

/// At most this much of a refused value is echoed back in a message.
const ECHO_CHARS: usize = 80;

/// A refused value for a message: at most [`ECHO_CHARS`] characters, `…` marking a cut.
fn echo(s: &str) -> String {
    cut(s, ECHO_CHARS)
}

/// Most characters of a change's own field (`change_id`, `entity_type`, `entity_uuid`) echoed in
/// a per-change error. Every valid value is at most this long, so only invalid ones are cut.
pub const ECHO_FIELD_CHARS: usize = 128;

/// A change's field as a per-change error echoes it: unchanged up to [`ECHO_FIELD_CHARS`]
/// characters; longer, its first 127 characters and `…`. Why: an error answer (and the report
/// kept to repeat it to a duplicate) must not grow with a hostile value's size.
pub fn echo_field(s: &str) -> String {
    cut(s, ECHO_FIELD_CHARS)
}

/// At most `max` characters of `s`, the last one `…` when it was cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let mut out: String = s.chars().take(max - 1).collect();
            out.push('…');
            out
        }
    }
}

/// An entity type name: `^[A-Za-z][A-Za-z0-9_]{0,63}$` (PROTOCOL §1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityType(String);

impl EntityType {
    pub fn parse(s: &str) -> Result<EntityType, InvalidId> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 64
            && b[0].is_ascii_alphabetic()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if ok {
            Ok(EntityType(s.to_string()))
        } else {
            Err(InvalidId {
                reason: RejectReason::InvalidEntityType,
                message: format!(
                    "entity type {:?} must match ^[A-Za-z][A-Za-z0-9_]{{0,63}}$",
                    echo(s)
                ),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An entity id (the packet field `entity_uuid`, named so for compatibility): any string
/// matching `^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$` (PROTOCOL §1), case-sensitive.
///
/// Why not only UUIDs: other clients' ids (WatermelonDB's 16-character ids, `task-1`,
/// `ns:thing.1`) appear inside other records as foreign keys, so the hub must keep them as they
/// are. A value shaped like a UUID (8-4-4-4-12 hex digits) must be lowercase: otherwise one
/// entity could hide under two spellings of the same UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId(String);

/// Longest entity id, in characters (all ASCII, so also bytes).
pub const MAX_ENTITY_ID_LEN: usize = 128;

impl EntityId {
    pub fn parse(s: &str) -> Result<EntityId, InvalidId> {
        let b = s.as_bytes();
        let invalid = |why: String| InvalidId {
            reason: RejectReason::InvalidEntityUuid,
            message: format!("entity id {:?} {why}", echo(s)),
        };
        if b.is_empty() {
            return Err(invalid("is empty; an id is 1-128 characters".into()));
        }
        if b.len() > MAX_ENTITY_ID_LEN {
            return Err(invalid(format!(
                "is {} characters long; an id is at most {MAX_ENTITY_ID_LEN}",
                s.chars().count()
            )));
        }
        let allowed = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-');
        if !b[0].is_ascii_alphanumeric() || !b.iter().all(allowed) {
            return Err(invalid(
                "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$ (letters, digits and . _ : -, \
                 starting with a letter or digit)"
                    .into(),
            ));
        }
        if is_uuid_shaped(b) && b.iter().any(u8::is_ascii_uppercase) {
            return Err(invalid(format!(
                "is a UUID with uppercase letters; UUID ids must be lowercase ({})",
                s.to_ascii_lowercase()
            )));
        }
        Ok(EntityId(s.to_string()))
    }

    /// A new random id (UUID v4).
    pub fn new_random() -> EntityId {
        EntityId(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 8-4-4-4-12 hex digits, in any case.
fn is_uuid_shaped(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A node's human-readable code: 1–64 characters of `A-Z a-z 0-9 . _ -` (PROTOCOL §1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeCode(String);

impl NodeCode {
    pub fn parse(s: &str) -> Result<NodeCode, InvalidId> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-');
        if ok {
            Ok(NodeCode(s.to_string()))
        } else {
            Err(InvalidId {
                reason: RejectReason::Unknown,
                message: format!(
                    "node code {:?} must be 1-64 characters of A-Z a-z 0-9 . _ -",
                    echo(s)
                ),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! id_traits {
    ($($t:ident),+) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    )+};
}
id_traits!(EntityType, EntityId, NodeCode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(c.as_str().parse::<ErrorCode>().unwrap(), *c);
            assert_eq!(serde_json::to_string(c).unwrap(), format!("\"{c}\""));
        }
        for r in RejectReason::ALL {
            assert_eq!(r.as_str().parse::<RejectReason>().unwrap(), *r);
        }
        let e: ErrorCode = serde_json::from_str("\"a_code_from_the_future\"").unwrap();
        assert_eq!(e, ErrorCode::Unknown);
        for s in OutboxState::ALL {
            assert_eq!(s.as_str().parse::<OutboxState>().unwrap(), *s);
        }
    }

    #[test]
    fn resolutions_parse_and_print() {
        let r: Resolution = "timestamp_wins:client".parse().unwrap();
        assert_eq!(r, Resolution::new(Strategy::TimestampWins, Winner::Client));
        assert_eq!(r.to_string(), "timestamp_wins:client");
        assert!(!Resolution::new(Strategy::Manual, Winner::Pending).is_automatic());
        assert!("manual".parse::<Resolution>().is_err());
        assert!("manual:nobody".parse::<Resolution>().is_err());
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"timestamp_wins:client\"");
        assert_eq!(serde_json::from_str::<Resolution>(&json).unwrap(), r);
    }

    #[test]
    fn entity_type_pattern() {
        assert!(EntityType::parse("Estimate").is_ok());
        assert!(EntityType::parse("a_1").is_ok());
        assert!(EntityType::parse(&"a".repeat(64)).is_ok());
        for bad in ["1abc", "has-dash", "", &"a".repeat(65)] {
            let e = EntityType::parse(bad).unwrap_err();
            assert_eq!(e.reason, RejectReason::InvalidEntityType);
        }
    }

    #[test]
    fn entity_ids_follow_the_pattern() {
        for ok in [
            "3f2b8c1e-5d4a-4e6f-9a7b-1c2d3e4f5a6b",
            "task-1",
            "a1B2c3D4e5F6g7H8",
            "ns:thing.1",
            "0",
            "A_b.c:d-e",
            // Not UUID-shaped (a letter beyond f), so its case is free.
            "3G2B8C1E-5D4A-4E6F-9A7B-1C2D3E4F5A6B",
            &"x".repeat(MAX_ENTITY_ID_LEN),
        ] {
            assert_eq!(EntityId::parse(ok).unwrap().as_str(), ok);
        }
        assert!(EntityId::parse(EntityId::new_random().as_str()).is_ok());
        for (bad, says) in [
            ("", "is empty"),
            ("-x", "must match"),
            (".x", "must match"),
            ("_x", "must match"),
            ("a/b", "must match"),
            ("a b", "must match"),
            ("é", "must match"),
            ("a\0", "must match"),
            (&"x".repeat(MAX_ENTITY_ID_LEN + 1), "at most 128"),
            ("3F2B8C1E-5D4A-4E6F-9A7B-1C2D3E4F5A6B", "must be lowercase"),
            ("3f2b8c1e-5d4a-4e6f-9a7b-1c2d3e4f5a6B", "must be lowercase"),
        ] {
            let e = EntityId::parse(bad).unwrap_err();
            assert_eq!(e.reason, RejectReason::InvalidEntityUuid, "{bad:?}");
            assert!(e.message.contains(says), "{bad:?}: {}", e.message);
        }
        // Ids are case-sensitive: two spellings are two ids.
        assert_ne!(EntityId::parse("Task-1"), EntityId::parse("task-1"));
    }

    #[test]
    fn node_code_pattern() {
        assert!(NodeCode::parse("DESKTOP-USER-1").is_ok());
        assert!(NodeCode::parse("a.b_c").is_ok());
        assert!(NodeCode::parse("with space").is_err());
        assert!(NodeCode::parse("").is_err());
        assert!(NodeCode::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn echoed_values_are_truncated() {
        let e = EntityType::parse(&"-".repeat(1 << 20)).unwrap_err();
        assert!(e.message.len() < 200, "{}", e.message.len());
        assert!(e.message.contains('…'), "{}", e.message);
    }

    #[test]
    fn echoed_fields_keep_valid_values_and_cut_long_ones() {
        let valid = "a".repeat(ECHO_FIELD_CHARS);
        assert_eq!(echo_field(&valid), valid);
        let long = "é".repeat(1 << 20);
        let cut = echo_field(&long);
        assert_eq!(cut.chars().count(), ECHO_FIELD_CHARS);
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
    }
}
