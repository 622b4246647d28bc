//! Tokens: generation, hashing, and who a bearer token belongs to.
//!
//! Tokens carry 256 random bits, so a plain SHA-256 is a sound way to store them: there is no
//! password-style dictionary to slow down, and lookups stay one index probe.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Engine, EngineError, EngineResult};
use crate::store::{models::Node, nodes};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Node(Box<Node>),
}

/// A new random token: `sst_` + 64 hex digits (256 bits). The prefix makes leaked tokens easy
/// to spot by secret scanners.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("sst_{}", hex::encode(bytes))
}

pub fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha256(token))
}

impl Engine {
    /// True when `token` is the admin token (constant-time over the hashes).
    pub fn is_admin_token(&self, token: &str) -> bool {
        sha256(token).ct_eq(&self.admin_token_hash).into()
    }

    /// Resolves a bearer token. Unknown tokens and disabled nodes are `Unauthorized`.
    pub fn authenticate(&self, token: Option<&str>) -> EngineResult<Caller> {
        let token = bearer(token)?;
        if self.is_admin_token(token) {
            return Ok(Caller::Admin);
        }
        let node = self.read(|c| node_by_token(c, token))?;
        Ok(Caller::Node(Box::new(node)))
    }

    /// The caller must be the admin; a node gets 403.
    pub fn require_admin(&self, token: Option<&str>) -> EngineResult<()> {
        match self.authenticate(token)? {
            Caller::Admin => Ok(()),
            Caller::Node(_) => Err(EngineError::Forbidden(
                "this endpoint needs the admin token, not a node token".into(),
            )),
        }
    }

    /// The caller must be a node; the admin token is not a node (401).
    pub fn require_node(&self, token: Option<&str>) -> EngineResult<Node> {
        match self.authenticate(token)? {
            Caller::Node(n) => Ok(*n),
            Caller::Admin => Err(admin_is_not_a_node()),
        }
    }

    /// [`Engine::require_node`] and [`Engine::next_answer_bytes`] on one pooled connection.
    ///
    /// Why: an exchange needs both before the writer's turn, and each checkout of a pooled
    /// connection is a statement of its own (r2d2 tests it), so one connection instead of two
    /// is two statements fewer per exchange (the checkout's test, and reading the node again).
    pub fn require_node_sized(&self, token: Option<&str>) -> EngineResult<(Node, usize)> {
        let token = bearer(token)?;
        if self.is_admin_token(token) {
            return Err(admin_is_not_a_node());
        }
        self.read(|c| {
            let node = node_by_token(c, token)?;
            let bytes = self.answer_bytes_on(c, &node)?;
            Ok((node, bytes))
        })
    }
}

fn bearer(token: Option<&str>) -> EngineResult<&str> {
    token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| EngineError::Unauthorized("missing bearer token".into()))
}

fn admin_is_not_a_node() -> EngineError {
    EngineError::Unauthorized(
        "the admin token is not a node token; use the node's auth_token".into(),
    )
}

/// The active node whose token is `token` (looked up by hash, never by token, so the timing
/// of the index lookup tells an attacker nothing about any token).
fn node_by_token(c: &mut crate::store::Conn, token: &str) -> EngineResult<Node> {
    match nodes::by_token_hash(c, &token_hash(token))? {
        Some(n) if n.active => Ok(n),
        Some(_) => Err(EngineError::Unauthorized(
            "this node is disabled; ask the administrator to enable it".into(),
        )),
        None => Err(EngineError::Unauthorized("unknown or revoked token".into())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_long_and_distinct() {
        let a = super::new_token();
        let b = super::new_token();
        assert_eq!(a.len(), 4 + 64);
        assert_ne!(a, b);
        assert_eq!(super::token_hash(&a).len(), 64);
    }
}
