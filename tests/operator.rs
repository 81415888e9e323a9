//! The operator API against the real daemon: topics with partitions and
//! retention, consumer seek, schema preload, a failed reload on the running
//! plugin, counts that agree after a fix and a replay, and `/healthz`.

mod daemon_support;
#[path = "support/nats_server.rs"]
mod nats_server;
mod support;

use std::time::Duration;

use daemon_support::{Daemon, EVHOST, Options, event, plugin_dir};
use serde_json::{Value, json};
use support::wait_for;

fn config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("evhost.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn post_json(d: &Daemon, path: &str, body: Value) -> (u16, Value) {
    d.post(path, "application/json", &body.to_string())
}

#[test]
fn topics_are_created_with_partitions_and_retention_when_auto_create_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[log]\nauto-create-topics = false\nretention-max-age = \"7d\"\n\
         [topics.audit]\npartitions = 2\nretention-max-partition-bytes = \"1 MiB\"\n",
    );
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            config: Some(cfg),
            ..Options::default()
        },
    );
    // Publishing to an unknown topic is refused; creating it is the way.
    let (status, _) = d.post(
        "/v1/topics/orders/events",
        "application/cloudevents+json",
        &event("order.placed", json!(1)).to_string(),
    );
    assert_eq!(status, 404);
    let (status, body) = post_json(&d, "/v1/topics", json!({"name": "orders", "partitions": 3}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["partition_count"], 3);
    assert_eq!(body["partitions"].as_array().unwrap().len(), 3);
    // Without retention of its own it gets the configured default.
    assert_eq!(
        body["retention"],
        json!({"max_age_seconds": 604800, "max_partition_bytes": null})
    );
    let (status, body) = d.post(
        "/v1/topics/orders/events",
        "application/cloudevents+json",
        &event("order.placed", json!(1)).to_string(),
    );
    assert_eq!(status, 201, "{body}");
    // Again with the same count: 200; another count: 409.
    let (status, _) = post_json(&d, "/v1/topics", json!({"name": "orders", "partitions": 3}));
    assert_eq!(status, 200);
    let (status, body) = post_json(&d, "/v1/topics", json!({"name": "orders", "partitions": 2}));
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("topic_exists")),
        "{body}"
    );
    let (status, body) = post_json(
        &d,
        "/v1/topics",
        json!({"name": "bad name", "partitions": 1}),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_json(&d, "/v1/topics", json!({"name": "zero", "partitions": 0}));
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("invalid_partitions"))
    );
    let (status, _) = post_json(&d, "/v1/topics", json!({"name": "x"}));
    assert_eq!(status, 400, "a missing partition count is malformed");

    // Retention through the API replaces the topic's.
    let (status, body) = d.request(
        "PUT",
        "/v1/topics/orders/retention",
        &[("content-type", "application/json")],
        Some(
            json!({"max_age_seconds": 3600, "max_partition_bytes": 1048576})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = d.get("/v1/topics/orders");
    assert_eq!(status, 200);
    assert_eq!(
        body["retention"],
        json!({"max_age_seconds": 3600, "max_partition_bytes": 1048576})
    );
    let (status, _) = d.request(
        "PUT",
        "/v1/topics/nope/retention",
        &[("content-type", "application/json")],
        Some(b"{\"max_age_seconds\": 60}"),
    );
    assert_eq!(status, 404);
    // [topics.audit] was created at start with its own retention.
    let topics = d.get("/v1/topics").1;
    let audit = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "audit")
        .cloned()
        .expect("audit created at start");
    assert_eq!(audit["partition_count"], 2);
    assert_eq!(
        audit["retention"],
        json!({"max_age_seconds": null, "max_partition_bytes": 1048576})
    );
}

fn start_offset(d: &Daemon, topic: &str) -> u64 {
    d.get(&format!("/v1/topics/{topic}")).1["partitions"][0]["start_offset"]
        .as_u64()
        .unwrap_or(0)
}

/// Retention set in evhost.toml and through the API reaches the log: the
/// oldest events go once a partition holds more than its bytes.
#[test]
fn retention_from_the_config_and_the_api_deletes_the_oldest_events() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[log]\nretention-interval = \"100ms\"\n\
         [topics.audit]\npartitions = 1\nretention-max-partition-bytes = \"2 KiB\"\n",
    );
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            config: Some(cfg),
            ..Options::default()
        },
    );
    let padding = "x".repeat(200);
    for topic in ["audit", "chatter"] {
        for i in 0..30 {
            let (status, body) = d.post(
                &format!("/v1/topics/{topic}/events"),
                "application/cloudevents+json",
                &event("a.b", json!({"i": i, "pad": padding})).to_string(),
            );
            assert_eq!(status, 201, "{body}");
        }
    }
    assert!(
        wait_for(Duration::from_secs(30), || start_offset(&d, "audit") > 0),
        "[topics.audit] retention deletes: {}",
        d.get("/v1/topics/audit").1
    );
    assert_eq!(
        start_offset(&d, "chatter"),
        0,
        "no retention: everything kept"
    );
    let (status, body) = d.request(
        "PUT",
        "/v1/topics/chatter/retention",
        &[("content-type", "application/json")],
        Some(br#"{"max_age_seconds": null, "max_partition_bytes": 2048}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        wait_for(Duration::from_secs(30), || start_offset(&d, "chatter") > 0),
        "retention set through the API deletes: {}",
        d.get("/v1/topics/chatter").1
    );
    let audit = d.get("/v1/topics/audit").1;
    assert_eq!(audit["partitions"][0]["end_offset"], 30, "{audit}");
}

