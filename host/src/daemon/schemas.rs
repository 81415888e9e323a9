//! The schema registry: JSON Schemas by event type and version, kept as files
//! under `DATA/schemas/<type>/<version>.json` (written temp-then-rename, so a
//! crash leaves the old file or the new one) and compiled in memory.
//!
//! Publishing an event whose type has schemas validates its `data` against the
//! version its `dataschema` names (`.../schemas/<type>/<version>`), else against
//! the latest version. Versions order numerically when both are integers,
//! otherwise as strings. A registered version is immutable: putting different
//! content under it is a conflict.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;

/// Why a schema could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{0}")]
    InvalidName(String),
    #[error("not a usable JSON Schema: {0}")]
    InvalidSchema(String),
    #[error(
        "schema {ty} version {version} is already registered with different content; register a new version"
    )]
    Conflict { ty: String, version: String },
    #[error("schema store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("schema file {path} is damaged: {message}")]
    Corrupt { path: String, message: String },
}

/// What `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The same schema was already registered under this version.
    Unchanged,
}

/// A registered schema, as listed. Its serde form is the registry's file
/// format (`DATA/schemas/<type>/<version>.json`); the API answers with its
/// own `api::dto::SchemaJson`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaInfo {
    #[serde(rename = "type")]
    pub ty: String,
    pub version: String,
    pub registered_at: String,
    pub schema: Value,
}

/// Data that does not satisfy its type's schema.
#[derive(Debug, Clone, thiserror::Error)]
#[error("event `{id}` of type {ty}: data does not match schema version {version}: {details}")]
pub struct Violation {
    pub id: String,
    pub ty: String,
    pub version: String,
    /// JSON Pointer of the first failing value inside `data` (`""` is the root).
    pub path: String,
    pub details: String,
}

struct Entry {
    info: SchemaInfo,
    validator: Arc<jsonschema::Validator>,
}

/// The registry; cheap to share behind an `Arc`.
pub struct SchemaRegistry {
    dir: PathBuf,
    types: RwLock<BTreeMap<String, BTreeMap<String, Entry>>>,
}

/// Type and version names: safe as file names and URL segments.
pub fn validate_name(what: &str, name: &str, max: usize) -> Result<(), SchemaError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SchemaError::InvalidName(format!(
            "schema {what} {name:?} must be 1 to {max} characters of A-Z a-z 0-9 . _ - and not start with '.'"
        )))
    }
}

fn compare_versions(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        _ => a.cmp(b),
    }
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, SchemaError> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(SchemaError::InvalidSchema(
            "a schema is a JSON object (or true/false)".into(),
        ));
    }
    jsonschema::validator_for(schema).map_err(|e| SchemaError::InvalidSchema(e.to_string()))
}

