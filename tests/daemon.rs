//! `evhost run` as an operator sees it: what it prints and loads, plugin and
//! dead-letter rows of the API with real plugins, one daemon per data dir,
//! config and environment, and a clean shutdown under load.

mod daemon_support;
mod support;

#[path = "support/nats_server.rs"]
mod nats_server;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon_support::{Daemon, EVHOST, Options, event, plugin_dir};
use serde_json::{Value, json};
use support::wait_for;

const WELCOME_SIDECAR: &str = "[grants]\nemit = [\"notification.*\"]\n";

#[test]
fn run_prints_where_it_listens_and_what_it_loaded_and_lists_failed_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(
        dir.path(),
        &[
            ("welcome", WELCOME_SIDECAR),
            ("counter", "[grants]\nstat = true\n"),
        ],
    );
    std::fs::write(plugins.join("broken.wasm"), b"definitely not wasm").unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    let out = d.stdout().join("\n");
    assert!(out.contains("listening on http://127.0.0.1:"), "{out}");
    assert!(out.contains("loaded plugin welcome 0.1.0"), "{out}");
    assert!(
        out.contains("FAILED to load") && out.contains("broken.wasm"),
        "{out}"
    );
    assert!(
        out.contains("counter.toml") && out.contains("stat"),
        "the sidecar error names the file and key: {out}"
    );

    let (status, body) = d.get("/v1/plugins");
    assert_eq!(status, 200);
    let list = body["plugins"].as_array().unwrap();
    let by_name = |n: &str| {
        list.iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("{n} in {body}"))
    };
    let welcome = by_name("welcome");
    assert_eq!(welcome["state"], "running");
    assert_eq!(welcome["version"], "0.1.0");
    assert_eq!(welcome["digest"].as_str().unwrap().len(), 64);
    assert_eq!(welcome["subscriptions"][0]["topic"], "user-events");
    for key in ["lag", "processed", "failed", "dead_lettered", "last_error"] {
        assert!(welcome.get(key).is_some(), "{key} missing from {welcome}");
    }
    let broken = by_name("broken");
    assert_eq!(broken["state"], "failed");
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly file")
    );
    let counter = by_name("counter");
    assert_eq!(counter["state"], "failed");
    assert!(counter["last_error"].as_str().unwrap().contains("stat"));
}

#[test]
fn the_welcome_plugin_reacts_to_a_published_event() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &[("welcome", WELCOME_SIDECAR)]);
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    let mut e = event(
        "user.created",
        json!({"email": "ada@example.com", "name": "Ada"}),
    );
    e["subject"] = "u-1".into();
    let (status, body) = d.publish(&e);
    assert_eq!(status, 201);
    let id = body["events"][0]["id"].as_str().unwrap().to_owned();
    let mut emitted = Vec::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            emitted = d.read_all("notification-events", 0);
            !emitted.is_empty()
        }),
        "welcome emitted nothing; plugins: {}",
        d.get("/v1/plugins").1
    );
    let n = &emitted[0];
    assert_eq!(n["type"], "notification.requested");
    assert_eq!(n["causationid"], id.as_str());
    assert_eq!(n["correlationid"], id.as_str());
    assert_eq!(n["data"]["to"], "ada@example.com");

    // The call was timed into the plugin's latency histogram.
    let (_, _, metrics) =
        daemon_support::request_full("GET", &format!("{}/metrics", d.url), &[], None);
    let count = metrics
        .lines()
        .find(|l| {
            l.starts_with("evhost_plugin_call_seconds_count{") && l.contains("plugin=\"welcome\"")
        })
        .unwrap_or_else(|| panic!("no call latency for welcome in:\n{metrics}"));
    assert!(count.ends_with(" 1"), "{count}");
    // The log's own group-commit histograms: at least the publish and the
    // welcome commit were transactions, each with its duration and events.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    assert!(value("evhost_log_transaction_seconds_count ") >= 2.0);
    assert!(value("evhost_log_transaction_events_sum ") >= 2.0);
}

