//! Packet and change types (PROTOCOL §2).
//!
//! Deserialization is strict where the protocol says "required": every field must be present,
//! `null` only where allowed. `data` stays raw JSON text so the server can store and forward it
//! without parsing and re-serializing every entity.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::MAX_SAFE_INTEGER;

/// The only packet format this build understands.
pub const PACKET_FORMAT: u64 = 1;

/// One packet, decompressed (PROTOCOL §2).
#[derive(Debug, Serialize, Deserialize)]
pub struct Packet {
    #[serde(deserialize_with = "format_number")]
    pub format: u64,
    pub schema_version: String,
    pub sender_node_id: String,
    pub receiver_node_id: String,
    #[serde(deserialize_with = "packet_number")]
    pub packet_no: u64,
    #[serde(deserialize_with = "safe_u64")]
    pub ack_packet_no: u64,
    pub created_at: String,
    #[serde(default)]
    pub more: bool,
    pub changes: Vec<Change>,
}

/// One change inside a packet.
///
/// `operation` is kept as text: an unknown operation rejects only that change, not the packet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub change_id: String,
    pub entity_type: String,
    pub entity_uuid: String,
    pub operation: String,
    #[serde(deserialize_with = "required_opt_u64")]
    pub base_version: Option<u64>,
    #[serde(deserialize_with = "required_opt_u64")]
    pub version: Option<u64>,
    pub updated_at: String,
    #[serde(deserialize_with = "required_raw")]
    pub data: Option<Box<RawValue>>,
    /// The top-level fields of `data` this UPDATE changed (PROTOCOL §5.1), optional: with it the
    /// server merges per field (a named field absent from `data` was removed; unnamed fields
    /// keep the server's values), without it `data` is the whole new state. Optional, and left
    /// out when absent, so packets of older nodes parse and server packets never carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

/// The three operations of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Insert,
    Update,
    Delete,
}

impl Operation {
    pub fn parse(s: &str) -> Option<Operation> {
        match s {
            "INSERT" => Some(Operation::Insert),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

impl Change {
    /// The change's data as text (`"null"` when absent).
    pub fn data_text(&self) -> &str {
        self.data.as_deref().map(RawValue::get).unwrap_or("null")
    }
}

fn safe_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v > MAX_SAFE_INTEGER {
        return Err(serde::de::Error::custom(format!(
            "number {v} is over 2^53 - 1"
        )));
    }
    Ok(v)
}

fn packet_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = safe_u64(d)?;
    if v < 1 {
        return Err(serde::de::Error::custom("packet_no must be at least 1"));
    }
    Ok(v)
}

fn format_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v != PACKET_FORMAT {
        return Err(serde::de::Error::custom(format!(
            "unknown packet format {v} (this server speaks format {PACKET_FORMAT})"
        )));
    }
    Ok(v)
}

/// `Option` fields are normally optional in serde; the protocol wants them present (maybe null).
/// A `deserialize_with` function turns off serde's implicit default, so a missing field errors.
fn required_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<u64>::deserialize(d)?;
    if let Some(n) = v {
        if n > MAX_SAFE_INTEGER {
            return Err(serde::de::Error::custom(format!(
                "number {n} is over 2^53 - 1"
            )));
        }
    }
    Ok(v)
}

fn required_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    if raw.get() == "null" {
        Ok(None)
    } else {
        Ok(Some(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "format": 1, "schema_version": "1.0.0",
            "sender_node_id": "a", "receiver_node_id": "b",
            "packet_no": 1, "ack_packet_no": 0, "created_at": "2026-11-22T10:00:00Z",
            "changes": [{"change_id": "c", "entity_type": "T", "entity_uuid": "u",
                "operation": "INSERT", "base_version": 0, "version": null,
                "updated_at": "2026-11-22T10:00:00Z", "data": {"x": 1}}]
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Packet, serde_json::Error> {
        serde_json::from_str(&v.to_string())
    }

    #[test]
    fn accepts_a_valid_packet_and_defaults_more() {
        let p = parse(&base()).unwrap();
        assert!(!p.more);
        assert_eq!(p.changes[0].data_text(), r#"{"x":1}"#);
    }

    #[test]
    fn nullable_fields_are_still_required() {
        let mut v = base();
        v["changes"][0].as_object_mut().unwrap().remove("version");
        assert!(parse(&v).is_err());
        let mut v = base();
        v["changes"][0].as_object_mut().unwrap().remove("data");
        assert!(parse(&v).is_err());
    }

    #[test]
    fn fields_are_optional_and_left_out_when_absent() {
        let p = parse(&base()).unwrap();
        assert!(p.changes[0].fields.is_none());
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("\"fields\""), "{text}");
        let mut v = base();
        v["changes"][0]["fields"] = serde_json::json!(["x", "gone"]);
        let p = parse(&v).unwrap();
        assert_eq!(
            p.changes[0].fields.as_deref(),
            Some(&["x".to_string(), "gone".to_string()][..])
        );
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains(r#""fields":["x","gone"]"#), "{text}");
        v["changes"][0]["fields"] = serde_json::Value::Null;
        assert!(parse(&v).unwrap().changes[0].fields.is_none());
        // A wrong JSON type is a malformed change, like any other field's (PROTOCOL §2).
        for bad in [
            serde_json::json!("x"),
            serde_json::json!([1]),
            serde_json::json!({"x": 1}),
        ] {
            v["changes"][0]["fields"] = bad;
            assert!(parse(&v).is_err());
        }
    }

    #[test]
    fn rejects_out_of_range_numbers() {
        for (field, value) in [
            ("packet_no", serde_json::json!(0)),
            ("ack_packet_no", serde_json::json!(-1)),
            ("packet_no", serde_json::json!(9007199254740992u64)),
            ("format", serde_json::json!(2)),
            ("packet_no", serde_json::json!("1")),
        ] {
            let mut v = base();
            v[field] = value;
            assert!(parse(&v).is_err(), "{field}");
        }
    }
}
