//! Hot reload of the watched plugin directory, against the real `evhost run`
//! binary and the real `version-probe` component built from `plugins/`.
//!
//! `version-probe` emits `probe.handled` (with the handled event's id,
//! position and the deployment's `label` config value) and counts calls in its
//! state, without deduplication, so a lost or doubly committed event shows.
//! Distinct versions of the same component are made by appending a custom
//! section (the code stays the same, the digest changes).

mod daemon_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use daemon_support::{Daemon, Options};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DEADLINE: Duration = Duration::from_secs(60);
const PROBE: &str = "version-probe";
const BATCH: &str = "application/cloudevents-batch+json";

/// The probe's sidecar: state always, `emit` only when `emit`, and a label.
fn sidecar(label: &str, emit: bool) -> String {
    let emit = if emit { "emit = [\"probe.*\"]\n" } else { "" };
    format!("[grants]\nstate = true\n{emit}\n[config]\nlabel = \"{label}\"\n")
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The probe component with a custom section `tag` appended: same code, another digest.
fn variant(tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(support::plugin(PROBE)).unwrap();
    let name = b"evhost-test-variant";
    let mut payload = Vec::new();
    leb128(&mut payload, name.len());
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    bytes.push(0);
    leb128(&mut bytes, payload.len());
    bytes.extend(payload);
    bytes
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` the way editors and deploy tools do: a temporary file, then
/// a rename over `NAME.EXT`.
fn install(dir: &Path, file: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{file}.part"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn install_probe(dir: &Path, bytes: &[u8]) {
    install(dir, &format!("{PROBE}.wasm"), bytes);
}

fn set_sidecar(dir: &Path, text: &str) {
    install(dir, &format!("{PROBE}.toml"), text.as_bytes());
}

struct Setup {
    _root: tempfile::TempDir,
    dir: PathBuf,
    daemon: Daemon,
}

/// A daemon with a plugin directory holding the probe (`wasm`, `sidecar`) and
/// `partitions` partitions per new topic.
fn start(wasm: &[u8], sidecar: &str, partitions: u32) -> Setup {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    install_probe(&dir, wasm);
    set_sidecar(&dir, sidecar);
    let config = root.path().join("evhost.toml");
    std::fs::write(
        &config,
        format!("[log]\ndefault-partitions = {partitions}\n"),
    )
    .unwrap();
    let daemon = Daemon::start(
        &root.path().join("data"),
        Options {
            plugins: Some(dir.clone()),
            config: Some(config),
            ..Options::default()
        },
    );
    Setup {
        _root: root,
        dir,
        daemon,
    }
}

fn plugin_entries(d: &Daemon) -> Vec<Value> {
    let (status, body) = d.get("/v1/plugins");
    assert_eq!(status, 200, "{body}");
    body["plugins"].as_array().unwrap().clone()
}

/// The running (or paused) entry of `name`.
fn running(d: &Daemon, name: &str) -> Option<Value> {
    plugin_entries(d)
        .into_iter()
        .find(|p| p["name"] == name && p["state"] != "failed")
}

/// The load failure recorded for `name`'s file: an entry of its own when no
/// version runs, else the running entry's `pending_error` (as `last_error`).
fn failed(d: &Daemon, name: &str) -> Option<Value> {
    let entries = plugin_entries(d);
    let own = entries
        .iter()
        .find(|p| p["name"] == name && p["state"] == "failed")
        .cloned();
    own.or_else(|| {
        let pending = entries
            .iter()
            .find(|p| p["name"] == name && p["state"] != "failed")?
            .get("pending_error")?
            .clone();
        (!pending.is_null()).then(|| {
            serde_json::json!({
                "state": "failed", "file": pending["file"], "last_error": pending["message"],
            })
        })
    })
}

fn load_number(d: &Daemon) -> Option<u64> {
    running(d, PROBE).and_then(|p| p["load_number"].as_u64())
}

/// Waits until the probe runs a load number other than `old`; returns it.
fn wait_for_new_load(d: &Daemon, old: u64) -> u64 {
    let mut new = None;
    assert!(
        support::wait_for(DEADLINE, || {
            new = load_number(d).filter(|n| *n != old);
            new.is_some()
        }),
        "no new version replaced load {old}: {:?}\n{}",
        plugin_entries(d),
        d.stderr().join("\n")
    );
    new.unwrap()
}

fn metric(d: &Daemon, name: &str) -> u64 {
    let (status, body) = d.get("/metrics");
    assert_eq!(status, 200);
    let text = body.as_str().unwrap().to_owned();
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Publishes `ids` as `work.item` events in one batch request.
fn publish(d: &Daemon, ids: &[String]) {
    let events: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "specversion": "1.0", "type": "work.item", "source": "test",
                "id": id, "subject": format!("s-{}", i % 16), "data": {"n": i},
            })
        })
        .collect();
    let (status, body) = d.post(
        "/v1/topics/work-events/events",
        BATCH,
        &Value::Array(events).to_string(),
    );
    assert_eq!(status, 201, "{body}");
}

#[derive(Debug, Clone)]
struct Handled {
    event: String,
    partition: u64,
    offset: u64,
    label: String,
}

/// Every `probe.handled` event in the log.
fn handled(d: &Daemon) -> Vec<Handled> {
    let (_, topics) = d.get("/v1/topics");
    let partitions = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "probe-events")
        .map_or(0, |t| t["partitions"].as_array().unwrap().len() as u32);
    let mut out = Vec::new();
    for p in 0..partitions {
        for e in d.read_all("probe-events", p) {
            let data = &e["data"];
            out.push(Handled {
                event: data["event"].as_str().unwrap().to_owned(),
                partition: data["partition"].as_u64().unwrap(),
                offset: data["offset"].as_u64().unwrap(),
                label: data["label"].as_str().unwrap().to_owned(),
            });
        }
    }
    out
}

fn label_of(d: &Daemon, id: &str) -> Option<String> {
    handled(d)
        .into_iter()
        .find(|h| h.event == id)
        .map(|h| h.label)
}

/// Publishes one event and waits until the probe handled it; returns the label.
fn handle_one(d: &Daemon, id: &str) -> String {
    publish(d, &[id.to_owned()]);
    let mut label = None;
    assert!(
        support::wait_for(DEADLINE, || {
            label = label_of(d, id);
            label.is_some()
        }),
        "{id} was not handled: {:?}",
        plugin_entries(d)
    );
    label.unwrap()
}

fn dead_letters(d: &Daemon) -> Vec<Value> {
    let (status, body) = d.get(&format!("/v1/dlq?plugin={PROBE}"));
    assert_eq!(status, 200, "{body}");
    body["dead_letters"].as_array().unwrap().clone()
}

/// The probe's `count/total` after the daemon stopped, read from its log file.
fn count_total(data: &Path) -> u64 {
    use evhost::log::{EventLog, LogConfig, RedbLog};
    let log = RedbLog::open(data.join("log.redb"), LogConfig::default()).unwrap();
    let raw = log.state_get(PROBE, "count/total").wait().unwrap();
    raw.map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap())
}

#[test]
fn replacing_a_plugin_under_load_hands_every_event_to_exactly_one_version() {
    const TOTAL_AT_LEAST: usize = 3000;
    const BATCH_EVENTS: usize = 50;
    let s = start(&variant("one"), &sidecar("v1", true), 4);
    let d = Arc::new(s.daemon);
    let first = wait_for_new_load(&d, 0);

    // The producer publishes without pause until it has sent enough events
    // *and* a few batches after the new version became visible.
    let published = Arc::new(AtomicUsize::new(0));
    let swapped = Arc::new(AtomicBool::new(false));
    let producer = {
        let (d, published, swapped) = (d.clone(), published.clone(), swapped.clone());
        std::thread::spawn(move || {
            let mut after_swap: Vec<String> = Vec::new();
            let mut batch = 0;
            loop {
                let seen_swap = swapped.load(Ordering::SeqCst);
                let ids: Vec<String> = (0..BATCH_EVENTS)
                    .map(|i| format!("e-{batch}-{i}"))
                    .collect();
                publish(&d, &ids);
                if seen_swap {
                    after_swap.extend(ids);
                }
                batch += 1;
                let total = published.fetch_add(BATCH_EVENTS, Ordering::SeqCst) + BATCH_EVENTS;
                if total >= TOTAL_AT_LEAST && after_swap.len() >= 10 * BATCH_EVENTS {
                    return (total, after_swap);
                }
            }
        })
    };
    assert!(support::wait_for(DEADLINE, || published
        .load(Ordering::SeqCst)
        >= TOTAL_AT_LEAST / 3));
    // Sidecar and component replaced together, as a deploy would.
    let v2 = variant("two");
    set_sidecar(&s.dir, &sidecar("v2", true));
    install_probe(&s.dir, &v2);
    let second = wait_for_new_load(&d, first);
    swapped.store(true, Ordering::SeqCst);
    let at_swap = published.load(Ordering::SeqCst);
    let (total, after_swap) = producer.join().unwrap();
    assert!(
        at_swap < total,
        "events must still be flowing after the swap"
    );

    let mut all = Vec::new();
    assert!(
        support::wait_for(DEADLINE, || {
            all = handled(&d);
            all.len() >= total && running(&d, PROBE).is_some_and(|p| p["lag"] == 0)
        }),
        "handled {} of {total}: {:?}",
        all.len(),
        running(&d, PROBE)
    );
    let status = running(&d, PROBE).unwrap();
    assert_eq!(status["load_number"], second);
    assert_eq!(status["digest"], digest(&v2));

    // Exactly once, by exactly one version.
    let mut seen = BTreeMap::new();
    for h in &all {
        assert!(
            seen.insert(h.event.clone(), h.label.clone()).is_none(),
            "{} handled twice",
            h.event
        );
    }
    assert_eq!(all.len(), total, "every event handled once");
    // Per partition, in offset order, the old version hands over once and for all.
    let mut by_partition: BTreeMap<u64, Vec<&Handled>> = BTreeMap::new();
    for h in &all {
        by_partition.entry(h.partition).or_default().push(h);
    }
    for (p, mut hs) in by_partition {
        hs.sort_by_key(|h| h.offset);
        let switch = hs.iter().position(|h| h.label == "v2").unwrap_or(hs.len());
        assert!(
            hs[switch..].iter().all(|h| h.label == "v2"),
            "partition {p}: an event after the switch was handled by the old version"
        );
    }
    let labels: BTreeSet<&str> = all.iter().map(|h| h.label.as_str()).collect();
    assert_eq!(labels, BTreeSet::from(["v1", "v2"]));
    // Everything published after the new version was visible ran on it.
    for id in &after_swap {
        assert_eq!(seen[id], "v2", "{id} was published after the swap");
    }

    let data = d.data.clone();
    let d = Arc::into_inner(d).expect("the producer is done");
    d.stop();
    assert_eq!(
        count_total(&data),
        total as u64,
        "the state counter saw every event exactly once"
    );
}

#[test]
fn a_broken_file_leaves_the_old_version_serving_and_a_fixed_one_recovers() {
    let v1 = variant("one");
    let s = start(&v1, &sidecar("v1", true), 1);
    let d = &s.daemon;
    let first = wait_for_new_load(d, 0);
    assert_eq!(handle_one(d, "before"), "v1");
    let failures_before = metric(d, "evhost_plugin_load_failures");

    let mut noise = vec![0u8; 4096];
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let wrong_world = wat::parse_str("(component)").unwrap();
    let good = variant("fixed");
    let half = good[..good.len() / 2].to_vec();
    let cases: [(&str, &[u8], &str); 3] = [
        ("random bytes", &noise, "is not a WebAssembly file"),
        ("wrong world", &wrong_world, "does not implement the world"),
        ("half-written copy", &half, "is truncated"),
    ];
    for (i, (what, bytes, expected)) in cases.into_iter().enumerate() {
        install_probe(&s.dir, bytes);
        let mut error = String::new();
        assert!(
            support::wait_for(DEADLINE, || {
                error = failed(d, PROBE)
                    .and_then(|f| f["last_error"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                error.contains(expected)
            }),
            "{what}: expected an error containing {expected:?}, got {error:?}"
        );
        assert!(error.contains("version-probe.wasm"), "{what}: {error}");
        let status = running(d, PROBE).expect("the old version keeps running");
        assert_eq!(status["load_number"], first, "{what}");
        assert_eq!(status["digest"], digest(&v1), "{what}");
        assert_eq!(handle_one(d, &format!("during-{i}")), "v1", "{what}");
        assert!(
            d.stderr().iter().any(|l| l.contains(expected)),
            "{what}: the error is logged"
        );
    }
    assert_eq!(
        metric(d, "evhost_plugin_load_failures"),
        failures_before + 3
    );

    set_sidecar(&s.dir, &sidecar("v2", true));
    install_probe(&s.dir, &good);
    wait_for_new_load(d, first);
    assert!(
        support::wait_for(DEADLINE, || failed(d, PROBE).is_none()),
        "the failure is cleared by the successful reload"
    );
    assert_eq!(running(d, PROBE).unwrap()["digest"], digest(&good));
    assert_eq!(handle_one(d, "after"), "v2");
}

#[test]
fn a_slow_copy_is_never_loaded_half_written() {
    let s = start(&variant("one"), &sidecar("v1", true), 1);
    let d = &s.daemon;
    let first = wait_for_new_load(d, 0);
    let failures_before = metric(d, "evhost_plugin_load_failures");

    // `cp` of a large file over a slow disk: the file is rewritten in place,
    // with pauses longer than the watcher's debounce between the chunks.
    let next = variant("two");
    let mut f = std::fs::File::create(s.dir.join(format!("{PROBE}.wasm"))).unwrap();
    for chunk in next.chunks(next.len() / 6 + 1) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(250));
        assert!(failed(d, PROBE).is_none(), "{:?}", failed(d, PROBE));
        assert_eq!(
            load_number(d),
            Some(first),
            "nothing new is deployed mid-copy"
        );
    }
    drop(f);
    wait_for_new_load(d, first);
    assert_eq!(running(d, PROBE).unwrap()["digest"], digest(&next));
    assert_eq!(metric(d, "evhost_plugin_load_failures"), failures_before);
    assert_eq!(handle_one(d, "after-copy"), "v1");
}

#[test]
fn deleting_a_plugin_stops_it_and_re_adding_resumes_from_its_offsets() {
    let probe = variant("one");
    // Without the emit grant the first event is parked: a dead letter to keep.
    let s = start(&probe, &sidecar("v1", false), 2);
    let d = &s.daemon;
    let first = wait_for_new_load(d, 0);
    publish(d, &["parked".to_owned()]);
    assert!(support::wait_for(DEADLINE, || dead_letters(d).len() == 1));

    // A sidecar change reloads like a component change.
    set_sidecar(&s.dir, &sidecar("v1", true));
    wait_for_new_load(d, first);
    let ids: Vec<String> = (0..100).map(|i| format!("a-{i}")).collect();
    publish(d, &ids);
    assert!(support::wait_for(DEADLINE, || handled(d).len() == 100));

    std::fs::remove_file(s.dir.join(format!("{PROBE}.wasm"))).unwrap();
    assert!(
        support::wait_for(DEADLINE, || plugin_entries(d)
            .iter()
            .all(|p| p["name"] != PROBE)),
        "the plugin is gone: {:?}",
        plugin_entries(d)
    );
    assert_eq!(dead_letters(d).len(), 1, "dead letters are kept");
    let later: Vec<String> = (0..50).map(|i| format!("b-{i}")).collect();
    publish(d, &later);

    install_probe(&s.dir, &probe);
    assert!(support::wait_for(DEADLINE, || running(d, PROBE)
        .is_some_and(|p| p["lag"] == 0 && p["processed"] == 50)));
    let all = handled(d);
    let ids: BTreeSet<&str> = all.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(all.len(), 150, "nothing handled twice, nothing skipped");
    assert_eq!(ids.len(), 150);
    assert!(!ids.contains("parked"), "the parked event is not re-run");
    assert_eq!(dead_letters(d).len(), 1);
}

#[test]
fn sidecar_errors_name_the_key_and_ungranted_capabilities_fail_at_call_time() {
    let s = start(&variant("one"), "timeot = \"1s\"\n", 1);
    let d = &s.daemon;
    let mut error = String::new();
    assert!(support::wait_for(DEADLINE, || {
        error = failed(d, PROBE)
            .and_then(|f| f["last_error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        !error.is_empty()
    }));
    assert!(error.contains("timeot"), "{error}");
    assert!(error.contains("version-probe.toml"), "{error}");
    assert!(running(d, PROBE).is_none());

    // Fixed, but without the emit grant: loads, and the emit fails at call time.
    set_sidecar(&s.dir, &sidecar("v1", false));
    let load = wait_for_new_load(d, 0);
    assert!(failed(d, PROBE).is_none());
    publish(d, &["needs-emit".to_owned()]);
    assert!(support::wait_for(DEADLINE, || dead_letters(d).len() == 1));
    let dl = &dead_letters(d)[0];
    assert_eq!(dl["error_kind"], "rejected");
    let message = dl["message"].as_str().unwrap();
    assert!(
        message.contains("may not emit type `probe.handled`"),
        "{message}"
    );
    // It says where to grant it, and a refused grant is not retried.
    let sidecar_file = s.dir.join(format!("{PROBE}.toml"));
    assert!(
        message.contains(&format!(
            "add \"probe.handled\" (or a pattern matching it) to emit under [grants] in {}",
            sidecar_file.display()
        )),
        "{message}"
    );
    assert_eq!(dl["attempts"], 1, "{dl}");
    assert_eq!(dl["plugin_version"], format!("0.1.0 (load {load})"));

    // A wrongly typed value is named too, and the running version stays.
    set_sidecar(&s.dir, "fuel = \"lots\"\n");
    assert!(support::wait_for(DEADLINE, || failed(d, PROBE)
        .and_then(|f| f["last_error"].as_str().map(str::to_owned))
        .is_some_and(|e| e.contains("fuel"))));
    assert_eq!(load_number(d), Some(load));

    // Granted: the replay of the dead letter now succeeds.
    set_sidecar(&s.dir, &sidecar("v2", true));
    wait_for_new_load(d, load);
    let id = dl["id"].as_u64().unwrap();
    let (status, body) = d.post(&format!("/v1/dlq/{id}/replay"), "application/json", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(label_of(d, "needs-emit").as_deref(), Some("v2"));
    assert!(dead_letters(d).is_empty());

    // The refused call's state write was not committed; the replay's was.
    let data = d.data.clone();
    s.daemon.stop();
    assert_eq!(count_total(&data), 1);
}

#[test]
fn a_second_file_for_a_running_plugin_waits_until_the_first_is_gone() {
    let s = start(&variant("one"), &sidecar("v1", true), 1);
    let d = &s.daemon;
    let first = wait_for_new_load(d, 0);
    let copy = variant("copy");
    install(&s.dir, "copy.toml", sidecar("copy", true).as_bytes());
    install(&s.dir, "copy.wasm", &copy);
    let mut error = String::new();
    assert!(support::wait_for(DEADLINE, || {
        error = failed(d, "copy")
            .and_then(|f| f["last_error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        !error.is_empty()
    }));
    assert!(
        error.contains("describes plugin `version-probe`, which is already loaded from"),
        "{error}"
    );
    assert_eq!(load_number(d), Some(first));

    // The first file goes: the plugin moves to the other file.
    std::fs::remove_file(s.dir.join(format!("{PROBE}.wasm"))).unwrap();
    assert!(
        support::wait_for(DEADLINE, || running(d, PROBE)
            .is_some_and(|p| p["digest"] == digest(&copy))
            && failed(d, "copy").is_none()),
        "{:?}",
        plugin_entries(d)
    );
    assert_eq!(handle_one(d, "moved"), "copy");
}
