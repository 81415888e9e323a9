//! The HTTP API v1, row by row, against the real daemon (no plugins unless a row
//! needs them; the plugin and dead-letter rows are in `tests/api_plugins.rs`).

mod daemon_support;
mod support;

use std::time::Duration;

use daemon_support::{Daemon, Options, event, request_full};
use serde_json::{Value, json};

fn daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    (dir, d)
}

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

#[test]
fn structured_publish_answers_201_with_the_position_and_fills_defaults() {
    let (_dir, d) = daemon();
    let (status, body) = d.post(
        "/v1/topics/orders/events",
        STRUCTURED,
        &json!({"specversion":"1.0","type":"order.placed","source":"shop","subject":"o-1",
                "data":{"total":5}})
        .to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let ack = &body["events"][0];
    assert_eq!(ack["topic"], "orders");
    assert_eq!(ack["partition"], 0);
    assert_eq!(ack["offset"], 0);
    let id = ack["id"].as_str().unwrap();
    assert_eq!(
        uuid_version(id),
        Some('7'),
        "host-assigned ids are UUIDv7: {id}"
    );

    let stored = d.read_all("orders", 0);
    assert_eq!(stored.len(), 1);
    let e = &stored[0];
    assert_eq!(e["id"], id);
    assert_eq!(e["correlationid"], id, "correlationid defaults to the id");
    assert!(e["time"].as_str().is_some_and(|t| t.contains('T')));
    assert_eq!(e["data"], json!({"total": 5}));
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(
        (e["topic"].clone(), e["offset"].clone()),
        (json!("orders"), json!(0))
    );
}

fn uuid_version(id: &str) -> Option<char> {
    (id.len() == 36).then(|| id.chars().nth(14)).flatten()
}

#[test]
fn binary_mode_reads_ce_headers_and_keeps_the_body_as_data() {
    let (_dir, d) = daemon();
    let (status, body) = d.request(
        "POST",
        "/v1/topics/notes/events",
        &[
            ("content-type", "text/plain; charset=utf-8"),
            ("ce-specversion", "1.0"),
            ("ce-id", "note-1"),
            ("ce-type", "note.added"),
            ("ce-source", "https://example.com/notes"),
            ("ce-subject", "caf%C3%A9"),
            ("ce-actor", "ada"),
            ("ce-traceparent", "00-abc-01"),
        ],
        Some(b"hello world"),
    );
    assert_eq!(status, 201, "{body}");
    let e = &d.read_all("notes", 0)[0];
    assert_eq!(e["id"], "note-1");
    assert_eq!(e["subject"], "café", "header values are percent-decoded");
    assert_eq!(e["actor"], "ada");
    assert_eq!(e["traceparent"], "00-abc-01", "extensions are kept");
    assert_eq!(e["datacontenttype"], "text/plain; charset=utf-8");
    assert_eq!(e["data"], "hello world");
}

#[test]
fn a_batch_is_published_whole_or_not_at_all() {
    let (_dir, d) = daemon();
    let good = json!([
        event("a.one", json!(1)),
        event("a.two", json!(2)),
        event("a.three", json!(3))
    ]);
    let (status, body) = d.post("/v1/topics/batch/events", BATCH, &good.to_string());
    assert_eq!(status, 201, "{body}");
    let offsets: Vec<u64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 1, 2]);

    let bad = json!([event("a.four", json!(4)), {"specversion":"1.0","source":"s"}]);
    let (status, body) = d.post("/v1/topics/batch/events", BATCH, &bad.to_string());
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batch event 1"),
        "{body}"
    );
    assert_eq!(
        d.read_all("batch", 0).len(),
        3,
        "nothing of the bad batch was written"
    );
}

#[test]
fn post_v1_events_derives_each_topic_from_the_type() {
    let (_dir, d) = daemon();
    let batch = json!([
        event("user.created", json!({})),
        event("order.placed", json!({}))
    ]);
    let (status, body) = d.post("/v1/events", BATCH, &batch.to_string());
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["events"][0]["topic"], "user-events");
    assert_eq!(body["events"][1]["topic"], "order-events");
}

#[test]
fn publishing_an_id_twice_stores_it_once_and_answers_the_original_offset() {
    let (_dir, d) = daemon();
    let mut e = event("pay.done", json!({"n": 1}));
    e["id"] = "pay-42".into();
    d.publish(&event("pay.other", json!(0)));
    let (s1, first) = d.publish(&e);
    let (s2, second) = d.publish(&e);
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first["events"][0]["offset"], 1);
    assert_eq!(first["events"][0]["duplicate"], false);
    assert_eq!(second["events"][0]["offset"], 1, "the original's offset");
    assert_eq!(second["events"][0]["duplicate"], true);
    assert_eq!(d.read_all("pay-events", 0).len(), 2);
}

