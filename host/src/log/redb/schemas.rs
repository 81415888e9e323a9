//! The schema registry in the redb file: one table, `schemas`, (type, version) → record.
//!
//! A put is its own write transaction, begun on the caller's thread (redb runs one write
//! transaction at a time, so it waits for the writer's group commit in progress and the
//! writer waits for it): schemas are rare and small, and the writer's caches know nothing
//! of them. The table is created by the first put, so a file of format 2 written before
//! it existed reads as "no schemas" and needs no format change or migration (an older
//! build opening a newer file ignores the table).

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::Shared;
use crate::log::schema::{check_schema, decide_put, decode_schema, encode_schema};
use crate::log::{LogError, SchemaPut, SchemaRecord};

/// (type, version) → `encode_schema` record.
const SCHEMAS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("schemas");

pub(super) fn put(s: &Shared, record: &SchemaRecord) -> Result<SchemaPut, LogError> {
    check_schema(record)?;
    let txn = s.db.begin_write()?;
    let outcome = {
        let mut table = txn.open_table(SCHEMAS)?;
        let existing = table
            .get((record.ty.as_str(), record.version.as_str()))?
            .map(|g| decode_schema(g.value()))
            .transpose()?;
        let outcome = decide_put(existing.as_ref(), record)?;
        if outcome == SchemaPut::Created {
            table.insert(
                (record.ty.as_str(), record.version.as_str()),
                encode_schema(record).as_slice(),
            )?;
        }
        outcome
    };
    if outcome == SchemaPut::Unchanged {
        txn.abort()?;
        return Ok(outcome);
    }
    txn.commit()
        .map_err(|e| LogError::OutcomeUnknown(super::error::storage(e)))?;
    Ok(outcome)
}

pub(super) fn list(db: &Database) -> Result<Vec<SchemaRecord>, LogError> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(SCHEMAS) {
        Ok(table) => table,
        Err(::redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, record) = row?;
        out.push(decode_schema(record.value())?);
    }
    Ok(out)
}
