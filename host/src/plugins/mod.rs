//! The plugin directory: a plugin is `NAME.wasm` plus an optional operator
//! sidecar `NAME.toml`. [`load`] turns one file (and its sidecar) into a
//! [`Deployment`] or a clear error; [`Loader`] deploys it to the dispatcher,
//! numbers the versions, and remembers failures for `GET /v1/plugins`. Startup
//! and the directory watcher go through the same [`Loader`] calls.
//!
//! - `sidecar`: the sidecar format (README, section "Plugin sidecar").
//! - `watcher`: notify events → debounced, settled reloads and removals.
//! - `numbers`: the load-number counter, persisted in the data directory.

mod numbers;
pub mod sidecar;
pub mod watcher;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use self::numbers::LoadNumbers;
pub use self::sidecar::Sidecar;
pub use self::watcher::{DirWatcher, WatchConfig, WatchError};
use crate::config::format_byte_size;
use crate::dispatch::{Deployment, Dispatcher};
use crate::runtime::{GrantSource, Limits, LoadError, Runtime};

/// Why a plugin file was not deployed. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("sidecar {path}: {message}")]
    Sidecar { path: String, message: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{path} describes plugin `{name}`, which is already loaded from {other}")]
    DuplicateName {
        path: String,
        name: String,
        other: String,
    },
    #[error(
        "{memory} in {sidecar} exceeds [runtime] instance-memory = \"{slot}\"{set_in}: \
         lower the plugin's memory or raise instance-memory"
    )]
    MemoryOverPool {
        /// The plugin's memory setting as the operator would write it, e.g.
        /// `memory = "512 MiB"`.
        memory: String,
        sidecar: String,
        slot: String,
        /// Where instance-memory is set (" in FILE").
        set_in: String,
    },
    #[error(
        "{path} describes plugin `{name}` and has no sidecar of its own, but {sidecar} is there \
         for `{name}`: rename the file to {name}.wasm so that its grants apply (cargo names its \
         output with '_'; `evhost build` writes NAME.wasm)"
    )]
    SidecarUnderOtherName {
        path: String,
        name: String,
        sidecar: String,
    },
    #[error("loading {path} did not finish: {message}")]
    Aborted { path: String, message: String },
    #[error("cannot record the load number in {path}: {message}")]
    LoadNumber { path: String, message: String },
}

/// The sidecar that belongs to `wasm`: same stem, `.toml`.
pub fn sidecar_path(wasm: &Path) -> PathBuf {
    wasm.with_extension("toml")
}

/// Loads `wasm`, checks it against the world, and combines it with its sidecar.
/// Blocking (compiles the component): run it on a blocking thread.
pub fn load(runtime: &Runtime, wasm: &Path, load_number: u64) -> Result<Deployment, PluginError> {
    let sidecar_file = sidecar_path(wasm);
    let sidecar_err = |message: String| PluginError::Sidecar {
        path: sidecar_file.display().to_string(),
        message,
    };
    // The sidecar first: it is cheap, and a typo in it should not cost a compile.
    let sidecar = if sidecar_file.exists() {
        Sidecar::read(&sidecar_file).map_err(sidecar_err)?
    } else {
        Sidecar::default()
    };
    check_memory(runtime, &sidecar, &sidecar_file)?;
    let plugin = runtime.load_file(wasm)?;
    check_file_name(wasm, &plugin.info.name, sidecar_file.exists())?;
    let mut settings = sidecar
        .settings(plugin.info.retry.as_ref())
        .map_err(sidecar_err)?;
    // A refused grant names this file, also when it does not exist yet: it is
    // where the operator grants.
    settings.grants = settings
        .grants
        .from_source(GrantSource::Sidecar(sidecar_file.clone()));
    let subscriptions = settings
        .subscriptions
        .as_ref()
        .unwrap_or(&plugin.info.subscriptions);
    if subscriptions.is_empty() {
        return Err(sidecar_err(format!(
            "plugin `{}` subscribes to nothing; give it [[subscriptions]] in its sidecar",
            plugin.info.name
        )));
    }
    Ok(Deployment {
        plugin,
        settings,
        load_number,
    })
}

