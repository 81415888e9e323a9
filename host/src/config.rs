//! The daemon's settings, resolved once: built-in defaults, then the TOML file
//! (`--config`), then environment variables and flags (which the binary merges
//! into [`Overrides`]). Everything after this point takes a ready [`Config`].
//!
//! File keys are kebab-case, and unknown keys are refused with their name, so
//! a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::log::RetentionPolicy;

/// The resolved settings of `evhost run`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds the log (`log.redb`), the component cache, schemas and the lock file.
    pub data_dir: PathBuf,
    /// Every `*.wasm` here is loaded at start, with its optional `NAME.toml` sidecar.
    pub plugin_dir: PathBuf,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub api: ApiConfig,
    pub log: LogSettings,
    pub dispatch: DispatchSettings,
    pub runtime: RuntimeSettings,
    /// Topics created (or given this retention) at start, by `[topics.NAME]`.
    pub topics: Vec<TopicSettings>,
    /// JSON Schemas registered at start from `DIR/TYPE/VERSION.json`.
    pub schemas_dir: Option<PathBuf>,
    /// The file these settings were read from, if any: where an operator
    /// changes them, so messages about a setting name it.
    pub file: Option<PathBuf>,
}

/// How the daemon writes its own log lines (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "log format must be `text` or `json`, got `{other}`"
            )),
        }
    }
}

/// The HTTP API's settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// When set, mutating requests need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// With a token: reads need it too (`/healthz` never does).
    pub protect_reads: bool,
    /// Largest request body; larger ones get `413`.
    pub max_body_bytes: usize,
}

/// Where the event log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogBackend {
    /// The embedded redb file `DATA/log.redb` (the default).
    Redb,
    /// A NATS JetStream stream `EVHOST_<prefix>` on the given servers (`log::NatsLog`).
    Nats {
        servers: Vec<String>,
        /// 1, or 3 on a cluster.
        replicas: usize,
        /// Names this installation in a shared cluster.
        prefix: String,
    },
}

/// The stream prefix when none is configured.
pub const DEFAULT_NATS_PREFIX: &str = "evhost";

/// Reads `--log`: `redb`, or `nats://HOST:PORT[,nats://HOST:PORT...]`.
pub fn parse_log_spec(spec: &str) -> Result<LogBackend, String> {
    if spec == "redb" {
        return Ok(LogBackend::Redb);
    }
    let servers: Vec<String> = spec.split(',').map(|s| s.trim().to_owned()).collect();
    if servers
        .iter()
        .all(|s| s.starts_with("nats://") && s.len() > 7)
    {
        return Ok(LogBackend::Nats {
            servers,
            replicas: 1,
            prefix: DEFAULT_NATS_PREFIX.into(),
        });
    }
    Err(format!(
        "--log takes `redb` or `nats://HOST:PORT[,nats://HOST:PORT...]`, not `{spec}`"
    ))
}

/// The log's settings that operators tune.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// redb (default) or NATS JetStream.
    pub backend: LogBackend,
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    pub dedupe_window: Duration,
    pub max_event_bytes: usize,
    /// The storage engine's page cache: bounds the daemon's memory.
    pub cache_bytes: usize,
    /// The retention of topics without one of their own (auto-created, or
    /// created through the API without `retention`).
    pub default_retention: RetentionPolicy,
    /// How often retention runs.
    pub retention_interval: Duration,
}

/// One `[topics.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    pub name: String,
    pub partitions: u32,
    pub retention: RetentionPolicy,
}

/// Dispatch and shutdown.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub batch_size: usize,
    /// How long shutdown waits for in-flight requests and plugin calls.
    pub shutdown_timeout: Duration,
    /// Unhealthy calls in a row that open a plugin's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker pauses the plugin before a probe call.
    pub breaker_cool_down: Duration,
    /// How often each plugin looks for new topics its subscriptions match.
    pub topic_scan_interval: Duration,
}

/// The Wasm runtime's instance pool (see `runtime::PoolConfig`).
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Plugin instances that may exist at once (one per running consumer).
    pub instances: u32,
    /// Largest linear memory of one instance; caps every plugin's `memory`.
    pub instance_memory: usize,
}

