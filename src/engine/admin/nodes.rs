//! Registration and node management: find, list, enable or disable, rotate tokens.

use crate::engine::auth::{new_token, token_hash};
use crate::engine::live::AdminEvent;
use crate::engine::scopes::{initial_rows, parse_scopes, parse_types, types_json};
use crate::engine::{Engine, EngineError, EngineResult};
use crate::store::models::Node;
use crate::store::pending::View;
use crate::store::{nodes, pending, scopes as store_scopes};
use starsync_protocol::api::{NodeInfo, RegisterRequest, RegisterResponse, TokenResponse};
use starsync_protocol::{validate_text, NodeCode};

use super::SERVER_VERSION;

impl Engine {
    /// Registers a node. The token is returned here and never again.
    pub fn register(&self, req: RegisterRequest) -> EngineResult<RegisterResponse> {
        let code = req.code.trim().to_string();
        NodeCode::parse(&code).map_err(|e| EngineError::InvalidRequest(e.message))?;
        let name = req
            .name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| code.clone());
        for (what, text) in [
            ("name", Some(&name)),
            ("description", req.description.as_ref()),
        ] {
            validate_text(what, text.map_or("", |t| t.as_str()))
                .map_err(EngineError::InvalidRequest)?;
        }
        if name.chars().count() > 200 {
            return Err(EngineError::InvalidRequest(
                "name must be at most 200 characters".into(),
            ));
        }
        if req
            .description
            .as_ref()
            .map(|d| d.chars().count())
            .unwrap_or(0)
            > 2000
        {
            return Err(EngineError::InvalidRequest(
                "description must be at most 2000 characters".into(),
            ));
        }
        // Scopes and types (PROTOCOL §10) exist only on a hub configured with them: accepting
        // them elsewhere would promise a separation nothing enforces.
        if (req.scopes.is_some() || req.types.is_some()) && self.settings.scopes.is_none() {
            return Err(EngineError::InvalidRequest(
                "this hub has no [scopes] configuration: register without scopes and types \
                 (every node sees every entity)"
                    .into(),
            ));
        }
        let scopes = match &req.scopes {
            Some(list) => parse_scopes(list)?,
            None => Default::default(),
        };
        let types = req.types.as_deref().map(parse_types).transpose()?;
        let token = new_token();
        let node = self.write_noting(|conn| {
            if code.eq_ignore_ascii_case(&self.server_code) || nodes::code_taken(conn, &code)? {
                return Err(EngineError::CodeTaken(format!(
                    "node code {code:?} is already registered; choose another code"
                )));
            }
            let node = Node {
                id: uuid::Uuid::new_v4().to_string(),
                code: code.clone(),
                name,
                description: req.description.clone(),
                token_hash: token_hash(&token),
                active: true,
                created_at: starsync_protocol::now_ts(),
                last_sync_in: None,
                last_sync_out: None,
                received_packet_no: 0,
                sent_packet_no: 0,
                acked_packet_no: 0,
                acked_seq: 0,
                registered_seq: crate::store::last_seq(conn)?,
                types: types_json(&types),
                last_device: None,
            };
            nodes::insert(conn, &node)?;
            if self.settings.scopes.is_some() {
                for row in initial_rows(&node, &scopes) {
                    store_scopes::insert(conn, &row)?;
                }
            }
            let event = node_event(&node, "registered");
            Ok((node, vec![event]))
        })?;
        tracing::info!(node = %node.code, node_id = %node.id, "node registered");
        Ok(RegisterResponse {
            node_id: node.id,
            auth_token: token,
            server_node_id: self.server_node_id.clone(),
            server_version: SERVER_VERSION.to_string(),
            schema_version: self.settings.sync.schema_version.clone(),
        })
    }

    /// Finds a node by id or, failing that, by code (the CLI accepts either).
    pub fn find_node(&self, id_or_code: &str) -> EngineResult<Node> {
        self.read(|c| {
            if let Some(n) = nodes::by_id(c, id_or_code)? {
                return Ok(n);
            }
            nodes::by_code(c, id_or_code)?
                .ok_or_else(|| EngineError::NotFound(format!("no node {id_or_code:?}")))
        })
    }

    /// Finds a node by id only (HTTP routes name nodes by id).
    pub fn find_node_by_id(&self, id: &str) -> EngineResult<Node> {
        self.read(|c| {
            nodes::by_id(c, id)?.ok_or_else(|| EngineError::NotFound(format!("no node {id:?}")))
        })
    }

    pub fn list_nodes(&self) -> EngineResult<Vec<NodeInfo>> {
        self.read(|c| {
            let list = nodes::list(c)?;
            let views = self.views(c, &list)?;
            let counts = pending::counts(c, &views)?;
            Ok(list
                .into_iter()
                .zip(&views)
                .map(|(n, v)| {
                    let pending = counts[&n.id];
                    node_info(n, pending, v)
                })
                .collect())
        })
    }

    pub fn set_node_active(&self, id_or_code: &str, active: bool) -> EngineResult<NodeInfo> {
        let node = self.find_node(id_or_code)?;
        let node = self.write_noting(|c| {
            nodes::set_active(c, &node.id, active)?;
            let node = nodes::by_id(c, &node.id)?.expect("node exists inside the transaction");
            let action = if active { "enabled" } else { "disabled" };
            let event = node_event(&node, action);
            Ok((node, vec![event]))
        })?;
        tracing::info!(node = %node.code, active, "node active flag changed");
        self.read(|c| {
            let v = self.view(c, &node)?;
            let pending = pending::count(c, &v)?;
            Ok(node_info(node, pending, &v))
        })
    }

    /// Issues a new token; the old one stops working at once.
    pub fn rotate_token(&self, id_or_code: &str) -> EngineResult<TokenResponse> {
        let node = self.find_node(id_or_code)?;
        let token = new_token();
        self.write_noting(|c| {
            nodes::set_token_hash(c, &node.id, &token_hash(&token))?;
            Ok(((), vec![node_event(&node, "token_rotated")]))
        })?;
        tracing::info!(node = %node.code, "node token rotated");
        Ok(TokenResponse {
            node_id: node.id,
            auth_token: token,
        })
    }
}

/// A dashboard's `node` event; `disabled` and `token_rotated` also end the node's open
/// streams (their credentials no longer hold).
fn node_event(n: &Node, action: &str) -> AdminEvent {
    AdminEvent::new(
        "node",
        serde_json::json!({
            "node_id": n.id,
            "node_code": n.code,
            "action": action,
            "active": n.active,
        }),
    )
}

pub(crate) fn node_info(n: Node, pending: i64, view: &View) -> NodeInfo {
    NodeInfo {
        node_id: n.id,
        code: n.code,
        name: n.name,
        description: n.description,
        active: n.active,
        created_at: n.created_at,
        last_sync_in: n.last_sync_in,
        last_sync_out: n.last_sync_out,
        pending_changes: pending,
        scopes: view.scoped.then(|| view.scope_list()),
        types: view.type_list(),
        last_device: n.last_device,
    }
}
