//! Plugins in Python: built with componentize-py over the SDK in
//! `plugin-sdk/python` (a copy of which `evhost new --lang python` writes
//! into the project, so the project builds and tests anywhere).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

use super::lang;

/// The componentize-py release the SDK and its figures are measured with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// Names the componentize-py executable to use, overriding the search.
pub const TOOL_ENV: &str = "EVHOST_COMPONENTIZE_PY";

macro_rules! sdk_file {
    ($rel:literal) => {
        (
            concat!("evhost_sdk/", $rel),
            include_str!(concat!("../../../../plugin-sdk/python/evhost_sdk/", $rel)),
        )
    };
}

/// The SDK, copied into every new project.
const SDK: [(&str, &str); 7] = [
    sdk_file!("__init__.py"),
    sdk_file!("_wasm.py"),
    sdk_file!("context.py"),
    sdk_file!("errors.py"),
    sdk_file!("event.py"),
    sdk_file!("plugin.py"),
    sdk_file!("testing.py"),
];

macro_rules! template {
    ($rel:literal) => {
        include_str!(concat!("../../../../plugin-sdk/python/template/", $rel))
    };
}

/// true when `dir` holds a Python project: `pyproject.toml` or `app.py`.
pub fn detect(dir: &Path) -> bool {
    dir.join("pyproject.toml").is_file() || dir.join("app.py").is_file()
}

/// Writes a new project for plugin `name` (already validated) into the
/// empty or new directory `dir`: the handler, its pytest test, the sidecar
/// granting exactly what the handler uses, a README and the SDK.
pub fn scaffold(dir: &Path, name: &str) -> anyhow::Result<()> {
    let templates = [
        ("app.py".to_owned(), template!("app.py")),
        ("test_app.py".to_owned(), template!("test_app.py")),
        (format!("{name}.toml"), template!("sidecar.toml")),
        ("pyproject.toml".to_owned(), template!("pyproject.toml")),
        ("README.md".to_owned(), template!("README.md")),
    ];
    lang::write_project(
        dir,
        name,
        &[("__COMPONENTIZE_PY__", COMPONENTIZE_PY_VERSION)],
        &templates,
        template!("gitignore"),
        &SDK,
    )
}

/// Builds `dir/app.py` into `dir/build/app.wasm` with the componentize-py
/// found in `$EVHOST_COMPONENTIZE_PY`, `dir/.venv/bin/` or on `PATH`.
pub fn compile(dir: &Path) -> anyhow::Result<PathBuf> {
    let local = [dir.join(".venv").join("bin").join("componentize-py")];
    let tool = lang::find_tool(TOOL_ENV, &local, "componentize-py").ok_or_else(|| {
        anyhow!(
            "componentize-py not found (looked at ${TOOL_ENV}, {} and PATH): \
             install it with `python3 -m venv .venv && .venv/bin/pip install componentize-py=={COMPONENTIZE_PY_VERSION}`",
            local[0].display()
        )
    })?;
    compile_with(dir, &tool)
}

/// [`compile`] with a given componentize-py executable.
pub fn compile_with(dir: &Path, tool: &Path) -> anyhow::Result<PathBuf> {
    if !dir.join("app.py").is_file() {
        bail!(
            "{} has no app.py: a Python plugin's handler module is app.py (see `evhost new --lang python`)",
            dir.display()
        );
    }
    let wit = lang::write_wit(dir)?;
    let out = dir.join(lang::BUILD_DIR).join("app.wasm");
    let mut cmd = Command::new(tool);
    cmd.current_dir(dir)
        .arg("--quiet")
        .arg("-d")
        .arg(&wit)
        .args(["-w", "plugin", "componentize", "app"]);
    for path in python_path(dir)? {
        cmd.arg("-p").arg(path);
    }
    cmd.arg("-o").arg(&out);
    lang::run(&mut cmd, "componentize-py")?;
    Ok(out)
}

/// The import paths of the build: pytest's `pythonpath` from
/// `pyproject.toml` (so the component imports what the tests import),
/// always with the project itself first.
fn python_path(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = vec![dir.to_owned()];
    let file = dir.join("pyproject.toml");
    if !file.is_file() {
        return Ok(paths);
    }
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let doc: toml::Table = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
    let entries = doc
        .get("tool")
        .and_then(|t| t.get("pytest"))
        .and_then(|t| t.get("ini_options"))
        .and_then(|t| t.get("pythonpath"));
    let Some(entries) = entries else {
        return Ok(paths);
    };
    let list = match entries {
        toml::Value::Array(items) => items.iter().map(|v| v.as_str()).collect::<Option<Vec<_>>>(),
        toml::Value::String(s) => Some(s.split_whitespace().collect()),
        _ => None,
    }
    .ok_or_else(|| {
        anyhow!(
            "{}: tool.pytest.ini_options.pythonpath must be a list of paths",
            file.display()
        )
    })?;
    for entry in list {
        let path = dir.join(entry);
        if entry != "." && !paths.contains(&path) {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// What `evhost dev` ignores: build output and Python's caches.
pub fn ignored(_dir: &Path) -> Vec<PathBuf> {
    [
        lang::BUILD_DIR,
        "__pycache__",
        "evhost_sdk/__pycache__",
        ".pytest_cache",
        ".venv",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffold_writes_the_project_and_the_sdk_and_new_refuses_a_full_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("invoice-ledger");
        scaffold(&dir, "invoice-ledger").unwrap();
        assert!(detect(&dir));
        let sidecar = std::fs::read_to_string(dir.join("invoice-ledger.toml")).unwrap();
        assert!(
            sidecar.contains(r#"emit = ["invoice-ledger.done"]"#),
            "{sidecar}"
        );
        let app = std::fs::read_to_string(dir.join("app.py")).unwrap();
        assert!(
            app.contains(r#""invoice-ledger","#) && !app.contains("__NAME__"),
            "{app}"
        );
        for (rel, _) in SDK {
            assert!(dir.join(rel).is_file(), "{rel}");
        }
        // `evhost new` refuses a directory that is not empty.
        let again =
            super::super::new_project("invoice-ledger", &dir, super::super::Lang::Python, None);
        assert!(again.unwrap_err().to_string().contains("not empty"));
    }

    #[test]
    fn the_build_path_is_pytests_pythonpath() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("pyproject.toml"),
            "[tool.pytest.ini_options]\npythonpath = [\".\", \"../sdk\"]\n",
        )
        .unwrap();
        let paths = python_path(tmp.path()).unwrap();
        assert_eq!(
            paths,
            vec![tmp.path().to_owned(), tmp.path().join("../sdk")]
        );
        assert!(!detect(&tmp.path().join("missing")));
    }
}
