//! The plugin author's commands, without a daemon: `evhost new`, `build`,
//! `deploy` and `dev`. The language-independent part lives here (naming,
//! checking the component against the world, `dist/`, atomic deployment,
//! watching); each language module implements the same four functions:
//!
//! ```text
//! detect(dir) -> bool                        is `dir` a project of this language?
//! scaffold(dir, name) -> Result<()>          a new project for plugin `name` in `dir`
//! compile(dir) -> Result<PathBuf>            runs the toolchain; the built component
//! ignored(dir) -> Vec<PathBuf>               build output `dev` does not watch (relative)
//! ```
//!
//! The build's result is `DIR/dist/NAME.wasm` (NAME from the component's
//! `describe()`, never the toolchain's file name) and, when the project has
//! one, its sidecar `DIR/dist/NAME.toml`: together a complete drop-in plugin.

pub mod js;
mod lang;
pub mod python;
pub mod rust;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::plugins::Sidecar;
use crate::runtime::{Runtime, RuntimeConfig};

/// A language a plugin can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    /// Every language, in detection order.
    pub const ALL: [Lang; 3] = [Lang::Rust, Lang::Python, Lang::Js];

    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    /// The language of the project in `dir`.
    pub fn detect(dir: &Path) -> Option<Lang> {
        Lang::ALL.into_iter().find(|l| l.is_project(dir))
    }

    fn is_project(self, dir: &Path) -> bool {
        match self {
            Lang::Rust => rust::detect(dir),
            Lang::Python => python::detect(dir),
            Lang::Js => js::detect(dir),
        }
    }

    fn scaffold(self, dir: &Path, name: &str) -> anyhow::Result<()> {
        match self {
            Lang::Rust => rust::scaffold(dir, name),
            Lang::Python => python::scaffold(dir, name),
            Lang::Js => js::scaffold(dir, name),
        }
    }

    fn compile(self, dir: &Path) -> anyhow::Result<PathBuf> {
        match self {
            Lang::Rust => rust::compile(dir),
            Lang::Python => python::compile(dir),
            Lang::Js => js::compile(dir),
        }
    }

    fn ignored(self, dir: &Path) -> Vec<PathBuf> {
        match self {
            Lang::Rust => rust::ignored(dir),
            Lang::Python => python::ignored(dir),
            Lang::Js => js::ignored(dir),
        }
    }
}

/// Where `build` writes its result, relative to the project.
pub const DIST: &str = "dist";

/// `evhost new`: checks the name (the SDK's rule, with a suggestion) and the
/// directory, then writes the project. `sdk` overrides where a Rust project
/// gets `evhost-sdk` from.
pub fn new_project(
    name: &str,
    dir: &Path,
    lang: Lang,
    sdk: Option<rust::SdkSource>,
) -> anyhow::Result<()> {
    evhost_sdk::check_name(name)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    match (lang, sdk) {
        (Lang::Rust, Some(sdk)) => rust::scaffold_with(dir, name, &sdk),
        (_, _) => lang.scaffold(dir, name),
    }
}

/// Writes `files` (relative path, text) under `dir`, creating directories.
pub(crate) fn write_files(dir: &Path, files: &[(impl AsRef<Path>, String)]) -> anyhow::Result<()> {
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The sidecar a template ships: grants exactly what the template's code
/// uses (it emits `NAME.handled` and keeps no state).
pub(crate) fn sidecar_template(name: &str) -> String {
    format!(
        r#"# Operator settings for {name}.wasm: `evhost deploy` copies this file next to it
# in the daemon's plugin directory. Every key: evhost README, "Plugin sidecar".
timeout = "5s"

[grants]
# Exactly what the code uses: it emits `{name}.handled` and keeps no state.
emit = ["{name}.handled"]
"#
    )
}

/// The compile cache of the author commands (`build`, `check`, `call`):
/// `$EVHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/evhost/components`, else
/// `~/.cache/evhost/components`.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("EVHOST_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("evhost/components")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/evhost/components")))
}