/// The default memory limit of a plugin; `[runtime] instance-memory` may not be smaller.
const PLUGIN_MEMORY_DEFAULT: usize = 64 << 20;
/// Largest `[runtime] instance-memory`: wasmtime reserves 4 GiB per memory
/// slot, and a slot cannot be larger than its reservation.
const INSTANCE_MEMORY_MAX: usize = 4 << 30;

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("evhost-data"),
            plugin_dir: PathBuf::from("plugins"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            log_format: LogFormat::Text,
            api: ApiConfig {
                token: None,
                protect_reads: false,
                max_body_bytes: 4 << 20,
            },
            log: LogSettings {
                backend: LogBackend::Redb,
                auto_create_topics: true,
                default_partitions: 1,
                dedupe_window: Duration::from_secs(120),
                max_event_bytes: 1 << 20,
                cache_bytes: 64 << 20,
                default_retention: RetentionPolicy::default(),
                retention_interval: Duration::from_secs(30),
            },
            dispatch: DispatchSettings {
                batch_size: 64,
                shutdown_timeout: Duration::from_secs(10),
                breaker_threshold: 10,
                breaker_cool_down: Duration::from_secs(30),
                topic_scan_interval: Duration::from_millis(250),
            },
            runtime: RuntimeSettings {
                instances: 1000,
                instance_memory: 256 << 20,
            },
            topics: Vec::new(),
            schemas_dir: None,
            file: None,
        }
    }
}

/// Settings given on the command line or in the environment; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub plugin_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub token: Option<String>,
    /// `--log`: where the event log lives.
    pub log: Option<LogBackend>,
    /// `--schemas`: JSON Schemas to register at start.
    pub schemas_dir: Option<PathBuf>,
}

