//! The watched plugin directory: notify events → debounced, settled reloads.
//!
//! Events are grouped by plugin (the stem of `NAME.wasm` / `NAME.toml`; other
//! names and dotfiles are ignored). A plugin is acted on once its files have
//! been quiet for `debounce`, and only when they look *settled*:
//! - their size, mtime and inode did not change since the last event;
//! - no writer still has the component open (inotify reports the close of a
//!   written file; a `cp` that stalls longer than the debounce is still open);
//! - the load did not run into the end of the file (`Truncated`), which is
//!   retried for up to `incomplete_grace` before it is reported;
//! - the files did not change while they were being loaded.
//!
//! Then: the component is gone → the plugin is stopped ([`Loader::remove_file`]);
//! otherwise it is loaded on a blocking thread and deployed, or the failure is
//! recorded and the running version stays. One plugin is handled at a time, so
//! a removal always finishes before the same name is deployed again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Loader;

/// How the directory is watched.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Quiet time after the last change of a plugin's files before it is loaded.
    pub debounce: Duration,
    /// How long a file that stays cut short (a copy that stalled or died) is
    /// waited for before its error is reported.
    pub incomplete_grace: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            debounce: Duration::from_millis(100),
            incomplete_grace: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch the plugin directory {path}: {source}")]
    Watch {
        path: String,
        #[source]
        source: notify::Error,
    },
}

/// What the notify thread hands to the watcher task.
enum Signal {
    Change(EventKind, Vec<PathBuf>),
    /// Events may have been lost (queue overflow, an error): look at everything.
    Rescan(String),
}

/// A started watch whose events are buffered until [`DirWatcher::spawn`], so
/// that nothing written while the directory is first loaded is missed.
pub struct DirWatcher {
    dir: PathBuf,
    config: WatchConfig,
    watcher: RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<Signal>,
}

/// The running watcher task; dropping it stops watching at the next await.
pub struct Watching {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Watching {
    /// Stops the watcher after the plugin it is handling, if any.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl DirWatcher {
    /// Starts watching `dir` (not recursively).
    pub fn new(dir: &Path, config: WatchConfig) -> Result<Self, WatchError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = move |res: notify::Result<notify::Event>| {
            let signal = match res {
                Ok(ev) if ev.need_rescan() => Signal::Rescan("the event queue overflowed".into()),
                // Opens and reads are ours (loading) or harmless; a written
                // file's close is kept: it says the writer is done.
                Ok(ev)
                    if matches!(ev.kind, EventKind::Access(a)
                        if a != AccessKind::Close(AccessMode::Write)) =>
                {
                    return;
                }
                Ok(ev) => Signal::Change(ev.kind, ev.paths),
                Err(e) => Signal::Rescan(e.to_string()),
            };
            let _ = tx.send(signal);
        };
        let err = |source| WatchError::Watch {
            path: dir.display().to_string(),
            source,
        };
        let mut watcher = notify::recommended_watcher(handler).map_err(err)?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(err)?;
        Ok(DirWatcher {
            dir: dir.to_owned(),
            config,
            watcher,
            rx,
        })
    }

    /// Hands the buffered and all later changes to `loader`, on a task.
    pub fn spawn(self, loader: Arc<Loader>) -> Watching {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(self.run(loader, stop_rx));
        Watching { stop, task }
    }

