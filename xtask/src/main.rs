//! Project tasks, run as `cargo xtask <task>`; needs nothing but the Rust toolchain.
//!
//! - `plugins`: build every crate in `plugins/` as a `wasm32-wasip2` component
//!   into `target/plugins/wasm32-wasip2/plugin/`.
//! - `demo`: build the plugins and the host, then show the example plugins at work.
//! - `test`: everything the tests need, then every test of the workspace.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "plugins" => build_plugins().map(drop),
        "demo" => demo(),
        "test" => test(),
        _ => Err("usage: cargo xtask <plugins|demo|test>".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

/// Installs the Wasm target through rustup when it is missing.
fn ensure_wasm_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == WASM_TARGET)
        });
    match installed {
        Ok(true) => Ok(()),
        Ok(false) => run(Command::new("rustup").args(["target", "add", WASM_TARGET])),
        // No rustup: the toolchain was installed some other way; let cargo report it.
        Err(_) => Ok(()),
    }
}

fn plugin_names() -> Result<Vec<String>, String> {
    let dir = root().join("plugins");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Builds the plugins the way the tests do (same target dir, so they share it).
fn build_plugins() -> Result<PathBuf, String> {
    ensure_wasm_target()?;
    let target_dir = root().join("target").join("plugins");
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--target",
        WASM_TARGET,
        "--profile",
        "plugin",
        "--target-dir",
    ])
    .arg(&target_dir);
    for name in plugin_names()? {
        cmd.args(["-p", &name]);
    }
    run(&mut cmd)?;
    Ok(target_dir.join(WASM_TARGET).join("plugin"))
}

fn demo() -> Result<(), String> {
    let dir = build_plugins()?;
    run(cargo().args(["build", "-p", "evhost"]))?;
    let evhost = root().join("target").join("debug").join("evhost");
    for name in plugin_names()? {
        let wasm = dir.join(format!("{}.wasm", name.replace('-', "_")));
        println!("\n$ evhost check {}", wasm.display());
        run(Command::new(&evhost).arg("check").arg(&wasm))?;
    }
    let welcome = dir.join("welcome.wasm");
    let data = r#"{"user_id":"u-1","email":"ada@example.com","name":"Ada"}"#;
    println!("\n$ evhost call welcome.wasm --type user.created --data '{data}' --grant-all");
    run(Command::new(&evhost).arg("call").arg(&welcome).args([
        "--type",
        "user.created",
        "--subject",
        "u-1",
        "--data",
        data,
        "--grant-all",
    ]))?;
    println!(
        "\n$ evhost call faulty.wasm --type faulty.loop   (a runaway handler, stopped by its timeout)"
    );
    let faulty = dir.join("faulty.wasm");
    let status = Command::new(&evhost)
        .arg("call")
        .arg(&faulty)
        .args(["--type", "faulty.loop"])
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        return Err("the runaway handler was not stopped".into());
    }
    Ok(())
}

fn test() -> Result<(), String> {
    ensure_wasm_target()?;
    run(cargo().args(["test", "--workspace"]))
}
