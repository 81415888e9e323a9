//! The benchmark suite: evhost against NATS JetStream and against native code,
//! side by side in one run, one table on stdout plus a JSON file.
//!
//! `cargo bench -p evhost --bench suite` — see `BENCHMARKS.md` for what each
//! number means. Options (after `--`): `--quick` (shorter runs, for a smoke
//! test), `--secs S` (seconds per throughput/latency run, default 5),
//! `--only publish,dispatch,latency,startup,reload,calls`, `--json PATH`
//! (relative to the workspace root; default `target/benchmarks/latest.json`).
//!
//! Scenarios that run in-process (library publish, the JetStream client,
//! dispatch, per-call cost) run in a child process of this binary each
//! (`--child ...`), so each starts from a clean heap and reports its own peak
//! RSS; daemon scenarios read the daemon's `VmHWM`.
//!
//! # Layout
//! - `daemon`: start/stop `evhost run`, its startup time and peak RSS, HTTP helpers.
//! - `publish`: durable publish over HTTP, through the library, to JetStream
//!   (default settings and `sync_interval: always`).
//! - `dispatch`: Wasm vs native handler through the same dispatch pipeline.
//! - `latency`: publish → handler call at a fixed rate, through the daemon.
//! - `latency_jetstream`: the peer of `latency`, JetStream publish → pull consumer.
//! - `nats`: which `nats-server` the peer rows use; one running, killed on drop.
//! - `nats_log`: evhost on its NATS JetStream log (R1 and R3), beside the redb rows.
//! - `startup`: daemon start with 20 plugins, cold and from the cache.
//! - `hot_reload`: runs `benches/reload.rs` and reads its table.
//! - `report`: the table and the JSON file.

#[path = "../../../tests/support/mod.rs"]
mod support;

#[path = "../common/mod.rs"]
mod common;

mod daemon;
mod dispatch;
mod hot_reload;
mod latency;
mod latency_jetstream;
mod nats;
mod nats_log;
// The tests' nats-server harness; the suite uses its spawning half.
#[allow(dead_code)]
#[path = "../../../tests/support/nats_server.rs"]
mod nats_server;
// The tests' 3-node cluster, for the NATS-log R3 rows.
#[allow(dead_code)]
#[path = "../../../tests/support/nats_cluster.rs"]
mod nats_cluster;
mod publish;
mod report;
mod startup;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

/// A temp dir under cargo's target tmp dir (same disk as the build, not tmpfs).
pub fn scratch_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmp dir");
    tempfile::Builder::new()
        .prefix("evhost-bench-")
        .tempdir_in(base)
        .expect("scratch dir")
}

struct Options {
    secs: f64,
    dispatch_events: u64,
    calls: usize,
    swaps: usize,
    only: Option<Vec<String>>,
    json: PathBuf,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let quick = args.iter().any(|a| a == "--quick");
        Options {
            secs: value("--secs")
                .and_then(|s| s.parse().ok())
                .unwrap_or(if quick { 1.0 } else { 5.0 }),
            dispatch_events: if quick { 20_000 } else { 100_000 },
            calls: if quick { 10_000 } else { 100_000 },
            swaps: if quick { 4 } else { 10 },
            only: value("--only").map(|s| s.split(',').map(str::to_owned).collect()),
            // Relative to the workspace root (cargo runs benches in `host/`).
            json: support::workspace_root()
                .join(value("--json").unwrap_or_else(|| "target/benchmarks/latest.json".into())),
        }
    }

    fn wants(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == part))
    }
}

/// Runs `--child ARGS` of this binary and returns the JSON it reports.
fn child(args: &[&str]) -> Value {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .arg("--child")
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("RESULT "));
    match (out.status.success(), line) {
        (true, Some(line)) => serde_json::from_str(line).expect("child JSON"),
        _ => json!({"error": format!("child {args:?} failed: {} {stdout}", out.status)}),
    }
}

/// Runs an in-process scenario; a panic becomes an error row instead of
/// losing the whole table.
fn guarded(f: impl FnOnce() -> Value) -> Value {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| json!({"error": "the scenario panicked (its message is above)"}))
}

fn run_child(args: &[String]) {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let secs: f64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let result = match arg(0) {
        "disk" => publish::disk(),
        "publish-library" => publish::library(secs),
        "publish-nats" => publish::nats(secs, nats::Sync::parse(arg(1))),
        "publish-nats-log" => nats_log::publish(secs, arg(1)),
        "latency-nats" => latency_jetstream::run(arg(1).parse().expect("rate"), secs),
        "dispatch" => dispatch::run(
            arg(1),
            arg(2),
            arg(3).parse().expect("partitions"),
            arg(4).parse().expect("events"),
            if arg(5).is_empty() { "redb" } else { arg(5) },
        ),
        "calls" => {
            let n: usize = arg(1).parse().expect("calls");
            let c = common::calls::measure(&support::plugin("faulty"), n, n);
            let us = |s: &common::Samples, q| s.pct(q).as_secs_f64() * 1e6;
            json!({
                "component_bytes": c.component_bytes,
                "live_median_us": us(&c.live, 0.5),
                "live_p99_us": us(&c.live, 0.99),
                "live_calls": c.live.len(),
                "fresh_median_us": us(&c.fresh, 0.5),
                "fresh_p99_us": us(&c.fresh, 0.99),
                "fresh_calls": c.fresh.len(),
                "load_compiled_median_ms": c.load_compiled.pct(0.5).as_secs_f64() * 1e3,
                "load_cached_median_ms": c.load_cached.pct(0.5).as_secs_f64() * 1e3,
                "peak_rss": common::own_peak_rss(),
            })
        }
        other => panic!("unknown child scenario {other:?}"),
    };
    println!("RESULT {result}");
}

