//! Plugins in Python and JavaScript, end to end: the example plugins
//! (`plugins/greeter-py`, `plugins/greeter-js`) run in the real daemon, and
//! the projects `evhost new --lang python|js` writes pass their own tests and
//! build components that fit the world. The toolchains come from
//! `cargo xtask test` (componentize-py in `target/python-toolchain`, jco in
//! `target/js-toolchain`).

mod daemon_support;
#[path = "support/languages.rs"]
mod languages;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use daemon_support::{Daemon, EVHOST, Options, event};
use evhost::cli::author::{js, python};
use serde_json::{Value, json};

/// A Python component's first compile takes 10-30 s in a quiet daemon; allow
/// for a busy machine.
const DEADLINE: Duration = Duration::from_secs(240);

fn events_of(d: &Daemon, topic: &str) -> Vec<Value> {
    d.log_fingerprint()
        .into_iter()
        .filter(|(t, _, _)| t == topic)
        .flat_map(|(t, p, _)| d.read_all(&t, p as u32))
        .collect()
}

fn dead_letters(d: &Daemon, plugin: &str) -> Vec<Value> {
    d.get(&format!("/v1/dlq?plugin={plugin}")).1["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn python_and_js_plugins_emit_keep_state_and_park_bad_input_with_their_message() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let plugins = plugins.canonicalize().unwrap();
    for name in ["greeter-py", "greeter-js"] {
        std::fs::copy(
            languages::lang_plugin(name),
            plugins.join(format!("{name}.wasm")),
        )
        .unwrap();
        let sidecar = support::workspace_root().join(format!("plugins/{name}/{name}.toml"));
        std::fs::copy(&sidecar, plugins.join(format!("{name}.toml"))).unwrap();
    }
    let d = Daemon::start(
        &tmp.path().join("data"),
        Options {
            plugins: Some(plugins.clone()),
            ..Options::default()
        },
    );
    let running = |d: &Daemon| {
        d.get("/v1/plugins").1["plugins"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|p| p["state"] == "running")
            .count()
    };
    assert!(
        support::wait_for(DEADLINE, || running(&d) == 2),
        "both plugins run: {}\n{}",
        d.get("/v1/plugins").1,
        d.stderr().join("\n")
    );

    let (status, body) = d.publish(&json!({
        "specversion": "1.0", "type": "user.created", "source": "test",
        "subject": "u-1", "data": {"name": "Ada"},
    }));
    assert_eq!(status, 201, "{body}");
    let mut greetings = Vec::new();
    assert!(
        support::wait_for(DEADLINE, || {
            greetings = events_of(&d, "greeting-events");
            greetings.len() == 2
        }),
        "a greeting from each plugin: {greetings:?}\n{}",
        d.stderr().join("\n")
    );
    let mut texts: Vec<(String, Value)> = greetings
        .iter()
        .map(|e| (e["source"].as_str().unwrap().to_owned(), e["data"].clone()))
        .collect();
    texts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        texts,
        vec![
            (
                "evhost://plugin/greeter-js".to_owned(),
                json!({"text": "Hello, Ada!", "count": 1, "lang": "javascript"})
            ),
            (
                "evhost://plugin/greeter-py".to_owned(),
                json!({"text": "Hello, Ada!", "count": 1, "lang": "python"})
            ),
        ]
    );
    for e in &greetings {
        assert_eq!(e["subject"], "u-1");
        assert_eq!(e["causationid"], body["events"][0]["id"]);
    }
    // The state writes committed with the emits: the count and the SDK's
    // idempotency records, in the Rust SDK's layout.
    for name in ["greeter-py", "greeter-js"] {
        let state = d.get(&format!("/v1/plugins/{name}/state")).1;
        let keys: Vec<&str> = state["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap())
            .collect();
        assert!(keys.contains(&"greeted"), "{name}: {state}");
        assert!(keys.contains(&"__evhost/handled/seq"), "{name}: {state}");
    }

    // Bad input: each plugin rejects it, and the dead letter carries the
    // guest's own message.
    let (status, body) = d.publish(&event("user.created", json!({"email": "x@y.z"})));
    assert_eq!(status, 201, "{body}");
    let id = body["events"][0]["id"].as_str().unwrap().to_owned();
    for name in ["greeter-py", "greeter-js"] {
        let mut letters = Vec::new();
        assert!(
            support::wait_for(DEADLINE, || {
                letters = dead_letters(&d, name);
                !letters.is_empty()
            }),
            "{name} parks the event"
        );
        let letter = &letters[0];
        assert_eq!(letter["error_kind"], "rejected", "{letter}");
        assert_eq!(
            letter["message"],
            format!("rejected: user.created {id} has no name: {{\"email\":\"x@y.z\"}}"),
            "{letter}"
        );
    }
    assert_eq!(events_of(&d, "greeting-events").len(), 2);

    // The operator takes the state grant away: the daemon refuses the call
    // with the message the SDKs' test hosts give for the same sidecar
    // (plugin-sdk/{python,js} tests), and parks the event.
    let loads = |d: &Daemon| -> Vec<u64> {
        d.get("/v1/plugins").1["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["load_number"].as_u64())
            .collect()
    };
    let before = loads(&d).into_iter().max().unwrap();
    for name in ["greeter-py", "greeter-js"] {
        drop_state_grant(&plugins.join(format!("{name}.toml")));
    }
    assert!(
        support::wait_for(DEADLINE, || loads(&d)
            .iter()
            .filter(|&&n| n > before)
            .count()
            == 2),
        "both reloaded: {}",
        d.get("/v1/plugins").1
    );
    let (status, body) = d.publish(&event("user.created", json!({"name": "Grace"})));
    assert_eq!(status, 201, "{body}");
    for name in ["greeter-py", "greeter-js"] {
        let mut letters = Vec::new();
        assert!(
            support::wait_for(DEADLINE, || {
                letters = dead_letters(&d, name);
                letters.len() == 2
            }),
            "{name} parks the event: {letters:?}"
        );
        let sidecar = plugins.join(format!("{name}.toml"));
        assert!(
            letters.iter().any(|l| l["message"]
                == format!(
                    "rejected: plugin `{name}` has no `state` grant; add \"state = true\" under [grants] in {}",
                    sidecar.display()
                )),
            "{letters:?}"
        );
    }
    assert_eq!(events_of(&d, "greeting-events").len(), 2);
    d.stop();
}

/// Runs `cmd` in `dir`; returns (success, stdout + stderr).
fn run_in(dir: &Path, cmd: &mut Command) -> (bool, String) {
    let out = cmd.current_dir(dir).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `evhost check --json` of `wasm`: what it describes.
fn check(wasm: &Path) -> Value {
    let out = Command::new(EVHOST)
        .args(["check", "--json"])
        .arg(wasm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "evhost check {}: {}",
        wasm.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Takes `state = true` out of the project's sidecar.
fn drop_state_grant(sidecar: &Path) {
    let text = std::fs::read_to_string(sidecar).unwrap();
    assert!(text.contains("state = true"), "{text}");
    std::fs::write(sidecar, text.replace("state = true", "state = false")).unwrap();
}

#[test]
fn a_new_python_project_passes_its_test_builds_and_its_test_host_enforces_the_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("invoice-ledger");
    python::scaffold(&dir, "invoice-ledger").unwrap();
    assert!(dir.join("README.md").is_file());

    let pytest = || {
        let mut cmd = Command::new(languages::python());
        cmd.args(["-m", "pytest", "-vv", "-p", "no:cacheprovider"]);
        cmd
    };
    let (ok, out) = run_in(&dir, &mut pytest());
    assert!(ok, "the scaffold's own test passes:\n{out}");
    assert!(out.contains("2 passed"), "{out}");

    let wasm = python::compile_with(&dir, &languages::componentize_py()).unwrap();
    let info = check(&wasm);
    assert_eq!(info["name"], "invoice-ledger", "{info}");
    assert_eq!(
        info["subscriptions"],
        json!([{"topic": "invoice-ledger-events", "event_type": "invoice-ledger.requested"}])
    );
    assert_eq!(info["retry"]["max_attempts"], 3, "{info}");

    // Without the grant its handler needs, the test host fails the call the
    // way the daemon does: a reject naming the grant and the sidecar.
    let sidecar = dir.join("invoice-ledger.toml");
    drop_state_grant(&sidecar);
    let (ok, out) = run_in(&dir, &mut pytest());
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "plugin `invoice-ledger` has no `state` grant; add \"state = true\" under [grants] in {}",
            sidecar.display()
        )),
        "{out}"
    );
}

#[test]
fn a_new_js_project_passes_its_test_builds_and_its_test_host_enforces_the_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("invoice-ledger");
    js::scaffold(&dir, "invoice-ledger").unwrap();
    assert!(dir.join("README.md").is_file());
    // What `npm install` would put there (the tests run offline).
    std::os::unix::fs::symlink(languages::js_node_modules(), dir.join("node_modules")).unwrap();

    let node_test = || {
        let mut cmd = Command::new("node");
        cmd.arg("--test");
        cmd
    };
    let (ok, out) = run_in(&dir, &mut node_test());
    assert!(ok, "the scaffold's own test passes:\n{out}");
    assert!(out.contains("# pass 2"), "{out}");

    let wasm = js::compile_with(&dir, &languages::jco()).unwrap();
    let info = check(&wasm);
    assert_eq!(info["name"], "invoice-ledger", "{info}");
    assert_eq!(
        info["subscriptions"],
        json!([{"topic": "invoice-ledger-events", "event_type": "invoice-ledger.requested"}])
    );
    assert_eq!(info["retry"]["max_attempts"], 3, "{info}");

    let sidecar = dir.join("invoice-ledger.toml");
    drop_state_grant(&sidecar);
    let (ok, out) = run_in(&dir, &mut node_test());
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "plugin `invoice-ledger` has no `state` grant; add \\\"state = true\\\" under [grants] in {}",
            sidecar.display()
        )) || out.contains(&format!(
            "plugin `invoice-ledger` has no `state` grant; add \"state = true\" under [grants] in {}",
            sidecar.display()
        )),
        "{out}"
    );
}