/// `NAME.wasm` is the convention: a file named otherwise still loads (a
/// plugin may move to another file), with a warning — except when it has no
/// sidecar while `NAME.toml` sits beside it for another file name: then it
/// would run silently without the grants its operator wrote for it, so it is
/// refused (cargo's `invoice_ledger.wasm` next to `invoice-ledger.toml`).
fn check_file_name(wasm: &Path, name: &str, has_sidecar: bool) -> Result<(), PluginError> {
    let stem = stem_of(wasm);
    if stem == name {
        return Ok(());
    }
    let named_sidecar = wasm.with_file_name(format!("{name}.toml"));
    if !has_sidecar && named_sidecar.exists() {
        return Err(PluginError::SidecarUnderOtherName {
            path: wasm.display().to_string(),
            name: name.to_owned(),
            sidecar: named_sidecar.display().to_string(),
        });
    }
    tracing::warn!(
        file = %wasm.display(),
        plugin = %name,
        "the file name does not match the plugin's name: its sidecar is {stem}.toml; {name}.wasm is the convention"
    );
    Ok(())
}

/// A plugin's memory limit must fit the pool's slots: refused before the
/// compile, naming both settings and where each is written.
fn check_memory(runtime: &Runtime, sidecar: &Sidecar, file: &Path) -> Result<(), PluginError> {
    let pool = &runtime.config().pool;
    let (memory, written) = match sidecar.memory() {
        Some(m) => (m, true),
        None => (Limits::default().memory, false),
    };
    if memory <= pool.instance_memory {
        return Ok(());
    }
    let shown = format_byte_size(memory);
    Err(PluginError::MemoryOverPool {
        memory: if written {
            format!("memory = \"{shown}\"")
        } else {
            format!("the default memory limit of {shown} (no `memory` set)")
        },
        sidecar: file.display().to_string(),
        slot: format_byte_size(pool.instance_memory),
        set_in: pool.source_suffix(),
    })
}

