//! Per-change rules of PROTOCOL §2: a well-formed change that breaks one of them is rejected on
//! its own, and the rest of the packet is applied.

use super::packet::{Change, Operation};

/// A change the server refuses, with a sentence for the user of the node.
#[derive(Debug, Clone)]
pub struct ChangeRejection {
    /// Machine-readable reason (the `error` field stays `invalid_change`; this is finer).
    pub reason: &'static str,
    pub message: String,
}

impl ChangeRejection {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        ChangeRejection {
            reason,
            message: message.into(),
        }
    }
}

/// True when `name` matches `^[A-Za-z][A-Za-z0-9_]{0,63}$`.
pub fn is_valid_entity_type(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// True when `code` is a valid node code: 1–64 chars of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_node_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-')
}

/// Checks the rules that need no server state. Returns the parsed operation.
pub fn validate_change(c: &Change) -> Result<Operation, ChangeRejection> {
    if !is_valid_entity_type(&c.entity_type) {
        return Err(ChangeRejection::new(
            "invalid_entity_type",
            format!(
                "entity_type {:?} must match ^[A-Za-z][A-Za-z0-9_]{{0,63}}$",
                truncate(&c.entity_type)
            ),
        ));
    }
    if !super::is_canonical_uuid(&c.entity_uuid) {
        return Err(ChangeRejection::new(
            "invalid_entity_uuid",
            format!(
                "entity_uuid {:?} is not a lowercase hyphenated UUID",
                truncate(&c.entity_uuid)
            ),
        ));
    }
    if c.change_id.is_empty() || c.change_id.len() > 128 {
        return Err(ChangeRejection::new(
            "invalid_change_id",
            "change_id must be a non-empty string of at most 128 characters",
        ));
    }
    let op = Operation::parse(&c.operation).ok_or_else(|| {
        ChangeRejection::new(
            "unknown_operation",
            format!(
                "operation {:?} is not INSERT, UPDATE or DELETE",
                truncate(&c.operation)
            ),
        )
    })?;
    if op != Operation::Delete {
        let is_object = c
            .data
            .as_deref()
            .map(|r| r.get().trim_start().starts_with('{'))
            .unwrap_or(false);
        if !is_object {
            return Err(ChangeRejection::new(
                "data_not_object",
                format!("data must be a JSON object for {}", op.as_str()),
            ));
        }
    }
    if super::parse_ts(&c.updated_at).is_none() {
        return Err(ChangeRejection::new(
            "invalid_updated_at",
            format!(
                "updated_at {:?} is not an RFC 3339 timestamp",
                truncate(&c.updated_at)
            ),
        ));
    }
    Ok(op)
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_type_pattern() {
        assert!(is_valid_entity_type("Estimate"));
        assert!(is_valid_entity_type("a_1"));
        assert!(!is_valid_entity_type("1abc"));
        assert!(!is_valid_entity_type("has-dash"));
        assert!(!is_valid_entity_type(""));
        assert!(!is_valid_entity_type(&"a".repeat(65)));
        assert!(is_valid_entity_type(&"a".repeat(64)));
    }

    #[test]
    fn node_code_pattern() {
        assert!(is_valid_node_code("DESKTOP-USER-1"));
        assert!(is_valid_node_code("a.b_c"));
        assert!(!is_valid_node_code("with space"));
        assert!(!is_valid_node_code(""));
    }
}
