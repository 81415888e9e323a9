//! Several daemons on one NATS log: real `evhost run` processes, a real `nats-server` (one
//! node, or a 3-node R3 cluster), the real `version-probe` plugin. `version-probe` is
//! deliberately not idempotent and labels each effect with its deployment's `label` (each
//! daemon has its own plugin directory and label), so a doubled effect, a lost one, a lost
//! state update or a commit by the wrong daemon all show in the log.

mod daemon_support;
mod support;

#[path = "support/nats_server.rs"]
mod nats_server;

#[path = "support/nats_cluster.rs"]
mod nats_cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use daemon_support::{Daemon, Options, plugin_dir};
use serde_json::{Value, json};
use support::wait_for;

const PARTITIONS: u64 = 8;
const PREFIX: &str = "cluster";

/// One daemon's directory: config (the shared NATS log) and its own plugin directory with
/// `version-probe` labelled `label`.
fn daemon_dir(
    root: &Path,
    label: &str,
    servers: &str,
    replicas: u32,
) -> (Options, std::path::PathBuf) {
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    let sidecar =
        format!("[config]\nlabel = \"{label}\"\n\n[grants]\nstate = true\nemit = [\"probe.*\"]\n");
    let plugins = plugin_dir(&dir, &[("version-probe", &sidecar)]);
    let servers: Vec<String> = servers.split(',').map(|s| format!("{s:?}")).collect();
    let config = dir.join("evhost.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nbackend = \"nats\"\nservers = [{}]\nreplicas = {replicas}\nprefix = \"{PREFIX}\"\ndefault-partitions = {PARTITIONS}\n",
            servers.join(", ")
        ),
    )
    .unwrap();
    let options = Options {
        plugins: Some(plugins),
        config: Some(config),
        env: vec![(
            "RUST_LOG".into(),
            "evhost=info,evhost::dispatch::coordinator=debug".into(),
        )],
        ..Options::default()
    };
    (options, dir.join("data"))
}

/// The partitions of `work-events` the daemon works now (its leases).
fn worked(d: &Daemon) -> BTreeSet<u64> {
    let (status, body) = d.get("/v1/plugins");
    if status != 200 {
        return BTreeSet::new();
    }
    body["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "version-probe")
        .flat_map(|p| p["partitions"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["topic"] == "work-events")
        .filter_map(|p| p["partition"].as_u64())
        .collect()
}

fn work(id: &str, subject: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "type": "work.item",
        "source": "test",
        "subject": subject,
        "data": data,
    })
}

