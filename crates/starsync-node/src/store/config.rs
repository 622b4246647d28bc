//! The node's settings and its packet counters (one row each).

use super::*;

impl Store {
    pub fn config(&self) -> Result<Option<ConfigRow>, NodeError> {
        self.read(|c| {
            Ok(node_config::table
                .find(1)
                .select(ConfigRow::as_select())
                .first(c)
                .optional()?)
        })
    }

    /// Stores the configuration and the starting counters of a new (or attached) node.
    pub fn initialize(&self, cfg: &ConfigRow, sent: i64, received: i64) -> Result<(), NodeError> {
        self.write(|c| {
            diesel::delete(node_config::table).execute(c)?;
            diesel::delete(node_state::table).execute(c)?;
            diesel::insert_into(node_config::table)
                .values(cfg)
                .execute(c)?;
            diesel::insert_into(node_state::table)
                .values(&StateRow {
                    id: 1,
                    sent_packet_no: sent,
                    server_acked_packet_no: sent,
                    received_packet_no: received,
                    last_attempt_at: None,
                    last_success_at: None,
                    last_error: None,
                    last_error_at: None,
                    last_export_at: None,
                    last_import_at: None,
                })
                .execute(c)?;
            Ok(())
        })
    }

    pub fn save_config(&self, cfg: &ConfigRow) -> Result<(), NodeError> {
        self.write(|c| {
            diesel::update(node_config::table.find(1))
                .set(cfg)
                .execute(c)?;
            Ok(())
        })
    }

    pub fn state(&self) -> Result<StateRow, NodeError> {
        self.read(get_state)
    }

    pub fn record_attempt(&self) -> Result<(), NodeError> {
        self.write(|c| {
            diesel::update(node_state::table.find(1))
                .set(node_state::last_attempt_at.eq(starsync_protocol::now_ts()))
                .execute(c)?;
            Ok(())
        })
    }

    /// Records the outcome of a sync: success clears the last error.
    pub fn record_outcome(&self, error: Option<&str>) -> Result<(), NodeError> {
        let now = starsync_protocol::now_ts();
        self.write(|c| {
            let q = diesel::update(node_state::table.find(1));
            match error {
                None => q
                    .set((
                        node_state::last_success_at.eq(&now),
                        node_state::last_error.eq(None::<String>),
                        node_state::last_error_at.eq(None::<String>),
                    ))
                    .execute(c)?,
                Some(e) => q
                    .set((
                        node_state::last_error.eq(e),
                        node_state::last_error_at.eq(&now),
                    ))
                    .execute(c)?,
            };
            Ok(())
        })
    }
}

pub(super) fn get_state(c: &mut SqliteConnection) -> Result<StateRow, NodeError> {
    node_state::table
        .find(1)
        .select(StateRow::as_select())
        .first(c)
        .optional()?
        .ok_or_else(|| NodeError::Protocol("the node database has no state row".into()))
}

pub(super) fn save_state(c: &mut SqliteConnection, st: &StateRow) -> Result<(), NodeError> {
    diesel::update(node_state::table.find(1))
        .set(st)
        .execute(c)?;
    Ok(())
}

pub(super) fn count_state(c: &mut SqliteConnection, state: &str) -> Result<i64, NodeError> {
    Ok(outbox::table
        .filter(outbox::state.eq(state))
        .count()
        .get_result(c)?)
}
