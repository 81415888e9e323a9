//! Dispatch under `kill -9` of the real daemon: a poison pill is parked
//! instead of crash-looping, and a crash between a call and its commit
//! redelivers without landing effects twice. Each test runs on the redb log
//! and on a NATS JetStream log (`redb::*`, `nats::*`); on NATS the server
//! stays up and only the daemon is killed.

mod daemon_support;
#[path = "support/nats_server.rs"]
mod nats_server;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use daemon_support::{Daemon, Options, event, plugin_dir};
use serde_json::{Value, json};
use support::wait_for;

const DEADLINE: Duration = Duration::from_secs(60);

/// The log a test's daemons run on.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Redb,
    Nats,
}

/// How to start the daemons of a test, and the NATS server their log lives
/// on (kept running across every kill, stopped when the test ends).
struct Setup {
    options: Options,
    _server: Option<nats_server::NatsServer>,
}

fn setup(backend: Backend, plugins: &Path) -> Setup {
    let mut options = Options {
        plugins: Some(plugins.to_owned()),
        ..Options::default()
    };
    let server = match backend {
        Backend::Redb => None,
        Backend::Nats => {
            let server = nats_server::NatsServer::start();
            options.env.push(("EVHOST_LOG".into(), server.url.clone()));
            Some(server)
        }
    };
    Setup {
        options,
        _server: server,
    }
}

fn start(data: &Path, setup: &Setup) -> Daemon {
    Daemon::start(data, setup.options.clone())
}

/// Lines of the daemon's output that show `faulty` looping (its guest stdout,
/// forwarded while the call runs).
fn loops_seen(d: &Daemon) -> usize {
    d.stderr()
        .iter()
        .chain(d.stdout().iter())
        .filter(|l| l.contains("faulty: looping on delivery"))
        .count()
}

fn poison_pill_killing_the_host_each_time_is_parked_after_max_attempts(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The call runs far longer than the test: only the kill ends it.
    let sidecar = "timeout = \"10m\"\n[grants]\nemit = [\"faulty.*\"]\n[retry]\nmax-attempts = 3\n";
    let plugins = plugin_dir(dir.path(), &[("faulty", sidecar)]);
    let setup = setup(backend, &plugins);

    let mut d = start(&data, &setup);
    let (status, _) = d.publish(&json!({
        "specversion": "1.0", "type": "faulty.loop", "source": "test", "id": "poison",
        "subject": "k"
    }));
    assert_eq!(status, 201);
    let (status, _) = d.publish(&json!({
        "specversion": "1.0", "type": "faulty.ok", "source": "test", "id": "after-poison",
        "subject": "k"
    }));
    assert_eq!(status, 201);

    // Each delivery of the poison pill takes the host down.
    let mut kills = 0;
    let parked = loop {
        let mut dlq = Value::Null;
        let outcome = wait_for(DEADLINE, || {
            dlq = d.get("/v1/dlq?plugin=faulty").1;
            loops_seen(&d) > 0
                || dlq["dead_letters"]
                    .as_array()
                    .is_some_and(|l| !l.is_empty())
        });
        assert!(
            outcome,
            "neither a call nor a dead letter after {kills} kills"
        );
        if let Some(first) = dlq["dead_letters"].as_array().and_then(|l| l.first()) {
            break first.clone();
        }
        d.kill9();
        kills += 1;
        assert!(
            kills <= 5,
            "the poison pill keeps being delivered: {kills} kills"
        );
        d = start(&data, &setup);
    };

    assert_eq!(
        kills, 3,
        "one delivery per allowed attempt, then parked without calling"
    );
    assert_eq!(parked["error_kind"], "host-error");
    assert_eq!(parked["attempts"], 3);
    assert_eq!(parked["event"]["id"], "poison");
    assert!(
        parked["message"]
            .as_str()
            .unwrap()
            .contains("host stopping"),
        "{parked}"
    );
    assert_eq!(
        loops_seen(&d),
        0,
        "the last start parked it without calling it"
    );
    // The consumer moved on.
    assert!(wait_for(DEADLINE, || d.read_all("faulty-results", 0).len() == 1));
    assert_eq!(
        d.read_all("faulty-results", 0)[0]["data"]["event"],
        "after-poison"
    );
}

/// The end offset of `faulty-results`: how many results are committed.
fn results_end(d: &Daemon) -> u64 {
    d.get("/v1/topics").1["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == "faulty-results"))
        .map_or(0, |t| {
            t["partitions"][0]["end_offset"].as_u64().unwrap_or(0)
        })
}

fn crash_between_call_and_commit_redelivers_and_effects_land_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugin_dir(
        dir.path(),
        &[("faulty", "[grants]\nemit = [\"faulty.*\"]\n")],
    );
    let setup = setup(backend, &plugins);
    let mut d = start(&data, &setup);

    // Each `faulty.ok` emits one `faulty.done` naming it (with a fresh id, so
    // dedupe cannot hide a second commit of the same call's effects).
    let rounds = 5;
    let per_round = 2000;
    let mut published = Vec::new();
    let mut interrupted_mid_way = 0;
    for round in 0..rounds {
        let batch: Vec<Value> = (0..per_round)
            .map(|i| {
                let mut e = event("faulty.ok", Value::Null);
                let id = format!("r{round}-{i}");
                e["id"] = json!(id);
                e["subject"] = json!(format!("k{}", i % 5));
                published.push(id);
                e
            })
            .collect();
        // One request on redb; on NATS a request is one atomic batch of at most
        // 1000 messages (an event takes two), so the round goes in requests of 400.
        let per_request = match backend {
            Backend::Redb => per_round,
            Backend::Nats => 400,
        };
        for request in batch.chunks(per_request) {
            let (status, body) = d.post(
                "/v1/topics/faulty-events/events",
                "application/cloudevents-batch+json",
                &serde_json::to_string(request).unwrap(),
            );
            assert_eq!(status, 201, "{body}");
        }
        // Kill at a random point of the round: in the careful start-up phase
        // (one event per commit) or among the batches.
        let target = (published.len() - per_round + fastrand::usize(1..per_round)) as u64;
        wait_for(DEADLINE, || results_end(&d) >= target);
        if results_end(&d) < published.len() as u64 {
            interrupted_mid_way += 1;
        }
        d.kill9();
        d = start(&data, &setup);
    }
    assert!(
        interrupted_mid_way > 0,
        "no kill landed while events were in flight"
    );

    assert!(
        wait_for(DEADLINE, || d.read_all("faulty-results", 0).len()
            >= published.len()),
        "not every event was handled"
    );
    let results = d.read_all("faulty-results", 0);
    let mut handled: HashMap<String, usize> = HashMap::new();
    for r in &results {
        *handled
            .entry(r["data"]["event"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = handled.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "effects committed more than once: {twice:?}"
    );
    assert_eq!(handled.len(), published.len());
    assert_eq!(results.len(), published.len());
    let lag = d.get("/v1/plugins").1;
    assert_eq!(lag["plugins"][0]["lag"], 0, "{lag}");
}

/// Every scenario above, on each backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Backend::Redb)
                }
            )*
        }
        mod nats {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Backend::Nats)
                }
            )*
        }
    };
}

on_every_backend!(
    poison_pill_killing_the_host_each_time_is_parked_after_max_attempts,
    crash_between_call_and_commit_redelivers_and_effects_land_once,
);
