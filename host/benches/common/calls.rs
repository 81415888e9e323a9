//! Per-call cost of the Wasm boundary: `handle` on a live instance, and a
//! fresh instantiation + `handle` + drop, for a handler that returns at once
//! (`faulty.done`); also the component's load time, compiled and from the cache.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::event::{Event, Position, StoredEvent};
use evhost::runtime::{InstanceSettings, Runtime, RuntimeConfig};

use super::Samples;

pub struct CallCosts {
    pub component_bytes: u64,
    /// Compile + check + describe, empty cache (10 loads).
    pub load_compiled: Samples,
    /// The same from the precompiled cache (10 loads).
    pub load_cached: Samples,
    pub live: Samples,
    pub fresh: Samples,
}

/// Measures `live_calls` calls on one live instance and `fresh_calls` fresh
/// instantiations, each timed on its own, of the `faulty` component at `path`.
pub fn measure(path: &Path, live_calls: usize, fresh_calls: usize) -> CallCosts {
    let component_bytes = std::fs::metadata(path).expect("component").len();
    let cache = tempfile::tempdir().expect("cache dir");
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..Default::default()
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..10 {
        for entry in std::fs::read_dir(cache.path()).expect("cache dir") {
            std::fs::remove_file(entry.expect("entry").path()).expect("clear cache");
        }
        let rt = Runtime::new(config.clone()).expect("runtime");
        let t = Instant::now();
        rt.load_file(path).expect("load");
        cold.push(t.elapsed());
        let rt = Runtime::new(config.clone()).expect("runtime");
        let t = Instant::now();
        rt.load_file(path).expect("load");
        warm.push(t.elapsed());
    }

    let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let plugin = rt.load_file(path).expect("load");
    let event = Arc::new(trivial_event());

    let mut live = rt.instance(plugin.clone(), InstanceSettings::default());
    for _ in 0..1000 {
        live.call(&event, 1).expect("call");
    }
    let mut live_times = Vec::with_capacity(live_calls);
    for _ in 0..live_calls {
        let t = Instant::now();
        live.call(&event, 1).expect("call");
        live_times.push(t.elapsed());
    }

    let mut fresh_times = Vec::with_capacity(fresh_calls);
    for _ in 0..fresh_calls {
        let t = Instant::now();
        let mut instance = rt.instance(plugin.clone(), InstanceSettings::default());
        instance.call(&event, 1).expect("call");
        drop(instance);
        fresh_times.push(t.elapsed());
    }
    CallCosts {
        component_bytes,
        load_compiled: Samples::new(cold),
        load_cached: Samples::new(warm),
        live: Samples::new(live_times),
        fresh: Samples::new(fresh_times),
    }
}

/// A `faulty.done` event: the plugin returns `Ok` at once.
fn trivial_event() -> StoredEvent {
    StoredEvent {
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
    }
}

/// Shorthand for printing: nanosecond durations as µs with two decimals.
pub fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}
