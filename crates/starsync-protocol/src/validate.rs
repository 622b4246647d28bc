//! Per-change rules of PROTOCOL §2: a well-formed change that breaks one of them is rejected on
//! its own, and the rest of the packet is applied.

use super::packet::{Change, Operation};
use super::vocab::{EntityId, EntityType, InvalidId, RejectReason};

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

/// Checks the rules that need no server state. Returns the parsed operation.
pub fn validate_change(c: &Change) -> Result<Operation, ChangeRejection> {
    EntityType::parse(&c.entity_type)?;
    EntityId::parse(&c.entity_uuid)?;
    if c.change_id.is_empty() || c.change_id.len() > 128 {
        return Err(ChangeRejection::new(
            RejectReason::InvalidChangeId,
            "change_id must be a non-empty string of at most 128 characters",
        ));
    }
    let op = Operation::parse(&c.operation).ok_or_else(|| {
        ChangeRejection::new(
            RejectReason::UnknownOperation,
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
                RejectReason::DataNotObject,
                format!("data must be a JSON object for {}", op.as_str()),
            ));
        }
    }
    if super::parse_ts(&c.updated_at).is_none() {
        return Err(ChangeRejection::new(
            RejectReason::InvalidUpdatedAt,
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