fn main() {
    // `cargo bench` passes `--bench`; unknown arguments are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        run_child(&args[i + 1..]);
        return;
    }
    let opts = Options::parse(&args);
    // Build the plugins before any clock starts.
    support::plugin("bench-parse");
    let started = Instant::now();
    let machine = report::machine();
    eprintln!(
        "evhost benchmark suite on {}",
        machine["summary"].as_str().unwrap_or("?")
    );
    // The JetStream peer: which server, found how (also in the JSON).
    let nats_server = match nats::find() {
        Ok(found) => {
            let mut line = format!(
                "JetStream peer: {} ({}, via {})",
                found.version,
                found.path.display(),
                found.from
            );
            if !found.is_modern() {
                line.push_str(&format!("; {}", found.old_note()));
            }
            (line, found.json())
        }
        Err(e) => (format!("JetStream peer: {e}"), json!({"error": e})),
    };
    eprintln!("{}", nats_server.0);
    let secs = opts.secs.to_string();
    let mut results = serde_json::Map::new();
    let step = |name: &str| eprintln!("[{:>5.1} s] {name} ...", started.elapsed().as_secs_f64());

    if opts.wants("publish") {
        step("disk");
        results.insert("disk".into(), child(&["disk"]));
    }
    if opts.wants("calls") {
        step("calls");
        results.insert("calls".into(), child(&["calls", &opts.calls.to_string()]));
    }
    if opts.wants("publish") {
        step("publish_http");
        results.insert("publish_http".into(), guarded(|| publish::http(opts.secs)));
        step("publish_library");
        results.insert(
            "publish_library".into(),
            child(&["publish-library", "--secs", &secs]),
        );
        step("publish_jetstream");
        results.insert(
            "publish_jetstream".into(),
            child(&["publish-nats", "default", "--secs", &secs]),
        );
        // One fsync per message: slow, but bounded by the same seconds.
        step("publish_jetstream_always");
        results.insert(
            "publish_jetstream_always".into(),
            child(&["publish-nats", "always", "--secs", &secs]),
        );
        // evhost on its NATS log: the same library workload as publish_library.
        for backend in ["nats-r1", "nats-r3"] {
            let key = format!("publish_library_{}", backend.replace('-', "_"));
            step(&key);
            results.insert(key, child(&["publish-nats-log", backend, "--secs", &secs]));
        }
    }
    if opts.wants("dispatch") {
        let events = opts.dispatch_events.to_string();
        for (mode, partitions) in [("parse", "1"), ("parse", "4"), ("echo", "4")] {
            // Two runs each, in the order native, wasm, wasm, native, so
            // neither side always runs first or last; the report takes the
            // better run of each (the one least disturbed by the machine).
            let mut runs: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
            for kind in ["native", "wasm", "wasm", "native"] {
                step(&format!("dispatch_{kind}_{mode}_p{partitions}"));
                let v = child(&["dispatch", kind, mode, partitions, &events]);
                runs.entry(kind).or_default().push(v);
            }
            for (kind, runs) in runs {
                let rate = |v: &Value| v["events_per_sec"].as_f64().unwrap_or(0.0);
                let mut best = runs
                    .iter()
                    .max_by(|a, b| rate(a).total_cmp(&rate(b)))
                    .cloned()
                    .unwrap_or(Value::Null);
                best["runs_events_per_sec"] =
                    runs.iter().map(|v| v["events_per_sec"].clone()).collect();
                results.insert(format!("dispatch_{kind}_{mode}_p{partitions}"), best);
            }
        }
        // The Wasm echo pipeline (a commit = offset + one emitted event per input) on the
        // NATS log, against dispatch_wasm_echo_p4 on redb above; fewer events, as each
        // commit is a network round trip.
        let nats_events = (opts.dispatch_events / 10).to_string();
        for backend in ["nats-r1", "nats-r3"] {
            let key = format!("dispatch_wasm_echo_p4_{}", backend.replace('-', "_"));
            step(&key);
            results.insert(
                key,
                child(&["dispatch", "wasm", "echo", "4", &nats_events, backend]),
            );
        }
    }
    if opts.wants("latency") {
        for rate in [5_000, 10_000] {
            step(&format!("latency_{rate}"));
            results.insert(
                format!("latency_{rate}"),
                guarded(|| latency::run(rate, opts.secs)),
            );
            step(&format!("latency_jetstream_{rate}"));
            results.insert(
                format!("latency_jetstream_{rate}"),
                child(&["latency-nats", &rate.to_string(), "--secs", &secs]),
            );
        }
    }
    if opts.wants("startup") {
        step("startup");
        results.insert("startup".into(), guarded(startup::run));
    }
    if opts.wants("reload") {
        step("reload");
        results.insert("reload".into(), guarded(|| hot_reload::run(opts.swaps)));
    }

    let total = started.elapsed().as_secs_f64();
    let rows = report::rows(&results);
    println!();
    println!("{}", machine["summary"].as_str().unwrap_or("?"));
    println!("{}", nats_server.0);
    println!("{}", report::table(&rows));
    let doc = json!({
        "machine": machine,
        "nats_server": nats_server.1,
        "load_after": report::loadavg(),
        "total_secs": total,
        "options": {"secs": opts.secs, "dispatch_events": opts.dispatch_events,
                    "calls": opts.calls, "reload_swaps": opts.swaps},
        "rows": rows,
        "results": results,
    });
    if let Some(parent) = opts.json.parent() {
        std::fs::create_dir_all(parent).expect("json dir");
    }
    std::fs::write(
        &opts.json,
        serde_json::to_string_pretty(&doc).expect("json"),
    )
    .expect("write json");
    println!("\n{total:.0} s in all; JSON: {}", opts.json.display());
}
