//! The sandboxed Wasm runtime: one shared wasmtime [`Engine`], component
//! loading and checking against the `evhost:plugin` world, a precompiled
//! cache, and calls with time, memory and fuel limits.
//!
//! A call's emits and state writes are buffered in its store and returned as
//! [`Effects`]; committing them (atomically with the consumer offset) is the
//! caller's job, so a failed or trapped call never leaks effects.

mod bindings;
mod budget;
mod cache;
mod context;
mod host;
mod instance;
mod loader;
mod outbound;
mod state;
mod stdio;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use evhost_sdk::sidecar::{self as grants, EmitGrant, PatternError};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use self::budget::{MAX_BYTES as MAX_OUTPUT_BYTES, MAX_LINES as MAX_OUTPUT_LINES};
use self::cache::Cache;
use self::context::CallState;
pub use self::instance::{CallError, Failure, Instance, LimitHit};
pub use self::loader::{
    LoadError, LoadedPlugin, NativeHandler, Origin, PluginInfo, RetryPolicy, Subscription,
};
pub use self::outbound::{
    HttpGrant, HttpLimits, OutboundMetrics, OutboundShared, RefusalReason as HttpRefusal,
};
pub use self::state::{MemoryState, StateStore};
use crate::event::Event;

/// Interval of the epoch ticker: every tick, running calls check their
/// deadline, so a call overruns its timeout by at most about one tick.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Runtime-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Largest payload of an emitted event, and largest state value, in bytes.
    pub max_event_bytes: usize,
    /// Most events one call may emit.
    pub max_emits_per_call: usize,
    /// Limits for running `describe()` at load time.
    pub describe_limits: Limits,
    /// The size of the instance pool, reserved when the runtime starts.
    pub pool: PoolConfig,
}

/// How many plugin instances may exist at once and how large one may grow:
/// the operator's view of wasmtime's pooling allocator (`[runtime]` in
/// `evhost.toml`). Pooled slots make a fresh instance much cheaper than
/// on-demand allocation (mmap, page faults) at the price of reserving address
/// space up front: about 4 GiB plus guard pages per slot (see `Runtime::new`).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Component instances that may exist at once: one per running consumer
    /// (plugin × partition), plus a throwaway one per load in progress.
    pub instances: u32,
    /// Most linear memory one instance may have, in bytes; a plugin's
    /// `memory` limit may not exceed it. At most 4 GiB.
    pub instance_memory: usize,
    /// Where these settings come from, for error messages: e.g. "in
    /// /etc/evhost.toml" or "(the default)"; empty when not known.
    pub source: String,
}

impl PoolConfig {
    /// "`[runtime] instances = N` in FILE", for messages.
    pub fn describe_instances(&self) -> String {
        format!(
            "`[runtime] instances = {}`{}",
            self.instances,
            self.source_suffix()
        )
    }

    /// " in FILE", or nothing when the source is not known.
    pub fn source_suffix(&self) -> String {
        if self.source.is_empty() {
            String::new()
        } else {
            format!(" {}", self.source)
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            instances: 1000,
            instance_memory: 256 << 20,
            source: String::new(),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_event_bytes: 1 << 20,
            max_emits_per_call: 1000,
            describe_limits: Limits::default(),
            pool: PoolConfig::default(),
        }
    }
}

/// Per-plugin resource limits, applied to every call (and to instantiation).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Wall-clock limit of one call.
    pub timeout: Duration,
    /// Most linear memory an instance may grow to, in bytes.
    pub memory: usize,
    /// Fuel (roughly, Wasm instructions) one call may burn; `None` is unlimited.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(5),
            memory: 64 << 20,
            fuel: None,
        }
    }
}

/// Capabilities the operator grants a plugin beyond `log` and `config`,
/// which every plugin has. The default grants nothing else.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    emit: EmitGrant,
    /// May use the `state` interface.
    pub state: bool,
    /// Which URLs `wasi:http/outgoing-handler` may request, and the per-call
    /// limits; the default allows none.
    pub http: HttpGrant,
    /// Where these grants are set: a refusal tells the operator where to grant.
    source: GrantSource,
}

/// Where a plugin's grants come from, so that a refused grant can say how to
/// grant it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum GrantSource {
    /// Not known (tests, tools): a refusal names only the missing grant.
    #[default]
    Unspecified,
    /// The operator's sidecar, `NAME.toml` beside `NAME.wasm` — also when it
    /// does not exist yet, since that is where the operator has to write it.
    Sidecar(PathBuf),
    /// Set some other way; the text tells how to grant, e.g. "rerun with
    /// `--grant-all`".
    Described(String),
}

