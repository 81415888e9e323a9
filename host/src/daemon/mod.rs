//! `evhost run`: wires the log, the runtime, the dispatcher, the plugin
//! directory and the HTTP API together, and takes them down in order.
//!
//! Start: lock the data dir → open the log → runtime → dispatcher → schemas →
//! bind → watch the plugin directory → load every plugin file → serve (the
//! watcher hot-reloads from then on). Stop (when `shutdown` resolves): stop
//! accepting and end live tails → wait for requests in flight → stop the
//! watcher → dispatcher shutdown with the deadline → close the log (finishing
//! queued writes).
//!
//! - `lock`: one daemon per data directory.
//! - `schemas`: the schema registry (stored in the log, compiled here).
//! - `metrics`: the `/metrics` instruments.

pub mod lock;
pub mod metrics;
pub mod schemas;

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::lock::{DataLock, LockError};
use self::metrics::Metrics;
use self::schemas::{SchemaError, SchemaRegistry};
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::config::LogBackend;
use crate::dispatch::{DispatchConfig, Dispatcher, EmitCheck};
use crate::log::{EventLog, LogConfig, LogError, NatsConfig, NatsLog, RedbLog};
use crate::plugins::{self, DirWatcher, Loader, WatchConfig};
use crate::runtime::{PoolConfig, Runtime, RuntimeConfig, RuntimeError};