/// Why the configuration could not be loaded; each names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The file as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    data_dir: Option<PathBuf>,
    plugin_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    api: Option<FileApi>,
    log: Option<FileLog>,
    dispatch: Option<FileDispatch>,
    runtime: Option<FileRuntime>,
    topics: Option<std::collections::BTreeMap<String, FileTopic>>,
    schemas: Option<FileSchemas>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileTopic {
    partitions: Option<u32>,
    retention_max_age: Option<HumanDuration>,
    retention_max_partition_bytes: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSchemas {
    dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileApi {
    token: Option<String>,
    protect_reads: Option<bool>,
    max_body_bytes: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileLog {
    /// `redb` (default) or `nats`.
    backend: Option<String>,
    /// NATS only: `nats://HOST:PORT` URLs.
    servers: Option<Vec<String>>,
    /// NATS only: 1 or 3.
    replicas: Option<usize>,
    /// NATS only: names this installation in a shared cluster.
    prefix: Option<String>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<u32>,
    dedupe_window: Option<HumanDuration>,
    max_event_bytes: Option<ByteSize>,
    cache_size: Option<ByteSize>,
    retention_max_age: Option<HumanDuration>,
    retention_max_partition_bytes: Option<ByteSize>,
    retention_interval: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileDispatch {
    batch_size: Option<usize>,
    shutdown_timeout: Option<HumanDuration>,
    breaker_threshold: Option<u32>,
    breaker_cool_down: Option<HumanDuration>,
    topic_scan_interval: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileRuntime {
    instances: Option<u32>,
    instance_memory: Option<ByteSize>,
}

/// Loads `file` (when given) over the defaults and applies `overrides`.
pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    if let Some(path) = file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let parsed: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: shown.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let backend = parsed
            .log
            .as_ref()
            .map(file_backend)
            .transpose()
            .map_err(|message| ConfigError::Invalid {
                path: shown.clone(),
                message,
            })?;
        apply_file(&mut config, parsed);
        if let Some(backend) = backend {
            config.log.backend = backend;
        }
        config.file = Some(path.to_owned());
        // Relative paths in the file are relative to the file, not to the working directory.
        if let Some(base) = path.parent() {
            let schemas = config.schemas_dir.as_mut();
            for p in [&mut config.data_dir, &mut config.plugin_dir]
                .into_iter()
                .chain(schemas)
            {
                if p.is_relative() && !base.as_os_str().is_empty() {
                    *p = base.join(&*p);
                }
            }
        }
    }
    if let Some(v) = overrides.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = overrides.plugin_dir {
        config.plugin_dir = v;
    }
    if let Some(v) = overrides.listen {
        config.listen = v;
    }
    if let Some(v) = overrides.log_format {
        config.log_format = v;
    }
    if let Some(v) = overrides.token {
        config.api.token = Some(v);
    }
    if let Some(v) = overrides.log {
        config.log.backend = v;
    }
    if let Some(v) = overrides.schemas_dir {
        config.schemas_dir = Some(v);
    }
    validate(&config).map_err(|message| ConfigError::Invalid {
        path: file.map_or_else(|| "(flags)".into(), |p| p.display().to_string()),
        message,
    })?;
    Ok(config)
}

/// `[log] backend`, `servers`, `replicas`, `prefix`, checked together.
fn file_backend(log: &FileLog) -> Result<LogBackend, String> {
    match log.backend.as_deref() {
        None | Some("redb") => {
            if log.servers.is_some() || log.replicas.is_some() || log.prefix.is_some() {
                return Err("[log] servers, replicas and prefix need backend = \"nats\"".into());
            }
            Ok(LogBackend::Redb)
        }
        Some("nats") => {
            let servers = log.servers.clone().unwrap_or_default();
            if servers.is_empty() || !servers.iter().all(|s| s.starts_with("nats://")) {
                return Err(
                    "[log] backend = \"nats\" needs servers = [\"nats://HOST:PORT\", ...]".into(),
                );
            }
            let replicas = log.replicas.unwrap_or(1);
            if !matches!(replicas, 1 | 3) {
                return Err(format!("[log] replicas is 1 or 3, not {replicas}"));
            }
            Ok(LogBackend::Nats {
                servers,
                replicas,
                prefix: log
                    .prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_NATS_PREFIX.into()),
            })
        }
        Some(other) => Err(format!(
            "[log] backend is \"redb\" or \"nats\", not \"{other}\""
        )),
    }
}

fn apply_file(config: &mut Config, file: FileConfig) {
    if let Some(v) = file.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = file.plugin_dir {
        config.plugin_dir = v;
    }
    if let Some(v) = file.listen {
        config.listen = v;
    }
    if let Some(v) = file.log_format {
        config.log_format = v;
    }
    if let Some(api) = file.api {
        if api.token.is_some() {
            config.api.token = api.token;
        }
        if let Some(v) = api.protect_reads {
            config.api.protect_reads = v;
        }
        if let Some(v) = api.max_body_bytes {
            config.api.max_body_bytes = v.0;
        }
    }
    if let Some(log) = file.log {
        if let Some(v) = log.auto_create_topics {
            config.log.auto_create_topics = v;
        }
        if let Some(v) = log.default_partitions {
            config.log.default_partitions = v;
        }
        if let Some(v) = log.dedupe_window {
            config.log.dedupe_window = v.0;
        }
        if let Some(v) = log.max_event_bytes {
            config.log.max_event_bytes = v.0;
        }
        if let Some(v) = log.cache_size {
            config.log.cache_bytes = v.0;
        }
        if let Some(v) = log.retention_max_age {
            config.log.default_retention.max_age = Some(v.0);
        }
        if let Some(v) = log.retention_max_partition_bytes {
            config.log.default_retention.max_partition_bytes = Some(v.0 as u64);
        }
        if let Some(v) = log.retention_interval {
            config.log.retention_interval = v.0;
        }
    }
    for (name, t) in file.topics.unwrap_or_default() {
        config.topics.push(TopicSettings {
            name,
            partitions: t.partitions.unwrap_or(config.log.default_partitions),
            retention: RetentionPolicy {
                max_age: t.retention_max_age.map(|v| v.0),
                max_partition_bytes: t.retention_max_partition_bytes.map(|v| v.0 as u64),
                delete_unconsumed: false,
            },
        });
    }
    if let Some(s) = file.schemas {
        config.schemas_dir = s.dir;
    }
    if let Some(r) = file.runtime {
        if let Some(v) = r.instances {
            config.runtime.instances = v;
        }
        if let Some(v) = r.instance_memory {
            config.runtime.instance_memory = v.0;
        }
    }
    if let Some(d) = file.dispatch {
        if let Some(v) = d.batch_size {
            config.dispatch.batch_size = v;
        }
        if let Some(v) = d.shutdown_timeout {
            config.dispatch.shutdown_timeout = v.0;
        }
        if let Some(v) = d.breaker_threshold {
            config.dispatch.breaker_threshold = v;
        }
        if let Some(v) = d.breaker_cool_down {
            config.dispatch.breaker_cool_down = v.0;
        }
        if let Some(v) = d.topic_scan_interval {
            config.dispatch.topic_scan_interval = v.0;
        }
    }
}

fn validate(config: &Config) -> Result<(), String> {
    if config.log.default_partitions == 0 {
        return Err("log.default-partitions must be at least 1".into());
    }
    if config.dispatch.batch_size == 0 {
        return Err("dispatch.batch-size must be at least 1".into());
    }
    if config.dispatch.breaker_threshold == 0 {
        return Err("dispatch.breaker-threshold must be at least 1".into());
    }
    if config.log.retention_interval < Duration::from_millis(10) {
        return Err("log.retention-interval must be at least 10ms".into());
    }
    if config.dispatch.topic_scan_interval < Duration::from_millis(10) {
        return Err("dispatch.topic-scan-interval must be at least 10ms".into());
    }
    let retentions = std::iter::once(("log", &config.log.default_retention)).chain(
        config
            .topics
            .iter()
            .map(|t| (t.name.as_str(), &t.retention)),
    );
    for (owner, r) in retentions {
        if r.max_age == Some(Duration::ZERO) || r.max_partition_bytes == Some(0) {
            return Err(format!(
                "retention of {owner}: retention-max-age and retention-max-partition-bytes must be positive (leave them out to keep everything)"
            ));
        }
    }
    for t in &config.topics {
        if let Err(e) = crate::event::validate_topic(&t.name) {
            return Err(format!("[topics.{}]: invalid topic name: {e}", t.name));
        }
        if t.partitions == 0 || t.partitions > 4096 {
            return Err(format!(
                "[topics.{}] partitions must be 1 to 4096, not {}",
                t.name, t.partitions
            ));
        }
    }
    if config.api.max_body_bytes < 1024 {
        return Err("api.max-body-bytes must be at least 1 KiB".into());
    }
    if config.runtime.instances == 0 {
        return Err("runtime.instances must be at least 1".into());
    }
    let memory = config.runtime.instance_memory;
    if !(PLUGIN_MEMORY_DEFAULT..=INSTANCE_MEMORY_MAX).contains(&memory) {
        return Err(format!(
            "runtime.instance-memory must be between {} (the default plugin memory limit) and {}, got {}",
            format_byte_size(PLUGIN_MEMORY_DEFAULT),
            format_byte_size(INSTANCE_MEMORY_MAX),
            format_byte_size(memory)
        ));
    }
    if config.api.token.as_deref() == Some("") {
        return Err("api.token must not be empty (leave it out to disable auth)".into());
    }
    Ok(())
}

/// A duration written the humantime way: `"250ms"`, `"10s"`, `"2m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?}: {e} (write e.g. \"500ms\", \"10s\", \"2m\")"
                ))
            })
    }
}

