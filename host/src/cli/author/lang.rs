//! What the Python and JavaScript builds share: the world they are built
//! against, where a toolchain is found, and running it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The WIT of the world this `evhost` runs, built into the binary: a
/// component is always built against the world of the host that builds it,
/// so a project carries no copy of the WIT that could go stale.
const WORLD_WIT: &str = include_str!("../../../../wit/plugin.wit");

/// The directory (under the project) holding build output; `evhost dev` ignores it.
pub const BUILD_DIR: &str = "build";

/// Writes the world's WIT into `DIR/build/wit/` and returns that directory.
pub fn write_wit(dir: &Path) -> anyhow::Result<PathBuf> {
    let wit = dir.join(BUILD_DIR).join("wit");
    std::fs::create_dir_all(&wit).with_context(|| format!("cannot create {}", wit.display()))?;
    let file = wit.join("plugin.wit");
    std::fs::write(&file, WORLD_WIT).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(wit)
}

/// The first toolchain executable found: the path in environment variable
/// `env` when set, else the first existing `local` path, else `name` on `PATH`.
pub fn find_tool(env: &str, local: &[PathBuf], name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if let Some(path) = local.iter().find(|p| p.is_file()) {
        return Some(path.clone());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd`, keeping its output; on failure the error holds the end of it
/// (the toolchain's own explanation).
pub fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {what} ({:?})", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    bail!("{what} failed ({}):\n{tail}", out.status)
}

/// A new Python or JavaScript project: each template (file name, text) with `__NAME__`
/// and `placeholders` filled in, the `.gitignore`, and the SDK's files copied verbatim.
pub fn write_project(
    dir: &Path,
    name: &str,
    placeholders: &[(&str, &str)],
    templates: &[(String, &str)],
    gitignore: &str,
    sdk: &[(&str, &str)],
) -> anyhow::Result<()> {
    let fill = |text: &str| {
        placeholders
            .iter()
            .fold(text.replace("__NAME__", name), |t, (from, to)| {
                t.replace(from, to)
            })
    };
    let mut files: Vec<(String, String)> = templates
        .iter()
        .map(|(file, text)| (file.clone(), fill(text)))
        .collect();
    files.push((".gitignore".into(), gitignore.to_owned()));
    files.extend(
        sdk.iter()
            .map(|(rel, text)| ((*rel).to_owned(), (*text).to_owned())),
    );
    super::write_files(dir, &files)
}