/// A runtime for the author commands, with the compile cache when it can
/// be used (an unwritable cache only costs compile time: said, then skipped).
pub fn runtime() -> anyhow::Result<Runtime> {
    let with_cache = RuntimeConfig {
        cache_dir: cache_dir(),
        ..RuntimeConfig::default()
    };
    match Runtime::new(with_cache) {
        Err(e @ crate::runtime::RuntimeError::Cache { .. }) => {
            eprintln!("note: {e}; compiling without it");
            Ok(Runtime::new(RuntimeConfig::default())?)
        }
        other => Ok(other?),
    }
}

/// What `build` produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// The plugin's `describe()` name.
    pub name: String,
    pub version: String,
    /// `DIR/dist/NAME.wasm`.
    pub wasm: PathBuf,
    /// `DIR/dist/NAME.toml`, when the project has a sidecar.
    pub sidecar: Option<PathBuf>,
}

/// `evhost build`: runs the project's toolchain, checks the component as
/// the daemon's loader does, checks the sidecar, and writes
/// `DIR/dist/NAME.wasm` (+ `NAME.toml`).
pub fn build(runtime: &Runtime, dir: &Path) -> anyhow::Result<Built> {
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let lang = Lang::detect(dir).with_context(|| {
        format!(
            "{} is not a plugin project: it has no Cargo.toml (Rust), pyproject.toml or app.py \
             (Python), or package.json (JavaScript); `evhost new NAME` makes one",
            dir.display()
        )
    })?;
    let artifact = lang.compile(dir)?;
    let plugin = runtime.load_file(&artifact)?;
    let name = plugin.info.name.clone();
    let sidecar = project_sidecar(dir, &name)?;
    if let Some(file) = &sidecar {
        Sidecar::read(file)
            .and_then(|s| s.settings(plugin.info.retry.as_ref()).map(drop))
            .map_err(|e| anyhow::anyhow!("sidecar {}: {e}", file.display()))?;
    }
    let dist = dir.join(DIST);
    std::fs::create_dir_all(&dist).with_context(|| format!("cannot create {}", dist.display()))?;
    clear_other_builds(&dist, &name)?;
    let wasm = dist.join(format!("{name}.wasm"));
    install(&artifact, &wasm)?;
    let sidecar = match sidecar {
        Some(file) => {
            let to = dist.join(format!("{name}.toml"));
            install(&file, &to)?;
            Some(to)
        }
        None => None,
    };
    Ok(Built {
        name,
        version: plugin.info.version.clone(),
        wasm,
        sidecar,
    })
}

/// The project's sidecar for plugin `name`: `DIR/NAME.toml`. A sidecar under
/// another name (the plugin was renamed, or the file was) is an error rather
/// than a plugin that silently runs without its grants.
fn project_sidecar(dir: &Path, name: &str) -> anyhow::Result<Option<PathBuf>> {
    let file = dir.join(format!("{name}.toml"));
    if file.is_file() {
        return Ok(Some(file));
    }
    let others: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && !matches!(
                    p.file_name().and_then(|n| n.to_str()),
                    Some("Cargo.toml" | "pyproject.toml")
                )
                // Tool settings (rustfmt.toml, ...) are not sidecars: only a
                // file that parses as one counts.
                && std::fs::read_to_string(p)
                    .ok()
                    .is_some_and(|t| !t.trim().is_empty() && Sidecar::parse(&t).is_ok())
        })
        .collect();
    match others.first() {
        Some(other) => bail!(
            "the plugin describes itself as `{name}`, but the project's sidecar is {}: rename it to \
             {name}.toml (the daemon pairs NAME.wasm with NAME.toml)",
            other.display()
        ),
        None => Ok(None),
    }
}

/// `dist/` holds one plugin: outputs of an earlier name are removed.
fn clear_other_builds(dist: &Path, name: &str) -> anyhow::Result<()> {
    for entry in
        std::fs::read_dir(dist).with_context(|| format!("cannot read {}", dist.display()))?
    {
        let path = entry?.path();
        let ours = path.file_stem().is_some_and(|s| s == name);
        let plugin_file = path.extension().is_some_and(|x| x == "wasm" || x == "toml");
        if plugin_file && !ours {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Copies `from` to `to` atomically: a temporary dotfile in the same
/// directory (the daemon's watcher ignores dotfiles), flushed, then renamed
/// over `to`. Returns false when `to` already has these bytes (nothing written).
pub fn install(from: &Path, to: &Path) -> anyhow::Result<bool> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    if std::fs::read(to).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    let dir = to.parent().unwrap_or(Path::new("."));
    let file_name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.evhost-tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, to)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", to.display()));
    }
    Ok(true)
}

