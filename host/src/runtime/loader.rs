//! Loading a plugin file: read, check it is a component, compile (or take it
//! from the cache), check it fits the world, prepare it once (`InstancePre`)
//! and ask it to `describe()` itself.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use globset::Glob;
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::Component;

use super::Effects;
use super::Runtime;
use super::bindings::{self, PluginPre};
use super::context::{CallState, PluginScope, new_store};
use super::instance::{Failure, arm, classify, end_output, with_stderr};
use crate::event::StoredEvent;

/// The world every plugin must target.
pub const WORLD: &str = "evhost:plugin/plugin@0.1.0";

/// A component's first eight bytes: magic, then the layer/version field.
const MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// Why a file could not be loaded as a plugin. Each case names the file and
/// the problem in terms an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a WebAssembly file: it does not start with the `\\0asm` magic bytes")]
    NotWasm { path: String },
    #[error(
        "{path} is a core WebAssembly module, not a component: build the plugin for `wasm32-wasip2` \
         (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule { path: String },
    #[error("{path} is truncated after {len} bytes ({detail}): was the file copied completely?")]
    Truncated {
        path: String,
        len: usize,
        detail: String,
    },
    #[error("{path} is not a valid WebAssembly component: {detail}")]
    Invalid { path: String, detail: String },
    #[error(
        "{path} does not implement the world {WORLD}: it lacks the export(s) {missing}; it exports {found}"
    )]
    MissingExports {
        path: String,
        missing: String,
        found: String,
    },
    #[error(
        "{path} imports `{import}`, which evhost does not provide (plugins may import \
         evhost:plugin/{{emit,state,log,config,retry}}@0.1.0 and WASI 0.2, wasi:http included): {detail}"
    )]
    UnsupportedImport {
        path: String,
        import: String,
        detail: String,
    },
    #[error("{path} does not fit the world {WORLD}: {detail}")]
    WorldMismatch { path: String, detail: String },
    #[error("{path}: describe() failed: {failure}")]
    Describe { path: String, failure: Failure },
    #[error("{path}: describe() returned invalid plugin info: {problem}")]
    BadInfo { path: String, problem: String },
}

impl LoadError {
    /// A stable, machine-readable name of the case (`evhost check --json`).
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Read { .. } => "read_failed",
            LoadError::NotWasm { .. } => "not_wasm",
            LoadError::CoreModule { .. } => "core_module",
            LoadError::Truncated { .. } => "truncated",
            LoadError::Invalid { .. } => "invalid",
            LoadError::MissingExports { .. } => "missing_exports",
            LoadError::UnsupportedImport { .. } => "unsupported_import",
            LoadError::WorldMismatch { .. } => "world_mismatch",
            LoadError::Describe { .. } => "describe_failed",
            LoadError::BadInfo { .. } => "bad_info",
        }
    }
}

/// Where a loaded component's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Compiled,
    Cache,
}

/// A subscription: topic glob and event-type glob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub topic: String,
    pub event_type: String,
}

/// How failed calls are retried.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    #[serde(with = "millis")]
    pub initial_backoff: Duration,
    #[serde(with = "millis")]
    pub max_backoff: Duration,
    pub multiplier: f64,
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry max-attempts must be at least 1".into());
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(format!(
                "retry multiplier must be a finite number ≥ 1.0, got {}",
                self.multiplier
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "retry jitter must be between 0.0 and 1.0, got {}",
                self.jitter
            ));
        }
        if self.initial_backoff > self.max_backoff {
            return Err(format!(
                "retry initial backoff ({:?}) exceeds max backoff ({:?})",
                self.initial_backoff, self.max_backoff
            ));
        }
        Ok(())
    }
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// What a plugin says about itself, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub subscriptions: Vec<Subscription>,
    /// `None`: the plugin leaves its retry policy to the host default.
    pub retry: Option<RetryPolicy>,
}

/// A checked, compiled and prepared plugin version. Instances are made from it.
pub struct LoadedPlugin {
    pub info: PluginInfo,
    /// SHA-256 of the component file, hex.
    pub digest: String,
    pub size: usize,
    pub origin: Origin,
    /// Time to compile or deserialize, check and describe.
    pub load_time: Duration,
    /// The component's import names, for `evhost check`.
    pub imports: Vec<String>,
    pub(super) code: Code,
}

