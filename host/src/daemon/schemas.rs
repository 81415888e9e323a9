//! The schema registry: JSON Schemas by event type and version, kept in the event log
//! (`EventLog::put_schema`, so every daemon on a shared NATS log sees the same registry)
//! and compiled in memory here.
//!
//! Publishing an event whose type has schemas validates its `data` against the
//! version its `dataschema` names (`.../schemas/<type>/<version>`), else against
//! the latest version. Versions order numerically when both are integers,
//! otherwise as strings. A registered version is immutable: putting different
//! content under it is a conflict (decided by the log, so also across daemons).
//!
//! Freshness: the compiled view is re-read from the log on every `PUT`, on every
//! `GET /v1/schemas`, in the background every [`REFRESH`]/2, and before validating a
//! publish when the view is older than [`REFRESH`] or the event's type has no schema here
//! and was not looked up in the last [`REFRESH`]. So a schema registered through another
//! daemon validates this daemon's publishes at most [`REFRESH`] later, and at once for a
//! type this daemon has not seen in the last second. Events plugins emit are checked
//! against the background-refreshed view.
//!
//! Schemas of older releases, files under `DATA/schemas/<type>/<version>.json`, are
//! imported into the log at start; the directory is then renamed `schemas.imported`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;
use crate::log::{EventLog, LogError, SchemaPut, SchemaRecord};

/// How stale the compiled view may be when it validates a publish (see the module doc).
pub const REFRESH: Duration = Duration::from_secs(1);

/// Types remembered as "looked up, no schema" at most; past it the memory starts over.
const MAX_ABSENT: usize = 10_000;

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
    #[error(
        "schema file {path} differs from schema {ty} version {version} already in the log; \
         move the file away (or register it as a new version) and start again"
    )]
    ImportConflict {
        path: String,
        ty: String,
        version: String,
    },
    /// The log failed to store or list schemas.
    #[error("the schema registry's log: {0}")]
    Log(LogError),
}

impl From<LogError> for SchemaError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::SchemaConflict { ty, version } => SchemaError::Conflict { ty, version },
            // Refused by the log's own limits (its size).
            LogError::Invalid(why) => SchemaError::InvalidSchema(why),
            e => SchemaError::Log(e),
        }
    }
}

/// What `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The same schema was already registered under this version.
    Unchanged,
}

/// A registered schema, as listed. Its serde form is the file format of older releases
/// (`DATA/schemas/<type>/<version>.json`, read by the import); the API answers with its
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

/// The compiled view of the log's schemas.
#[derive(Default)]
struct Cache {
    types: BTreeMap<String, BTreeMap<String, Entry>>,
    /// When the last complete read of the log began.
    loaded: Option<Instant>,
    /// Types a read that began at that instant found without schemas.
    absent: HashMap<String, Instant>,
}

/// The registry; cheap to share behind an `Arc`.
pub struct SchemaRegistry {
    log: Arc<dyn EventLog>,
    cache: RwLock<Cache>,
    /// One read of the log at a time; callers that waited for it use its result.
    refreshing: tokio::sync::Mutex<()>,
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

/// The log's record as a listed, compiled entry.
fn entry_of(record: SchemaRecord) -> Result<Entry, String> {
    let schema: Value = serde_json::from_str(&record.schema).map_err(|e| e.to_string())?;
    let validator = compile(&schema).map_err(|e| e.to_string())?;
    Ok(Entry {
        info: SchemaInfo {
            ty: record.ty,
            version: record.version,
            registered_at: record.registered_at,
            schema,
        },
        validator: Arc::new(validator),
    })
}

impl SchemaRegistry {
    /// The registry on `log`: imports the schema files of an older release from
    /// `legacy_dir` (if it exists; renamed afterwards) and compiles every stored schema.
    pub async fn open(log: Arc<dyn EventLog>, legacy_dir: &Path) -> Result<Self, SchemaError> {
        let registry = SchemaRegistry {
            log,
            cache: RwLock::default(),
            refreshing: tokio::sync::Mutex::new(()),
        };
        registry.import(legacy_dir).await?;
        registry.refresh(Instant::now()).await?;
        Ok(registry)
    }