impl Grants {
    /// Grants `emit` for event types matching any of `emit_patterns` (globs,
    /// empty = no emit) and `state` when `state` is true.
    pub fn new(emit_patterns: Vec<String>, state: bool) -> Result<Self, PatternError> {
        Ok(Grants {
            emit: EmitGrant::new(emit_patterns)?,
            state,
            http: HttpGrant::default(),
            source: GrantSource::Unspecified,
        })
    }

    /// Everything: emit any type and use state.
    pub fn all() -> Self {
        Grants::new(vec!["*".into()], true).unwrap_or_default()
    }

    /// The same grants, with `http` as the outbound HTTP grant.
    pub fn with_http(self, http: HttpGrant) -> Self {
        Grants { http, ..self }
    }

    /// The same grants, set in `source`.
    pub fn from_source(self, source: GrantSource) -> Self {
        Grants { source, ..self }
    }

    pub fn source(&self) -> &GrantSource {
        &self.source
    }

    /// The event-type patterns `emit` is granted for (empty: no emit).
    pub fn emit_patterns(&self) -> &[String] {
        self.emit.patterns()
    }

    /// Whether an event of type `ty` may be emitted.
    pub fn may_emit(&self, ty: &str) -> bool {
        self.emit.allows(ty)
    }

    /// The error for an emit of `ty` that is not granted (the SDK's words,
    /// which `TestHost` uses too).
    fn refuse_emit(&self, plugin: &str, ty: &str) -> String {
        self.emit
            .refusal(plugin, ty, &self.how_to_grant(&grants::emit_edit(ty)))
    }

    /// The error for a `state` access without the grant.
    fn refuse_state(&self, plugin: &str) -> String {
        grants::state_refusal(plugin, &self.how_to_grant(grants::STATE_EDIT))
    }

    /// What to do, or nothing when the source is unknown.
    fn how_to_grant(&self, sidecar_edit: &str) -> String {
        match &self.source {
            GrantSource::Unspecified => String::new(),
            GrantSource::Sidecar(path) => format!("{sidecar_edit} in {}", path.display()),
            GrantSource::Described(how) => how.clone(),
        }
    }
}

/// An event a call emitted, with the topic it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    pub topic: String,
    pub event: Event,
}

/// What a successful call asks to commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub emits: Vec<Emit>,
    /// Key → new value, `None` for a delete; later writes to a key replace earlier ones.
    pub state: BTreeMap<String, Option<Vec<u8>>>,
}

/// How a plugin instance is configured by the operator.
#[derive(Clone)]
pub struct InstanceSettings {
    pub limits: Limits,
    pub grants: Grants,
    pub config: BTreeMap<String, String>,
    pub state: Arc<dyn StateStore>,
}

impl Default for InstanceSettings {
    fn default() -> Self {
        InstanceSettings {
            limits: Limits::default(),
            grants: Grants::default(),
            config: BTreeMap::new(),
            state: Arc::new(MemoryState::default()),
        }
    }
}

/// Counters of the component cache, for tests and metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// The shared engine, linker and cache. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: Option<Cache>,
    config: RuntimeConfig,
    stats: CacheStats,
    /// Once set, every running and future call stops with a host error.
    interrupt: Arc<std::sync::atomic::AtomicBool>,
    /// `PoolConfig::describe_instances`, shared by every store.
    pool_setting: Arc<str>,
    /// Outbound HTTP's instruments and the daemon's address, shared by every store.
    outbound: Arc<OutboundShared>,
}