#[test]
fn topics_list_partition_counts_and_end_offsets() {
    let (_dir, d) = daemon();
    for _ in 0..3 {
        d.publish(&event("user.created", json!({})));
    }
    let (status, body) = d.get("/v1/topics");
    assert_eq!(status, 200);
    let t = &body["topics"][0];
    assert_eq!(t["name"], "user-events");
    assert_eq!(t["partition_count"], 1);
    assert_eq!(t["partitions"][0]["end_offset"], 3);
    assert_eq!(t["partitions"][0]["start_offset"], 0);
}

#[test]
fn reads_take_partition_from_and_limit_and_answer_404_for_unknown_topics() {
    let (_dir, d) = daemon();
    for i in 0..5 {
        d.publish(&event("seq.item", json!(i)));
    }
    let (status, body) = d.get("/v1/topics/seq-events/events?partition=0&from=2&limit=2");
    assert_eq!(status, 200, "{body}");
    let data: Vec<Value> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(data, [json!(2), json!(3)], "oldest first from offset 2");
    assert_eq!(body["next_offset"], 4);

    let (status, body) = d.get("/v1/topics/nope/events");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_topic");
    let (status, _) = d.get("/v1/topics/seq-events/events?partition=7");
    assert_eq!(status, 404);
    let (status, body) = d.get("/v1/topics/seq-events/events?from=minus-one");
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("from"),
        "{body}"
    );
}

#[test]
fn follow_streams_new_events_as_server_sent_events() {
    let (_dir, d) = daemon();
    d.publish(&event("live.old", json!(0)));
    let url = format!("{}/v1/topics/live-events/events?follow=true", d.url);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let client = evhost::cli::Client::new(url.split("/v1").next().unwrap(), None);
        let _ = client.stream("/v1/topics/live-events/events?follow=true", |data| {
            tx.send(data.to_owned()).is_ok()
        });
    });
    // The tail starts at the end: only events published after it opened arrive. Publish
    // until the first one shows up (the stream may take a moment to open).
    let mut got = None;
    for i in 1..200 {
        d.publish(&event("live.new", json!(i)));
        if let Ok(data) = rx.recv_timeout(Duration::from_millis(100)) {
            got = Some(data);
            break;
        }
    }
    let data: Value = serde_json::from_str(&got.expect("an event arrives over SSE")).unwrap();
    assert_eq!(
        data["type"], "live.new",
        "the old event is not replayed: {data}"
    );
    assert_eq!(data["topic"], "live-events");
    assert!(data["offset"].as_u64().unwrap() >= 1);

    // With from=0 the stream replays from the start.
    let (status, headers, _) = {
        // Just the head of the stream: a HEAD-less check of the content type.
        let d2 = format!("{}/v1/topics/live-events/events?follow=true&from=0", d.url);
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let resp = agent.get(&d2).call().unwrap();
        let hdrs: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let mut reader = resp.into_body().into_reader();
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut reader, &mut buf).unwrap();
        (200, hdrs, String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"))
    );
}