#[test]
fn dead_letters_are_listed_shown_replayed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &[("welcome", WELCOME_SIDECAR)]);
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    // welcome rejects a user without an email: straight to the dead-letter store.
    let (_, body) = d.publish(&event("user.created", json!({"name": "no email"})));
    let id = body["events"][0]["id"].as_str().unwrap().to_owned();
    let mut list = Value::Null;
    assert!(wait_for(Duration::from_secs(30), || {
        list = d.get("/v1/dlq?plugin=welcome").1;
        list["dead_letters"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    }));
    let dl = list["dead_letters"][0].clone();
    assert_eq!(dl["plugin"], "welcome");
    // The plugin's version and the load number of the deployment that parked it.
    assert!(
        dl["plugin_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("0.1.0 (load ")),
        "{dl}"
    );
    assert_eq!(dl["error_kind"], "rejected");
    assert!(dl["message"].as_str().unwrap().contains("email"));
    assert!(dl["attempts"].as_u64().unwrap() >= 1);
    assert!(dl["first_failure"].as_str().is_some() && dl["last_failure"].as_str().is_some());
    assert_eq!(dl["event"]["id"], id.as_str());
    assert_eq!(dl["event"]["topic"], "user-events");
    let dl_id = dl["id"].as_u64().unwrap();

    assert_eq!(d.get(&format!("/v1/dlq/{dl_id}")).1, dl);
    assert_eq!(
        d.get("/v1/dlq?plugin=someone-else").1["dead_letters"],
        json!([])
    );

    // Replay goes to the current version, which rejects it again: parked anew.
    let (status, outcome) = d.request("POST", &format!("/v1/dlq/{dl_id}/replay"), &[], None);
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["outcome"], "failed");
    let new_id = outcome["new_id"].as_u64().unwrap();
    assert_ne!(new_id, dl_id);
    assert_eq!(
        d.get(&format!("/v1/dlq/{new_id}")).1["event"]["id"],
        id.as_str()
    );

    let (status, many) = d.request("POST", "/v1/dlq/replay?plugin=welcome", &[], None);
    assert_eq!(status, 200, "{many}");
    assert_eq!(
        (many["succeeded"].clone(), many["failed"].clone()),
        (json!(0), json!(1))
    );
    let (status, plugin_missing) = d.request("POST", "/v1/dlq/replay?plugin=ghost", &[], None);
    assert!(status == 200 || status == 409, "{status} {plugin_missing}");

    let current = d.get("/v1/dlq").1["dead_letters"][0]["id"]
        .as_u64()
        .unwrap();
    let (status, _) = d.request("DELETE", &format!("/v1/dlq/{current}"), &[], None);
    assert_eq!(status, 204);
    assert_eq!(d.get(&format!("/v1/dlq/{current}")).0, 404);
    assert_eq!(
        d.request("DELETE", &format!("/v1/dlq/{current}"), &[], None)
            .0,
        404
    );
    assert_eq!(d.get("/v1/dlq").1["dead_letters"], json!([]));
}

#[test]
fn a_second_daemon_on_the_same_data_dir_refuses_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Daemon::start(&data, Options::default());
    let out = Command::new(EVHOST)
        .args(["run", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--plugins")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another evhost daemon"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    assert_eq!(first.get("/healthz").0, 200, "the first one is unharmed");
    first.stop();
    // Once it stopped, the directory is free again.
    Daemon::start(&data, Options::default()).stop();
}

#[test]
fn an_unknown_config_key_is_refused_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("evhost.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n[api]\ntokne = \"x\"\n").unwrap();
    let out = Command::new(EVHOST)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokne") && stderr.contains("evhost.toml"),
        "{stderr}"
    );
}

#[test]
fn environment_overrides_apply_and_json_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            env: vec![
                ("EVHOST_TOKEN".into(), "from-env".into()),
                ("EVHOST_LOG_FORMAT".into(), "json".into()),
            ],
            ..Options::default()
        },
    );
    let body = event("env.test", json!(1)).to_string();
    let ce = ("content-type", "application/cloudevents+json");
    assert_eq!(
        d.request("POST", "/v1/events", &[ce], Some(body.as_bytes()))
            .0,
        401
    );
    assert_eq!(
        d.request(
            "POST",
            "/v1/events",
            &[ce, ("authorization", "Bearer from-env")],
            Some(body.as_bytes())
        )
        .0,
        201
    );
    let stderr = d.stderr();
    assert!(!stderr.is_empty());
    for line in &stderr {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}

