//! The schema registry's records, as every backend keeps them: one immutable
//! [`SchemaRecord`] per (type, version), shared by every daemon on the same log.
//!
//! The log stores the schema's JSON text and compares texts: validating and compiling
//! JSON Schema is the daemon's business (`daemon::schemas`), which hands the log a
//! canonical text (keys sorted), so "the same schema" is "the same text".

use super::LogError;
use super::encoding::{Dec, Enc};

/// The longest schema text the log stores (a NATS message holds 1 MiB by default).
pub const MAX_SCHEMA_BYTES: usize = 512 * 1024;

/// A registered schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRecord {
    /// The CloudEvents `type` it applies to.
    pub ty: String,
    pub version: String,
    /// The schema as JSON text; two puts of one version agree when these are equal.
    pub schema: String,
    /// When it was first registered (RFC 3339); a repeated put keeps the first.
    pub registered_at: String,
}

/// What [`super::EventLog::put_schema`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaPut {
    Created,
    /// The same text was already registered under this version: nothing written.
    Unchanged,
}

/// The checks every backend runs before it stores a schema.
pub(crate) fn check_schema(record: &SchemaRecord) -> Result<(), LogError> {
    for (what, name) in [("type", &record.ty), ("version", &record.version)] {
        if name.is_empty() || name.len() > 255 {
            return Err(LogError::Invalid(format!(
                "a schema {what} is 1 to 255 bytes, not {}",
                name.len()
            )));
        }
    }
    if record.schema.len() > MAX_SCHEMA_BYTES {
        return Err(LogError::Invalid(format!(
            "schema {} version {} is {} bytes; the limit is {MAX_SCHEMA_BYTES}",
            record.ty,
            record.version,
            record.schema.len()
        )));
    }
    Ok(())
}

/// Decides a put against what is stored under the same (type, version): `Unchanged` for the
/// same text, [`LogError::SchemaConflict`] for another, `Created` (write it) for none.
pub(crate) fn decide_put(
    existing: Option<&SchemaRecord>,
    new: &SchemaRecord,
) -> Result<SchemaPut, LogError> {
    match existing {
        None => Ok(SchemaPut::Created),
        Some(old) if old.schema == new.schema => Ok(SchemaPut::Unchanged),
        Some(_) => Err(LogError::SchemaConflict {
            ty: new.ty.clone(),
            version: new.version.clone(),
        }),
    }
}

pub(crate) fn encode_schema(record: &SchemaRecord) -> Vec<u8> {
    let mut enc = Enc::record();
    enc.str(&record.ty);
    enc.str(&record.version);
    enc.str(&record.schema);
    enc.str(&record.registered_at);
    enc.finish()
}

pub(crate) fn decode_schema(buf: &[u8]) -> Result<SchemaRecord, LogError> {
    let mut dec = Dec::record(buf, "schema")?;
    let record = SchemaRecord {
        ty: dec.string()?,
        version: dec.string()?,
        schema: dec.string()?,
        registered_at: dec.string()?,
    };
    dec.end()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_record_round_trips_and_puts_are_decided_by_text() {
        let r = SchemaRecord {
            ty: "user.created".into(),
            version: "1".into(),
            schema: r#"{"type":"object"}"#.into(),
            registered_at: "2026-11-30T00:00:00Z".into(),
        };
        assert_eq!(decode_schema(&encode_schema(&r)).unwrap(), r);
        assert!(decode_schema(&encode_schema(&r)[..5]).is_err());
        assert_eq!(decide_put(None, &r).unwrap(), SchemaPut::Created);
        let again = SchemaRecord {
            registered_at: "later".into(),
            ..r.clone()
        };
        assert_eq!(decide_put(Some(&r), &again).unwrap(), SchemaPut::Unchanged);
        let other = SchemaRecord {
            schema: "true".into(),
            ..r.clone()
        };
        assert!(matches!(
            decide_put(Some(&r), &other),
            Err(LogError::SchemaConflict { .. })
        ));
    }
}