/// The `*.wasm` files directly in `dir`, sorted by name.
pub fn scan(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// A plugin file that could not be deployed.
#[derive(Debug, Clone, Serialize)]
pub struct FailedLoad {
    /// The file's stem (the plugin's name when it follows the convention).
    pub name: String,
    pub file: String,
    pub error: String,
    /// RFC 3339.
    pub at: String,
    /// The plugin name this file was refused for because another file runs it.
    #[serde(skip)]
    pub blocked_by: Option<String>,
}

/// The version of a plugin that is running, as the loader knows it.
#[derive(Debug, Clone)]
struct Running {
    file: PathBuf,
    load_number: u64,
    digest: String,
}

/// Deploys plugin files to the dispatcher and keeps the record of what failed.
///
/// Callers serialise operations on one file (startup runs before the watcher,
/// the watcher handles one file at a time); the loader itself is safe to share.
pub struct Loader {
    runtime: Arc<Runtime>,
    dispatcher: Arc<Dispatcher>,
    numbers: Arc<LoadNumbers>,
    /// Plugin name → the file it runs from; two files may not claim one name.
    running: Mutex<BTreeMap<String, Running>>,
    /// File stem → the last failure, cleared by a later successful load or by
    /// the file's removal.
    failures: Mutex<BTreeMap<String, FailedLoad>>,
    loads: AtomicU64,
    load_failures: AtomicU64,
}

fn stem_of(wasm: &Path) -> String {
    wasm.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl PluginError {
    /// Whether the error says the file is still being written (a copy in
    /// progress) rather than that it is wrong: such a failure is retried
    /// before it is reported.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, PluginError::Load(LoadError::Truncated { .. }))
    }
}

impl Loader {
    /// A loader whose load numbers start at 1 and are not remembered across
    /// restarts; see [`Loader::with_load_numbers`].
    pub fn new(runtime: Arc<Runtime>, dispatcher: Arc<Dispatcher>) -> Self {
        Loader {
            runtime,
            dispatcher,
            numbers: Arc::new(LoadNumbers::in_memory()),
            running: Mutex::default(),
            failures: Mutex::default(),
            loads: AtomicU64::new(0),
            load_failures: AtomicU64::new(0),
        }
    }

    /// Keeps the last load number in `file`, so load numbers keep increasing
    /// across restarts (they are recorded in dead letters, which outlive the
    /// process). On error the numbering stays as it was.
    pub fn use_load_number_file(&mut self, file: &Path) -> std::io::Result<()> {
        self.numbers = Arc::new(LoadNumbers::open(file)?);
        Ok(())
    }

    /// Loads `wasm` (with its sidecar) and deploys it, replacing a running version of the
    /// same plugin. A failure is logged, recorded for `GET /v1/plugins` and returned; a
    /// running version, if any, keeps running.
    pub async fn deploy_file(&self, wasm: &Path) -> Result<Deployment, PluginError> {
        let compiled = self.compile(wasm).await;
        self.deploy_compiled(wasm, compiled).await
    }

    /// What [`Loader::deploy_file`] does after the compile: numbers and
    /// deploys the outcome of [`Loader::compile`], or records its failure.
    /// Startup compiles files concurrently and deploys them through this, one
    /// after the other in file order, so load numbers follow the file names.
    pub async fn deploy_compiled(
        &self,
        wasm: &Path,
        compiled: Result<Deployment, PluginError>,
    ) -> Result<Deployment, PluginError> {
        let result = match compiled {
            Ok(deployment) => match self.number(wasm, deployment).await {
                Ok(deployment) => self.deploy(wasm, deployment).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.record_failure(wasm, e);
        }
        result
    }

    /// Loads and checks `wasm` and its sidecar, and gives the result a load
    /// number; deploys nothing and records nothing. Compiles on a blocking thread.
    pub async fn load(&self, wasm: &Path) -> Result<Deployment, PluginError> {
        let deployment = self.compile(wasm).await?;
        self.number(wasm, deployment).await
    }

    /// Loads and checks `wasm` and its sidecar on a blocking thread, without
    /// a load number (0) yet; deploys nothing and records nothing.
    pub async fn compile(&self, wasm: &Path) -> Result<Deployment, PluginError> {
        let runtime = self.runtime.clone();
        let path = wasm.to_owned();
        tokio::task::spawn_blocking(move || load(&runtime, &path, 0))
            .await
            .map_err(|e| PluginError::Aborted {
                path: wasm.display().to_string(),
                message: e.to_string(),
            })?
    }

    /// Gives a loaded version of `wasm` the next load number (durable before
    /// it is handed out: a blocking write).
    async fn number(
        &self,
        wasm: &Path,
        mut deployment: Deployment,
    ) -> Result<Deployment, PluginError> {
        let numbers = self.numbers.clone();
        let number = tokio::task::spawn_blocking(move || {
            numbers.next().map_err(|e| PluginError::LoadNumber {
                path: numbers.describe(),
                message: e.to_string(),
            })
        })
        .await
        .map_err(|e| PluginError::Aborted {
            path: wasm.display().to_string(),
            message: e.to_string(),
        })??;
        deployment.load_number = number;
        Ok(deployment)
    }

    /// Deploys a loaded version of `wasm`: a plugin of that name is started or
    /// its running version swapped between batches. If the file used to hold a
    /// plugin of another name, that one is stopped.
    pub async fn deploy(
        &self,
        wasm: &Path,
        deployment: Deployment,
    ) -> Result<Deployment, PluginError> {
        let name = deployment.name().to_owned();
        let (replaced, renamed) = {
            let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(other) = running.get(&name)
                && other.file != wasm
            {
                return Err(PluginError::DuplicateName {
                    path: wasm.display().to_string(),
                    name,
                    other: other.file.display().to_string(),
                });
            }
            let renamed: Vec<String> = running
                .iter()
                .filter(|(n, r)| r.file == wasm && **n != name)
                .map(|(n, _)| n.clone())
                .collect();
            (running.get(&name).cloned(), renamed)
        };
        for old in renamed {
            tracing::info!(plugin = %old, file = %wasm.display(), now = %name, "the file now holds another plugin; stopping the old one");
            self.stop(&old).await;
        }
        self.dispatcher.deploy(deployment.clone());
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name.clone(),
                Running {
                    file: wasm.to_owned(),
                    load_number: deployment.load_number,
                    digest: deployment.plugin.digest.clone(),
                },
            );
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&stem_of(wasm));
        let plugin = &deployment.plugin;
        match replaced {
            Some(old) => tracing::info!(
                plugin = %name,
                version = %plugin.info.version,
                load_number = deployment.load_number,
                digest = %plugin.digest,
                origin = ?plugin.origin,
                load_ms = plugin.load_time.as_secs_f64() * 1e3,
                replaces_load = old.load_number,
                replaces_digest = %old.digest,
                file = %wasm.display(),
                "plugin reloaded; the new version takes over between batches"
            ),
            None => tracing::info!(
                plugin = %name,
                version = %plugin.info.version,
                load_number = deployment.load_number,
                digest = %plugin.digest,
                origin = ?plugin.origin,
                load_ms = plugin.load_time.as_secs_f64() * 1e3,
                file = %wasm.display(),
                "plugin deployed"
            ),
        }
        Ok(deployment)
    }

    /// Records a failed load of `wasm` for `GET /v1/plugins`, the log and the
    /// metrics. A running version of the plugin is not touched.
    pub fn record_failure(&self, wasm: &Path, error: &PluginError) {
        self.load_failures.fetch_add(1, Ordering::Relaxed);
        let stem = stem_of(wasm);
        let serving = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|r| r.file == wasm)
            .map(|r| r.load_number);
        match serving {
            Some(n) => {
                tracing::error!(file = %wasm.display(), error = %error, "plugin not reloaded; load {n} keeps running")
            }
            None => tracing::error!(file = %wasm.display(), error = %error, "plugin not loaded"),
        }
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                stem.clone(),
                FailedLoad {
                    name: stem,
                    file: wasm.display().to_string(),
                    error: error.to_string(),
                    at: crate::event::now_rfc3339(),
                    blocked_by: match error {
                        PluginError::DuplicateName { name, .. } => Some(name.clone()),
                        _ => None,
                    },
                },
            );
    }

    /// The file is gone: stops the plugin(s) running from it (offsets, state and
    /// dead letters stay, so re-adding the file resumes where it stopped) and
    /// forgets its failure. Returns the names stopped.
    pub async fn remove_file(&self, wasm: &Path) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&stem_of(wasm));
        let names: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, r)| r.file == wasm)
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            self.stop(name).await;
            tracing::info!(plugin = %name, file = %wasm.display(), "plugin file removed; plugin stopped (offsets, state and dead letters are kept)");
        }
        names
    }

    async fn stop(&self, name: &str) {
        self.dispatcher.remove(name).await;
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// The name of the plugin running from `wasm`, if any.
    pub fn running_from(&self, wasm: &Path) -> Option<String> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(_, r)| r.file == wasm)
            .map(|(n, _)| n.clone())
    }

    /// The files that run a plugin.
    pub fn running_files(&self) -> Vec<PathBuf> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|r| r.file.clone())
            .collect()
    }

    /// Files that were refused because `name` ran from another file.
    pub fn blocked_by(&self, name: &str) -> Vec<PathBuf> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|f| f.blocked_by.as_deref() == Some(name))
            .map(|f| PathBuf::from(&f.file))
            .collect()
    }

    /// Files that failed to load, by stem.
    pub fn failures(&self) -> Vec<FailedLoad> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Successful loads and failed ones since start (both at startup and on
    /// reloads), for `/metrics`.
    pub fn load_counts(&self) -> (u64, u64) {
        (
            self.loads.load(Ordering::Relaxed),
            self.load_failures.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_only_wasm_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.wasm", "a.wasm", "a.toml", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("dir.wasm")).unwrap();
        let found: Vec<_> = scan(dir.path())
            .unwrap()
            .into_iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, ["a.wasm", "b.wasm"]);
        assert_eq!(sidecar_path(Path::new("/p/a.wasm")), Path::new("/p/a.toml"));
    }
}
