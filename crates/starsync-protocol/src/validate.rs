//! Per-change rules of PROTOCOL §2: a well-formed change that breaks one of them is rejected on
//! its own, and the rest of the packet is applied.
//!
//! The rules on text and on `data` are also used by every other way in (registration, admin
//! entity writes, conflict resolution), so each rule is written once, here.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::packet::{Change, Operation};
use super::vocab::{EntityId, EntityType, InvalidId, RejectReason};

/// Deepest nesting of objects and arrays in an entity's `data` (the object itself is level 1).
///
/// Why 64: every reader gets `data` inside an envelope (a packet, a conflict listing, an admin
/// answer), and common JSON parsers — serde_json included — refuse more than 128 levels in
/// total. Data nested deeper was stored and then read back as `null`; 64 leaves room for any
/// envelope.
pub const MAX_DATA_DEPTH: usize = 64;

/// A change the server refuses, with a sentence for the user of the node.
#[derive(Debug, Clone)]
pub struct ChangeRejection {
    /// Machine-readable reason (the `error` field stays `invalid_change`; this is finer).
    pub reason: RejectReason,
    pub message: String,
}

impl ChangeRejection {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        ChangeRejection {
            reason,
            message: message.into(),
        }
    }
}

impl From<InvalidId> for ChangeRejection {
    fn from(e: InvalidId) -> Self {
        ChangeRejection::new(e.reason, e.message)
    }
}

/// How far ahead of the server's clock an `updated_at` may be.
///
/// Why a bound: `timestamp_wins` trusts `updated_at`, so a change dated `9999-12-31` would beat
/// every later write forever. A node whose clock runs a little fast still syncs.
#[derive(Debug, Clone, Copy)]
pub struct ClockRule {
    pub now: DateTime<Utc>,
    pub max_ahead: TimeDelta,
}

impl ClockRule {
    /// The rule at the current time.
    pub fn now(max_ahead_secs: u64) -> ClockRule {
        ClockRule {
            now: Utc::now(),
            max_ahead: i64::try_from(max_ahead_secs)
                .ok()
                .and_then(TimeDelta::try_seconds)
                .unwrap_or(TimeDelta::MAX),
        }
    }
}

/// A change that passed [`validate_change`].
#[derive(Debug, Clone)]
pub struct ValidChange {
    pub operation: Operation,
    /// `updated_at` normalized (UTC, microseconds, `Z`).
    pub updated_at: String,
}

/// Checks the rules that need no server state (in the order of docs/protocol.md §2.3).
pub fn validate_change(c: &Change, clock: &ClockRule) -> Result<ValidChange, ChangeRejection> {
    EntityType::parse(&c.entity_type)?;
    EntityId::parse(&c.entity_uuid)?;
    if c.change_id.is_empty() || c.change_id.len() > 128 {
        return Err(ChangeRejection::new(
            RejectReason::InvalidChangeId,
            "change_id must be a non-empty string of at most 128 characters",
        ));
    }
    validate_text("change_id", &c.change_id)
        .map_err(|m| ChangeRejection::new(RejectReason::InvalidChangeId, m))?;
    let operation = Operation::parse(&c.operation).ok_or_else(|| {
        ChangeRejection::new(
            RejectReason::UnknownOperation,
            format!(
                "operation {:?} is not INSERT, UPDATE or DELETE",
                truncate(&c.operation)
            ),
        )
    })?;
    if operation != Operation::Delete {
        validate_entity_data(c.data_text()).map_err(|mut r| {
            if r.reason == RejectReason::DataNotObject {
                r.message = format!("data must be a JSON object for {}", operation.as_str());
            }
            r
        })?;
    }
    if let Some(fields) = &c.fields {
        check_fields(operation, fields)?;
    }
    let updated_at = check_updated_at(&c.updated_at, clock)?;
    Ok(ValidChange {
        operation,
        updated_at,
    })
}

