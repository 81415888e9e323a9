//! Included by tests/languages.rs (`#[path]`, like nats_server.rs).
//! The Python and JavaScript example plugins (`plugins/greeter-py`,
//! `plugins/greeter-js`), built once per test process with the toolchains
//! `cargo xtask test` installs under `target/`, and cached there by a digest
//! of their sources: these builds take 5-60 s and are not reproducible
//! (every rebuild is a new digest and a new compile in the daemon).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use evhost::cli::author::{js, python};
use sha2::{Digest, Sha256};

use crate::support::workspace_root;

/// The componentize-py that `cargo xtask test` installs (or `$EVHOST_COMPONENTIZE_PY`).
pub fn componentize_py() -> PathBuf {
    tool(
        python::TOOL_ENV,
        &["target", "python-toolchain", "bin", "componentize-py"],
    )
}

/// The python with pytest that `cargo xtask test` installs.
pub fn python() -> PathBuf {
    tool(
        "EVHOST_TEST_PYTHON",
        &["target", "python-toolchain", "bin", "python"],
    )
}

/// The jco that `cargo xtask test` installs (or `$EVHOST_JCO`).
pub fn jco() -> PathBuf {
    tool(
        js::TOOL_ENV,
        &["target", "js-toolchain", "node_modules", ".bin", "jco"],
    )
}

/// `target/js-toolchain/node_modules`: what `npm install` gives a JS project.
pub fn js_node_modules() -> PathBuf {
    let dir = workspace_root().join("target/js-toolchain/node_modules");
    assert!(
        dir.is_dir(),
        "{} is missing: run `cargo xtask test` (it installs the JS toolchain)",
        dir.display()
    );
    dir
}

fn tool(env: &str, under_root: &[&str]) -> PathBuf {
    let path = match std::env::var_os(env).filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => under_root.iter().fold(workspace_root(), |p, c| p.join(c)),
    };
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask test` (it installs the Python and JS toolchains) or set {env}",
        path.display()
    );
    path
}

/// The component of example plugin `plugins/NAME` (Python or JavaScript),
/// built unless a build of the same sources is cached.
pub fn lang_plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<()>> = OnceLock::new();
    let _one_at_a_time = BUILT.get_or_init(|| Mutex::new(())).lock().unwrap();
    let root = workspace_root();
    let dir = root.join("plugins").join(name);
    let is_python = python::detect(&dir) && dir.join("app.py").is_file();
    let (sdk, ignored) = if is_python {
        (
            root.join("plugin-sdk/python/evhost_sdk"),
            python::ignored(&dir),
        )
    } else {
        (root.join("plugin-sdk/js"), js::ignored(&dir))
    };
    let mut hash = Sha256::new();
    hash.update(if is_python {
        python::COMPONENTIZE_PY_VERSION
    } else {
        js::JCO_VERSION
    });
    for tree in [&dir, &sdk, &root.join("wit")] {
        digest_tree(&mut hash, tree, &ignored);
    }
    let digest = format!("{:x}", hash.finalize());
    let cache = root.join("target").join("plugins").join("lang");
    std::fs::create_dir_all(&cache).unwrap();
    let wasm = cache.join(format!("{name}.wasm"));
    let stamp = cache.join(format!("{name}.sources-sha256"));
    if wasm.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == digest) {
        return wasm;
    }
    let built = if is_python {
        python::compile_with(&dir, &componentize_py())
    } else {
        js::compile_with(&dir, &jco())
    }
    .unwrap_or_else(|e| panic!("building plugins/{name}: {e:#}"));
    std::fs::copy(&built, &wasm).unwrap();
    std::fs::write(&stamp, digest).unwrap();
    wasm
}

/// Feeds every file under `dir` (sorted, skipping `ignored` names, caches and
/// `node_modules`) into `hash`, path and contents.
fn digest_tree(hash: &mut Sha256, dir: &Path, ignored: &[PathBuf]) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if ignored.iter().any(|i| i.as_os_str() == name.as_str())
            || ["node_modules", "__pycache__", ".pytest_cache"].contains(&name.as_str())
        {
            continue;
        }
        if path.is_dir() {
            digest_tree(hash, &path, ignored);
        } else {
            hash.update(path.to_string_lossy().as_bytes());
            hash.update(std::fs::read(&path).unwrap());
        }
    }
}
