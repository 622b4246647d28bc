//! Queries on `entities`, the entity store that doubles as the change log. Which log entries
//! are pending for a node is the pending-queue rule, kept whole in [`super::pending`].

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