/// Publishes one event without panicking on a daemon that is going away.
fn try_publish(agent: &ureq::Agent, url: &str, id: &str) -> bool {
    let body = json!({"specversion": "1.0", "type": "load.tick", "source": "load", "id": id, "data": {"id": id}});
    match agent
        .post(format!("{url}/v1/topics/load/events"))
        .content_type("application/cloudevents+json")
        .send(body.to_string())
    {
        Ok(resp) => resp.status().as_u16() == 201,
        Err(_) => false,
    }
}

#[test]
fn sigterm_during_load_exits_0_and_every_acknowledged_event_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugin_dir(dir.path(), &[("counter", "[grants]\nstate = true\n")]);
    let mut d = Daemon::start(
        &data,
        Options {
            plugins: Some(plugins.clone()),
            ..Options::default()
        },
    );
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (acked, stop, url) = (acked.clone(), stop.clone(), d.url.clone());
        writers.push(std::thread::spawn(move || {
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build(),
            );
            let mut failures = 0;
            for n in 0..100_000 {
                if stop.load(Ordering::Relaxed) || failures > 20 {
                    break;
                }
                let id = format!("w{w}-{n}");
                if try_publish(&agent, &url, &id) {
                    acked.lock().unwrap().push(id);
                } else {
                    failures += 1;
                }
            }
        }));
    }
    assert!(wait_for(Duration::from_secs(60), || acked
        .lock()
        .unwrap()
        .len()
        >= 200));
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        status.is_some_and(|s| s.code() == Some(0)),
        "exit status {status:?}\nstderr:\n{}",
        d.stderr().join("\n")
    );
    let out = d.stdout().join("\n");
    assert!(
        out.contains("shutting down") && out.contains("evhost stopped"),
        "{out}"
    );
    drop(d);

    let acked = acked.lock().unwrap().clone();
    let d = Daemon::start(
        &data,
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    let stored: HashSet<String> = d
        .read_all("load", 0)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events are missing after restart, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    d.stop();
}

#[test]
fn an_emitted_event_violating_its_schema_parks_the_call_and_emits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &[("welcome", WELCOME_SIDECAR)]);
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    // welcome's notification has no `priority`: the schema makes it invalid.
    let schema = json!({
        "type": "object",
        "required": ["to", "priority"],
    });
    let (status, body) = d.request(
        "PUT",
        "/v1/schemas/notification.requested/1",
        &[("content-type", "application/json")],
        Some(schema.to_string().as_bytes()),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
    let (status, _) = d.publish(&event(
        "user.created",
        json!({"email": "ada@example.com", "name": "Ada"}),
    ));
    assert_eq!(status, 201);

    let mut list = Value::Null;
    assert!(wait_for(Duration::from_secs(30), || {
        list = d.get("/v1/dlq?plugin=welcome").1;
        list["dead_letters"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    }));
    let dl = &list["dead_letters"][0];
    assert_eq!(dl["error_kind"], "rejected");
    let message = dl["message"].as_str().unwrap();
    assert!(
        message.contains("emitted event refused") && message.contains("priority"),
        "{message}"
    );
    assert!(
        d.read_all("notification-events", 0).is_empty(),
        "the invalid emit was committed"
    );
}

#[test]
fn a_plugins_committed_state_can_be_read_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &[("counter", "[grants]\nstate = true\n")]);
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    for ty in ["order.created", "order.created", "order.paid"] {
        assert_eq!(d.publish(&event(ty, json!({}))).0, 201);
    }
    let mut body = Value::Null;
    assert!(
        wait_for(Duration::from_secs(30), || {
            body = d.get("/v1/plugins/counter/state?prefix=count/").1;
            body["entries"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|x| x["key"] == "count/total" && x["value"] == 3)
            })
        }),
        "{body}"
    );
    let entries = body["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e["key"].as_str().unwrap().starts_with("count/"))
    );
    assert!(
        entries
            .iter()
            .any(|e| e["key"] == "count/type/order.paid" && e["value"] == 1),
        "{body}"
    );
    assert_eq!(body["truncated"], false);

    let (status, page) = d.get("/v1/plugins/counter/state?prefix=count/&limit=1");
    assert_eq!(status, 200);
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["truncated"], true);
    assert_eq!(d.get("/v1/plugins/Not%20A%20Name/state").0, 400);
    assert_eq!(d.get("/v1/plugins/counter/state?bogus=1").0, 400);

    // The same through the CLI.
    let out = Command::new(EVHOST)
        .args([
            "state", "counter", "--prefix", "count/to", "--server", &d.url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("count/total  3"), "{text}");
    assert!(!text.contains("order.paid"), "prefix not applied: {text}");
}

