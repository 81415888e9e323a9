//! Hot-reload latency: time from the rename that replaces a plugin file to the
//! first event handled (committed) by the new version, while events flow.
//!
//! Real parts throughout: the redb log, the dispatcher, the loader and the
//! directory watcher (notify + debounce), and the `version-probe` component.
//! A producer appends one `work.item` event about every millisecond; each swap
//! writes a sidecar with a fresh `label` and renames a new component into
//! place; the clock stops when a `probe.handled` event with that label is
//! committed. Two modes: every swap a component never seen before (compiled),
//! and swaps alternating between two components already in the precompiled
//! cache (deserialized). Both at the daemon's default debounce and at 10 ms,
//! to show what is debounce and what is work.
//!
//! Run: `cargo bench -p evhost --bench reload` (`-- --swaps N`, default 20).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use evhost::dispatch::{DispatchConfig, Dispatcher};
use evhost::event::{self, Event};
use evhost::log::{EventLog, LogConfig, NewEvent, RedbLog};
use evhost::plugins::{DirWatcher, Loader, WatchConfig};
use evhost::runtime::{Runtime, RuntimeConfig};

const PROBE: &str = "version-probe";
const WARM_UP: usize = 2;

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

/// The probe with a custom section appended: same code, another digest.
fn variant(base: &[u8], tag: &str) -> Vec<u8> {
    let name = b"evhost-bench-variant";
    let mut payload = Vec::new();
    leb128(&mut payload, name.len());
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut bytes = base.to_vec();
    bytes.push(0);
    leb128(&mut bytes, payload.len());
    bytes.extend(payload);
    bytes
}

fn write_then_rename(dir: &Path, file: &str, bytes: &[u8]) -> impl FnOnce() -> Instant + use<> {
    let tmp = dir.join(format!(".{file}.part"));
    std::fs::write(&tmp, bytes).unwrap();
    let to = dir.join(file);
    move || {
        let t = Instant::now();
        std::fs::rename(&tmp, &to).unwrap();
        t
    }
}

fn sidecar(label: &str) -> String {
    format!("[grants]\nstate = true\nemit = [\"probe.*\"]\n[config]\nlabel = \"{label}\"\n")
}

fn work_event() -> Event {
    let id = event::new_event_id();
    Event {
        id: id.clone(),
        source: "bench".into(),
        specversion: "1.0".into(),
        ty: "work.item".into(),
        subject: Some("s".into()),
        time: event::now_rfc3339(),
        datacontenttype: None,
        dataschema: None,
        data: None,
        correlationid: id,
        causationid: None,
        actor: None,
        extensions: BTreeMap::new(),
        stream: None,
        streamversion: None,
    }
}

/// Waits for a committed `probe.handled` with `label`, reading from `*from` on.
async fn wait_for_label(log: &Arc<dyn EventLog>, from: &mut u64, label: &str) -> Instant {
    loop {
        // The topic appears with the first emit.
        let batch = log
            .read("probe-events", 0, *from, 1000)
            .await
            .unwrap_or_default();
        for e in &batch {
            *from = e.position.offset + 1;
            let data: serde_json::Value =
                serde_json::from_slice(e.event.data.as_deref().unwrap_or(b"null")).unwrap();
            if data["label"] == label {
                return Instant::now();
            }
        }
        if batch.is_empty() {
            match log.watch("probe-events", 0).await {
                Ok(w) => {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(50), w.wait_past(*from)).await;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
}

struct Run {
    times: Vec<Duration>,
    cache_hits: u64,
    cache_misses: u64,
}

async fn run(base: &[u8], debounce: Duration, cached: bool, swaps: usize) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let log: Arc<dyn EventLog> =
        Arc::new(RedbLog::open(tmp.path().join("log.redb"), LogConfig::default()).unwrap());
    let runtime = Arc::new(
        Runtime::new(RuntimeConfig {
            cache_dir: Some(tmp.path().join("cache")),
            ..RuntimeConfig::default()
        })
        .unwrap(),
    );
    let dispatcher = Dispatcher::new(log.clone(), runtime.clone(), DispatchConfig::default());
    let loader = Arc::new(Loader::new(runtime.clone(), dispatcher.clone()));

    write_then_rename(&dir, &format!("{PROBE}.toml"), sidecar("start").as_bytes())();
    write_then_rename(&dir, &format!("{PROBE}.wasm"), &variant(base, "start"))();
    let watcher = DirWatcher::new(
        &dir,
        WatchConfig {
            debounce,
            ..WatchConfig::default()
        },
    )
    .unwrap();
    loader
        .deploy_file(&dir.join(format!("{PROBE}.wasm")))
        .await
        .unwrap();
    let watching = watcher.spawn(loader.clone());

    let producing = log.clone();
    let producer = tokio::spawn(async move {
        loop {
            producing
                .append(vec![NewEvent::to_topic("work-events", work_event())])
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut from = 0;
    wait_for_label(&log, &mut from, "start").await;

    let stats = runtime.cache_stats();
    let mut times = Vec::new();
    let (mut hits, mut misses) = (0, 0);
    for i in 0..swaps + WARM_UP {
        let label = format!("swap-{i}");
        let tag = if cached {
            ["a", "b"][i % 2].to_owned()
        } else {
            format!("cold-{i}")
        };
        if i == WARM_UP {
            hits = stats.hits.load(Ordering::Relaxed);
            misses = stats.misses.load(Ordering::Relaxed);
        }
        write_then_rename(&dir, &format!("{PROBE}.toml"), sidecar(&label).as_bytes())();
        let rename = write_then_rename(&dir, &format!("{PROBE}.wasm"), &variant(base, &tag));
        let t0 = rename();
        let t1 = wait_for_label(&log, &mut from, &label).await;
        if i >= WARM_UP {
            times.push(t1 - t0);
        }
    }
    let cache_hits = stats.hits.load(Ordering::Relaxed) - hits;
    let cache_misses = stats.misses.load(Ordering::Relaxed) - misses;
    producer.abort();
    watching.stop().await;
    dispatcher.shutdown(Duration::from_secs(5)).await;
    Run {
        times,
        cache_hits,
        cache_misses,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let swaps: usize = std::env::args()
        .skip_while(|a| a != "--swaps")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let base = std::fs::read(support::plugin(PROBE)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let default = WatchConfig::default().debounce;
    println!(
        "reload latency: rename of the new component -> first event committed by it ({swaps} swaps each, {WARM_UP} warm-up swaps not counted)"
    );
    println!(
        "{:<10} {:<26} {:>10} {:>10} {:>10} {:>14}",
        "debounce", "component", "median", "min", "max", "cache hit/miss"
    );
    for debounce in [default, Duration::from_millis(10)] {
        for cached in [false, true] {
            let mut r = rt.block_on(run(&base, debounce, cached, swaps));
            r.times.sort();
            let what = if cached {
                "in the precompiled cache"
            } else {
                "new (compiled)"
            };
            println!(
                "{:<10} {:<26} {:>10} {:>10} {:>10} {:>14}",
                format!("{} ms", debounce.as_millis()),
                what,
                ms(r.times[r.times.len() / 2]),
                ms(r.times[0]),
                ms(r.times[r.times.len() - 1]),
                format!("{}/{}", r.cache_hits, r.cache_misses),
            );
        }
    }
}
