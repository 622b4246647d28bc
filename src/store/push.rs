//! The simple push's idempotency keys (PROTOCOL §11.4): which change-queue rows of a node the
//! hub has applied. The rules live in `engine::simple_push`.

use std::collections::HashSet;

use diesel::prelude::*;

use super::schema::push_rows as pr;
use super::{Conn, StoreResult};

/// The ids among `row_ids` that this node pushed and the hub applied before.
pub fn seen(conn: &mut Conn, node_id: &str, row_ids: &[&str]) -> StoreResult<HashSet<String>> {
    let mut out = HashSet::new();
    // Bound the statement's parameter count well under SQLite's limit.
    for chunk in row_ids.chunks(500) {
        out.extend(
            pr::table
                .filter(pr::node_id.eq(node_id))
                .filter(pr::row_id.eq_any(chunk))
                .select(pr::row_id)
                .load::<String>(conn)?,
        );
    }
    Ok(out)
}

/// Notes that the hub applied this row of the node (once: the caller checked [`seen`]).
pub fn record(
    conn: &mut Conn,
    node_id: &str,
    row_id: &str,
    entity_type: &str,
    entity_uuid: &str,
    now: &str,
) -> StoreResult<()> {
    diesel::insert_into(pr::table)
        .values((
            pr::node_id.eq(node_id),
            pr::row_id.eq(row_id),
            pr::entity_type.eq(entity_type),
            pr::entity_uuid.eq(entity_uuid),
            pr::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}
