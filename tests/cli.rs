//! The CLI client commands against the real daemon, and the plugin author's
//! commands (`new`, `build`, `deploy`, `dev`, `check`, `call`).

mod daemon_support;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon_support::{Daemon, EVHOST, Options, plugin_dir};
use serde_json::Value;
use support::wait_for;

fn evhost(server: &str, args: &[&str]) -> Output {
    Command::new(EVHOST)
        .args(args)
        .args(["--server", server])
        .env_remove("EVHOST_TOKEN")
        .output()
        .expect("evhost runs")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_cli_says_clearly_when_the_daemon_is_not_running() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    for args in [
        &["plugins"][..],
        &["status"],
        &["publish", "-t", "a.b"],
        &["dlq", "list"],
    ] {
        let out = evhost(&server, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cannot reach the evhost daemon") && stderr.contains("is it running"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn publish_tail_plugins_status_schema_and_dlq_work_against_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(
        dir.path(),
        &[("welcome", "[grants]\nemit = [\"notification.*\"]\n")],
    );
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    let s = d.url.as_str();

    // publish: inline data, key, id.
    let out = ok(&evhost(
        s,
        &[
            "publish",
            "-t",
            "user.created",
            "-k",
            "u-1",
            "--id",
            "evt-1",
            "-d",
            r#"{"email":"ada@example.com","name":"Ada"}"#,
        ],
    ));
    assert_eq!(
        out.trim(),
        "published evt-1 to user-events partition 0 offset 0"
    );
    // The same id again: deduplicated, the original offset.
    let out = ok(&evhost(
        s,
        &["publish", "-t", "user.created", "--id", "evt-1", "-d", "{}"],
    ));
    assert!(
        out.contains("offset 0") && out.contains("duplicate"),
        "{out}"
    );
    // From a file, as JSON output.
    let file = dir.path().join("data.json");
    std::fs::write(&file, r#"{"email":"bo@example.com"}"#).unwrap();
    let out = ok(&evhost(
        s,
        &[
            "publish",
            "-t",
            "user.created",
            "--data-file",
            file.to_str().unwrap(),
            "--json",
        ],
    ));
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["events"][0]["offset"], 1);
    // From stdin, to an explicit topic, as text.
    let mut child = Command::new(EVHOST)
        .args([
            "publish",
            "-t",
            "note.added",
            "--topic",
            "notes",
            "--content-type",
            "text/plain",
            "-d",
            "-",
            "--server",
            s,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let out = ok(&child.wait_with_output().unwrap());
    assert!(out.contains("to notes partition 0 offset 0"), "{out}");
    // Bad data is refused before sending.
    let out = evhost(s, &["publish", "-t", "user.created", "-d", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));

    // tail: text and JSON.
    let out = ok(&evhost(s, &["tail", "user-events"]));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("user.created") && out.contains("u-1"), "{out}");
    let out = ok(&evhost(s, &["tail", "notes", "--json"]));
    let e: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(e["data"], "from stdin");
    // tail --follow from the start, stopping after two events.
    let out = ok(&evhost(
        s,
        &["tail", "user-events", "-f", "--from", "0", "--count", "2"],
    ));
    assert_eq!(out.lines().count(), 2, "{out}");

    // plugins and status.
    assert!(wait_for(Duration::from_secs(30), || {
        !d.read_all("notification-events", 0).is_empty()
    }));
    let out = ok(&evhost(s, &["plugins"]));
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains("welcome") && out.contains("running"), "{out}");
    let out = ok(&evhost(s, &["plugins", "--json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["plugins"][0]["name"], "welcome");
    let out = ok(&evhost(s, &["status"]));
    assert!(
        out.contains("user-events")
            && out.contains("notification-events")
            && out.contains("welcome"),
        "{out}"
    );

    // schema put and list.
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, r#"{"type":"object","required":["sku"]}"#).unwrap();
    let out = ok(&evhost(
        s,
        &[
            "schema",
            "put",
            "order.placed",
            "1",
            schema.to_str().unwrap(),
        ],
    ));
    assert!(
        out.contains("registered schema order.placed version 1"),
        "{out}"
    );
    let out = ok(&evhost(s, &["schema", "list"]));
    assert!(out.contains("order.placed") && out.contains('1'), "{out}");
    let out = evhost(s, &["publish", "-t", "order.placed", "-d", "{}"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("422"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // dlq: a user without an email is rejected by welcome.
    ok(&evhost(
        s,
        &[
            "publish",
            "-t",
            "user.created",
            "--id",
            "no-mail",
            "-d",
            r#"{"name":"x"}"#,
        ],
    ));
    let mut list = String::new();
    assert!(wait_for(Duration::from_secs(30), || {
        list = ok(&evhost(s, &["dlq", "list"]));
        list.contains("no-mail")
    }));
    assert!(
        list.contains("welcome") && list.contains("rejected"),
        "{list}"
    );
    let out = ok(&evhost(s, &["dlq", "list", "--json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    let id = v["dead_letters"][0]["id"].as_u64().unwrap().to_string();
    let out = ok(&evhost(s, &["dlq", "show", &id]));
    assert!(out.contains("rejected") && out.contains("no-mail"), "{out}");
    let out = ok(&evhost(s, &["dlq", "replay", &id]));
    assert!(out.contains("failed again"), "{out}");
    let out = ok(&evhost(s, &["dlq", "replay", "--plugin", "welcome"]));
    assert!(out.contains("0 handled, 1 failed again"), "{out}");
    let out = ok(&evhost(s, &["dlq", "purge", "--plugin", "welcome"]));
    assert!(out.contains("deleted 1 dead letter"), "{out}");
    let out = ok(&evhost(s, &["dlq", "list"]));
    assert!(out.contains("no dead letters"), "{out}");

    // The flow attributes a producer continuing a flow sets.
    ok(&evhost(
        s,
        &[
            "publish",
            "-t",
            "audit.noted",
            "-d",
            "{}",
            "--correlationid",
            "flow-7",
            "--causationid",
            "evt-1",
            "--actor",
            "ops",
            "--dataschema",
            "urn:audit:1",
        ],
    ));
    let noted = d.read_all("audit-events", 0);
    assert_eq!(noted.len(), 1);
    assert_eq!(noted[0]["correlationid"], "flow-7");
    assert_eq!(noted[0]["causationid"], "evt-1");
    assert_eq!(noted[0]["actor"], "ops");
    assert_eq!(noted[0]["dataschema"], "urn:audit:1");
}

#[test]
fn the_token_is_sent_from_flag_or_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            token: Some("cli-token".into()),
            ..Options::default()
        },
    );
    let out = evhost(&d.url, &["publish", "-t", "a.b", "-d", "1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    ok(&evhost(
        &d.url,
        &["publish", "-t", "a.b", "-d", "1", "--token", "cli-token"],
    ));
    let out = Command::new(EVHOST)
        .args(["publish", "-t", "a.b", "-d", "2", "--server", &d.url])
        .env("EVHOST_TOKEN", "cli-token")
        .output()
        .unwrap();
    ok(&out);
}

/// Runs `evhost ARGS` in `dir` with the environment of an author's shell:
/// cargo builds into a target directory shared by the test runs (so only
/// the first run compiles the dependencies) and stays off the network (the
/// crates are in the local cache since the workspace was built).
fn author_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(EVHOST);
    cmd.current_dir(dir).args(args);
    author_env(&mut cmd);
    cmd
}

fn author_env(cmd: &mut Command) {
    let root = support::workspace_root();
    cmd.env("CARGO_TARGET_DIR", root.join("target").join("author-test"))
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("EVHOST_PLUGINS")
        .env(
            "EVHOST_CACHE_DIR",
            root.join("target").join("author-test-cache"),
        );
}

fn failed_with(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `evhost dev`, its stdout collected; killed when dropped.
struct Dev {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    fn start(project: &Path, plugins: &Path) -> Dev {
        let mut cmd = author_cmd(project, &["dev", "--plugins"]);
        cmd.arg(plugins).stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Dev { child, lines }
    }

    /// Waits for the `n`-th line (1-based) containing `text`.
    fn wait_line(&self, text: &str, n: usize) -> String {
        let mut found = String::new();
        assert!(
            wait_for(Duration::from_secs(300), || {
                match self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|l| l.contains(text))
                    .nth(n - 1)
                {
                    Some(l) => {
                        found = l.clone();
                        true
                    }
                    None => false,
                }
            }),
            "no {text:?} (#{n}) from evhost dev:\n{}",
            self.lines.lock().unwrap().join("\n")
        );
        found
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events of every partition of `topic`.
fn topic_events(d: &Daemon, topic: &str) -> Vec<Value> {
    (0..16).flat_map(|p| d.read_all(topic, p)).collect()
}

fn plugin_digest(d: &Daemon, name: &str) -> Option<String> {
    let (_, body) = d.get("/v1/plugins");
    body["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name && p["state"] == "running")
        .and_then(|p| p["digest"].as_str().map(str::to_owned))
}

/// Publishes `invoice-ledger.created` with `n` and returns the data of the
/// `invoice-ledger.handled` event the plugin emitted for it.
fn handled(d: &Daemon, n: u64) -> Value {
    // As the README says: `evhost publish`, the topic derived from the type.
    let data = format!(r#"{{"n": {n}}}"#);
    ok(&evhost(
        &d.url,
        &[
            "publish",
            "--type",
            "invoice-ledger.created",
            "--data",
            &data,
        ],
    ));
    let mut data = Value::Null;
    assert!(
        wait_for(Duration::from_secs(60), || {
            data = topic_events(d, "invoice-ledger-events")
                .into_iter()
                .filter(|e| e["type"] == "invoice-ledger.handled" && e["data"]["data"]["n"] == n)
                .map(|e| e["data"].clone())
                .next()
                .unwrap_or(Value::Null);
            !data.is_null()
        }),
        "event {n} was not handled: {:?}",
        d.get("/v1/plugins").1
    );
    data
}

/// The README's author path, verbatim, outside the repository: `evhost new`
/// in a temp dir, `cargo test` there, `evhost build`, `evhost deploy` into a
/// running daemon's plugin directory — the event is handled and its emit
/// committed. Then `evhost dev`: an edited source is rebuilt and redeployed
/// and the new version handles the next event; a broken edit leaves it
/// running and says why. Slow the first time (compiles the SDK's
/// dependencies into `target/author-test`).
#[test]
fn a_new_project_outside_the_repo_is_tested_built_deployed_and_redeployed_by_dev() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().canonicalize().unwrap();
    assert!(!tmp_path.starts_with(support::workspace_root()));
    ok(&author_cmd(&tmp_path, &["new", "invoice-ledger"])
        .output()
        .unwrap());
    let project = tmp_path.join("invoice-ledger");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut test = Command::new(cargo);
    test.current_dir(&project).args(["test", "--quiet"]);
    author_env(&mut test);
    let out = test.output().unwrap();
    assert!(
        out.status.success(),
        "cargo test of the new project failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let out = ok(&author_cmd(&project, &["build"]).output().unwrap());
    assert!(out.contains("built invoice-ledger 0.1.0"), "{out}");
    assert!(project.join("dist/invoice-ledger.wasm").is_file());
    assert!(project.join("dist/invoice-ledger.toml").is_file());

    let plugins = tmp_path.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let daemon = Daemon::start(
        &tmp_path.join("data"),
        Options {
            plugins: Some(plugins.clone()),
            ..Options::default()
        },
    );
    let out = ok(&author_cmd(&project, &["deploy", "--plugins"])
        .arg(&plugins)
        .output()
        .unwrap());
    assert!(
        out.contains("deployed invoice-ledger 0.1.0") && out.contains("(component and sidecar)"),
        "{out}"
    );
    assert!(wait_for(Duration::from_secs(60), || plugin_digest(
        &daemon,
        "invoice-ledger"
    )
    .is_some()));
    let first = handled(&daemon, 1);
    assert_eq!(first["handled"], "invoice-ledger.created");
    let v1 = plugin_digest(&daemon, "invoice-ledger").unwrap();

    // `evhost dev`: the first round finds the deployment up to date.
    let dev = Dev::start(&project, &plugins);
    let line = dev.wait_line("deployed invoice-ledger", 1);
    assert!(line.contains("(unchanged)"), "{line}");
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let edited = source.replace(r#""data": data"#, r#""data": data, "version": 2"#);
    assert_ne!(edited, source, "the template changed: adapt the edit");
    std::fs::write(&lib, &edited).unwrap();
    // (An unrelated extra round would print "(unchanged)": wait for the new component.)
    let line = dev.wait_line("(component)", 1);
    assert!(line.starts_with("deployed invoice-ledger 0.1.0"), "{line}");
    assert!(wait_for(Duration::from_secs(60), || {
        plugin_digest(&daemon, "invoice-ledger").is_some_and(|d| d != v1)
    }));
    assert_eq!(handled(&daemon, 2)["version"], 2);

    // A broken edit: the build fails, the running version stays.
    let v2 = plugin_digest(&daemon, "invoice-ledger").unwrap();
    std::fs::write(&lib, edited.replace("fn handle(", "fn handle(,")).unwrap();
    let line = dev.wait_line("build failed; the deployed version keeps running", 1);
    assert!(line.contains("cargo build failed"), "{line}");
    assert_eq!(plugin_digest(&daemon, "invoice-ledger"), Some(v2));
    assert_eq!(handled(&daemon, 3)["version"], 2);
    drop(dev);
    daemon.stop();
}

#[test]
fn evhost_new_states_the_naming_rule_and_suggests_a_valid_name() {
    let tmp = tempfile::tempdir().unwrap();
    let err = failed_with(
        &author_cmd(tmp.path(), &["new", "Invoice_Ledger"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("plugin name \"Invoice_Ledger\" is invalid")
            && err.contains("starting with a letter")
            && err.contains("try \"invoice-ledger\""),
        "{err}"
    );
    assert!(!tmp.path().join("Invoice_Ledger").exists());
}

#[test]
fn evhost_build_says_what_is_missing_and_shows_a_failed_build_once() {
    let tmp = tempfile::tempdir().unwrap();
    let err = failed_with(&author_cmd(tmp.path(), &["build"]).output().unwrap());
    assert!(
        err.contains("is not a plugin project") && err.contains("evhost new"),
        "{err}"
    );

    // A crate that does not compile: rustc's error appears once, then the verdict.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(broken.join("src")).unwrap();
    std::fs::write(
        broken.join("Cargo.toml"),
        "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
         [lib]\ncrate-type = [\"cdylib\"]\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(broken.join("src/lib.rs"), "pub fn f( {}\n").unwrap();
    let mut cmd = author_cmd(&broken, &["build"]);
    cmd.env("CARGO_TARGET_DIR", tmp.path().join("target"));
    let err = failed_with(&cmd.output().unwrap());
    assert_eq!(
        err.matches("this file contains an unclosed delimiter")
            .count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("cargo build failed in") && err.contains("its output is above"),
        "{err}"
    );

    // Without the wasm32-wasip2 target, the one command that adds it.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let rustup = bin.join("rustup");
    std::fs::write(&rustup, "#!/bin/sh\necho x86_64-unknown-linux-gnu\n").unwrap();
    let mut perms = std::fs::metadata(&rustup).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&rustup, perms).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let err = failed_with(
        &author_cmd(&broken, &["build"])
            .env("PATH", path)
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("wasm32-wasip2 is not installed")
            && err.contains("rustup target add wasm32-wasip2"),
        "{err}"
    );
}

#[test]
fn a_missing_file_names_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let err = failed_with(
        &author_cmd(tmp.path(), &["check", "missing.wasm"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("cannot read missing.wasm"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn evhost_call_applies_the_sidecars_grants_and_subscriptions_and_uses_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = tmp.path().join("welcome.wasm");
    std::fs::copy(support::plugin("welcome"), &wasm).unwrap();
    let granted = tmp.path().join("welcome.toml");
    std::fs::write(&granted, "[grants]\nemit = [\"notification.*\"]\n").unwrap();
    let ungranted = tmp.path().join("none.toml");
    std::fs::write(&ungranted, "[grants]\nemit = [\"audit.*\"]\n").unwrap();
    let cache = tmp.path().join("cache");
    let call = |extra: &[&str]| -> Output {
        let mut cmd = Command::new(EVHOST);
        cmd.arg("call")
            .arg(&wasm)
            .args(["--type", "user.created", "--data", r#"{"email":"a@b.c"}"#])
            .args(extra)
            .env("EVHOST_CACHE_DIR", &cache);
        cmd.output().unwrap()
    };
    let out = call(&["--sidecar", granted.to_str().unwrap()]);
    let stdout = ok(&out);
    assert!(stdout.contains("emit  notification.requested"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("(compiled in"));

    // The second run takes the compiled component from the cache.
    let out = call(&["--sidecar", ungranted.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(from the compile cache in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "may not emit type `notification.requested`: its `emit` grant allows audit.*"
        ) && stdout.contains("none.toml"),
        "{stdout}"
    );

    // A sidecar's subscriptions replace the plugin's: this event is not delivered.
    let elsewhere = tmp.path().join("elsewhere.toml");
    std::fs::write(
        &elsewhere,
        "[[subscriptions]]\ntopic = \"account-events\"\ntype = \"account.*\"\n[grants]\nemit = [\"*\"]\n",
    )
    .unwrap();
    let out = call(&["--sidecar", elsewhere.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("not delivered")
            && stdout.contains("topic account-events type account.*"),
        "{stdout}"
    );
}

/// Cargo names the component `invoice_ledger.wasm`; dropped next to
/// `invoice-ledger.toml` it used to run silently without its grants.
#[test]
fn a_sidecarless_component_whose_sidecar_has_another_file_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(
        support::plugin("order-saga"),
        plugins.join("order_saga.wasm"),
    )
    .unwrap();
    std::fs::write(
        plugins.join("order-saga.toml"),
        "[grants]\nemit = [\"*\"]\nstate = true\n",
    )
    .unwrap();
    let daemon = Daemon::start(
        &tmp.path().join("data"),
        Options {
            plugins: Some(plugins.clone()),
            ..Options::default()
        },
    );
    let mut entry = Value::Null;
    assert!(wait_for(Duration::from_secs(60), || {
        let (_, body) = daemon.get("/v1/plugins");
        entry = body["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "order_saga")
            .cloned()
            .unwrap_or(Value::Null);
        !entry.is_null()
    }));
    assert_eq!(entry["state"], "failed", "{entry}");
    let error = entry["last_error"].as_str().unwrap();
    assert!(
        error.contains("describes plugin `order-saga` and has no sidecar of its own")
            && error.contains("rename the file to order-saga.wasm"),
        "{error}"
    );
    daemon.stop();
}

#[test]
fn topic_create_and_seek_work_against_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(
        dir.path(),
        &[("welcome", "[grants]\nemit = [\"notification.*\"]\n")],
    );
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    let out = ok(&evhost(
        &d.url,
        &[
            "topic",
            "create",
            "user-events",
            "--partitions",
            "1",
            "--retention-max-age",
            "1h",
        ],
    ));
    assert!(
        out.contains("topic user-events created with 1 partition(s)") && out.contains("1h"),
        "{out}"
    );
    let again = evhost(
        &d.url,
        &["topic", "create", "user-events", "--partitions", "2"],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    for i in 0..2 {
        ok(&evhost(
            &d.url,
            &[
                "publish",
                "-t",
                "user.created",
                "-d",
                &format!("{{\"name\":\"u{i}\",\"email\":\"u{i}@example.com\"}}"),
            ],
        ));
    }
    let processed = |d: &Daemon| d.get("/v1/plugins").1["plugins"][0]["processed"].as_u64();
    assert!(wait_for(Duration::from_secs(60), || processed(&d) == Some(2)));
    let out = ok(&evhost(
        &d.url,
        &["seek", "welcome", "user-events", "0", "0"],
    ));
    assert!(
        out.contains("welcome on user-events/0: offset 2 -> 0"),
        "{out}"
    );
    assert!(wait_for(Duration::from_secs(60), || processed(&d) == Some(4)));
    let beyond = evhost(&d.url, &["seek", "welcome", "user-events", "0", "9"]);
    assert_eq!(beyond.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&beyond.stderr);
    assert!(stderr.contains("beyond the end"), "{stderr}");
    // The plugins table shows consumer restarts and the dead letters there now.
    let table = ok(&evhost(&d.url, &["plugins"]));
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("DLQ") && header.contains("RESTARTS"),
        "{table}"
    );
}
