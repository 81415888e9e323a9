//! Rust plugins: a `cdylib` crate on `evhost-sdk`, built by cargo for
//! `wasm32-wasip2`.
//!
//! Where a new crate gets `evhost-sdk` from: until the SDK is published, a
//! path dependency on the `plugin-sdk/` of the evhost source tree this binary
//! was built from (recorded at compile time; `cargo install --path host`
//! keeps pointing at the checkout), or `--sdk-path`; without either, the
//! crates.io version matching this evhost. A path dependency needs nothing
//! from the network beyond what the evhost build itself fetched, so a new
//! project builds offline on the machine that built evhost.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// The Wasm target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Where the new crate gets `evhost-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    Path(PathBuf),
    Version(String),
}

impl SdkSource {
    /// This binary's source tree's `plugin-sdk/` when it is still there, else the
    /// crates.io version matching this evhost.
    pub fn detect() -> SdkSource {
        let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        match tree.canonicalize() {
            Ok(p) if p.join("Cargo.toml").exists() => SdkSource::Path(p),
            _ => SdkSource::Version(env!("CARGO_PKG_VERSION").to_owned()),
        }
    }

    fn dependency(&self) -> String {
        match self {
            SdkSource::Path(p) => {
                let shown = p.display().to_string().replace('\\', "/");
                format!("evhost-sdk = {{ path = {shown:?} }}")
            }
            SdkSource::Version(v) => format!("evhost-sdk = \"{v}\""),
        }
    }
}

/// A Rust project: `Cargo.toml`.
pub fn detect(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file()
}

/// Writes the crate for plugin `name` into `dir`, with the SDK this evhost
/// was built from.
pub fn scaffold(dir: &Path, name: &str) -> anyhow::Result<()> {
    scaffold_with(dir, name, &SdkSource::detect())
}

/// Writes the crate for plugin `name` into `dir` (empty or new).
pub fn scaffold_with(dir: &Path, name: &str, sdk: &SdkSource) -> anyhow::Result<()> {
    let files = [
        ("Cargo.toml", cargo_toml(name, sdk)),
        ("src/lib.rs", lib_rs(name)),
        (&format!("{name}.toml"), super::sidecar_template(name)),
        (".gitignore", "/target\n/dist\n".to_owned()),
        ("README.md", readme(name)),
    ];
    super::write_files(dir, &files)
}

/// Build output that `evhost dev` does not watch.
pub fn ignored(_dir: &Path) -> Vec<PathBuf> {
    vec![PathBuf::from("target")]
}

/// `cargo build --release --target wasm32-wasip2`; cargo's own output goes to
/// stderr as it comes (shown once), and the component's path is read from
/// its JSON messages, so `CARGO_TARGET_DIR` and workspaces work.
pub fn compile(dir: &Path) -> anyhow::Result<PathBuf> {
    check_target(dir)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run `{cargo}` (is Rust installed? https://rustup.rs)"))?;
    let manifest = dir.join("Cargo.toml").canonicalize().ok();
    let mut found: Vec<(bool, PathBuf)> = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(artifact) = wasm_artifact(&line, manifest.as_deref()) {
                found.push(artifact);
            }
        }
    }
    let status = child.wait().context("cargo did not finish")?;
    if !status.success() {
        bail!(
            "cargo build failed in {} (its output is above)",
            dir.display()
        );
    }
    // The project's own library first; a workspace may build several.
    found.sort_by_key(|(ours, _)| !ours);
    match found.into_iter().next() {
        Some((_, path)) => Ok(path),
        None => bail!(
            "cargo built no Wasm component in {}: a plugin crate needs `crate-type = [\"cdylib\"]` under [lib]",
            dir.display()
        ),
    }
}

/// A `.wasm` file of a `cdylib` from one line of cargo's JSON messages, and
/// whether it belongs to the package at `manifest`.
fn wasm_artifact(line: &str, manifest: Option<&Path>) -> Option<(bool, PathBuf)> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" {
        return None;
    }
    let kinds = msg["target"]["kind"].as_array()?;
    if !kinds.iter().any(|k| k == "cdylib") {
        return None;
    }
    let wasm = msg["filenames"]
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))?;
    let ours = manifest.is_some_and(|m| {
        msg["manifest_path"]
            .as_str()
            .is_some_and(|p| Path::new(p) == m)
    });
    Some((ours, PathBuf::from(wasm)))
}

