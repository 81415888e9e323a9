//! The CLI client commands against the real daemon, and `evhost new`.

mod daemon_support;
mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
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

/// Slow (builds a fresh crate for wasm32-wasip2; its target dir is kept under
/// `target/scaffold-test` so later runs are incremental).
#[test]
fn evhost_new_makes_a_crate_that_builds_for_wasm32_wasip2_and_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("demo");
    let out = Command::new(EVHOST)
        .args(["new", "demo", "--path"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    let stdout = ok(&out);
    assert!(stdout.contains("created plugin crate demo"), "{stdout}");
    let cargo_toml = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(cargo_toml.contains("evhost-sdk"), "{cargo_toml}");

    let target = support::workspace_root()
        .join("target")
        .join("scaffold-test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&crate_dir)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the scaffolded crate does not build for wasm32-wasip2"
    );
    let wasm = target
        .join("wasm32-wasip2")
        .join("release")
        .join("demo.wasm");
    let out = Command::new(EVHOST)
        .arg("check")
        .arg(&wasm)
        .output()
        .unwrap();
    let stdout = ok(&out);
    assert!(stdout.contains("ok: demo 0.1.0 fits"), "{stdout}");
    assert!(stdout.contains("demo-events"), "{stdout}");
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
