//! An entity's `data` as it travels and is stored: the JSON text exactly as its author wrote it.
//!
//! Why text and not `serde_json::Value`: a `Value` keeps numbers as `f64`/`u64`/`i64`, so
//! `18446744073709551616` came back as `1.8446744073709552e+19` and `1E5` as `100000.0` — the
//! data changed on its way through the hub. Keeping the text keeps every number, escape and key
//! order byte for byte; a program that wants a tree parses it ([`EntityData::parse`]) into
//! whatever type fits (its own structs, a decimal type, or a `Value`).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// JSON text of an entity's state (an object, or `null` where the API says so).
#[derive(Clone)]
pub struct EntityData(Box<RawValue>);

impl EntityData {
    /// Wraps JSON text; errors when it is not one JSON value.
    pub fn from_json(text: impl Into<String>) -> Result<EntityData, serde_json::Error> {
        RawValue::from_string(text.into()).map(EntityData)
    }

    /// The JSON text of a `Value` (its numbers as the `Value` holds them).
    pub fn from_value(v: &serde_json::Value) -> EntityData {
        EntityData(serde_json::value::to_raw_value(v).expect("a Value always serializes"))
    }

    /// The JSON text, exactly as written.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    pub fn into_string(self) -> String {
        Box::<str>::from(self.0).into_string()
    }

    /// True for a JSON object.
    pub fn is_object(&self) -> bool {
        crate::validate::is_object_text(self.as_str())
    }

    /// Parses the text into `T` (`serde_json::Value`, or the program's own type).
    pub fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.as_str())
    }

    /// The data as a `serde_json::Value` (`Null` if it cannot be parsed, which validated data
    /// always can). Numbers beyond `f64` lose precision here, not in the text.
    pub fn to_value(&self) -> serde_json::Value {
        self.parse().unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for EntityData {
    /// Byte equality of the text.
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for EntityData {}

impl PartialEq<serde_json::Value> for EntityData {
    /// Equality of the parsed value (for tests and simple checks).
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.parse::<serde_json::Value>().ok().as_ref() == Some(other)
    }
}

impl PartialEq<EntityData> for serde_json::Value {
    fn eq(&self, other: &EntityData) -> bool {
        other == self
    }
}

impl fmt::Display for EntityData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for EntityData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityData({})", self.as_str())
    }
}

impl Serialize for EntityData {
    /// Written as the JSON value itself, verbatim.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EntityData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(EntityData)
    }
}

impl From<Box<RawValue>> for EntityData {
    fn from(raw: Box<RawValue>) -> Self {
        EntityData(raw)
    }
}

/// In the API description, entity data is any JSON object (kept exactly as written).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for EntityData {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .description(Some(
                "An entity's data: a JSON object, kept exactly as its author wrote it",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for EntityData {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_travel_byte_for_byte() {
        let text =
            r#"{"a":18446744073709551616,"b":1E5,"c":-0,"d":1.0,"e":12345678901234567890123}"#;
        let d = EntityData::from_json(text).unwrap();
        #[derive(Serialize, Deserialize)]
        struct View {
            data: EntityData,
        }
        let out = serde_json::to_string(&View { data: d.clone() }).unwrap();
        assert_eq!(out, format!(r#"{{"data":{text}}}"#));
        let back: View = serde_json::from_str(&out).unwrap();
        assert_eq!(back.data.as_str(), text);
        assert_eq!(back.data, d);
        assert!(d.is_object());
        assert_eq!(d.to_value()["d"], serde_json::json!(1.0));
    }

    #[test]
    fn value_comparison_and_null() {
        let d = EntityData::from_value(&serde_json::json!({"v": 1}));
        assert_eq!(d, serde_json::json!({"v": 1}));
        assert!(EntityData::from_json("{oops").is_err());
        #[derive(Deserialize)]
        struct View {
            data: Option<EntityData>,
        }
        let v: View = serde_json::from_str(r#"{"data":null}"#).unwrap();
        assert!(v.data.is_none());
    }
}