/// Prints a line for the operator on stdout; a closed stdout is not an error worth
/// stopping the daemon for (`println!` would panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
        let _ = out.flush();
    }};
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the event log {path}: {source}")]
    Log { path: String, source: LogError },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Schemas(#[from] SchemaError),
    #[error("cannot preload the schemas of {dir}: {source}")]
    Preload {
        dir: String,
        source: schemas::PreloadError,
    },
    #[error("cannot set up topic `{name}` of [topics.{name}]: {source}")]
    Topic { name: String, source: LogError },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Runs the daemon until `shutdown` resolves, then stops it cleanly.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let data = config.data_dir.clone();
    std::fs::create_dir_all(&data).map_err(|source| DaemonError::DataDir {
        path: data.display().to_string(),
        source,
    })?;
    let lock = DataLock::acquire(&data)?;

    let log_config = LogConfig {
        auto_create_topics: config.log.auto_create_topics,
        default_partitions: config.log.default_partitions,
        dedupe_window: config.log.dedupe_window,
        max_event_bytes: config.log.max_event_bytes,
        cache_bytes: config.log.cache_bytes,
        default_retention: config.log.default_retention.clone(),
        retention_interval: config.log.retention_interval,
        ..LogConfig::default()
    };
    let opened = open_log(&config.log.backend, &data, log_config).await?;
    let log = opened.log();
    // `[topics.NAME]`: created, or given the configured retention.
    for t in &config.topics {
        log.create_topic(
            &t.name,
            crate::log::TopicConfig {
                partitions: t.partitions,
                retention: t.retention.clone(),
            },
        )
        .await
        .map_err(|source| DaemonError::Topic {
            name: t.name.clone(),
            source,
        })?;
    }

    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: Some(data.join("cache")),
        max_event_bytes: config.log.max_event_bytes,
        pool: PoolConfig {
            instances: config.runtime.instances,
            instance_memory: config.runtime.instance_memory,
            source: match &config.file {
                Some(file) => format!("in {}", file.display()),
                None => {
                    "(the default; set it under [runtime] in a config file given with --config)"
                        .into()
                }
            },
        },
        ..RuntimeConfig::default()
    })?);
    let schemas = Arc::new(SchemaRegistry::open(log.clone(), &data.join("schemas")).await?);
    schemas.spawn_refresh();
    if let Some(dir) = &config.schemas_dir {
        let n = schemas::preload(&schemas, dir)
            .await
            .map_err(|source| DaemonError::Preload {
                dir: dir.display().to_string(),
                source,
            })?;
        say!("registered {n} schema(s) from {}", dir.display());
    }
    // Events plugins emit are held to the same schemas as published ones.
    let registry = schemas.clone();
    let emit_check = EmitCheck(Arc::new(move |event: &crate::event::Event| {
        registry.validate(event).map_err(|v| v.to_string())
    }));
    let dispatcher = Dispatcher::new(
        log.clone(),
        runtime.clone(),
        DispatchConfig {
            batch_size: config.dispatch.batch_size,
            topic_scan_interval: config.dispatch.topic_scan_interval,
            breaker: crate::dispatch::BreakerConfig {
                failure_threshold: config.dispatch.breaker_threshold,
                cool_down: config.dispatch.breaker_cool_down,
            },
            emit_check: Some(emit_check),
            ..DispatchConfig::default()
        },
    );
    let mut loader = Loader::new(runtime.clone(), dispatcher.clone());
    let numbers = data.join("plugin-load-number");
    if let Err(e) = loader.use_load_number_file(&numbers) {
        tracing::error!(file = %numbers.display(), "load numbers restart at 1 in this process: {e}");
    }
    let loader = Arc::new(loader);

    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: config.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            addr: config.listen,
            source,
        })?;

    runtime.set_daemon_address(addr);
    say!(
        "evhost {}: data {}, plugins {}",
        env!("CARGO_PKG_VERSION"),
        data.display(),
        config.plugin_dir.display()
    );
    // Watch first, load second: a file written meanwhile is picked up afterwards.
    let watcher = watch_plugin_dir(&config.plugin_dir);
    load_plugin_dir(&loader, &config.plugin_dir).await;
    let watching = watcher.map(|w| w.spawn(loader.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(ApiState {
        log: log.clone(),
        dispatcher: dispatcher.clone(),
        loader: loader.clone(),
        schemas,
        metrics: Arc::new({
            let mut metrics = Metrics::new();
            metrics.register_outbound(runtime.outbound_metrics());
            metrics
        }),
        config: config.api.clone(),
        default_retention: config.log.default_retention.clone(),
        shutdown: stop_rx.clone(),
    });
    let mut server_stop = stop_rx;
    let mut server = tokio::spawn(api::serve(listener, state, async move {
        let _ = server_stop.wait_for(|stopping| *stopping).await;
    }));
    say!("listening on http://{addr}");
    say!("console at http://{addr}/ui");
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the API listens beyond loopback");
    }
    tracing::info!(%addr, "evhost is running");

    let served = tokio::select! {
        () = shutdown => None,
        r = &mut server => Some(r),
    };
    let result = match served {
        // The server stopped by itself: an error.
        Some(r) => Err(DaemonError::Serve(match r {
            Ok(Err(e)) => e,
            Ok(Ok(())) => std::io::Error::other("the server stopped unexpectedly"),
            Err(e) => std::io::Error::other(e.to_string()),
        })),
        None => {
            say!("shutting down");
            let _ = stop_tx.send(true);
            let deadline = config.dispatch.shutdown_timeout;
            if tokio::time::timeout(deadline, &mut server).await.is_err() {
                tracing::warn!(
                    ?deadline,
                    "requests still in flight at the deadline; dropping them"
                );
                server.abort();
            }
            Ok(())
        }
    };
    // No reload may start while the dispatcher winds down.
    if let Some(w) = watching {
        w.stop().await;
    }
    dispatcher.shutdown(config.dispatch.shutdown_timeout).await;
    // The log finishes the writes queued so far; every acknowledged one is already durable.
    opened.shutdown().await;
    drop(lock);
    if result.is_ok() {
        say!("evhost stopped");
    }
    result
}

/// The log the daemon runs on, kept by its concrete type for shutdown.
enum OpenedLog {
    Redb(Arc<RedbLog>),
    Nats(Arc<NatsLog>),
}

impl OpenedLog {
    fn log(&self) -> Arc<dyn EventLog> {
        match self {
            OpenedLog::Redb(log) => log.clone(),
            OpenedLog::Nats(log) => log.clone(),
        }
    }

    /// Finishes queued writes and stops, off the async threads (both block).
    async fn shutdown(self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            match self {
                OpenedLog::Redb(log) => log.shutdown(),
                OpenedLog::Nats(log) => log.shutdown(),
            }
            let _ = done.send(());
        });
        let _ = wait.await;
    }
}