/// Every `probe.handled` in the log, as (handled event id → labels of its effects).
fn effects(d: &Daemon) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in 0..PARTITIONS as u32 {
        for e in d.read_all("probe-events", p) {
            let data = &e["data"];
            out.entry(data["event"].as_str().unwrap().to_owned())
                .or_default()
                .push(data["label"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// `version-probe`'s count of handled events (its state key `count/total`).
fn total(d: &Daemon) -> u64 {
    let (status, body) = d.get("/v1/plugins/version-probe/state?prefix=count/");
    assert_eq!(status, 200, "{body}");
    body["entries"]
        .as_array()
        .and_then(|e| e.first())
        .and_then(|e| e["value"].as_u64())
        .unwrap_or(0)
}

/// What a daemon logged about members and leases, for failure messages.
fn lease_lines(d: &Daemon) -> String {
    d.stdout()
        .into_iter()
        .chain(d.stderr())
        .filter(|l| l.contains("lease") || l.contains("member"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the two daemons split the topic's partitions between them.
fn wait_split(a: &Daemon, b: &Daemon) {
    assert!(
        wait_for(Duration::from_secs(30), || {
            let (wa, wb) = (worked(a), worked(b));
            !wa.is_empty()
                && !wb.is_empty()
                && wa.is_disjoint(&wb)
                && wa.len() + wb.len() == PARTITIONS as usize
        }),
        "the daemons did not split the partitions: {:?} and {:?}\nA: {}\nB: {}",
        worked(a),
        worked(b),
        lease_lines(a),
        lease_lines(b)
    );
}

/// A daemon paused (SIGSTOP) in the middle of a call, past its lease, wakes to find its
/// partition taken: its commit is refused, the call's effect is the new owner's, once.
#[test]
fn a_daemon_paused_past_its_lease_commits_nothing_when_it_wakes() {
    let server = nats_server::NatsServer::start();
    let root = tempfile::tempdir().unwrap();
    let (options_a, data_a) = daemon_dir(root.path(), "A", &server.url, 1);
    let (options_b, data_b) = daemon_dir(root.path(), "B", &server.url, 1);
    let a = Daemon::start(&data_a, options_a);
    let b = Daemon::start(&data_b, options_b);
    let (status, body) = b.publish(&work("first", "first", json!({})));
    assert_eq!(status, 201, "{body}");
    wait_split(&a, &b);

    // A call of 4 s on a partition A works.
    let mut inputs = vec!["first".to_owned()];
    let target = (0..64)
        .find_map(|i| {
            let id = format!("slow-{i}");
            let (status, body) = b.publish(&work(&id, &id, json!({"sleep_ms": 4000})));
            assert_eq!(status, 201, "{body}");
            inputs.push(id.clone());
            let partition = body["events"][0]["partition"].as_u64().unwrap();
            worked(&a).contains(&partition).then_some((id, partition))
        })
        .expect("some subject lands on A's partitions");
    // Let A's consumer wake and enter the call (its watch fires within milliseconds).
    thread::sleep(Duration::from_millis(500));
    a.signal("STOP");
    let paused = Instant::now();
    assert!(
        wait_for(Duration::from_secs(20), || worked(&b).contains(&target.1)),
        "B did not take over partition {} of the paused daemon",
        target.1
    );
    let took_over = paused.elapsed();
    // A wakes at once, long before B's own 4 s call ends: without the lease fence its call
    // would finish and commit first.
    a.signal("CONT");
    assert!(
        wait_for(Duration::from_secs(30), || effects(&b)
            .get(&target.0)
            .is_some_and(|labels| !labels.is_empty())),
        "the slow event was handled"
    );
    assert!(
        wait_for(Duration::from_secs(30), || a
            .stdout()
            .iter()
            .chain(a.stderr().iter())
            .any(|l| l.contains("another daemon took the partition"))),
        "A tried to commit under its lost lease and was refused\nstdout: {:?}\nstderr: {:?}",
        a.stdout(),
        a.stderr()
    );
    assert!(
        wait_for(Duration::from_secs(30), || effects(&b).len()
            == inputs.len()),
        "every input handled"
    );
    let all = effects(&b);
    assert_eq!(
        all[&target.0],
        ["B"],
        "the slow event's one effect is the new owner's (taken over after {took_over:?})"
    );
    for id in &inputs {
        assert_eq!(all[id].len(), 1, "{id}: {:?}", all[id]);
    }
    assert_eq!(
        total(&b),
        inputs.len() as u64,
        "each input counted once in state"
    );
}

/// What the producer sent: ids acknowledged (201) and ids whose outcome it does not know.
#[derive(Default)]
struct Sent {
    acked: Vec<String>,
    unknown: Vec<String>,
}

/// Publishes numbered events round-robin through whichever daemons are up until stopped.
fn producer(
    urls: Arc<Mutex<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Sent>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build(),
        );
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let live: Vec<String> = urls.lock().unwrap().iter().flatten().cloned().collect();
            if live.is_empty() {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            let url = &live[i as usize % live.len()];
            let id = format!("in-{i}");
            i += 1;
            let body = work(&id, &format!("s{}", i % 97), json!({})).to_string();
            let result = agent
                .post(&format!("{url}/v1/topics/work-events/events"))
                .header("content-type", "application/cloudevents+json")
                .send(body.as_bytes());
            let mut sent = sent.lock().unwrap();
            match result {
                Ok(resp) if resp.status().as_u16() == 201 => sent.acked.push(id),
                // Refused before anything was written, or an outcome nobody can know
                // (the daemon or the stream leader died mid-request).
                _ => sent.unknown.push(id),
            }
            drop(sent);
            thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Two daemons on a 3-node R3 cluster under a steady producer: one daemon is `kill -9`ed
/// (the other takes its partitions within 10 s), then the stream's leader node is killed
/// and restarted, then the dead daemon returns. Every acknowledged input ends with exactly
/// one effect, none has two, and the plugin's state counted each effect once.
#[test]
fn daemons_on_a_three_node_cluster_lose_and_double_nothing_through_daemon_and_node_kills() {
    let mut cluster = nats_cluster::NatsCluster::start();
    let root = tempfile::tempdir().unwrap();
    let urls = cluster.urls();
    let (options_a, data_a) = daemon_dir(root.path(), "A", &urls, 3);
    let (options_b, data_b) = daemon_dir(root.path(), "B", &urls, 3);
    let mut a = Daemon::start(&data_a, options_a.clone());
    let b = Daemon::start(&data_b, options_b);
    let (status, body) = b.publish(&work("first", "first", json!({})));
    assert_eq!(status, 201, "{body}");
    wait_split(&a, &b);

    let live = Arc::new(Mutex::new(vec![Some(a.url.clone()), Some(b.url.clone())]));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let producing = producer(live.clone(), stop.clone(), sent.clone());
    let acked = || sent.lock().unwrap().acked.len();
    let grow = |by: usize| {
        let until = acked() + by;
        assert!(
            wait_for(Duration::from_secs(60), || acked() >= until),
            "the producer got {by} more acks"
        );
    };
    grow(100);

    // A daemon dies: its partitions move to the other within the bound.
    live.lock().unwrap()[0] = None;
    a.kill9();
    let killed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(20), || worked(&b).len()
            == PARTITIONS as usize),
        "B took every partition: {:?}",
        worked(&b)
    );
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(10),
        "partitions of a killed daemon move within 10 s, took {takeover:?}"
    );
    grow(100);

    // The stream's leader node dies and comes back.
    let leader = cluster.stream_leader(&format!("EVHOST_{PREFIX}"));
    cluster.kill9(leader);
    grow(50);
    cluster.restart(leader);
    grow(50);

    // The dead daemon returns and takes its share again.
    let a = Daemon::start(&data_a, options_a);
    live.lock().unwrap()[0] = Some(a.url.clone());
    wait_split(&a, &b);
    grow(100);
    stop.store(true, Ordering::SeqCst);
    producing.join().unwrap();

    let sent = sent.lock().unwrap();
    let acked: BTreeSet<&String> = sent.acked.iter().collect();
    let handled = wait_for(Duration::from_secs(60), || {
        let all = effects(&b);
        acked.iter().all(|id| all.contains_key(*id))
    });
    if !handled {
        let all = effects(&b);
        let missing: Vec<_> = acked.iter().filter(|id| !all.contains_key(**id)).collect();
        let tail = |lines: Vec<String>| lines[lines.len().saturating_sub(40)..].join("\n");
        panic!(
            "acknowledged inputs never handled: {missing:?}\nA works {:?}, B works {:?}\nA: {}\nB: {}\nA stderr:\n{}\nB stderr:\n{}",
            worked(&a),
            worked(&b),
            a.get("/v1/plugins").1,
            b.get("/v1/plugins").1,
            tail(a.stderr()),
            tail(b.stderr())
        );
    }
    let all = effects(&b);
    let doubled: Vec<&String> = all
        .iter()
        .filter(|(_, labels)| labels.len() > 1)
        .map(|(id, _)| id)
        .collect();
    if !doubled.is_empty() {
        let raw: Vec<Value> = (0..PARTITIONS as u32)
            .flat_map(|p| b.read_all("probe-events", p))
            .filter(|e| doubled.iter().any(|id| e["data"]["event"] == id.as_str()))
            .collect();
        panic!("effects doubled: {raw:#?}");
    }
    let strays: Vec<_> = all
        .keys()
        .filter(|id| *id != "first" && !acked.contains(id) && !sent.unknown.contains(id))
        .collect();
    assert!(
        strays.is_empty(),
        "effects of inputs never sent: {strays:?}"
    );
    assert!(
        wait_for(Duration::from_secs(30), || total(&b)
            == effects(&b).len() as u64),
        "version-probe counted {} effects in state, the log has {}",
        total(&b),
        effects(&b).len()
    );
    let labels: BTreeSet<&str> = all.values().flatten().map(String::as_str).collect();
    assert_eq!(labels, BTreeSet::from(["A", "B"]), "both daemons worked");
    eprintln!(
        "acked {}, unknown outcome {}, effects {}, takeover after kill -9 {takeover:?}",
        acked.len(),
        sent.unknown.len(),
        all.len()
    );
}