/// A size: an integer number of bytes or a string with a unit (`"64 MiB"`, `"512KiB"`, `"1MB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => usize::try_from(n)
                .map(ByteSize)
                .map_err(|_| serde::de::Error::custom("size too large")),
            Raw::Text(s) => parse_byte_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"64 MiB"`, `"64MiB"`, `"1000 KB"`, `"4096"` into bytes.
pub fn parse_byte_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number of bytes, e.g. \"64 MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    n.checked_mul(mult)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// Writes a size the way it would be configured: `"256 MiB"`, `"1 GiB"`,
/// `"1500 B"` (the largest binary unit that divides it).
pub fn format_byte_size(bytes: usize) -> String {
    for (unit, size) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evhost.toml");
        std::fs::write(&path, text).unwrap();
        load(Some(&path), Overrides::default())
    }

    #[test]
    fn defaults_need_no_file_and_bind_loopback() {
        let c = load(None, Overrides::default()).unwrap();
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.api.token, None);
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = load_str("listen = \"127.0.0.1:1\"\ndata-dri = \"x\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("data-dri"), "{msg}");
        assert!(msg.contains("evhost.toml"), "{msg}");
        let err = load_str("[api]\ntokn = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("tokn"), "{err}");
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evhost.toml");
        std::fs::write(
            &path,
            "data-dir = \"d\"\nlisten = \"127.0.0.1:9000\"\n[api]\nmax-body-bytes = \"2 MiB\"\n\
             [log]\ndedupe-window = \"5m\"\ncache-size = \"16 MiB\"\n[dispatch]\nshutdown-timeout = \"3s\"\n",
        )
        .unwrap();
        let c = load(Some(&path), Overrides::default()).unwrap();
        assert_eq!(c.data_dir, dir.path().join("d"));
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.api.max_body_bytes, 2 << 20);
        assert_eq!(c.log.dedupe_window, Duration::from_secs(300));
        assert_eq!(c.log.cache_bytes, 16 << 20);
        assert_eq!(c.dispatch.shutdown_timeout, Duration::from_secs(3));
        let c = load(
            Some(&path),
            Overrides {
                listen: Some("127.0.0.1:9001".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9001);
    }

    #[test]
    fn bad_values_name_the_problem() {
        let err = load_str("[log]\ndedupe-window = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dedupe-window") || err.contains("soon"),
            "{err}"
        );
        let err = load_str("[api]\nmax-body-bytes = \"3 parsecs\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("parsecs"), "{err}");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_byte_size("4096").unwrap(), 4096);
        assert_eq!(parse_byte_size("64 MiB").unwrap(), 64 << 20);
        assert_eq!(parse_byte_size("1KB").unwrap(), 1000);
        assert!(parse_byte_size("MiB").is_err());
        for s in ["256 MiB", "1 GiB", "96 KiB", "1500 B"] {
            assert_eq!(format_byte_size(parse_byte_size(s).unwrap()), s);
        }
    }

    #[test]
    fn the_runtime_pool_is_configurable_within_bounds() {
        let c = load(None, Overrides::default()).unwrap();
        assert_eq!(c.runtime.instances, 1000);
        assert!(c.runtime.instance_memory >= PLUGIN_MEMORY_DEFAULT);
        let c = load_str("[runtime]\ninstances = 50\ninstance-memory = \"1 GiB\"\n").unwrap();
        assert_eq!(c.runtime.instances, 50);
        assert_eq!(c.runtime.instance_memory, 1 << 30);
        assert!(c.file.unwrap().ends_with("evhost.toml"));
        for bad in [
            "instances = 0",
            "instance-memory = \"32 MiB\"",
            "instance-memory = \"8 GiB\"",
            "instance-memry = \"1 GiB\"",
        ] {
            let err = load_str(&format!("[runtime]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("instance") && err.contains("evhost.toml"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn breaker_scan_retention_topics_and_schemas_are_read() {
        let c = load(None, Overrides::default()).unwrap();
        assert_eq!(c.dispatch.breaker_threshold, 10);
        assert_eq!(c.dispatch.breaker_cool_down, Duration::from_secs(30));
        assert_eq!(c.dispatch.topic_scan_interval, Duration::from_millis(250));
        assert!(c.log.default_retention.is_unbounded());
        let c = load_str(
            "[dispatch]\nbreaker-threshold = 3\nbreaker-cool-down = \"5s\"\ntopic-scan-interval = \"1s\"\n\
             [log]\nretention-max-age = \"7d\"\nretention-interval = \"5s\"\n\
             [topics.orders]\npartitions = 4\nretention-max-partition-bytes = \"1 GiB\"\n\
             [schemas]\ndir = \"schemas\"\n",
        )
        .unwrap();
        assert_eq!(c.dispatch.breaker_threshold, 3);
        assert_eq!(c.dispatch.breaker_cool_down, Duration::from_secs(5));
        assert_eq!(c.dispatch.topic_scan_interval, Duration::from_secs(1));
        assert_eq!(
            c.log.default_retention.max_age,
            Some(Duration::from_secs(7 * 86400))
        );
        assert_eq!(c.log.retention_interval, Duration::from_secs(5));
        assert_eq!(c.topics.len(), 1);
        assert_eq!(c.topics[0].name, "orders");
        assert_eq!(c.topics[0].partitions, 4);
        assert_eq!(c.topics[0].retention.max_partition_bytes, Some(1 << 30));
        assert_eq!(c.topics[0].retention.max_age, None);
        assert!(c.schemas_dir.unwrap().ends_with("schemas"));
        for bad in [
            "[dispatch]\nbreaker-threshold = 0\n",
            "[topics.orders]\npartitions = 0\n",
            "[topics.\"bad name\"]\npartitions = 1\n",
            "[log]\nretention-max-age = \"0s\"\n",
            "[topics.orders]\nretention = 1\n",
        ] {
            assert!(load_str(bad).is_err(), "{bad}");
        }
    }
}