/// What `deploy` changed in the plugin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub wasm: PathBuf,
    pub wasm_changed: bool,
    pub sidecar: Option<PathBuf>,
    pub sidecar_changed: bool,
    /// Other files in the plugin directory that look like this plugin under a
    /// wrong name (cargo's `invoice_ledger.wasm`): two files cannot run one plugin.
    pub lookalikes: Vec<PathBuf>,
}

/// `evhost deploy`: installs a build into the plugin directory. The sidecar
/// goes first, so the daemon never loads the new component with the old
/// sidecar (at worst, for one debounce interval, the old component with the
/// new sidecar); each file is replaced atomically.
pub fn deploy(built: &Built, plugins: &Path) -> anyhow::Result<Deployed> {
    std::fs::create_dir_all(plugins)
        .with_context(|| format!("cannot create the plugin directory {}", plugins.display()))?;
    let (sidecar, sidecar_changed) = match &built.sidecar {
        Some(from) => {
            let to = plugins.join(format!("{}.toml", built.name));
            let changed = install(from, &to)?;
            (Some(to), changed)
        }
        None => (None, false),
    };
    let wasm = plugins.join(format!("{}.wasm", built.name));
    let wasm_changed = install(&built.wasm, &wasm)?;
    let lookalikes = crate::plugins::scan(plugins)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p != &wasm
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(evhost_sdk::suggest_name)
                    .is_some_and(|s| s == built.name)
        })
        .collect();
    Ok(Deployed {
        wasm,
        wasm_changed,
        sidecar,
        sidecar_changed,
        lookalikes,
    })
}

/// Builds and deploys, printing what happened; the `deploy` command and each
/// round of `dev`.
pub fn build_and_deploy(runtime: &Runtime, dir: &Path, plugins: &Path) -> anyhow::Result<()> {
    let built = build(runtime, dir)?;
    let d = deploy(&built, plugins)?;
    let what = match (d.wasm_changed, d.sidecar_changed) {
        (false, false) => "unchanged",
        (true, true) => "component and sidecar",
        (true, false) => "component",
        (false, true) => "sidecar",
    };
    println!(
        "deployed {} {} to {} ({what})",
        built.name,
        built.version,
        d.wasm.display()
    );
    if built.sidecar.is_none() {
        println!(
            "  no sidecar {}.toml in the project: the plugin runs with `log` and `config` only, \
             unless the operator's sidecar grants more",
            built.name
        );
    }
    for other in &d.lookalikes {
        println!(
            "  warning: {} looks like the same plugin under another name; remove it (two files \
             cannot run one plugin)",
            other.display()
        );
    }
    Ok(())
}

/// How long `dev` waits for the sources to be quiet before rebuilding.
const DEV_DEBOUNCE: Duration = Duration::from_millis(300);