/// Errors setting up the runtime itself.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the Wasm engine: {0}")]
    Engine(String),
    #[error("cannot use the component cache at {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        if config.describe_limits.memory > config.pool.instance_memory {
            return Err(RuntimeError::Engine(format!(
                "the memory limit of describe() ({} bytes) exceeds the instance pool's slot \
                 ([runtime] instance-memory, {} bytes)",
                config.describe_limits.memory, config.pool.instance_memory
            )));
        }
        let mut wasm = Config::new();
        wasm.wasm_component_model(true);
        // Timeouts: the ticker thread advances the epoch; a store traps once its
        // deadline (in ticks) passes.
        wasm.epoch_interruption(true);
        // Fuel is always on so a per-plugin fuel limit needs no second engine;
        // its cost is not measurable (see toolchain notes).
        wasm.consume_fuel(true);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(&config.pool)));
        let pool_setting: Arc<str> = config.pool.describe_instances().into();
        let engine = Engine::new(&wasm).map_err(|e| {
            RuntimeError::Engine(format!(
                "{e:#}; the instance pool reserves about 8 GiB of address space per \
                 instance for {pool_setting}: lower it, or raise the limit (`ulimit -v`)"
            ))
        })?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        // Linked for every plugin (a default componentize-js build imports it);
        // each request passes `outbound::OutboundHooks` or is refused.
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;

        let cache = match &config.cache_dir {
            Some(dir) => Some(
                Cache::open(dir, &engine).map_err(|source| RuntimeError::Cache {
                    path: dir.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        spawn_epoch_ticker(&engine)
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Runtime {
            engine,
            linker,
            cache,
            config,
            stats: CacheStats::default(),
            interrupt: Arc::default(),
            pool_setting,
            outbound: Arc::default(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn cache_stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The instruments of plugins' outbound HTTP, for `/metrics`.
    pub fn outbound_metrics(&self) -> &OutboundMetrics {
        &self.outbound.metrics
    }

    /// The daemon's API address: plugins' requests to it are refused unless
    /// their allowlist names it. Set once; later calls are ignored.
    pub fn set_daemon_address(&self, addr: std::net::SocketAddr) {
        let _ = self.outbound.daemon.set(addr);
    }

    /// A consumer's instance of `plugin`; instantiated lazily on the first call.
    pub fn instance(&self, plugin: Arc<LoadedPlugin>, settings: InstanceSettings) -> Instance {
        Instance::new(self, plugin, settings)
    }

    /// Stops every call of this runtime's instances within about one epoch
    /// tick, and every later one at once, each failing with
    /// [`Failure::Host`]: how the daemon abandons in-flight calls on shutdown.
    pub fn interrupt_all(&self) {
        self.interrupt.store(true, Ordering::Relaxed);
    }

    fn count(&self, hit: bool) {
        let c = if hit {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per component instance, what a plugin may use of the pool. A std
/// `wasm32-wasip2` component built with wit-bindgen — every plugin in
/// `plugins/`, from `faulty` to `order-saga`, counted with wasmtime's pool
/// metrics — has 3 core instances (the guest module and wit-component's two
/// shims), 1 linear memory and 2 tables. A Python plugin (componentize-py
/// 0.25.1: CPython and its libraries as dynamically linked modules) has 14
/// core instances, 1 memory and 2 tables; a JavaScript one (jco's QuickJS
/// backend) 9, 2 and 2 — hence 20 core instances, which cost only instance
/// metadata. The limits also leave room for two composed Rust components
/// (6, 2, 4). A component beyond them is refused at load, so no plugin takes
/// more than its share of the pool.
/// Memories are the costly part: each pooled memory reserves ~4 GiB of
/// address space (see `pooling`).
const CORE_INSTANCES_PER_COMPONENT: u32 = 20;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;

/// The pooling allocator sized from the operator's settings: every total is
/// `instances` times the per-component limit, so `instances` component
/// instances always fit whatever the plugins.
///
/// Address space, not memory: each pooled memory reserves the engine's
/// default `memory_reservation` (4 GiB, which lets compiled code skip bounds
/// checks) plus a 32 MiB guard, so the default 1000 instances × 2 memories
/// reserve about 8 TiB of the 128 TiB a Linux x86-64 process has (the daemon's
/// VmSize: 7.9 TiB; its RSS is unchanged). `instance-memory` only caps how far
/// a memory may grow inside its slot.
fn pooling(pool: &PoolConfig) -> PoolingAllocationConfig {
    let n = pool.instances;
    let mut p = PoolingAllocationConfig::new();
    p.total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(pool.instance_memory);
    // A dropped instance's memory is reset for the next one. The first 64 KiB
    // (the dirty stack and data pages of a small guest) are zeroed with memset
    // instead of madvise, and the rest are returned to the kernel in batches
    // of 32 rather than one syscall each: fresh instantiate + call + drop went
    // from 34.6 to 24.5 µs (faulty, `--bench runtime_calls`); 1 MiB resident
    // was slower (42 µs: memset of pages never touched), and the number of
    // warm slots kept (0, 100, 1000) made no difference.
    p.linear_memory_keep_resident(64 << 10)
        .table_keep_resident(64 << 10)
        .decommit_batch_size(32);
    p
}

/// Advances the engine's epoch every tick until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("evhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_where_to_grant_when_the_source_is_known() {
        let none = Grants::default();
        assert_eq!(none.refuse_state("p"), "plugin `p` has no `state` grant");
        let sidecar = none
            .clone()
            .from_source(GrantSource::Sidecar("/srv/p.toml".into()));
        assert_eq!(
            sidecar.refuse_state("p"),
            r#"plugin `p` has no `state` grant; add "state = true" under [grants] in /srv/p.toml"#
        );
        let narrow = Grants::new(vec!["a.*".into()], false)
            .unwrap()
            .from_source(GrantSource::Sidecar("/srv/p.toml".into()));
        assert_eq!(
            narrow.refuse_emit("p", "b.done"),
            r#"plugin `p` may not emit type `b.done`: its `emit` grant allows a.*; add "b.done" (or a pattern matching it) to emit under [grants] in /srv/p.toml"#
        );
        let cli = none.from_source(GrantSource::Described("rerun with --grant-all".into()));
        assert!(
            cli.refuse_emit("p", "x")
                .ends_with("; rerun with --grant-all")
        );
    }
}