/// Without the target, cargo's error is a screen of "can't find crate for
/// `core`": say the one command that fixes it instead. Skipped when rustup
/// is not there (a toolchain installed otherwise).
fn check_target(dir: &Path) -> anyhow::Result<()> {
    let Ok(out) = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "list", "--installed"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && !installed.lines().any(|l| l.trim() == TARGET) {
        bail!(
            "the Rust target {TARGET} is not installed for this toolchain: run `rustup target add {TARGET}`"
        );
    }
    Ok(())
}

fn cargo_toml(name: &str, sdk: &SdkSource) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A plugin is a Wasm component: `evhost build` runs
# `cargo build --release --target wasm32-wasip2` and writes dist/{name}.wasm.
# The rlib lets `cargo test` run the handler natively.
[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
{dep}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# Small components: optimise for size, no unwinding.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"

# Its own workspace, so it builds wherever it is created.
[workspace]
"#,
        dep = sdk.dependency()
    )
}

fn lib_rs(name: &str) -> String {
    format!(
        r#"//! `{name}`: an evhost plugin.

use evhost_sdk::prelude::*;

evhost_sdk::plugin!(
    name = "{name}",
    subscribe = [("{name}-events", "{name}.created")],
    handler = handle,
);

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {{
    let data: serde_json::Value = event.data_json()?;
    cx.log(Level::Info, "handled", &[("type", &event.ty), ("id", &event.id)]);
    // Emitting needs the `emit` grant of the operator's sidecar ({name}.toml).
    cx.emit(
        OutgoingEvent::new("{name}.handled")
            .subject(event.subject.as_deref().unwrap_or(&event.id))
            .json(&serde_json::json!({{"handled": event.ty, "data": data}}))?,
    )?;
    Ok(())
}}

#[cfg(test)]
mod tests {{
    use super::*;
    use evhost_sdk::testing::{{TestEvent, TestHost}};

    /// The operator's sidecar: the test host enforces its grants as the daemon does.
    const SIDECAR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/{name}.toml");

    #[test]
    fn describes_itself() {{
        assert_eq!(describe().name, "{name}");
    }}

    #[test]
    fn emits_a_handled_event_with_the_sidecars_grants() {{
        let mut host = TestHost::new().with_sidecar(SIDECAR);
        let event = TestEvent::new("{name}.created").json(&serde_json::json!({{"n": 1}}));
        host.deliver(handle, event).unwrap();
        assert_eq!(host.emitted()[0].ty, "{name}.handled");
    }}
}}
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

An evhost plugin (Rust).

```sh
cargo test                                  # the handler, natively, with the sidecar's grants
evhost build                                # → dist/{name}.wasm + dist/{name}.toml
evhost deploy --plugins PLUGIN_DIR          # copies both into a daemon's plugin directory
evhost dev --plugins PLUGIN_DIR             # rebuilds and redeploys on every change
evhost publish --type {name}.created --data '{{"n": 1}}'   # an event it handles (topic {name}-events)
```

`{name}.toml` is the operator's sidecar: it grants exactly what the code uses
(`emit` of `{name}.handled`). Emitting anything else, or using `state`, needs
a grant there — `cargo test` fails the same way the daemon would.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crate_depends_on_the_given_sdk() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = SdkSource::Version("0.1.0".into());
        scaffold_with(dir.path(), "demo", &sdk).unwrap();
        let cargo = std::fs::read_to_string(dir.path().join("Cargo.toml")).unwrap();
        assert!(cargo.contains("evhost-sdk = \"0.1.0\""), "{cargo}");
        assert!(detect(dir.path()));
    }

    #[test]
    fn the_component_is_found_in_cargos_messages() {
        let line = r#"{"reason":"compiler-artifact","manifest_path":"/p/Cargo.toml","target":{"kind":["cdylib","rlib"]},"filenames":["/t/libdemo.rlib","/t/demo.wasm"]}"#;
        assert_eq!(
            wasm_artifact(line, Some(Path::new("/p/Cargo.toml"))),
            Some((true, PathBuf::from("/t/demo.wasm")))
        );
        let dep = r#"{"reason":"compiler-artifact","manifest_path":"/d/Cargo.toml","target":{"kind":["lib"]},"filenames":["/t/libdep.rlib"]}"#;
        assert_eq!(wasm_artifact(dep, None), None);
        assert_eq!(wasm_artifact("not json", None), None);
    }
}