/// `evhost dev`: deploys, then watches the project and rebuilds and
/// redeploys after each change (debounced). A failed build leaves the
/// deployed version running and says why. Runs until interrupted.
pub fn dev(dir: &Path, plugins: &Path) -> anyhow::Result<()> {
    use notify::{EventKind, RecursiveMode, Watcher as _};

    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let lang = Lang::detect(&dir).with_context(|| {
        format!(
            "{} is not a plugin project (see `evhost build`)",
            dir.display()
        )
    })?;
    let mut ignored: Vec<PathBuf> = lang
        .ignored(&dir)
        .into_iter()
        .chain([PathBuf::from(DIST)])
        .map(|p| dir.join(p))
        .collect();
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        ignored.push(PathBuf::from(target));
    }
    let plugins_abs = std::path::absolute(plugins).unwrap_or_else(|_| plugins.to_owned());
    ignored.push(plugins_abs);
    let runtime = runtime()?;
    let round = |why: &str| {
        println!("{why}: building {}", dir.display());
        if let Err(e) = build_and_deploy(&runtime, &dir, plugins) {
            println!(
                "build failed; the deployed version keeps running: {}",
                super::error_report(&e)
            );
        }
        println!("watching {} (Ctrl-C to stop)", dir.display());
    };
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let _ = tx.send(res);
    })
    .context("cannot watch the project")?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    let relevant = |event: &notify::Event| {
        matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) && event.paths.iter().any(|p| {
            !ignored.iter().any(|i| p.starts_with(i))
                && !p
                    .strip_prefix(&dir)
                    .unwrap_or(p)
                    .components()
                    .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        })
    };
    round("start");
    loop {
        match rx.recv() {
            Ok(Ok(event)) if relevant(&event) => {}
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                println!("watch error: {e}");
                continue;
            }
            Err(_) => bail!("the file watcher stopped"),
        }
        // Debounce: an editor's save or a `git checkout` is many events.
        let mut quiet_until = Instant::now() + DEV_DEBOUNCE;
        while let Some(left) = quiet_until.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(Ok(event)) if relevant(&event) => quiet_until = Instant::now() + DEV_DEBOUNCE,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the file watcher stopped"),
            }
        }
        round("change");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_refuses_a_bad_name_with_a_suggestion_and_a_full_directory() {
        let dir = tempfile::tempdir().unwrap();
        let e = new_project("Invoice_Ledger", &dir.path().join("x"), Lang::Rust, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("try \"invoice-ledger\""), "{e}");
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let e = new_project("demo", dir.path(), Lang::Rust, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not empty"), "{e}");
    }

    #[test]
    fn a_sidecar_under_another_name_is_an_error_and_tool_files_are_not_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rustfmt.toml"), "max_width = 100\n").unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\n").unwrap();
        assert_eq!(project_sidecar(dir.path(), "ledger").unwrap(), None);
        std::fs::write(dir.path().join("old-name.toml"), "[grants]\nstate = true\n").unwrap();
        let e = project_sidecar(dir.path(), "ledger")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("old-name.toml") && e.contains("rename it to ledger.toml"),
            "{e}"
        );
        std::fs::write(dir.path().join("ledger.toml"), "").unwrap();
        assert_eq!(
            project_sidecar(dir.path(), "ledger").unwrap(),
            Some(dir.path().join("ledger.toml"))
        );
    }

    #[test]
    fn install_replaces_atomically_and_skips_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a");
        let to = dir.path().join("p").join("x.wasm");
        std::fs::create_dir(dir.path().join("p")).unwrap();
        std::fs::write(&from, "one").unwrap();
        assert!(install(&from, &to).unwrap());
        assert!(!install(&from, &to).unwrap());
        std::fs::write(&from, "two").unwrap();
        assert!(install(&from, &to).unwrap());
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "two");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("p")).unwrap().count(), 1);
    }

    #[test]
    fn deploy_installs_both_files_skips_unchanged_ones_and_names_lookalikes() {
        let dir = tempfile::tempdir().unwrap();
        let dist = dir.path().join("dist");
        std::fs::create_dir(&dist).unwrap();
        std::fs::write(dist.join("invoice-ledger.wasm"), "v1").unwrap();
        std::fs::write(dist.join("invoice-ledger.toml"), "[grants]\n").unwrap();
        let built = Built {
            name: "invoice-ledger".into(),
            version: "0.1.0".into(),
            wasm: dist.join("invoice-ledger.wasm"),
            sidecar: Some(dist.join("invoice-ledger.toml")),
        };
        let plugins = dir.path().join("plugins");
        let d = deploy(&built, &plugins).unwrap();
        assert!(d.wasm_changed && d.sidecar_changed && d.lookalikes.is_empty());
        assert_eq!(
            std::fs::read_to_string(plugins.join("invoice-ledger.toml")).unwrap(),
            "[grants]\n"
        );
        std::fs::write(plugins.join("invoice_ledger.wasm"), "cargo's name").unwrap();
        std::fs::write(dist.join("invoice-ledger.wasm"), "v2").unwrap();
        let d = deploy(&built, &plugins).unwrap();
        assert!(d.wasm_changed && !d.sidecar_changed);
        assert_eq!(d.lookalikes, [plugins.join("invoice_ledger.wasm")]);
        assert_eq!(std::fs::read_to_string(&d.wasm).unwrap(), "v2");
    }
}