impl SchemaRegistry {
    /// Opens (creating) the store at `dir` and compiles every stored schema.
    pub fn open(dir: &Path) -> Result<Self, SchemaError> {
        let io = |source| SchemaError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut types: BTreeMap<String, BTreeMap<String, Entry>> = BTreeMap::new();
        for ty_dir in std::fs::read_dir(dir).map_err(io)? {
            let ty_dir = ty_dir.map_err(io)?.path();
            if !ty_dir.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&ty_dir).map_err(io)? {
                let file = file.map_err(io)?.path();
                if file.extension().is_none_or(|x| x != "json") {
                    continue; // leftover temp files of an interrupted put
                }
                let corrupt = |message: String| SchemaError::Corrupt {
                    path: file.display().to_string(),
                    message,
                };
                let bytes = std::fs::read(&file).map_err(io)?;
                let info: SchemaInfo =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                let validator = compile(&info.schema).map_err(|e| corrupt(e.to_string()))?;
                types.entry(info.ty.clone()).or_default().insert(
                    info.version.clone(),
                    Entry {
                        info,
                        validator: Arc::new(validator),
                    },
                );
            }
        }
        Ok(SchemaRegistry {
            dir: dir.to_owned(),
            types: RwLock::new(types),
        })
    }

    /// Registers `schema` as `ty` version `version`, durably (fsync'd) before answering.
    pub fn put(&self, ty: &str, version: &str, schema: Value) -> Result<PutOutcome, SchemaError> {
        validate_name("type", ty, 200)?;
        validate_name("version", version, 64)?;
        let validator = compile(&schema)?;
        // The write lock is held across the file write, so two puts of one version
        // cannot both succeed with different content.
        let mut types = self.types.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = types.get(ty).and_then(|v| v.get(version)) {
            return if existing.info.schema == schema {
                Ok(PutOutcome::Unchanged)
            } else {
                Err(SchemaError::Conflict {
                    ty: ty.to_owned(),
                    version: version.to_owned(),
                })
            };
        }
        let info = SchemaInfo {
            ty: ty.to_owned(),
            version: version.to_owned(),
            registered_at: crate::event::now_rfc3339(),
            schema,
        };
        self.write_file(&info)?;
        types.entry(ty.to_owned()).or_default().insert(
            version.to_owned(),
            Entry {
                info,
                validator: Arc::new(validator),
            },
        );
        Ok(PutOutcome::Created)
    }

    fn write_file(&self, info: &SchemaInfo) -> Result<(), SchemaError> {
        let ty_dir = self.dir.join(&info.ty);
        let io = |source| SchemaError::Io {
            path: ty_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&ty_dir).map_err(io)?;
        let target = ty_dir.join(format!("{}.json", info.version));
        let temp = ty_dir.join(format!(".{}.json.tmp", info.version));
        let bytes = serde_json::to_vec_pretty(info)
            .map_err(|e| SchemaError::InvalidSchema(e.to_string()))?;
        let mut f = std::fs::File::create(&temp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&temp, &target).map_err(io)?;
        // The rename is durable only once the directory is synced.
        std::fs::File::open(&ty_dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }

    /// Every registered schema, by type then version order.
    pub fn list(&self) -> Vec<SchemaInfo> {
        let types = self.types.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for versions in types.values() {
            let mut v: Vec<&Entry> = versions.values().collect();
            v.sort_by(|a, b| compare_versions(&a.info.version, &b.info.version));
            out.extend(v.into_iter().map(|e| e.info.clone()));
        }
        out
    }

    pub fn get(&self, ty: &str, version: &str) -> Option<SchemaInfo> {
        let types = self.types.read().unwrap_or_else(PoisonError::into_inner);
        types.get(ty)?.get(version).map(|e| e.info.clone())
    }

    /// Checks an event's data against its type's schema, if the type has one.
    pub fn validate(&self, event: &Event) -> Result<(), Violation> {
        let (version, validator) = {
            let types = self.types.read().unwrap_or_else(PoisonError::into_inner);
            let Some(versions) = types.get(&event.ty) else {
                return Ok(());
            };
            let named = event.dataschema.as_deref().and_then(|uri| {
                versions
                    .iter()
                    .find(|(v, _)| uri.ends_with(&format!("/schemas/{}/{}", event.ty, v)))
            });
            let chosen =
                named.or_else(|| versions.iter().max_by(|a, b| compare_versions(a.0, b.0)));
            let Some((version, entry)) = chosen else {
                return Ok(());
            };
            (version.clone(), entry.validator.clone())
        };
        let violation = |path: String, details: String| Violation {
            id: event.id.clone(),
            ty: event.ty.clone(),
            version: version.clone(),
            path,
            details,
        };
        let is_json = event
            .datacontenttype
            .as_deref()
            .is_none_or(|ct| ct.contains("json"));
        if !is_json {
            return Err(violation(
                String::new(),
                format!(
                    "data is {}, not JSON",
                    event.datacontenttype.as_deref().unwrap_or_default()
                ),
            ));
        }
        let data: Value = match &event.data {
            None => Value::Null,
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| violation(String::new(), format!("data is not valid JSON: {e}")))?,
        };
        let mut errors = validator.iter_errors(&data);
        match errors.next() {
            None => Ok(()),
            Some(first) => {
                let path = first.instance_path().to_string();
                let shown = if path.is_empty() {
                    "/".to_owned()
                } else {
                    path.clone()
                };
                let mut details = format!("at {shown}: {first}");
                let more = errors.count();
                if more > 0 {
                    details.push_str(&format!(" (and {more} more)"));
                }
                Err(violation(path, details))
            }
        }
    }
}

/// Why a schema of the preload directory was not registered: the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("schema file {file}: {message}")]
pub struct PreloadError {
    pub file: String,
    pub message: String,
}