    /// Re-reads the log every [`REFRESH`]/2 while the registry lives.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let registry: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                if let Err(e) = registry.refresh(Instant::now()).await {
                    tracing::warn!("cannot re-read the schema registry: {e}");
                }
            }
        });
    }

    /// Stores every `<type>/<version>.json` of an older release's registry in the log
    /// (the same content already there is fine), then renames the directory so that this
    /// happens once. A crash before the rename imports again, which changes nothing.
    async fn import(&self, dir: &Path) -> Result<(), SchemaError> {
        if !dir.is_dir() {
            return Ok(());
        }
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SchemaError::Io { path, source }
        };
        let mut imported = 0;
        for ty_dir in std::fs::read_dir(dir).map_err(io(dir))? {
            let ty_dir = ty_dir.map_err(io(dir))?.path();
            if !ty_dir.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&ty_dir).map_err(io(&ty_dir))? {
                let file = file.map_err(io(&ty_dir))?.path();
                if file.extension().is_none_or(|x| x != "json") {
                    continue; // leftover temp files of an interrupted put
                }
                let corrupt = |message: String| SchemaError::Corrupt {
                    path: file.display().to_string(),
                    message,
                };
                let bytes = std::fs::read(&file).map_err(io(&file))?;
                let info: SchemaInfo =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                compile(&info.schema).map_err(|e| corrupt(e.to_string()))?;
                let record = SchemaRecord {
                    schema: info.schema.to_string(),
                    ty: info.ty,
                    version: info.version,
                    registered_at: info.registered_at,
                };
                let (ty, version) = (record.ty.clone(), record.version.clone());
                match self.log.put_schema(record).await {
                    Ok(_) => imported += 1,
                    Err(LogError::SchemaConflict { .. }) => {
                        return Err(SchemaError::ImportConflict {
                            path: file.display().to_string(),
                            ty,
                            version,
                        });
                    }
                    Err(e) => return Err(SchemaError::Log(e)),
                }
            }
        }
        let target = (1..)
            .map(|n| {
                let name = if n == 1 {
                    "schemas.imported".to_owned()
                } else {
                    format!("schemas.imported.{n}")
                };
                dir.with_file_name(name)
            })
            .find(|p: &PathBuf| !p.exists())
            .unwrap_or_else(|| dir.with_file_name("schemas.imported"));
        std::fs::rename(dir, &target).map_err(io(dir))?;
        tracing::info!(
            imported,
            from = %dir.display(),
            renamed = %target.display(),
            "imported the schema files of an older release into the log"
        );
        Ok(())
    }

    /// Reads every schema from the log and compiles the ones not known yet — unless a read
    /// that began at or after `needed_since` already finished meanwhile. Answers when the
    /// read that counts began.
    async fn refresh(&self, needed_since: Instant) -> Result<Instant, SchemaError> {
        let _one = self.refreshing.lock().await;
        if let Some(loaded) = self.read_cache().loaded
            && loaded >= needed_since
        {
            return Ok(loaded);
        }
        let began = Instant::now();
        let records = self.log.schemas().await?;
        let mut fresh = Vec::new();
        {
            let cache = self.read_cache();
            for record in records {
                let known = cache
                    .types
                    .get(&record.ty)
                    .is_some_and(|v| v.contains_key(&record.version));
                if !known {
                    fresh.push(record);
                }
            }
        }
        // Compiled outside the lock; validators of known versions are reused (immutable).
        let compiled: Vec<Entry> = fresh
            .into_iter()
            .filter_map(|record| {
                let (ty, version) = (record.ty.clone(), record.version.clone());
                entry_of(record)
                    .map_err(|e| {
                        tracing::error!(%ty, %version, "a stored schema does not compile: {e}");
                    })
                    .ok()
            })
            .collect();
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        for entry in compiled {
            cache
                .types
                .entry(entry.info.ty.clone())
                .or_default()
                .insert(entry.info.version.clone(), entry);
        }
        cache.loaded = Some(began);
        Ok(began)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `schema` as `ty` version `version`, durably in the log before answering.
    pub async fn put(
        &self,
        ty: &str,
        version: &str,
        schema: Value,
    ) -> Result<PutOutcome, SchemaError> {
        validate_name("type", ty, 200)?;
        validate_name("version", version, 64)?;
        compile(&schema)?;
        let record = SchemaRecord {
            ty: ty.to_owned(),
            version: version.to_owned(),
            // serde_json's maps are ordered: equal schemas give equal texts.
            schema: schema.to_string(),
            registered_at: crate::event::now_rfc3339(),
        };
        let outcome = self.log.put_schema(record).await?;
        self.refresh(Instant::now()).await?;
        Ok(match outcome {
            SchemaPut::Created => PutOutcome::Created,
            SchemaPut::Unchanged => PutOutcome::Unchanged,
        })
    }

    /// Every registered schema, by type then version order, read from the log now.
    pub async fn list(&self) -> Result<Vec<SchemaInfo>, SchemaError> {
        self.refresh(Instant::now()).await?;
        let cache = self.read_cache();
        let mut out = Vec::new();
        for versions in cache.types.values() {
            let mut v: Vec<&Entry> = versions.values().collect();
            v.sort_by(|a, b| compare_versions(&a.info.version, &b.info.version));
            out.extend(v.into_iter().map(|e| e.info.clone()));
        }
        Ok(out)
    }

    pub async fn get(&self, ty: &str, version: &str) -> Result<Option<SchemaInfo>, SchemaError> {
        let found = |cache: &Cache| {
            cache
                .types
                .get(ty)
                .and_then(|v| v.get(version))
                .map(|e| e.info.clone())
        };
        if let Some(info) = found(&self.read_cache()) {
            return Ok(Some(info));
        }
        self.refresh(Instant::now()).await?;
        Ok(found(&self.read_cache()))
    }

    /// [`SchemaRegistry::validate`] on a view fresh enough for a publish (see the module
    /// doc). If the log cannot be read, the last view is used (the append would meet the
    /// same log next).
    pub async fn check(&self, event: &Event) -> Result<(), Violation> {
        let now = Instant::now();
        let stale = {
            let cache = self.read_cache();
            let old = cache
                .loaded
                .is_none_or(|t| now.saturating_duration_since(t) >= REFRESH);
            let unknown = !cache.types.contains_key(&event.ty)
                && cache
                    .absent
                    .get(&event.ty)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= REFRESH);
            old || unknown
        };
        if stale {
            match self.refresh(now).await {
                Ok(began) => {
                    let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
                    if !cache.types.contains_key(&event.ty) {
                        if cache.absent.len() >= MAX_ABSENT {
                            cache.absent.clear();
                        }
                        cache.absent.insert(event.ty.clone(), began);
                    }
                }
                Err(e) => tracing::warn!("cannot re-read the schema registry: {e}"),
            }
        }
        self.validate(event)
    }

    /// Checks an event's data against its type's schema, if the type has one, on the
    /// compiled view as it is (no read of the log).
    pub fn validate(&self, event: &Event) -> Result<(), Violation> {
        let (version, validator) = {
            let cache = self.read_cache();
            let Some(versions) = cache.types.get(&event.ty) else {
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
pub async fn preload(registry: &SchemaRegistry, dir: &Path) -> Result<usize, PreloadError> {
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
            .await
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

    fn memory_log() -> Arc<dyn EventLog> {
        Arc::new(crate::log::MemoryLog::new(crate::log::LogConfig::default()).unwrap())
    }

    fn redb_log(dir: &Path) -> Arc<dyn EventLog> {
        Arc::new(
            crate::log::RedbLog::open(dir.join("log.redb"), crate::log::LogConfig::default())
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn put_is_durable_idempotent_and_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let log = redb_log(dir.path());
        let reg = SchemaRegistry::open(log, &dir.path().join("schemas"))
            .await
            .unwrap();
        assert_eq!(
            reg.put("user.created", "1", user_schema("email"))
                .await
                .unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            reg.put("user.created", "1", user_schema("email"))
                .await
                .unwrap(),
            PutOutcome::Unchanged
        );
        assert!(matches!(
            reg.put("user.created", "1", user_schema("age")).await,
            Err(SchemaError::Conflict { .. })
        ));
        drop(reg);
        // Reopened on the same log file: the schema is there, and in no file.
        let reg = SchemaRegistry::open(redb_log(dir.path()), &dir.path().join("schemas"))
            .await
            .unwrap();
        assert_eq!(reg.list().await.unwrap().len(), 1);
        assert!(reg.get("user.created", "1").await.unwrap().is_some());
        assert!(!dir.path().join("schemas").exists());
    }

    #[tokio::test]
    async fn validation_names_the_failing_path_and_uses_the_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SchemaRegistry::open(memory_log(), &dir.path().join("schemas"))
            .await
            .unwrap();
        reg.put("user.created", "2", user_schema("email"))
            .await
            .unwrap();
        reg.put("user.created", "10", user_schema("age"))
            .await
            .unwrap();
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

    #[tokio::test]
    async fn bad_names_and_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SchemaRegistry::open(memory_log(), &dir.path().join("schemas"))
            .await
            .unwrap();
        assert!(matches!(
            reg.put("../x", "1", json!({})).await,
            Err(SchemaError::InvalidName(_))
        ));
        assert!(matches!(
            reg.put("a", "1/2", json!({})).await,
            Err(SchemaError::InvalidName(_))
        ));
        assert!(matches!(
            reg.put("a", "1", json!({"type": "no-such-type"})).await,
            Err(SchemaError::InvalidSchema(_))
        ));
        assert!(matches!(
            reg.put("a", "1", json!(5)).await,
            Err(SchemaError::InvalidSchema(_))
        ));
        assert!(reg.list().await.unwrap().is_empty());
    }

    /// A schema file as an older release wrote it.
    fn legacy_file(dir: &Path, ty: &str, version: &str, schema: Value) {
        let info = SchemaInfo {
            ty: ty.into(),
            version: version.into(),
            registered_at: "2026-01-02T03:04:05Z".into(),
            schema,
        };
        std::fs::create_dir_all(dir.join(ty)).unwrap();
        std::fs::write(
            dir.join(ty).join(format!("{version}.json")),
            serde_json::to_vec_pretty(&info).unwrap(),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn schema_files_of_an_older_release_are_imported_into_the_log_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("schemas");
        legacy_file(&files, "user.created", "1", user_schema("email"));
        legacy_file(&files, "user.created", "2", user_schema("age"));
        std::fs::write(files.join("user.created/.3.json.tmp"), b"{torn").unwrap();
        let reg = SchemaRegistry::open(redb_log(dir.path()), &files)
            .await
            .unwrap();
        let listed = reg.list().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].registered_at, "2026-01-02T03:04:05Z");
        assert!(!files.exists());
        assert!(
            dir.path()
                .join("schemas.imported/user.created/1.json")
                .exists()
        );
        drop(reg);
        // The next start reads them from the log alone.
        let reg = SchemaRegistry::open(redb_log(dir.path()), &files)
            .await
            .unwrap();
        assert_eq!(reg.list().await.unwrap().len(), 2);
        let v = reg
            .validate(&event("user.created", json!({"email": "a"})))
            .unwrap_err();
        assert_eq!(v.version, "2");
        drop(reg);

        // A file that contradicts the log stops the start, naming the file; nothing moves.
        legacy_file(&files, "user.created", "1", user_schema("age"));
        let err = SchemaRegistry::open(redb_log(dir.path()), &files)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SchemaError::ImportConflict { .. }), "{err}");
        assert!(err.to_string().contains("1.json"), "{err}");
        assert!(files.exists());
    }

    #[tokio::test]
    async fn a_schema_put_through_another_registry_on_the_log_is_used_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let log = memory_log();
        let a = SchemaRegistry::open(log.clone(), &dir.path().join("a"))
            .await
            .unwrap();
        let b = SchemaRegistry::open(log, &dir.path().join("b"))
            .await
            .unwrap();
        let bad = event("user.created", json!({"name": "no email"}));
        // A type B has no schema for is looked up at once.
        a.put("user.created", "1", user_schema("email"))
            .await
            .unwrap();
        assert_eq!(b.check(&bad).await.unwrap_err().version, "1");
        // A new version of a type B knows is seen within REFRESH.
        a.put("user.created", "2", user_schema("age"))
            .await
            .unwrap();
        let started = Instant::now();
        while b
            .check(&event("user.created", json!({"email": "a"})))
            .await
            .is_ok()
        {
            assert!(started.elapsed() < REFRESH * 3, "B never saw version 2");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(started.elapsed() <= REFRESH + Duration::from_millis(500));
        assert_eq!(
            b.list().await.unwrap().len(),
            2,
            "listing reads the log now"
        );
    }
}