/// A JavaScript component built with componentize-js's defaults imports
/// `wasi:http` (StarlingMonkey's fetch); the host links it for every plugin, so
/// such a component loads and runs (its requests would be refused without an
/// `http` grant).
#[test]
fn a_default_built_javascript_component_with_wasi_http_imports_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let source = support::workspace_root().join("tests/fixtures/js-default/app.js");
    let wasm = plugins.join("js-default.wasm");
    let (ok, out) = run_in(
        dir.path(),
        Command::new(languages::jco())
            .arg("componentize")
            .arg(&source)
            .arg("--wit")
            .arg(support::workspace_root().join("wit"))
            .arg("--world-name=plugin")
            .arg("-o")
            .arg(&wasm),
    );
    assert!(ok, "jco componentize with its defaults: {out}");
    let described = check(&wasm);
    let imports = described.to_string();
    assert!(
        imports.contains("wasi:http/outgoing-handler"),
        "a default build imports wasi:http: {described}"
    );

    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    let (status, body) = d.post(
        "/v1/topics/js-events/events",
        "application/cloudevents+json",
        &event("js.ping", json!({})).to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["events"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        support::wait_for(DEADLINE, || d
            .stdout()
            .iter()
            .chain(d.stderr().iter())
            .any(|l| l.contains(&format!("js-default handled {id}")))),
        "the default-built component handled the event\nstdout: {:?}\nstderr: {:?}",
        d.stdout(),
        d.stderr()
    );
    let plugins = d.get("/v1/plugins").1;
    let entry = &plugins["plugins"][0];
    assert_eq!(entry["name"], "js-default", "{plugins}");
    assert_eq!(entry["state"], "running", "{plugins}");
}