/// Registers every `DIR/TYPE/VERSION.json` (the layout of the store itself) and
/// answers how many; one that is unreadable, not JSON, not a usable schema or
/// different from the registered version of that name stops it, naming the file.
pub fn preload(registry: &SchemaRegistry, dir: &Path) -> Result<usize, PreloadError> {
    let fail = |file: &Path, message: String| PreloadError {
        file: file.display().to_string(),
        message,
    };
    let mut files = Vec::new();
    let types = std::fs::read_dir(dir).map_err(|e| fail(dir, e.to_string()))?;
    for ty_dir in types {
        let ty_dir = ty_dir.map_err(|e| fail(dir, e.to_string()))?.path();
        if !ty_dir.is_dir() {
            return Err(fail(
                &ty_dir,
                "expected a directory named after an event type, holding VERSION.json files".into(),
            ));
        }
        for file in std::fs::read_dir(&ty_dir).map_err(|e| fail(&ty_dir, e.to_string()))? {
            files.push(file.map_err(|e| fail(&ty_dir, e.to_string()))?.path());
        }
    }
    files.sort();
    for file in &files {
        let (Some(ty), Some(version)) = (
            file.parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str()),
            file.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json")),
        ) else {
            return Err(fail(
                file,
                "expected TYPE/VERSION.json (e.g. user.created/1.json)".into(),
            ));
        };
        let text = std::fs::read(file).map_err(|e| fail(file, e.to_string()))?;
        let schema: Value =
            serde_json::from_slice(&text).map_err(|e| fail(file, format!("not JSON: {e}")))?;
        registry
            .put(ty, version, schema)
            .map_err(|e| fail(file, e.to_string()))?;
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ty: &str, data: Value) -> Event {
        Event {
            id: "e1".into(),
            source: "test".into(),
            specversion: "1.0".into(),
            ty: ty.into(),
            subject: None,
            time: crate::event::now_rfc3339(),
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            data: Some(serde_json::to_vec(&data).unwrap()),
            correlationid: "e1".into(),
            causationid: None,
            actor: None,
            extensions: Default::default(),
            stream: None,
            streamversion: None,
        }
    }

    fn user_schema(required: &str) -> Value {
        json!({"type": "object", "required": [required],
               "properties": {"email": {"type": "string"}, "age": {"type": "integer"}}})
    }

    #[test]
    fn put_is_durable_idempotent_and_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SchemaRegistry::open(dir.path()).unwrap();
        assert_eq!(
            reg.put("user.created", "1", user_schema("email")).unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            reg.put("user.created", "1", user_schema("email")).unwrap(),
            PutOutcome::Unchanged
        );
        assert!(matches!(
            reg.put("user.created", "1", user_schema("age")),
            Err(SchemaError::Conflict { .. })
        ));
        drop(reg);
        let reg = SchemaRegistry::open(dir.path()).unwrap();
        assert_eq!(reg.list().len(), 1);
        assert!(reg.get("user.created", "1").is_some());
    }

    #[test]
    fn validation_names_the_failing_path_and_uses_the_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SchemaRegistry::open(dir.path()).unwrap();
        reg.put("user.created", "2", user_schema("email")).unwrap();
        reg.put("user.created", "10", user_schema("age")).unwrap();
        // Latest is 10 (numeric order), which requires age.
        let v = reg
            .validate(&event("user.created", json!({"email": "a"})))
            .unwrap_err();
        assert_eq!(v.version, "10");
        assert!(v.details.contains("age"), "{}", v.details);
        let v = reg
            .validate(&event("user.created", json!({"age": "old"})))
            .unwrap_err();
        assert_eq!(v.path, "/age");
        // dataschema picks version 2.
        let mut e = event("user.created", json!({"email": "a"}));
        e.dataschema = Some("http://x/v1/schemas/user.created/2".into());
        reg.validate(&e).unwrap();
        // Types without a schema are not checked.
        reg.validate(&event("order.placed", json!(1))).unwrap();
    }

    #[test]
    fn bad_names_and_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SchemaRegistry::open(dir.path()).unwrap();
        assert!(matches!(
            reg.put("../x", "1", json!({})),
            Err(SchemaError::InvalidName(_))
        ));
        assert!(matches!(
            reg.put("a", "1/2", json!({})),
            Err(SchemaError::InvalidName(_))
        ));
        assert!(matches!(
            reg.put("a", "1", json!({"type": "no-such-type"})),
            Err(SchemaError::InvalidSchema(_))
        ));
        assert!(matches!(
            reg.put("a", "1", json!(5)),
            Err(SchemaError::InvalidSchema(_))
        ));
        assert!(reg.list().is_empty());
    }
}