/// Dead letters of `plugin`, once there are at least `n`.
fn wait_for_dead_letters(d: &Daemon, plugin: &str, n: usize) -> Vec<Value> {
    let mut list = Vec::new();
    assert!(
        wait_for(Duration::from_secs(60), || {
            list = d.get(&format!("/v1/dlq?plugin={plugin}")).1["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            list.len() >= n
        }),
        "no dead letter for {plugin}; plugins: {}",
        d.get("/v1/plugins").1
    );
    list
}

#[test]
fn a_refused_grant_is_parked_at_the_first_attempt_naming_the_sidecar_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // No sidecars at all: neither may use what it needs. `counter` turns the
    // refused state access into a retry, `welcome` the refused emit into a reject.
    let plugins = plugin_dir(dir.path(), &[("counter", ""), ("welcome", "")]);
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins.clone()),
            ..Options::default()
        },
    );
    let mut e = event("user.created", json!({"email": "ada@example.com"}));
    e["subject"] = "u-1".into();
    assert_eq!(d.publish(&e).0, 201);

    let counter = &wait_for_dead_letters(&d, "counter", 1)[0];
    assert_eq!(counter["error_kind"], "rejected", "{counter}");
    assert_eq!(
        counter["attempts"], 1,
        "a refused grant is not retried: {counter}"
    );
    let message = counter["message"].as_str().unwrap();
    let sidecar = plugins.join("counter.toml");
    assert!(
        message.contains("no `state` grant")
            && message.contains(&format!(
                "add \"state = true\" under [grants] in {}",
                sidecar.display()
            )),
        "{message}"
    );

    let welcome = &wait_for_dead_letters(&d, "welcome", 1)[0];
    assert_eq!(welcome["error_kind"], "rejected", "{welcome}");
    assert_eq!(welcome["attempts"], 1, "{welcome}");
    let message = welcome["message"].as_str().unwrap();
    let sidecar = plugins.join("welcome.toml");
    assert!(
        message.contains(&format!(
            "add \"notification.requested\" (or a pattern matching it) to emit under [grants] in {}",
            sidecar.display()
        )),
        "{message}"
    );
    // Nothing of either call was committed.
    assert!(d.read_all("notification-events", 0).is_empty());
    assert_eq!(d.get("/v1/plugins/counter/state").1["entries"], json!([]));
}

#[test]
fn a_plugin_flooding_its_log_is_capped_and_its_dead_letter_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = "timeout = \"2s\"\n[retry]\nmax-attempts = 1\n";
    let plugins = plugin_dir(dir.path(), &[("faulty", sidecar)]);
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    let before = d.output_bytes();
    assert_eq!(d.publish(&event("faulty.log-flood", json!({}))).0, 201);
    let dl = &wait_for_dead_letters(&d, "faulty", 1)[0];
    assert_eq!(dl["error_kind"], "timeout", "{dl}");
    let message = dl["message"].as_str().unwrap();
    assert!(
        message.contains("timed out after 2s")
            && message.contains("plugin output capped")
            && message.contains("lines")
            && message.contains("dropped"),
        "{message}"
    );
    // The warning about the cap is the last line of the call: once it is
    // written, the call's output is complete.
    assert!(wait_for(Duration::from_secs(10), || d
        .stderr()
        .iter()
        .any(|l| l.contains("plugin output capped"))));
    let written = d.output_bytes() - before;
    assert!(
        written < 10 << 20,
        "the daemon wrote {written} bytes of output for one call"
    );
    let forwarded = d
        .stderr()
        .iter()
        .filter(|l| l.contains("faulty: flooding the log"))
        .count();
    assert_eq!(forwarded, evhost::runtime::MAX_OUTPUT_LINES);
}

