//! Shared harness of the end-to-end tests: the example plugins built once per
//! test run for `wasm32-wasip2`, temp dirs, and waiting with a deadline.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// Builds every crate in `plugins/` as a component, once per test process
/// (cargo's own lock and up-to-date check make later runs no-ops), and
/// returns the directory holding the `.wasm` files.
pub fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target").join("plugins");
        let mut names: Vec<String> = std::fs::read_dir(root.join("plugins"))
            .expect("plugins/ exists")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("Cargo.toml").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root)
            .args(["build", "--quiet", "--target", "wasm32-wasip2", "--profile", "plugin"])
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET");
        for n in &names {
            cmd.args(["-p", n]);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(
            status.success(),
            "building the plugins for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
        target_dir.join("wasm32-wasip2").join("plugin")
    })
}

/// Path of the example plugin `name` (its crate name), built.
pub fn plugin(name: &str) -> PathBuf {
    let path = plugins_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