/// `[dispatch] breaker-threshold` and `breaker-cool-down` reach the breaker:
/// two failed calls pause the plugin (the default is ten, and the event's five
/// attempts would have parked it first), and the long cool-down holds it.
#[test]
fn the_breaker_follows_the_configured_threshold_and_cool_down() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[dispatch]\nbreaker-threshold = 2\nbreaker-cool-down = \"1h\"\n",
    );
    let plugins = plugin_dir(dir.path(), &[("faulty", "")]);
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            config: Some(cfg),
            plugins: Some(plugins),
            ..Options::default()
        },
    );
    let (status, body) = d.publish(&event("faulty.retry", json!({})));
    assert_eq!(status, 201, "{body}");
    let faulty = |d: &Daemon| d.get("/v1/plugins").1["plugins"][0].clone();
    assert!(
        wait_for(Duration::from_secs(60), || faulty(&d)["state"] == "paused"),
        "{}",
        faulty(&d)
    );
    let f = faulty(&d);
    assert_eq!(f["failed"], 2, "{f}");
    assert_eq!(
        f["dead_letters"], 0,
        "paused before the event used up its attempts: {f}"
    );

    // While it is paused, the operator skips the poison event with a seek.
    let (status, body) = post_json(
        &d,
        "/v1/plugins/faulty/offsets",
        json!({"topic": "faulty-events", "partition": 0, "offset": 1}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_offset"], 0, "{body}");
    let f = faulty(&d);
    assert_eq!(f["partitions"][0]["committed"], 1, "{f}");
    assert_eq!(f["dead_letters"], 0, "{f}");
}

fn welcome(d: &Daemon) -> Value {
    let list = d.get("/v1/plugins").1;
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "welcome" && p["state"] != "failed")
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn after_a_fix_and_a_replay_counts_agree_and_a_failed_reload_shows_on_the_running_plugin() {
    let dir = tempfile::tempdir().unwrap();
    // welcome without its emit grant: every call is parked.
    let plugins = plugin_dir(dir.path(), &[("welcome", "")]);
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins.clone()),
            ..Options::default()
        },
    );
    for i in 0..3 {
        let (status, body) = d.publish(&event(
            "user.created",
            json!({"name": format!("u{i}"), "email": format!("u{i}@example.com")}),
        ));
        assert_eq!(status, 201, "{body}");
    }
    assert!(
        wait_for(Duration::from_secs(60), || welcome(&d)["dead_letters"] == 3),
        "{}",
        welcome(&d)
    );
    let w = welcome(&d);
    assert_eq!(w["dead_lettered"], 3);
    let metrics = |d: &Daemon| {
        daemon_support::request_full("GET", &format!("{}/metrics", d.url), &[], None).2
    };
    let text = metrics(&d);
    assert!(text.contains("evhost_dead_letters 3"), "{text}");
    assert!(
        text.contains("evhost_plugin_dead_letters{plugin=\"welcome\",version=\"0.1.0\"} 3"),
        "{text}"
    );
    assert!(
        w["last_error"].as_str().unwrap_or("").contains("emit"),
        "{w}"
    );
    assert_eq!(w["pending_error"], Value::Null);

    // A broken reload: the running version stays, and the failure is on its entry.
    let good = std::fs::read(plugins.join("welcome.wasm")).unwrap();
    std::fs::write(plugins.join("welcome.wasm.tmp"), b"not wasm at all").unwrap();
    std::fs::rename(
        plugins.join("welcome.wasm.tmp"),
        plugins.join("welcome.wasm"),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || {
            welcome(&d)["pending_error"]["message"].as_str().is_some()
        }),
        "{}",
        d.get("/v1/plugins").1
    );
    let list = d.get("/v1/plugins").1;
    assert_eq!(
        list["plugins"].as_array().unwrap().len(),
        1,
        "no separate failed row: {list}"
    );
    assert!(
        welcome(&d)["pending_error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("welcome.wasm")
    );

    // The fix: the component back, with the grant.
    let before = welcome(&d)["load_number"].as_u64().unwrap();
    std::fs::write(
        plugins.join("welcome.toml"),
        "[grants]\nemit = [\"notification.*\"]\n",
    )
    .unwrap();
    std::fs::write(plugins.join("welcome.wasm.tmp"), &good).unwrap();
    std::fs::rename(
        plugins.join("welcome.wasm.tmp"),
        plugins.join("welcome.wasm"),
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(60), || {
        let w = welcome(&d);
        w["load_number"].as_u64().unwrap_or(0) > before && w["pending_error"].is_null()
    }));
    let w = welcome(&d);
    assert_eq!(
        w["last_error"],
        Value::Null,
        "the old version's error is gone: {w}"
    );

    let (status, body) = d.request("POST", "/v1/dlq/replay?plugin=welcome", &[], None);
    assert_eq!(
        (status, body["succeeded"].clone()),
        (200, json!(3)),
        "{body}"
    );
    let w = welcome(&d);
    assert_eq!(w["dead_letters"], 0, "none left now: {w}");
    assert_eq!(w["dead_lettered"], 3, "the running total stays: {w}");
    assert_eq!(w["processed"], 3, "replays count as handled: {w}");
    let text = metrics(&d);
    assert!(text.contains("evhost_dead_letters 0"), "{text}");
    assert!(
        text.contains("evhost_plugin_dead_letters{plugin=\"welcome\",version=\"0.1.0\"} 0"),
        "{text}"
    );

    // Seek back to the start: the three events are handled again.
    let (status, body) = post_json(
        &d,
        "/v1/plugins/welcome/offsets",
        json!({"topic": "user-events", "partition": 0, "offset": 0}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"plugin": "welcome", "topic": "user-events", "partition": 0,
               "previous_offset": 3, "offset": 0})
    );
    assert!(
        wait_for(Duration::from_secs(30), || welcome(&d)["processed"] == 6),
        "{}",
        welcome(&d)
    );
    for (body, status, code) in [
        (
            json!({"topic": "user-events", "partition": 0, "offset": 4}),
            422,
            "offset_out_of_range",
        ),
        (
            json!({"topic": "user-events", "partition": 1, "offset": 0}),
            404,
            "unknown_partition",
        ),
        (
            json!({"topic": "nope", "partition": 0, "offset": 0}),
            404,
            "unknown_topic",
        ),
        (
            json!({"topic": "user-events", "partition": 0}),
            400,
            "bad_request",
        ),
    ] {
        let (s, b) = post_json(&d, "/v1/plugins/welcome/offsets", body.clone());
        assert_eq!(
            (s, b["error"]["code"].clone()),
            (status, json!(code)),
            "{body}: {b}"
        );
    }
    let (s, b) = post_json(
        &d,
        "/v1/plugins/nobody/offsets",
        json!({"topic": "user-events", "partition": 0, "offset": 0}),
    );
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (404, json!("unknown_plugin"))
    );
}

