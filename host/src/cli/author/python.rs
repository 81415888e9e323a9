//! Python plugins: a placeholder until the Python toolchain step is merged
//! (issue 14 is built in two halves; the other half replaces this file).

use std::path::{Path, PathBuf};

use anyhow::bail;

/// A Python project: pyproject.toml or app.py.
pub fn detect(dir: &Path) -> bool {
    dir.join("pyproject.toml").is_file() || dir.join("app.py").is_file()
}

pub fn scaffold(_dir: &Path, _name: &str) -> anyhow::Result<()> {
    bail!("Python plugins are not built yet")
}

pub fn compile(_dir: &Path) -> anyhow::Result<PathBuf> {
    bail!("Python plugins are not built yet")
}

pub fn ignored(_dir: &Path) -> Vec<PathBuf> {
    Vec::new()
}
