//! The plugin directory: a plugin is `NAME.wasm` plus an optional operator
//! sidecar `NAME.toml`. [`load`] turns one file (and its sidecar) into a
//! [`Deployment`] or a clear error; [`Loader`] deploys it to the dispatcher and
//! remembers failures for `GET /v1/plugins`. Startup and the directory watcher
//! go through the same [`Loader::deploy_file`].
//!
//! - `sidecar`: the sidecar format (README, section "Plugin sidecar").

pub mod sidecar;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

pub use self::sidecar::Sidecar;
use crate::dispatch::{Deployment, Dispatcher};
use crate::runtime::{LoadError, Runtime};

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
    #[error("loading {path} did not finish: {message}")]
    Aborted { path: String, message: String },
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
    let plugin = runtime.load_file(wasm)?;
    let settings = sidecar
        .settings(plugin.info.retry.as_ref())
        .map_err(sidecar_err)?;
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
}

/// Deploys plugin files to the dispatcher and keeps the record of what failed.
pub struct Loader {
    runtime: Arc<Runtime>,
    dispatcher: Arc<Dispatcher>,
    next_load: AtomicU64,
    /// Plugin name → the file it was loaded from; two files may not claim one name.
    files: Mutex<BTreeMap<String, PathBuf>>,
    /// File stem → the last failure, cleared by a later successful load.
    failures: Mutex<BTreeMap<String, FailedLoad>>,
    loads: AtomicU64,
    load_failures: AtomicU64,
}

impl Loader {
    pub fn new(runtime: Arc<Runtime>, dispatcher: Arc<Dispatcher>) -> Self {
        Loader {
            runtime,
            dispatcher,
            next_load: AtomicU64::new(1),
            files: Mutex::default(),
            failures: Mutex::default(),
            loads: AtomicU64::new(0),
            load_failures: AtomicU64::new(0),
        }
    }

    /// Loads `wasm` (with its sidecar) and deploys it, replacing a running version of the
    /// same plugin. A failure is logged, recorded for `GET /v1/plugins` and returned; a
    /// running version, if any, keeps running.
    pub async fn deploy_file(&self, wasm: &Path) -> Result<Deployment, PluginError> {
        let stem = wasm
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let result = self.load_checked(wasm).await;
        match &result {
            Ok(deployment) => {
                self.loads.fetch_add(1, Ordering::Relaxed);
                self.dispatcher.deploy(deployment.clone());
                self.files
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(deployment.name().to_owned(), wasm.to_owned());
                self.failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&stem);
                let info = &deployment.plugin.info;
                tracing::info!(
                    plugin = %info.name,
                    version = %info.version,
                    digest = %deployment.plugin.digest,
                    file = %wasm.display(),
                    "plugin deployed"
                );
            }
            Err(e) => {
                self.load_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %wasm.display(), error = %e, "plugin not loaded");
                self.failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        stem.clone(),
                        FailedLoad {
                            name: stem,
                            file: wasm.display().to_string(),
                            error: e.to_string(),
                            at: crate::event::now_rfc3339(),
                        },
                    );
            }
        }
        result
    }

    async fn load_checked(&self, wasm: &Path) -> Result<Deployment, PluginError> {
        let runtime = self.runtime.clone();
        let path = wasm.to_owned();
        let load_number = self.next_load.fetch_add(1, Ordering::Relaxed);
        let deployment = tokio::task::spawn_blocking(move || load(&runtime, &path, load_number))
            .await
            .map_err(|e| PluginError::Aborted {
                path: wasm.display().to_string(),
                message: e.to_string(),
            })??;
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(other) = files.get(deployment.name())
            && other != wasm
        {
            return Err(PluginError::DuplicateName {
                path: wasm.display().to_string(),
                name: deployment.name().to_owned(),
                other: other.display().to_string(),
            });
        }
        Ok(deployment)
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

    /// Successful loads and failed ones since start, for `/metrics`.
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
