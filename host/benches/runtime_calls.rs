//! Per-call cost of the Wasm boundary: `handle` on a live instance, and a fresh
//! instantiation + `handle`, for a handler that returns at once
//! (`faulty.done`). Also component load times, cold and from the cache.
//!
//! Run: `cargo bench -p evhost --bench runtime_calls` (add `-- --calls N` to
//! change the number of live calls; default 200000).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::event::{Event, Position, StoredEvent};
use evhost::runtime::{InstanceSettings, Runtime, RuntimeConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let calls: usize = std::env::args()
        .skip_while(|a| a != "--calls")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let path = support::plugin("faulty");
    let size = std::fs::metadata(&path).unwrap().len();

    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..Default::default()
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..10 {
        for entry in std::fs::read_dir(cache.path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let rt = Runtime::new(config.clone()).unwrap();
        let t = Instant::now();
        rt.load_file(&path).unwrap();
        cold.push(t.elapsed());
        let rt = Runtime::new(config.clone()).unwrap();
        let t = Instant::now();
        rt.load_file(&path).unwrap();
        warm.push(t.elapsed());
    }

    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let plugin = rt.load_file(&path).unwrap();
    let event = Arc::new(StoredEvent {
        position: Position {
            topic: "faulty-events".into(),
            partition: 0,
            offset: 0,
        },
        event: Event {
            id: "bench-1".into(),
            source: "bench".into(),
            specversion: "1.0".into(),
            ty: "faulty.done".into(),
            subject: Some("k".into()),
            time: "2026-11-26T00:00:00Z".into(),
            datacontenttype: None,
            dataschema: None,
            data: Some(br#"{"n":1}"#.to_vec()),
            correlationid: "bench-1".into(),
            causationid: None,
            actor: None,
            extensions: BTreeMap::new(),
            stream: None,
            streamversion: None,
        },
    });

    let mut live = rt.instance(plugin.clone(), InstanceSettings::default());
    for _ in 0..1000 {
        live.call(&event, 1).unwrap();
    }
    let mut live_times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        live.call(&event, 1).unwrap();
        live_times.push(t.elapsed());
    }

    let fresh_calls = (calls / 10).max(1000);
    let mut fresh_times = Vec::with_capacity(fresh_calls);
    for _ in 0..fresh_calls {
        let t = Instant::now();
        let mut instance = rt.instance(plugin.clone(), InstanceSettings::default());
        instance.call(&event, 1).unwrap();
        drop(instance);
        fresh_times.push(t.elapsed());
    }

    println!("faulty.wasm: {size} bytes");
    println!("| what | median | p99 | n |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| load, compile (cold) | {:?} | | {} |",
        median(cold.clone()),
        cold.len()
    );
    println!(
        "| load, from cache | {:?} | | {} |",
        median(warm.clone()),
        warm.len()
    );
    println!(
        "| handle on a live instance | {:?} | {:?} | {calls} |",
        median(live_times.clone()),
        pct(&mut live_times, 0.99)
    );
    println!(
        "| fresh instantiate + handle + drop | {:?} | {:?} | {fresh_calls} |",
        median(fresh_times.clone()),
        pct(&mut fresh_times, 0.99)
    );
}
