//! Queries on `entities`, the entity store that doubles as the change log. Which log entries
//! are pending for a node is the pending-queue rule, kept whole in [`super::pending`].

use diesel::prelude::*;

use super::models::Entity;
use super::schema::entities::dsl as e;
use super::{Conn, StoreResult};

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
    pub scope: Option<String>,
}

macro_rules! head_columns {
    () => {
        (
            e::entity_type,
            e::entity_uuid,
            e::seq,
            e::is_deleted,
            $crate::store::entities::octet_length(e::data),
            e::scope,
        )
    };
}
pub(crate) use head_columns;

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

/// Up to `limit` entities of one type (tombstones included) with ids after `after`, by id: the
/// primary key's order, so a page is one index range scan however large the table.
pub fn page(
    conn: &mut Conn,
    entity_type: &str,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Entity>> {
    let mut q = e::entities
        .filter(e::entity_type.eq(entity_type))
        .order(e::entity_uuid.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(e::entity_uuid.gt(after));
    }
    Ok(q.load(conn)?)
}

/// The distinct entity types, sorted, at most `max` of them. One index seek per type (the
/// primary key starts with the type) instead of `SELECT DISTINCT`, which reads every row's key.
pub fn types(conn: &mut Conn, max: usize) -> StoreResult<Vec<String>> {
    let mut found: Vec<String> = Vec::new();
    while found.len() < max {
        let mut q = e::entities
            .select(e::entity_type)
            .order(e::entity_type.asc())
            .into_boxed();
        if let Some(last) = found.last() {
            q = q.filter(e::entity_type.gt(last.clone()));
        }
        match q.first::<String>(conn).optional()? {
            Some(t) => found.push(t),
            None => break,
        }
    }
    Ok(found)
}

/// One entity's [`Head`].
pub fn head(conn: &mut Conn, entity_type: &str, uuid: &str) -> StoreResult<Option<Head>> {
    Ok(e::entities
        .find((entity_type, uuid))
        .select(head_columns!())
        .first(conn)
        .optional()?)
}