#[test]
fn healthz_reports_the_log_writer_and_the_dispatcher() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let (status, body) = d.get("/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "log": {"status": "ok"}, "dispatcher": {"status": "ok"}})
    );
}

/// On a NATS log whose server went away, writes fail: `/healthz` says so
/// with 503 and the reason, instead of `ok`.
#[test]
fn healthz_is_503_naming_the_log_when_it_refuses_writes() {
    let server = nats_server::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            env: vec![("EVHOST_LOG".into(), server.url.clone())],
            ..Options::default()
        },
    );
    let (status, body) = d.publish(&event("m.one", json!(1)));
    assert_eq!(status, 201, "{body}");
    assert_eq!(d.get("/healthz").0, 200);
    drop(server);
    let mut last = (0, Value::Null);
    assert!(
        wait_for(Duration::from_secs(60), || {
            let (status, _) = d.publish(&event("m.two", json!(2)));
            assert_ne!(status, 201, "a publish with the server gone");
            last = d.get("/healthz");
            last.0 == 503
        }),
        "{last:?}"
    );
    let body = last.1;
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["log"]["status"], "failing", "{body}");
    assert_eq!(body["error"]["code"], "unhealthy", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the log refuses writes"),
        "{body}"
    );
    assert_eq!(body["dispatcher"]["status"], "ok", "{body}");
}

#[test]
fn schemas_are_preloaded_from_a_directory_and_a_bad_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("schemas");
    std::fs::create_dir_all(schemas.join("user.created")).unwrap();
    std::fs::write(
        schemas.join("user.created/1.json"),
        json!({"type": "object", "required": ["email"]}).to_string(),
    )
    .unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            env: vec![("EVHOST_SCHEMAS".into(), schemas.display().to_string())],
            ..Options::default()
        },
    );
    let (status, body) = d.get("/v1/schemas/user.created/1");
    assert_eq!(status, 200, "{body}");
    let (status, body) = d.publish(&event("user.created", json!({"name": "x"})));
    assert_eq!(status, 422, "the preloaded schema is enforced: {body}");
    d.stop();

    std::fs::create_dir_all(schemas.join("order.placed")).unwrap();
    let bad = schemas.join("order.placed/2.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let out = std::process::Command::new(EVHOST)
        .args(["run", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data2"))
        .arg("--plugins")
        .arg(dir.path().join("none"))
        .arg("--schemas")
        .arg(&schemas)
        .env_remove("EVHOST_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&bad.display().to_string()) && stderr.contains("not JSON"),
        "{stderr}"
    );
}
