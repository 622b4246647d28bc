//! Top-level fields of an entity's `data` (PROTOCOL §5.1), on the JSON text.
//!
//! Both sides need the same notion of "a field changed": the node to compute a change's
//! `fields` from the server copy its edit was based on, the server to know which fields a
//! version changed. Every value keeps its exact text (numbers are never rewritten); two values
//! are the same when their text is, or when they parse to equal JSON (so `{"a": 1}` and
//! `{"a":1}` inside a field are one value and an editor that reformats does not touch fields it
//! did not change).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level fields of a JSON object as (key, value text), in their order; `None` when the
/// text is not a JSON object.
pub fn object_fields(text: &str) -> Option<Vec<(String, Box<RawValue>)>> {
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    serde_json::Deserializer::from_str(text)
        .deserialize_map(Fields)
        .ok()
}

/// Whether two JSON values are the same: equal text, or equal once parsed.
pub fn same_value(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (
                serde_json::from_str::<serde_json::Value>(a),
                serde_json::from_str::<serde_json::Value>(b),
            ),
            (Ok(x), Ok(y)) if x == y
        )
}

/// The top-level fields whose value differs between two objects: changed or added ones in
/// `new`'s order, then removed ones in `old`'s order. `None` when either is not an object.
///
/// Runs on every whole-document update the server applies, so it borrows keys and values from
/// the texts (no allocation per field) and matches keys by a scan for small objects.
pub fn changed_fields(old: &str, new: &str) -> Option<Vec<String>> {
    let old = borrowed_fields(old)?;
    let new = borrowed_fields(new)?;
    let mut out = Vec::new();
    let mut seen = vec![false; old.len()];
    let index: Option<HashMap<&str, usize>> = (old.len() > 32).then(|| {
        old.iter()
            .enumerate()
            .map(|(i, (k, _))| (k.as_ref(), i))
            .collect()
    });
    for (k, v) in &new {
        let at = match &index {
            Some(index) => index.get(k.as_ref()).copied(),
            None => old.iter().position(|(o, _)| o == k),
        };
        match at {
            Some(i) => {
                seen[i] = true;
                if !same_value(old[i].1.get(), v.get()) {
                    out.push(k.to_string());
                }
            }
            None => out.push(k.to_string()),
        }
    }
    out.extend(
        old.iter()
            .zip(seen)
            .filter(|(_, seen)| !seen)
            .map(|((k, _), _)| k.to_string()),
    );
    Some(out)
}

/// The top-level fields of a JSON object, borrowed from its text (a key with an escape is
/// unescaped into its own string); `None` when the text is not a JSON object.
fn borrowed_fields(text: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    struct Key;
    impl<'de> DeserializeSeed<'de> for Key {
        type Value = Cow<'de, str>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for Key {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object key")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
    }
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
            while let Some(k) = map.next_key_seed(Key)? {
                out.push((k, map.next_value::<&'de RawValue>()?));
            }
            Ok(out)
        }
    }
    serde_json::Deserializer::from_str(text)
        .deserialize_map(Fields)
        .ok()
}

/// Whether two objects hold the same fields with the same values, in any order.
pub fn same_object(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match changed_fields(a, b) {
        Some(diff) => diff.is_empty(),
        None => false,
    }
}

/// `current` with the named fields taken from `sent`: a named field present in `sent` gets its
/// value (in place, or appended in the order `fields` names it), a named field absent from
/// `sent` is removed. Every other field of `current` stays as written. `None` when either is
/// not an object.
pub fn overlay(current: &str, sent: &str, fields: &[&str]) -> Option<String> {
    let mut out = object_fields(current)?;
    let sent = object_fields(sent)?;
    let from: HashMap<&str, &RawValue> = sent.iter().map(|(k, v)| (k.as_str(), &**v)).collect();
    let named: HashSet<&str> = fields.iter().copied().collect();
    out.retain_mut(|(k, v)| {
        if !named.contains(k.as_str()) {
            return true;
        }
        match from.get(k.as_str()) {
            Some(new) => {
                *v = (*new).to_owned();
                true
            }
            None => false,
        }
    });
    // Named fields `current` lacks, in the order they are named.
    let mut placed: HashSet<String> = out
        .iter()
        .filter(|(k, _)| named.contains(k.as_str()))
        .map(|(k, _)| k.clone())
        .collect();
    for f in fields {
        if let Some(v) = from.get(f) {
            if placed.insert(f.to_string()) {
                out.push((f.to_string(), (*v).to_owned()));
            }
        }
    }
    Some(write_object(&out))
}

/// An object's JSON text from its fields, each value as written.
pub fn write_object(fields: &[(String, Box<RawValue>)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(k.as_str()).to_string());
        out.push(':');
        out.push_str(v.get());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_fields_lists_changes_additions_and_removals() {
        let d = changed_fields(
            r#"{"a":1,"b":{"x": 1},"c":"gone","d":[1]}"#,
            r#"{"b":{"x":1},"a":2,"d":[1],"e":null}"#,
        )
        .unwrap();
        assert_eq!(d, vec!["a", "e", "c"]);
        assert_eq!(changed_fields("{}", "{}").unwrap(), Vec::<String>::new());
        assert!(changed_fields("[]", "{}").is_none());
        // Numbers keep their identity as text: 1.0 and 1 differ, big ones compare exactly.
        assert_eq!(
            changed_fields(r#"{"n":1}"#, r#"{"n":1.0}"#).unwrap(),
            vec!["n"]
        );
        assert!(changed_fields(
            r#"{"n":18446744073709551616}"#,
            r#"{"n":18446744073709551616}"#
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn changed_fields_reads_escaped_keys_and_large_objects() {
        assert!(changed_fields(r#"{"a\u0062":1}"#, r#"{"ab":1}"#)
            .unwrap()
            .is_empty());
        let big = |changed: usize| {
            let fields: Vec<String> = (0..100)
                .map(|i| format!("\"k{i}\":{}", if i == changed { 1 } else { 0 }))
                .collect();
            format!("{{{}}}", fields.join(","))
        };
        assert_eq!(changed_fields(&big(1000), &big(42)).unwrap(), vec!["k42"]);
        let fewer = big(1000).replace(",\"k99\":0", "");
        assert_eq!(changed_fields(&big(1000), &fewer).unwrap(), vec!["k99"]);
    }

    #[test]
    fn same_object_ignores_order_and_spacing() {
        assert!(same_object(r#"{"a":1,"b":2}"#, r#"{ "b": 2, "a": 1 }"#));
        assert!(!same_object(r#"{"a":1}"#, r#"{"a":1,"b":null}"#));
        assert!(!same_object(r#"{"a":1}"#, "[1]"));
    }

    #[test]
    fn overlay_sets_adds_and_removes_only_named_fields() {
        let current = r#"{"title":"Server","status":"open","z":18446744073709551616,"old":1}"#;
        let sent = r#"{"title":"stale","status":"done","new":1E5}"#;
        let merged = overlay(current, sent, &["status", "old", "new", "absent"]).unwrap();
        assert_eq!(
            merged,
            r#"{"title":"Server","status":"done","z":18446744073709551616,"new":1E5}"#
        );
        assert_eq!(overlay(current, sent, &[]).unwrap(), current);
        assert!(overlay("null", sent, &["a"]).is_none());
    }
}