/// `fields` (PROTOCOL §5.1): only on an UPDATE (an INSERT carries a new entity whole, a DELETE
/// has no data), each name once. Any string names a top-level key; a name absent from `data`
/// means the field was removed. An empty list is allowed: the change sets nothing (the server
/// then only makes sure the node gets its current state).
fn check_fields(operation: Operation, fields: &[String]) -> Result<(), ChangeRejection> {
    if operation != Operation::Update {
        return Err(ChangeRejection::new(
            RejectReason::InvalidFields,
            format!(
                "fields is only for UPDATE; an {} carries {}",
                operation.as_str(),
                if operation == Operation::Delete {
                    "no data"
                } else {
                    "the whole new entity"
                }
            ),
        ));
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(fields.len());
    for f in fields {
        if !seen.insert(f.as_str()) {
            return Err(ChangeRejection::new(
                RejectReason::InvalidFields,
                format!(
                    "fields names {:?} twice; list each top-level field once",
                    truncate(f)
                ),
            ));
        }
    }
    Ok(())
}

/// `updated_at` must be an RFC 3339 timestamp not further ahead than the clock rule allows.
fn check_updated_at(s: &str, clock: &ClockRule) -> Result<String, ChangeRejection> {
    let ts = super::parse_ts(s).ok_or_else(|| {
        ChangeRejection::new(
            RejectReason::InvalidUpdatedAt,
            format!("updated_at {:?} is not an RFC 3339 timestamp", truncate(s)),
        )
    })?;
    let limit = clock.now.checked_add_signed(clock.max_ahead);
    if limit.is_some_and(|limit| ts > limit) {
        return Err(ChangeRejection::new(
            RejectReason::InvalidUpdatedAt,
            format!(
                "updated_at {} is ahead of the server's clock ({}) by more than the {} s it \
                 allows; check this computer's clock",
                truncate(s),
                super::format_ts(clock.now),
                clock.max_ahead.num_seconds()
            ),
        ));
    }
    Ok(super::format_ts(ts))
}

/// The one rule for an entity's new state, whichever way it comes in (a node's change, an
/// admin write, a conflict resolution): a JSON object ([`RejectReason::DataNotObject`]) that
/// reads back as written ([`validate_data`], [`RejectReason::InvalidData`]).
pub fn validate_entity_data(text: &str) -> Result<(), ChangeRejection> {
    if !is_object_text(text) {
        return Err(ChangeRejection::new(
            RejectReason::DataNotObject,
            "data must be a JSON object",
        ));
    }
    validate_data(text).map_err(|m| ChangeRejection::new(RejectReason::InvalidData, m))
}

/// True when JSON text is an object (the text is known to be JSON).
pub fn is_object_text(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Text the databases cannot hold: PostgreSQL's `text` refuses NUL (U+0000), which SQLite
/// would store, so both backends reject it here, before any query. (Every other Unicode
/// character is storable; a Rust string cannot hold a lone surrogate.) `what` names the field.
pub fn validate_text(what: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!(
            "{what} contains a NUL character (\\u0000), which no id, name or parameter may hold"
        ));
    }
    Ok(())
}

/// Checks that `data` (JSON text) reads back exactly as written by every reader: numbers
/// within the range of a double, no lone UTF-16 surrogate in a string or key, at most
/// [`MAX_DATA_DEPTH`] levels, no key twice in one object. Strings may hold any character,
/// NUL included: `data` is stored as the JSON text itself, where NUL is the escape `\u0000`.
///
/// Streams over the text without building a tree, so it costs one parse and no copy of the
/// data.
pub fn validate_data(text: &str) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(text);
    Level(1)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| format!("data cannot be stored as written: {e}"))
}

/// One level of `data` being checked.
struct Level(usize);

