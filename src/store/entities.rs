//! Queries on `entities`, the entity store that doubles as the change log.

use diesel::prelude::*;

use super::models::Entity;
use super::schema::entities::dsl as e;
use super::{Conn, StoreResult};

pub fn get(conn: &mut Conn, entity_type: &str, uuid: &str) -> StoreResult<Option<Entity>> {
    Ok(e::entities
        .find((entity_type, uuid))
        .first(conn)
        .optional()?)
}

/// The entities of one type among `uuids` (those that exist).
pub fn get_many(conn: &mut Conn, entity_type: &str, uuids: &[&str]) -> StoreResult<Vec<Entity>> {
    Ok(e::entities
        .filter(e::entity_type.eq(entity_type))
        .filter(e::entity_uuid.eq_any(uuids))
        .load(conn)?)
}

/// Inserts new entities in one statement.
pub fn insert_many(conn: &mut Conn, rows: &[Entity]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // Multi-row INSERT is backend-specific in diesel, so dispatch on the connection.
    match conn {
        super::DbConn::Sqlite(c) => diesel::insert_into(e::entities).values(rows).execute(c)?,
        #[cfg(feature = "postgres")]
        super::DbConn::Postgres(c) => diesel::insert_into(e::entities).values(rows).execute(c)?,
    };
    Ok(())
}

/// Overwrites an existing entity.
pub fn update(conn: &mut Conn, entity: &Entity) -> StoreResult<()> {
    diesel::update(e::entities.find((&entity.entity_type, &entity.entity_uuid)))
        .set(entity)
        .execute(conn)?;
    Ok(())
}

/// Writes the entity's new state (overwrite, or insert when new). Callers hold the writer
/// lock, so nobody can insert the same key between the two statements.
pub fn upsert(conn: &mut Conn, entity: &Entity) -> StoreResult<()> {
    let updated = diesel::update(e::entities.find((&entity.entity_type, &entity.entity_uuid)))
        .set(entity)
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(e::entities)
            .values(entity)
            .execute(conn)?;
    }
    Ok(())
}

pub fn count_live(conn: &mut Conn) -> StoreResult<i64> {
    Ok(e::entities
        .filter(e::is_deleted.eq(false))
        .count()
        .get_result(conn)?)
}

/// Filter for "change-log entries pending for a node": newer than its cursor, not a state the
/// node already holds, and not a tombstone older than the node's registration.
macro_rules! pending_filter {
    ($node_id:expr, $cursor:expr, $registered_seq:expr) => {
        e::seq
            .gt($cursor)
            .and(
                e::holder_node_id
                    .is_null()
                    .or(e::holder_node_id.ne($node_id)),
            )
            .and(e::is_deleted.eq(false).or(e::seq.gt($registered_seq)))
    };
}

diesel::define_sql_function! {
    /// Length of a text in bytes (not characters), in SQLite 3.43+ and PostgreSQL alike.
    fn octet_length(x: diesel::sql_types::Text) -> diesel::sql_types::Integer;
}

/// What a packet needs to know about an entity before loading its data: its key, position in
/// the change log, whether it is a tombstone, and the size of its data in bytes.
#[derive(Debug, Clone, Queryable)]
pub struct Head {
    pub entity_type: String,
    pub entity_uuid: String,
    pub seq: i64,
    pub is_deleted: bool,
    pub data_len: i32,
}

macro_rules! head_columns {
    () => {
        (
            e::entity_type,
            e::entity_uuid,
            e::seq,
            e::is_deleted,
            octet_length(e::data),
        )
    };
}

/// [`pending`] without the data: the node's pending change-log entries, oldest first, at most
/// `limit`, with their data sizes (so an answer can be cut to its byte budget before any large
/// entity is loaded).
pub fn pending_heads(
    conn: &mut Conn,
    node_id: &str,
    cursor: i64,
    registered_seq: i64,
    limit: i64,
) -> StoreResult<Vec<Head>> {
    Ok(e::entities
        .filter(pending_filter!(node_id, cursor, registered_seq))
        .order(e::seq.asc())
        .select(head_columns!())
        .limit(limit)
        .load(conn)?)
}

/// One entity's [`Head`].
pub fn head(conn: &mut Conn, entity_type: &str, uuid: &str) -> StoreResult<Option<Head>> {
    Ok(e::entities
        .find((entity_type, uuid))
        .select(head_columns!())
        .first(conn)
        .optional()?)
}

pub fn count_pending(
    conn: &mut Conn,
    node_id: &str,
    cursor: i64,
    registered_seq: i64,
) -> StoreResult<i64> {
    Ok(e::entities
        .filter(pending_filter!(node_id, cursor, registered_seq))
        .count()
        .get_result(conn)?)
}

/// True when the change log alone already makes this entity pending for the node.
pub fn is_pending_in_log(ent: &Entity, node_id: &str, cursor: i64, registered_seq: i64) -> bool {
    ent.seq > cursor
        && ent.holder_node_id.as_deref() != Some(node_id)
        && (!ent.is_deleted || ent.seq > registered_seq)
}

/// One change-log entry as the pending counts need it: (seq, holder, deleted).
pub type LogEntry = (i64, Option<String>, bool);

/// The change log in `seq` order after `after_seq`, at most `limit` entries (keyset paging, so
/// callers can stream a large log in bounded memory).
pub fn log_page(conn: &mut Conn, after_seq: i64, limit: i64) -> StoreResult<Vec<LogEntry>> {
    Ok(e::entities
        .filter(e::seq.gt(after_seq))
        .order(e::seq.asc())
        .select((e::seq, e::holder_node_id, e::is_deleted))
        .limit(limit)
        .load(conn)?)
}