#[test]
fn a_plugin_whose_describe_panics_is_listed_as_failed_with_the_panic_message() {
    const PANIC: &str = "bad-describe: no plugin info today (deliberate panic in describe)";
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &[("bad-describe", "")]);
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    let out = d.stdout().join("\n");
    assert!(
        out.contains("FAILED to load") && out.contains(PANIC),
        "{out}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || d
            .stderr()
            .iter()
            .any(|l| l.contains("plugin not loaded") && l.contains(PANIC))),
        "the load error's log line carries it: {}",
        d.stderr().join("\n")
    );
    let (status, body) = d.get("/v1/plugins");
    assert_eq!(status, 200);
    let entry = body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bad-describe")
        .unwrap_or_else(|| panic!("bad-describe in {body}"))
        .clone();
    assert_eq!(entry["state"], "failed");
    let error = entry["last_error"].as_str().unwrap();
    assert!(
        error.contains("describe() failed") && error.contains(PANIC),
        "{error}"
    );
}

#[test]
fn a_plugin_memory_limit_beyond_the_pool_slot_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(
        dir.path(),
        &[
            (
                "welcome",
                "memory = \"128 MiB\"\n[grants]\nemit = [\"notification.*\"]\n",
            ),
            ("counter", "memory = \"64 MiB\"\n[grants]\nstate = true\n"),
        ],
    );
    let config = dir.path().join("evhost.toml");
    std::fs::write(&config, "[runtime]\ninstance-memory = \"64 MiB\"\n").unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins.clone()),
            config: Some(config.clone()),
            ..Options::default()
        },
    );
    let out = d.stdout().join("\n");
    let expected = format!(
        "memory = \"128 MiB\" in {} exceeds [runtime] instance-memory = \"64 MiB\" in {}",
        plugins.join("welcome.toml").display(),
        config.display()
    );
    assert!(
        out.contains("FAILED to load") && out.contains(&expected),
        "{out}"
    );
    assert!(
        out.contains("loaded plugin counter"),
        "a limit equal to the slot fits: {out}"
    );
    let (_, body) = d.get("/v1/plugins");
    let welcome = body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "welcome")
        .unwrap_or_else(|| panic!("welcome in {body}"))
        .clone();
    assert_eq!(welcome["state"], "failed");
    assert!(
        welcome["last_error"].as_str().unwrap().contains(&expected),
        "{welcome}"
    );
}

