//! `evhost new NAME`: a plugin crate that builds for `wasm32-wasip2` as it stands.
//!
//! The crate depends on `evhost-sdk`. Until the SDK is published, that is a path
//! dependency on the `plugin-sdk/` of the evhost source tree this binary was built
//! from (or `--sdk-path`); without either it falls back to the crates.io version.

use std::path::{Path, PathBuf};

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

/// Checks a plugin name: what the host accepts (lowercase letters, digits, '-'),
/// starting with a letter so it is also a valid crate name.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plugin name {name:?} must be 1 to 64 lowercase letters, digits or '-', starting with a letter"
        ))
    }
}

/// Writes the crate into `dir` (which must not exist yet or be empty); returns the
/// files written.
pub fn create(name: &str, dir: &Path, sdk: &SdkSource) -> Result<Vec<PathBuf>, String> {
    validate_name(name)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .next()
            .is_some()
    {
        return Err(format!("{} already exists and is not empty", dir.display()));
    }
    let files = [
        (PathBuf::from("Cargo.toml"), cargo_toml(name, sdk)),
        (PathBuf::from("src/lib.rs"), lib_rs(name)),
        (PathBuf::from(format!("{name}.toml")), sidecar(name)),
        (PathBuf::from(".gitignore"), "/target\n".to_owned()),
        (PathBuf::from("README.md"), readme(name)),
    ];
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn cargo_toml(name: &str, sdk: &SdkSource) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A plugin is a Wasm component: build with `cargo build --release --target wasm32-wasip2`.
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
    subscribe = [("{name}-events", "{name}.*")],
    handler = handle,
);

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {{
    let data: serde_json::Value = event.data_json()?;
    cx.log(Level::Info, "handled", &[("type", &event.ty), ("id", &event.id)]);
    // Emitting needs an `emit` grant in the operator's sidecar ({name}.toml).
    cx.emit(OutgoingEvent::new("{name}.handled").json(&data)?)?;
    Ok(())
}}

#[cfg(test)]
mod tests {{
    use super::*;
    use evhost_sdk::testing::{{TestEvent, TestHost}};

    #[test]
    fn describes_itself() {{
        assert_eq!(describe().name, "{name}");
    }}

    #[test]
    fn emits_a_handled_event() {{
        let mut host = TestHost::new();
        let event = TestEvent::new("{name}.created").json(&serde_json::json!({{"n": 1}}));
        host.deliver(handle, event).unwrap();
        assert_eq!(host.emitted()[0].ty, "{name}.handled");
    }}
}}
"#
    )
}

fn sidecar(name: &str) -> String {
    format!(
        r#"# Operator settings for {name}.wasm: copy next to it in the daemon's plugin directory.
# See the evhost README ("Plugin sidecar") for every key.
timeout = "5s"

[grants]
emit = ["{name}.*"]
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

An evhost plugin.

```sh
cargo test                                            # the handler, natively
cargo build --release --target wasm32-wasip2          # the component
evhost check target/wasm32-wasip2/release/{crate_}.wasm
cp target/wasm32-wasip2/release/{crate_}.wasm PLUGIN_DIR/{name}.wasm
cp {name}.toml PLUGIN_DIR/                             # its grants and limits
```
"#,
        crate_ = name.replace('-', "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_crate_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("demo");
        let sdk = SdkSource::Version("0.1.0".into());
        let files = create("demo", &target, &sdk).unwrap();
        assert!(files.iter().any(|f| f.ends_with("src/lib.rs")));
        let cargo = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("evhost-sdk = \"0.1.0\""), "{cargo}");
        assert!(
            create("demo", &target, &sdk)
                .unwrap_err()
                .contains("not empty")
        );
        assert!(validate_name("Demo").is_err() && validate_name("9x").is_err());
    }
}