#[test]
fn stream_appends_check_the_expected_version_and_answer_409_with_the_current_one() {
    let (_dir, d) = daemon();
    let one =
        json!({"specversion":"1.0","type":"account.opened","source":"bank","data":{"owner":"ada"}});
    let (status, body) = d.post(
        "/v1/streams/account-7/events?expectedVersion=0",
        STRUCTURED,
        &one.to_string(),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["events"][0]["streamversion"], 1);

    let two =
        json!({"specversion":"1.0","type":"account.credited","source":"bank","data":{"amount":5}});
    let (status, body) = d.post(
        "/v1/streams/account-7/events?expectedVersion=0",
        STRUCTURED,
        &two.to_string(),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "version_conflict");
    assert_eq!(body["error"]["current_version"], 1);

    let (status, body) = d.request(
        "POST",
        "/v1/streams/account-7/events",
        &[("content-type", STRUCTURED), ("if-match", "\"1\"")],
        Some(two.to_string().as_bytes()),
    );
    assert_eq!(status, 201, "If-Match works like expectedVersion: {body}");
    assert_eq!(body["version"], 2);
    let (status, _) = d.request(
        "POST",
        "/v1/streams/account-7/events",
        &[("content-type", STRUCTURED), ("if-match", "\"1\"")],
        Some(two.to_string().as_bytes()),
    );
    assert_eq!(status, 409);

    let (status, body) = d.get("/v1/streams/account-7/events?from=1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    let types: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["account.opened", "account.credited"]);
    assert_eq!(body["events"][1]["streamversion"], 2);
    assert_eq!(body["events"][1]["stream"], "account-7");
    let (status, body) = d.get("/v1/streams/account-7/events?from=2");
    assert_eq!((status, body["events"].as_array().unwrap().len()), (200, 1));

    let (status, body) = d.get("/v1/streams/nobody/events");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_stream");
}

#[test]
fn schemas_are_registered_listed_and_enforced_with_422_naming_the_path() {
    let (_dir, d) = daemon();
    let schema =
        json!({"type":"object","required":["email"],"properties":{"email":{"type":"string"}}});
    let put = |body: &Value| {
        d.request(
            "PUT",
            "/v1/schemas/user.created/1",
            &[("content-type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    };
    assert_eq!(put(&schema).0, 201);
    assert_eq!(put(&schema).0, 200, "the same schema again is fine");
    let (status, body) = put(&json!({"type":"array"}));
    assert_eq!(status, 409, "a version is immutable: {body}");
    let (status, body) = d.request(
        "PUT",
        "/v1/schemas/user.created/2",
        &[],
        Some(br#"{"type":"nonsense"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_schema");

    let (status, body) = d.get("/v1/schemas");
    assert_eq!(status, 200);
    assert_eq!(body["schemas"].as_array().unwrap().len(), 1);
    assert_eq!(body["schemas"][0]["type"], "user.created");
    assert_eq!(body["schemas"][0]["version"], "1");
    assert_eq!(body["schemas"][0]["schema"], schema);

    let (status, body) = d.publish(&event("user.created", json!({"email": 42})));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "schema_violation");
    assert_eq!(body["error"]["path"], "/email");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/email"),
        "{body}"
    );
    let (status, body) = d.publish(&event("user.created", json!({"name": "no email"})));
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("email"),
        "{body}"
    );
    assert!(
        d.read_all("user-events", 0).is_empty(),
        "nothing invalid was written"
    );

    let (status, _) = d.publish(&event("user.created", json!({"email": "ada@example.com"})));
    assert_eq!(status, 201);
    // Types without a schema are not checked.
    assert_eq!(d.publish(&event("order.placed", json!("anything"))).0, 201);
}

#[test]
fn metrics_and_healthz_answer() {
    let (_dir, d) = daemon();
    let (status, body) = d.get("/healthz");
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("ok")),
        "{body}"
    );
    d.publish(&event("m.one", json!(1)));
    d.publish(&event("m.two", json!(2)));
    let (status, headers, text) = request_full("GET", &format!("{}/metrics", d.url), &[], None);
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/plain; version=0.0.4")),
        "{headers:?}"
    );
    assert!(text.contains("evhost_events_published_total 2"), "{text}");
    assert!(text.contains("evhost_log_append_seconds_count 2"), "{text}");
    assert!(text.contains("evhost_dead_letters 0"), "{text}");
    assert!(
        text.contains("evhost_log_events_appended_total 2"),
        "{text}"
    );
}

#[test]
fn with_a_token_mutations_need_the_bearer_and_reads_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            token: Some("s3cret".into()),
            ..Options::default()
        },
    );
    let body = event("auth.test", json!(1)).to_string();
    let (status, _, text) = request_full(
        "POST",
        &format!("{}/v1/events", d.url),
        &[("content-type", STRUCTURED)],
        Some(body.as_bytes()),
    );
    assert_eq!(status, 401, "{text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["error"]["code"], "unauthorized");
    let (status, _) = d.request(
        "POST",
        "/v1/events",
        &[
            ("content-type", STRUCTURED),
            ("authorization", "Bearer wrong"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(status, 401);
    let (status, _) = d.request("DELETE", "/v1/dlq/1", &[], None);
    assert_eq!(status, 401, "DELETE is a mutation");
    let (status, _) = d.request("PUT", "/v1/schemas/a/1", &[], Some(b"{}"));
    assert_eq!(status, 401, "PUT is a mutation");
    assert!(d.read_all("auth-events", 0).is_empty());

    let (status, _) = d.request(
        "POST",
        "/v1/events",
        &[
            ("content-type", STRUCTURED),
            ("authorization", "Bearer s3cret"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(status, 201);
    assert_eq!(d.get("/v1/topics").0, 200, "reads are open by default");
    assert_eq!(d.get("/healthz").0, 200);
}

#[test]
fn protect_reads_puts_reads_behind_the_token_too_but_not_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("evhost.toml");
    std::fs::write(&config, "[api]\ntoken = \"t0k\"\nprotect-reads = true\n").unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            config: Some(config),
            ..Options::default()
        },
    );
    assert_eq!(d.get("/v1/topics").0, 401);
    assert_eq!(d.get("/metrics").0, 401);
    assert_eq!(
        d.request(
            "GET",
            "/v1/topics",
            &[("authorization", "Bearer t0k")],
            None
        )
        .0,
        200
    );
    assert_eq!(d.get("/healthz").0, 200);
}

#[test]
fn a_body_over_the_configured_limit_is_413_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("evhost.toml");
    std::fs::write(&config, "[api]\nmax-body-bytes = \"2 KiB\"\n").unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            config: Some(config),
            ..Options::default()
        },
    );
    let big = event("big.one", json!("x".repeat(4000)));
    let (status, body) = d.publish(&big);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("2048"),
        "{body}"
    );
    assert!(d.log_fingerprint().is_empty());
    assert_eq!(d.publish(&event("big.one", json!("small"))).0, 201);
}