#[test]
fn plugins_compiled_concurrently_at_start_are_deployed_and_numbered_in_file_order() {
    // Guards the order, which concurrent compiles could otherwise scramble:
    // smaller files (faster compiles) sit after larger ones, and a failing
    // file in the middle is reported in its place.
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(
        dir.path(),
        &[
            ("order-saga", ""),
            ("counter", "[grants]\nstate = true\n"),
            ("inventory", ""),
            ("welcome", WELCOME_SIDECAR),
            ("payment", ""),
            ("notification", ""),
        ],
    );
    std::fs::write(plugins.join("m-broken.wasm"), b"not wasm").unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    let files: Vec<String> = d
        .stdout()
        .iter()
        .filter_map(|l| {
            let file = if l.starts_with("loaded plugin") {
                l.split(" from ").nth(1)?.split(' ').next()?
            } else {
                l.strip_prefix("FAILED to load ")?.split(':').next()?
            };
            Some(file.rsplit('/').next()?.to_owned())
        })
        .collect();
    assert_eq!(
        files,
        [
            "counter.wasm",
            "inventory.wasm",
            "m-broken.wasm",
            "notification.wasm",
            "order-saga.wasm",
            "payment.wasm",
            "welcome.wasm"
        ],
        "{}",
        d.stdout().join("\n")
    );
    let (_, body) = d.get("/v1/plugins");
    let number = |name: &str| {
        body["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["load_number"].as_u64())
            .unwrap_or_else(|| panic!("load number of {name} in {body}"))
    };
    let numbers: Vec<u64> = [
        "counter",
        "inventory",
        "notification",
        "order-saga",
        "payment",
        "welcome",
    ]
    .into_iter()
    .map(number)
    .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
}

/// `--log nats://...`: the daemon keeps its log on JetStream — plugins run on it,
/// and a daemon with a fresh data directory on the same server reads it back.
#[test]
fn the_daemon_runs_on_a_nats_log_given_with_dash_dash_log() {
    let server = nats_server::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &[("welcome", WELCOME_SIDECAR)]);
    let options = Options {
        plugins: Some(plugins),
        env: vec![("EVHOST_LOG".into(), server.url.clone())],
        ..Options::default()
    };
    let d = Daemon::start(&dir.path().join("data-1"), options.clone());
    assert!(
        d.stdout().iter().any(|l| l.starts_with("log: nats ")),
        "{:?}",
        d.stdout()
    );
    let (status, body) = d.publish(&event(
        "user.created",
        json!({"name": "Ada", "email": "ada@example.com"}),
    ));
    assert_eq!(status, 201, "{body}");
    assert!(
        wait_for(Duration::from_secs(30), || d
            .read_all("notification-events", 0)
            .len()
            == 1),
        "welcome handled the event on the NATS log"
    );
    drop(d);
    // Nothing of the log is in the first data directory: a second daemon with
    // another one reads the same events from the server.
    let again = Daemon::start(&dir.path().join("data-2"), options);
    assert_eq!(again.read_all("user-events", 0).len(), 1);
    assert_eq!(again.read_all("notification-events", 0).len(), 1);
    assert!(!dir.path().join("data-2/log.redb").exists());
}

/// The schema registry lives in the log: on a shared NATS log, a schema put
/// through one daemon validates the publishes of another (at once for a type
/// the other has no schema for, within a second for a new version).
#[test]
fn a_schema_put_through_one_daemon_validates_publishes_through_another_on_nats() {
    let server = nats_server::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        env: vec![("EVHOST_LOG".into(), server.url.clone())],
        ..Options::default()
    };
    let a = Daemon::start(&dir.path().join("data-a"), options.clone());
    let b = Daemon::start(&dir.path().join("data-b"), options);
    let put = |version: &str, required: &str| {
        let schema = json!({"type": "object", "required": [required]});
        a.request(
            "PUT",
            &format!("/v1/schemas/user.created/{version}"),
            &[("content-type", "application/json")],
            Some(schema.to_string().as_bytes()),
        )
    };
    let (status, body) = put("1", "email");
    assert_eq!(status, 201, "{body}");

    let (status, body) = b.publish(&event("user.created", json!({"name": "Ada"})));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["schema_version"], "1", "{body}");
    let (status, body) = b.publish(&event("user.created", json!({"email": "a@x"})));
    assert_eq!(status, 201, "{body}");
    let listed = b.get("/v1/schemas").1;
    assert_eq!(listed["schemas"].as_array().unwrap().len(), 1, "{listed}");

    // Immutable across daemons: other content under version 1 through B conflicts.
    let (status, body) = b.request(
        "PUT",
        "/v1/schemas/user.created/1",
        &[("content-type", "application/json")],
        Some(br#"{"type": "object"}"#),
    );
    assert_eq!(status, 409, "{body}");

    // A new version of a type B already validates against: seen within the bound.
    let (status, body) = put("2", "age");
    assert_eq!(status, 201, "{body}");
    let started = std::time::Instant::now();
    assert!(wait_for(Duration::from_secs(5), || {
        b.publish(&event("user.created", json!({"email": "b@x"}))).0 == 422
    }));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "version 2 reached B after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_bad_log_setting_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(EVHOST)
        .args(["run", "--log", "postgres://x"])
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--log takes `redb` or `nats://"),
        "{stderr}"
    );
    let config = dir.path().join("evhost.toml");
    std::fs::write(&config, "[log]\nbackend = \"nats\"\n").unwrap();
    let out = Command::new(EVHOST)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs servers"), "{stderr}");
}