impl Level {
    fn enter<E: serde::de::Error>(&self) -> Result<(), E> {
        if self.0 > MAX_DATA_DEPTH {
            return Err(E::custom(format_args!(
                "nesting deeper than {MAX_DATA_DEPTH} levels"
            )));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Level {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json already refuses numbers beyond a double; kept for any other source.
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.enter()?;
        while seq.next_element_seed(Level(self.0 + 1))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        self.enter()?;
        // Keys are borrowed from the text when they hold no escape. Small objects (most) are
        // checked for repeats by a scan, larger ones through a set: no allocation per key.
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(Key)? {
            map.next_value_seed(Level(self.0 + 1))?;
            let repeated = if many.is_empty() && few.len() < 16 {
                let seen = few.contains(&key);
                few.push(key);
                seen
            } else {
                many.extend(few.drain(..));
                !many.insert(key)
            };
            // The key itself is not echoed (it may be huge); the error's position points at it.
            if repeated {
                return Err(A::Error::custom("a key appears twice in one object"));
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the text when possible.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        let mut s = String::new();
        for _ in 0..levels {
            s.push_str("{\"a\":");
        }
        s.push('1');
        for _ in 0..levels {
            s.push('}');
        }
        s
    }

    #[test]
    fn data_that_reads_back_is_accepted() {
        for ok in [
            r#"{}"#,
            r#"{"n":18446744073709551616,"m":1E5,"z":-0,"f":1.0,"b":12345678901234567890123}"#,
            r#"{"tiny":1e-400,"max":1.7976931348623157e308}"#,
            r#"{"nul":"a\u0000b","\u0000":1,"pair":"\ud83d\ude00"}"#,
            r#"{"a":[1,[2,[3]]],"t":true,"n":null}"#,
        ] {
            validate_data(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        validate_data(&nested(MAX_DATA_DEPTH)).unwrap();
    }

    #[test]
    fn data_that_cannot_be_read_back_is_refused() {
        for bad in [
            r#"{"x":1e400}"#.to_string(),
            r#"{"x":-1e400}"#.to_string(),
            r#"{"x":"\ud800"}"#.to_string(),
            r#"{"\udc00":1}"#.to_string(),
            r#"{"x":"\ud800\u0041"}"#.to_string(),
            r#"{"a":1,"a":2}"#.to_string(),
            nested(MAX_DATA_DEPTH + 1),
            nested(200),
            r#"{"x":1} {"y":2}"#.to_string(),
        ] {
            let e = validate_data(&bad).unwrap_err();
            assert!(e.starts_with("data cannot be stored as written"), "{e}");
        }
        // A repeat spelled with an escape, and one in a large object, are found too.
        assert!(validate_data(r#"{"a":1,"\u0061":2}"#).is_err());
        let keys: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(validate_data(&format!("{{{}}}", keys.join(","))).is_ok());
        assert!(validate_data(&format!("{{{},\"k3\":0}}", keys.join(","))).is_err());
        let deep = validate_data(&nested(1000)).unwrap_err();
        assert!(deep.contains("64 levels"), "{deep}");
    }

    #[test]
    fn text_with_nul_is_refused() {
        assert!(validate_text("name", "ok ü 😀").is_ok());
        let e = validate_text("name", "a\0b").unwrap_err();
        assert!(e.contains("name contains a NUL"), "{e}");
    }

    fn change(updated_at: &str) -> Change {
        serde_json::from_value(serde_json::json!({
            "change_id": "c", "entity_type": "T",
            "entity_uuid": "3f2b8c1e-5d4a-4e6f-9a7b-1c2d3e4f5a6b",
            "operation": "INSERT", "base_version": 0, "version": null,
            "updated_at": updated_at, "data": {"x": 1}
        }))
        .unwrap()
    }

    #[test]
    fn fields_are_checked_per_change() {
        let clock = ClockRule::now(600);
        let with = |op: &str, fields: serde_json::Value| -> Change {
            let mut c = change("2026-11-22T10:00:00Z");
            c.operation = op.to_string();
            c.fields = serde_json::from_value(fields).unwrap();
            c
        };
        for ok in [
            serde_json::json!(["x"]),
            serde_json::json!(["x", "removed", ""]),
            serde_json::json!([]),
            serde_json::Value::Null,
        ] {
            assert!(
                validate_change(&with("UPDATE", ok.clone()), &clock).is_ok(),
                "{ok}"
            );
        }
        for (op, bad, says) in [
            (
                "UPDATE",
                serde_json::json!(["x", "y", "x"]),
                "names \"x\" twice",
            ),
            ("INSERT", serde_json::json!(["x"]), "only for UPDATE"),
            ("DELETE", serde_json::json!([]), "only for UPDATE"),
        ] {
            let mut c = with(op, bad);
            if op == "DELETE" {
                c.data = None;
            }
            let e = validate_change(&c, &clock).unwrap_err();
            assert_eq!(e.reason, RejectReason::InvalidFields);
            assert!(e.message.contains(says), "{}", e.message);
        }
    }

    #[test]
    fn updated_at_must_parse_and_not_run_ahead() {
        let clock = ClockRule {
            now: parse("2026-11-22T10:00:00Z"),
            max_ahead: TimeDelta::seconds(600),
        };
        let ok = validate_change(&change("2026-11-22T12:09:00+02:00"), &clock).unwrap();
        assert_eq!(ok.updated_at, "2026-11-22T10:09:00.000000Z");
        assert!(validate_change(&change("1970-01-01T00:00:00Z"), &clock).is_ok());
        for bad in [
            "",
            "yesterday",
            "2026-11-22T10:10:01Z",
            "9999-12-31T23:59:59Z",
        ] {
            let e = validate_change(&change(bad), &clock).unwrap_err();
            assert_eq!(e.reason, RejectReason::InvalidUpdatedAt, "{bad:?}");
        }
        // An absurd bound does not overflow: it means "no bound".
        let open = ClockRule::now(u64::MAX);
        assert!(validate_change(&change("9999-12-31T23:59:59Z"), &open).is_ok());
    }

    fn parse(s: &str) -> DateTime<Utc> {
        crate::parse_ts(s).unwrap()
    }
}
