//! Daemon startup with 20 plugins: from spawning `evhost run` to its
//! "listening on" line (printed after the plugin directory is loaded), with
//! an empty component cache (every plugin compiled) and with a warm one.
//!
//! The 20 plugins are `bench-parse` with its name patched (same length) to
//! `bench-pa000`..`bench-pa019`: 20 distinct plugins — a directory may not hold
//! two files describing the same plugin — of identical code and size.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::Samples;
use crate::daemon::Daemon;

pub const PLUGINS: usize = 20;
const REPEATS: usize = 3;

fn variants(dir: &Path) {
    std::fs::create_dir_all(dir).expect("plugin dir");
    let base = std::fs::read(crate::support::plugin("bench-parse")).expect("bench-parse");
    let from = b"bench-parse";
    for i in 0..PLUGINS {
        let to = format!("bench-pa{i:03}");
        assert_eq!(to.len(), from.len());
        let mut bytes = base.clone();
        let mut hits = 0;
        let mut at = 0;
        while let Some(pos) = bytes[at..].windows(from.len()).position(|w| w == from) {
            bytes[at + pos..at + pos + from.len()].copy_from_slice(to.as_bytes());
            at += pos + from.len();
            hits += 1;
        }
        assert!(hits > 0, "the plugin name is not in bench-parse.wasm");
        std::fs::write(dir.join(format!("{to}.wasm")), bytes).expect("write variant");
    }
}

struct Start {
    time: Duration,
    rss: Option<u64>,
}

fn start_once(data: &Path, plugins: &Path, expect_loaded: usize) -> Start {
    let d = Daemon::start(data, plugins);
    let loaded = d
        .startup_lines
        .iter()
        .filter(|l| l.starts_with("loaded plugin"))
        .count();
    assert_eq!(
        loaded, expect_loaded,
        "plugins loaded at start: {:#?}",
        d.startup_lines
    );
    let s = Start {
        time: d.startup,
        rss: d.peak_rss(),
    };
    d.stop();
    s
}

fn summary(starts: Vec<Start>) -> Value {
    let rss = starts.iter().filter_map(|s| s.rss).max();
    let times = Samples::new(starts.iter().map(|s| s.time).collect());
    json!({
        "median_ms": times.pct(0.5).as_secs_f64() * 1e3,
        "min_ms": times.pct(0.0).as_secs_f64() * 1e3,
        "max_ms": times.max().as_secs_f64() * 1e3,
        "runs": times.len(),
        "peak_rss": rss,
    })
}

pub fn run() -> Value {
    let dir = crate::scratch_dir();
    let plugins = dir.path().join("plugins");
    variants(&plugins);
    let empty = dir.path().join("no-plugins");
    std::fs::create_dir_all(&empty).expect("dir");

    let none = (0..REPEATS)
        .map(|i| start_once(&dir.path().join(format!("none-{i}")), &empty, 0))
        .collect();
    let cold = (0..REPEATS)
        .map(|i| start_once(&dir.path().join(format!("cold-{i}")), &plugins, PLUGINS))
        .collect();
    // The first start fills the cache; the measured ones find every component there.
    let warm_data = dir.path().join("warm");
    start_once(&warm_data, &plugins, PLUGINS);
    let cached = (0..REPEATS)
        .map(|_| start_once(&warm_data, &plugins, PLUGINS))
        .collect();
    json!({
        "plugins": PLUGINS,
        "no_plugins": summary(none),
        "cold": summary(cold),
        "cached": summary(cached),
    })
}