    async fn run(mut self, loader: Arc<Loader>, mut stop: watch::Receiver<bool>) {
        tracing::info!(dir = %self.dir.display(), debounce = ?self.config.debounce, "watching the plugin directory");
        let mut state = State {
            dir: self.dir.clone(),
            config: self.config.clone(),
            dirty: BTreeMap::new(),
            // inotify reports when a written file is closed; other backends do not.
            tracks_writers: cfg!(any(target_os = "linux", target_os = "android")),
        };
        loop {
            let next = state.dirty.values().map(|d| d.due).min();
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                signal = self.rx.recv() => {
                    let Some(signal) = signal else { break };
                    state.note(signal, &loader);
                    while let Ok(signal) = self.rx.try_recv() {
                        state.note(signal, &loader);
                    }
                }
                () = sleep_until(next), if next.is_some() => {
                    state.settle_due(&loader, &stop).await;
                }
            }
        }
        drop(self.watcher);
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Enough of a file's metadata to notice that it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// A plugin whose files changed and that is waiting to settle.
#[derive(Debug)]
struct Dirty {
    /// When to look at it next.
    due: Instant,
    last_event: Instant,
    /// The component's and the sidecar's stamps at the last look.
    stamps: (Option<FileStamp>, Option<FileStamp>),
    /// A writer opened the component and has not closed it yet.
    writing: bool,
    /// Since when loads have run into the end of the component.
    incomplete_since: Option<Instant>,
}

struct State {
    dir: PathBuf,
    config: WatchConfig,
    dirty: BTreeMap<String, Dirty>,
    tracks_writers: bool,
}

/// The plugin a file in the directory belongs to: `NAME` of `NAME.wasm` or
/// `NAME.toml`; dotfiles (editor and copy temporaries) and other names are ignored.
fn plugin_stem(file_name: &str) -> Option<&str> {
    if file_name.starts_with('.') {
        return None;
    }
    let stem = file_name
        .strip_suffix(".wasm")
        .or_else(|| file_name.strip_suffix(".toml"))?;
    (!stem.is_empty()).then_some(stem)
}

impl State {
    fn wasm(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.wasm"))
    }

    fn stamps(&self, stem: &str) -> (Option<FileStamp>, Option<FileStamp>) {
        let wasm = self.wasm(stem);
        (stamp(&wasm), stamp(&super::sidecar_path(&wasm)))
    }

    fn mark(&mut self, stem: &str) -> &mut Dirty {
        let now = Instant::now();
        let stamps = self.stamps(stem);
        let due = now + self.config.debounce;
        let d = self.dirty.entry(stem.to_owned()).or_insert(Dirty {
            due,
            last_event: now,
            stamps,
            writing: false,
            incomplete_since: None,
        });
        d.due = due;
        d.last_event = now;
        d.stamps = stamps;
        d
    }