#[test]
fn an_event_over_the_log_limit_is_413_even_in_a_small_body() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("evhost.toml");
    std::fs::write(&config, "[log]\nmax-event-bytes = 2000\n").unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            config: Some(config),
            ..Options::default()
        },
    );
    let (status, body) = d.publish(&event("big.one", json!("y".repeat(3000))));
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "event_too_large");
    assert!(d.log_fingerprint().is_empty());
}

#[test]
fn unknown_topics_are_404_when_auto_creation_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("evhost.toml");
    std::fs::write(&config, "[log]\nauto-create-topics = false\n").unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            config: Some(config),
            ..Options::default()
        },
    );
    let (status, body) = d.publish(&event("ghost.event", json!(1)));
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_topic");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ghost-events")
    );
}

/// Operators (or a retrying script) replaying the same letters at once: each letter's
/// effect is committed exactly once, every letter is gone, and the losers are told why
/// (404: already resolved, 409: being replayed right now).
#[test]
fn concurrent_replays_of_the_same_letters_commit_each_effect_once() {
    let dir = tempfile::tempdir().unwrap();
    // welcome without its emit grant: every call is parked.
    let plugins = daemon_support::plugin_dir(dir.path(), &[("welcome", "")]);
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            plugins: Some(plugins.clone()),
            ..Options::default()
        },
    );
    for i in 0..5 {
        let (status, body) = d.publish(&event(
            "user.created",
            json!({"name": format!("u{i}"), "email": format!("u{i}@example.com")}),
        ));
        assert_eq!(status, 201, "{body}");
    }
    let mut letters = Vec::new();
    assert!(
        support::wait_for(Duration::from_secs(60), || {
            letters = d.get("/v1/dlq?plugin=welcome").1["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            letters.len() == 5
        }),
        "five letters parked: {letters:?}"
    );
    let load = |d: &Daemon| d.get("/v1/plugins").1["plugins"][0]["load_number"].as_u64();
    let before = load(&d);
    // The operator adds the grant; the new version is deployed.
    std::fs::write(
        plugins.join("welcome.toml"),
        "[grants]\nemit = [\"notification.*\"]\n",
    )
    .unwrap();
    assert!(support::wait_for(Duration::from_secs(30), || load(&d) > before));

    let ids: Vec<u64> = letters.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    let outcomes: Vec<(u64, u16, Value)> = std::thread::scope(|s| {
        let tasks: Vec<_> = ids
            .iter()
            .flat_map(|id| std::iter::repeat_n(*id, 8))
            .map(|id| {
                let d = &d;
                s.spawn(move || {
                    let (status, body) =
                        d.request("POST", &format!("/v1/dlq/{id}/replay"), &[], None);
                    (id, status, body)
                })
            })
            .collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for id in &ids {
        let won: Vec<_> = outcomes
            .iter()
            .filter(|(i, status, body)| i == id && *status == 200 && body["outcome"] == "succeeded")
            .collect();
        assert_eq!(
            won.len(),
            1,
            "letter {id} replayed exactly once: {outcomes:?}"
        );
    }
    for (_, status, body) in &outcomes {
        assert!(
            *status == 200 || *status == 404 || *status == 409,
            "{status} {body}"
        );
        if *status == 409 {
            assert_eq!(body["error"]["code"], "replay_in_progress", "{body}");
        }
        if *status == 404 {
            assert_eq!(body["error"]["code"], "unknown_dead_letter", "{body}");
        }
    }
    assert_eq!(
        d.read_all("notification-events", 0).len(),
        5,
        "exactly one effect per letter"
    );
    assert_eq!(d.get("/v1/dlq").1["dead_letters"], json!([]));
    // Replaying a resolved letter again: 404.
    assert_eq!(
        d.request("POST", &format!("/v1/dlq/{}/replay", ids[0]), &[], None)
            .0,
        404
    );
}