/// Opens the configured log. The NATS log runs a runtime of its own, so it is
/// connected from a plain thread; redb opens on one too (it may repair the file).
async fn open_log(
    backend: &LogBackend,
    data: &Path,
    log_config: LogConfig,
) -> Result<OpenedLog, DaemonError> {
    let (done, wait) = tokio::sync::oneshot::channel();
    let (shown, open): (
        String,
        Box<dyn FnOnce() -> Result<OpenedLog, LogError> + Send>,
    ) = match backend {
        LogBackend::Redb => {
            let path = data.join("log.redb");
            (
                path.display().to_string(),
                Box::new(move || {
                    RedbLog::open(&path, log_config).map(|l| OpenedLog::Redb(Arc::new(l)))
                }),
            )
        }
        LogBackend::Nats {
            servers,
            replicas,
            prefix,
        } => {
            let nats = NatsConfig {
                replicas: *replicas,
                log: log_config,
                ..NatsConfig::new(servers.clone(), prefix.clone())
            };
            (
                format!("nats {} (stream EVHOST_{prefix})", servers.join(",")),
                Box::new(move || NatsLog::connect(nats).map(|l| OpenedLog::Nats(Arc::new(l)))),
            )
        }
    };
    std::thread::spawn(move || {
        let _ = done.send(open());
    });
    let opened = wait
        .await
        .map_err(|e| DaemonError::Log {
            path: shown.clone(),
            source: LogError::Invalid(e.to_string()),
        })?
        .map_err(|source| DaemonError::Log {
            path: shown.clone(),
            source,
        })?;
    if let LogBackend::Nats { replicas, .. } = backend {
        say!("log: {shown}, {replicas} replica(s)");
        if *replicas == 1 {
            tracing::warn!(
                "the NATS log acknowledges what the server acknowledges: with replicas = 1 an \
                 acknowledged publish survives a crash only if the server runs with \
                 `jetstream {{ sync_interval: always }}` (evhost cannot check it); use that or \
                 replicas = 3 for guarantee 1"
            );
        }
    }
    Ok(opened)
}

/// Starts watching the plugin directory (created when missing); without a watch
/// the daemon still runs the plugins loaded at start.
fn watch_plugin_dir(dir: &Path) -> Option<DirWatcher> {
    if !dir.exists() {
        match std::fs::create_dir_all(dir) {
            Ok(()) => say!("created the plugin directory {}", dir.display()),
            Err(e) => {
                say!("not watching {}: cannot create it: {e}", dir.display());
                return None;
            }
        }
    }
    match DirWatcher::new(dir, WatchConfig::default()) {
        Ok(w) => Some(w),
        Err(e) => {
            say!("not watching the plugin directory: {e}");
            tracing::error!("{e}");
            None
        }
    }
}

/// Loads every `*.wasm` of the plugin directory; failures are reported, not fatal.
///
/// Files are compiled concurrently, as many at a time as there are cores
/// (wasmtime spreads one compile's functions over the cores too, but not its
/// serial parts: parsing, validation, translation, `describe()`, the cache
/// write), and deployed one after the other in file order as their compiles
/// finish: the printed lines and load numbers do not depend on which compile
/// finishes first. Each file is compiled once and deployed once, and the
/// watcher starts only afterwards, so there is still at most one operation per
/// plugin file in flight.
async fn load_plugin_dir(loader: &Loader, dir: &Path) {
    let files = match plugins::scan(dir) {
        Ok(files) => files,
        Err(e) => {
            say!("no plugins loaded: cannot read {}: {e}", dir.display());
            return;
        }
    };
    if files.is_empty() {
        say!("no plugins in {}", dir.display());
    }
    let parallel = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    // `buffered` runs up to `parallel` compiles at once and yields them in
    // file order.
    let mut compiled = futures_util::stream::iter(
        files
            .iter()
            .map(|file| async move { (file, loader.compile(file).await) }),
    )
    .buffered(parallel);
    while let Some((file, result)) = compiled.next().await {
        match loader.deploy_compiled(file, result).await {
            Ok(d) => {
                let info = &d.plugin.info;
                let subs: Vec<String> = d
                    .subscriptions()
                    .iter()
                    .map(|s| format!("{} {}", s.topic, s.event_type))
                    .collect();
                say!(
                    "loaded plugin {} {} from {} (sha256:{}), subscribes to {}",
                    info.name,
                    info.version,
                    file.display(),
                    &d.plugin.digest[..12.min(d.plugin.digest.len())],
                    subs.join(", ")
                );
            }
            Err(e) => say!("FAILED to load {}: {e}", file.display()),
        }
    }
}