    fn note(&mut self, signal: Signal, loader: &Loader) {
        match signal {
            Signal::Change(kind, paths) => {
                for path in paths {
                    if path == self.dir {
                        // Only the directory's own removal or move matters here.
                        if matches!(
                            kind,
                            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                        ) {
                            tracing::warn!(dir = %self.dir.display(), ?kind, "the plugin directory itself was removed or moved; its plugins stop");
                            self.rescan(loader);
                        }
                        continue;
                    }
                    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                        continue;
                    };
                    let Some(stem) = plugin_stem(name) else {
                        continue;
                    };
                    let is_wasm = name.ends_with(".wasm");
                    let tracks = self.tracks_writers;
                    let d = self.mark(stem);
                    if is_wasm && tracks {
                        match kind {
                            EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) => {
                                d.writing = true
                            }
                            EventKind::Access(_)
                            | EventKind::Modify(ModifyKind::Name(_))
                            | EventKind::Remove(_) => d.writing = false,
                            _ => {}
                        }
                    }
                }
            }
            Signal::Rescan(why) => {
                tracing::warn!(dir = %self.dir.display(), "plugin directory events may have been lost ({why}); rescanning");
                self.rescan(loader);
            }
        }
    }

    /// Marks every plugin that has a file in the directory or is running.
    fn rescan(&mut self, loader: &Loader) {
        let mut stems = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.filter_map(Result::ok) {
                if let Some(stem) = e.file_name().to_str().and_then(plugin_stem) {
                    stems.insert(stem.to_owned());
                }
            }
        }
        for file in loader.running_files() {
            if let Some(stem) = file.file_stem().and_then(|s| s.to_str()) {
                stems.insert(stem.to_owned());
            }
        }
        for f in loader.failures() {
            stems.insert(f.name);
        }
        for stem in stems {
            self.mark(&stem);
        }
    }

    /// Handles every plugin whose quiet time is over; removals first, so that
    /// a plugin moved to another file is free to be deployed from it.
    async fn settle_due(&mut self, loader: &Loader, stop: &watch::Receiver<bool>) {
        let now = Instant::now();
        let mut due: Vec<String> = self
            .dirty
            .iter()
            .filter(|(_, d)| d.due <= now)
            .map(|(s, _)| s.clone())
            .collect();
        due.sort_by_key(|s| self.wasm(s).exists());
        for stem in due {
            if *stop.borrow() {
                return;
            }
            self.settle(&stem, loader).await;
        }
    }

    async fn settle(&mut self, stem: &str, loader: &Loader) {
        let debounce = self.config.debounce;
        let grace = self.config.incomplete_grace;
        let stamps = self.stamps(stem);
        let wasm = self.wasm(stem);
        let Some(d) = self.dirty.get_mut(stem) else {
            return;
        };
        let now = Instant::now();
        if stamps != d.stamps {
            // Changed without an event we saw: wait for it to be quiet.
            d.stamps = stamps;
            d.due = now + debounce;
            return;
        }
        if d.writing && now.duration_since(d.last_event) < grace {
            // The writer has not closed the file: a copy still under way. Its
            // close (or the grace, for writers that never close) ends the wait.
            d.due = now + debounce.max(Duration::from_millis(50));
            return;
        }
        if stamps.0.is_none() {
            self.dirty.remove(stem);
            let stopped = loader.remove_file(&wasm).await;
            for name in stopped {
                // Files refused because they claimed this name may load now.
                for file in loader.blocked_by(&name) {
                    if let Some(s) = file.file_stem().and_then(|s| s.to_str()) {
                        self.mark(s);
                    }
                }
            }
            return;
        }
        let result = loader.load(&wasm).await;
        let after = self.stamps(stem);
        let Some(d) = self.dirty.get_mut(stem) else {
            return;
        };
        let now = Instant::now();
        if after != stamps {
            // Written while being loaded: what was loaded may be a mix. Again.
            d.stamps = after;
            d.due = now + debounce;
            return;
        }
        match result {
            Ok(deployment) => {
                self.dirty.remove(stem);
                if let Err(e) = loader.deploy(&wasm, deployment).await {
                    loader.record_failure(&wasm, &e);
                }
            }
            Err(e)
                if e.is_incomplete()
                    && now.duration_since(*d.incomplete_since.get_or_insert(now)) < grace =>
            {
                tracing::debug!(file = %wasm.display(), "component is cut short; waiting for the rest: {e}");
                d.due = now + debounce.max(Duration::from_millis(50));
            }
            Err(e) => {
                self.dirty.remove(stem);
                loader.record_failure(&wasm, &e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plugin_files_count_and_temporaries_are_ignored() {
        assert_eq!(plugin_stem("counter.wasm"), Some("counter"));
        assert_eq!(plugin_stem("counter.toml"), Some("counter"));
        for ignored in [
            ".counter.wasm",
            ".counter.wasm.swp",
            "counter.wasm.tmp",
            "counter.wasm~",
            "4913",
            ".wasm",
            "notes.txt",
        ] {
            assert_eq!(plugin_stem(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn a_stamp_changes_with_content_and_with_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.wasm");
        assert!(stamp(&f).is_none());
        std::fs::write(&f, b"one").unwrap();
        let first = stamp(&f).unwrap();
        std::fs::write(&f, b"longer").unwrap();
        assert_ne!(stamp(&f).unwrap(), first);
        let tmp = dir.path().join(".a.wasm");
        std::fs::write(&tmp, b"longer").unwrap();
        let before = stamp(&f).unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_ne!(stamp(&f).unwrap().inode, before.inode);
        assert!(
            stamp(dir.path()).is_none(),
            "directories are not plugin files"
        );
    }
}