/// What runs a plugin's calls.
pub(super) enum Code {
    /// The component, prepared once.
    Wasm(PluginPre<CallState>),
    /// A host function standing in for a component (see [`LoadedPlugin::native`]).
    Native(NativeHandler),
}

/// A handler written in Rust and run in the host, without a sandbox.
pub type NativeHandler = Arc<dyn Fn(&StoredEvent, u32) -> Result<Effects, Failure> + Send + Sync>;

impl LoadedPlugin {
    /// A plugin whose calls run `handler` natively instead of a component —
    /// for benchmarks and tests that compare the Wasm boundary with plain
    /// Rust in the same dispatch pipeline. It has no sandbox and no limits.
    pub fn native(info: PluginInfo, handler: NativeHandler) -> Arc<Self> {
        let digest = hex::encode(Sha256::digest(format!(
            "native:{}:{}",
            info.name, info.version
        )));
        Arc::new(LoadedPlugin {
            info,
            digest,
            size: 0,
            origin: Origin::Compiled,
            load_time: Duration::ZERO,
            imports: Vec::new(),
            code: Code::Native(handler),
        })
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("info", &self.info)
            .field("digest", &self.digest)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Loads the plugin file at `path`.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedPlugin>, LoadError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: shown.clone(),
            source,
        })?;
        self.load_bytes(&shown, &bytes)
    }

    /// Loads a plugin from `bytes`; `path` only names it in errors.
    pub fn load_bytes(&self, path: &str, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, LoadError> {
        let started = Instant::now();
        let path = path.to_owned();
        check_header(&path, bytes)?;
        let digest = hex::encode(Sha256::digest(bytes));

        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.get(&self.engine, &digest));
        self.count(cached.is_some());
        let (component, origin) = match cached {
            Some(c) => (c, Origin::Cache),
            None => {
                let component = Component::new(&self.engine, bytes)
                    .map_err(|e| compile_error(&path, bytes, &e.to_string()))?;
                (component, Origin::Compiled)
            }
        };

        let ty = component.component_type();
        let exports: Vec<&str> = ty.exports(&self.engine).map(|(name, _)| name).collect();
        let missing: Vec<&str> = ["describe", "handle"]
            .into_iter()
            .filter(|e| !exports.contains(e))
            .collect();
        if !missing.is_empty() {
            let found = if exports.is_empty() {
                "nothing".into()
            } else {
                quoted(&exports)
            };
            return Err(LoadError::MissingExports {
                path,
                missing: quoted(&missing),
                found,
            });
        }
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();

        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            let detail = format!("{e:#}");
            let import = detail
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "an unknown import".into());
            LoadError::UnsupportedImport {
                path: path.clone(),
                import,
                detail,
            }
        })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| LoadError::WorldMismatch {
            path: path.clone(),
            detail: format!("{e:#}"),
        })?;

        let info = self.describe(&path, &pre)?;
        if origin == Origin::Compiled
            && let Some(cache) = &self.cache
        {
            cache.put(&digest, &component);
        }
        Ok(Arc::new(LoadedPlugin {
            info,
            digest,
            size: bytes.len(),
            origin,
            load_time: started.elapsed(),
            imports,
            code: Code::Wasm(pre),
        }))
    }

    /// Runs `describe()` in a throwaway store with no grants.
    fn describe(&self, path: &str, pre: &PluginPre<CallState>) -> Result<PluginInfo, LoadError> {
        let limits = &self.config.describe_limits;
        let scope = Arc::new(PluginScope {
            name: format!("(loading {path})"),
            version: String::new(),
            grants: Default::default(),
            config: Default::default(),
            state: Arc::new(super::MemoryState::default()),
            max_event_bytes: self.config.max_event_bytes,
            max_emits_per_call: 0,
            interrupt: self.interrupt.clone(),
            pool: self.pool_setting.clone(),
            outbound: self.outbound.clone(),
        });
        let mut store = new_store(&self.engine, scope, limits.memory);
        // As for calls: a Rust guest's panic message arrives on stderr, and the
        // trap alone says only "unreachable", so the tail goes into the error.
        let fail = |store: &mut Store<CallState>, e: wasmtime::Error| {
            let output = end_output(store.data_mut());
            let failure = with_stderr(classify(e, store.data(), limits), &output.stderr);
            LoadError::Describe {
                path: path.to_owned(),
                failure: match output.capped {
                    Some(note) => failure.with_note(&note),
                    None => failure,
                },
            }
        };
        arm(&mut store, limits);
        let plugin = match pre.instantiate(&mut store) {
            Ok(p) => p,
            Err(e) => return Err(fail(&mut store, e)),
        };
        let raw = match plugin.call_describe(&mut store) {
            Ok(info) => info,
            Err(e) => return Err(fail(&mut store, e)),
        };
        // Forwards a last unfinished line of output and reports capped output.
        end_output(store.data_mut());
        convert_info(raw).map_err(|problem| LoadError::BadInfo {
            path: path.to_owned(),
            problem,
        })
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_header(path: &str, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        if bytes.len() < 8 && MAGIC.starts_with(&bytes[..bytes.len().min(4)]) && !bytes.is_empty() {
            return Err(LoadError::Truncated {
                path: path.to_owned(),
                len: bytes.len(),
                detail: "the header is incomplete".into(),
            });
        }
        return Err(LoadError::NotWasm {
            path: path.to_owned(),
        });
    }
    if bytes[4..8] == CORE_VERSION {
        return Err(LoadError::CoreModule {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Tells a truncated file from an otherwise invalid one: a parse that runs
/// off the end of the bytes means the file was cut short.
fn compile_error(path: &str, bytes: &[u8], detail: &str) -> LoadError {
    let truncated = wasmparser::Parser::new(0)
        .parse_all(bytes)
        .find_map(Result::err)
        .is_some_and(|e| e.message().contains("unexpected end"));
    if truncated {
        LoadError::Truncated {
            path: path.to_owned(),
            len: bytes.len(),
            detail: detail.to_owned(),
        }
    } else {
        LoadError::Invalid {
            path: path.to_owned(),
            detail: detail.to_owned(),
        }
    }
}

/// Names: what consumer groups, state namespaces and files are keyed by.
/// The rule is the SDK's, the same `plugin!` checks at compile time.
fn validate_name(name: &str) -> Result<(), String> {
    evhost_sdk::check_name(name).map_err(|e| e.to_string())
}

fn convert_info(raw: bindings::PluginInfo) -> Result<PluginInfo, String> {
    validate_name(&raw.name)?;
    if raw.version.trim().is_empty() {
        return Err("version is empty".into());
    }
    let mut subscriptions = Vec::with_capacity(raw.subscriptions.len());
    for s in raw.subscriptions {
        for (what, pattern) in [("topic", &s.topic), ("event-type", &s.event_type)] {
            Glob::new(pattern).map_err(|e| {
                format!("subscription {what} pattern {pattern:?} is not a valid glob: {e}")
            })?;
        }
        subscriptions.push(Subscription {
            topic: s.topic,
            event_type: s.event_type,
        });
    }
    let retry = raw
        .retry
        .map(|r| {
            let policy = RetryPolicy {
                max_attempts: r.max_attempts,
                initial_backoff: Duration::from_millis(r.initial_backoff_ms),
                max_backoff: Duration::from_millis(r.max_backoff_ms),
                multiplier: r.multiplier,
                jitter: r.jitter,
            };
            policy.validate().map(|()| policy)
        })
        .transpose()?;
    Ok(PluginInfo {
        name: raw.name,
        version: raw.version,
        subscriptions,
        retry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_core_modules_and_non_wasm_apart() {
        assert!(matches!(
            check_header("x", b"\0asm\x01\0\0\0rest"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(matches!(
            check_header("x", b"hello world"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header("x", b"\0as"),
            Err(LoadError::Truncated { .. })
        ));
        assert!(matches!(
            check_header("x", b""),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(check_header("x", b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn plugin_names_are_restricted_to_safe_characters() {
        assert!(validate_name("order-saga2").is_ok());
        for bad in ["", "Order", "a/b", "-x", "9x", &"a".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        let e = validate_name("Invoice_Ledger").unwrap_err();
        assert!(e.contains("try \"invoice-ledger\""), "{e}");
    }

    #[test]
    fn retry_policy_rejects_nonsense() {
        let ok = RetryPolicy::default();
        assert!(ok.validate().is_ok());
        assert!(
            RetryPolicy {
                max_attempts: 0,
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            RetryPolicy {
                multiplier: 0.5,
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            RetryPolicy {
                jitter: 1.5,
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            RetryPolicy {
                initial_backoff: Duration::from_secs(60),
                ..ok
            }
            .validate()
            .is_err()
        );
    }
}
