//! JavaScript plugins: a placeholder until the JavaScript toolchain step is merged
//! (issue 14 is built in two halves; the other half replaces this file).

use std::path::{Path, PathBuf};

use anyhow::bail;

/// A JavaScript project: package.json.
pub fn detect(dir: &Path) -> bool {
    dir.join("package.json").is_file()
}

pub fn scaffold(_dir: &Path, _name: &str) -> anyhow::Result<()> {
    bail!("JavaScript plugins are not built yet")
}

pub fn compile(_dir: &Path) -> anyhow::Result<PathBuf> {
    bail!("JavaScript plugins are not built yet")
}

pub fn ignored(_dir: &Path) -> Vec<PathBuf> {
    Vec::new()
}
