//! The machine description, the summary rows (with the targets), and
//! the Markdown table.

use serde_json::{Value, json};

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?", |(_, m)| m.trim())
        .to_owned();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let date = evhost::event::now_rfc3339();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(crate::support::workspace_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = loadavg();
    json!({
        "cpus": cpus,
        "memory_gib": mem_kib as f64 / (1 << 20) as f64,
        "cpu_model": model,
        "kernel": kernel,
        "date": date,
        "commit": commit,
        "load_before": load,
        "summary": format!(
            "{date} · {cpus} cores ({model}) · {:.1} GiB · Linux {kernel} · commit {commit} · load {load}",
            mem_kib as f64 / (1 << 20) as f64
        ),
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn rate(v: &Value) -> String {
    let r = f(&v["events_per_sec"]);
    if r >= 10_000.0 {
        format!("{:.0}k events/s", r / 1e3)
    } else {
        format!("{r:.0} events/s")
    }
}

fn mib(v: &Value) -> Value {
    v.as_f64()
        .map_or(Value::Null, |b| json!(b / (1 << 20) as f64))
}

fn verdict(met: bool, by: String) -> String {
    if met {
        format!("met ({by})")
    } else {
        format!("MISSED ({by})")
    }
}

struct Rows(Vec<Value>);

impl Rows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        id: &str,
        section: &str,
        what: &str,
        result: String,
        detail: String,
        target: &str,
        verdict: String,
        rss: &Value,
        rss_of: &str,
    ) {
        self.0.push(json!({
            "id": id, "section": section, "measurement": what, "result": result,
            "detail": detail, "target": target, "verdict": verdict,
            "peak_rss_mib": mib(rss), "rss_of": rss_of,
        }));
    }

    fn missing(&mut self, id: &str, section: &str, what: &str, why: String) {
        self.0.push(json!({
            "id": id, "section": section, "measurement": what, "result": "—",
            "detail": why, "target": "", "verdict": "TODO", "peak_rss_mib": null, "rss_of": "",
        }));
    }
}

/// The events/s of each run of a dispatch measurement: "101k, 98k".
fn runs(v: &Value) -> String {
    v["runs_events_per_sec"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{:.0}k", f(r) / 1e3))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Error or skip message of a result, if it has one.
fn failed(v: &Value) -> Option<String> {
    ["error", "skipped", "todo"]
        .iter()
        .find_map(|k| v[*k].as_str().map(str::to_owned))
}

pub fn rows(r: &serde_json::Map<String, Value>) -> Vec<Value> {
    let mut rows = Rows(Vec::new());
    let get = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);

    // 0. The disk, for reference.
    let disk = get("disk");
    if !disk.is_null() && failed(&disk).is_none() {
        rows.push(
            "disk",
            "0 disk",
            "fdatasync of a 4 KiB in-place write (reference)",
            format!("{:.0} syncs/s", f(&disk["syncs_per_sec"])),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms: the floor under every durable answer",
                f(&disk["p50_ms"]),
                f(&disk["p99_ms"]),
                f(&disk["max_ms"])
            ),
            "",
            String::new(),
            &Value::Null,
            "",
        );
    }

    // 1. Durable publish.
    let js = get("publish_jetstream");
    let js_rate = f(&js["events_per_sec"]);
    for (key, what, rss_of) in [
        ("publish_http", "publish over HTTP to the daemon", "daemon"),
        (
            "publish_library",
            "publish through EventLog::append",
            "process",
        ),
    ] {
        let v = get(key);
        if v.is_null() {
            continue;
        }
        if let Some(e) = failed(&v) {
            rows.missing(key, "1 publish", what, e);
            continue;
        }
        let ratio = f(&v["events_per_sec"]) / js_rate;
        rows.push(
            key,
            "1 publish",
            what,
            rate(&v),
            format!(
                "batch 100, 1000 in flight; request p50 {:.2} ms, p99 {:.2} ms;{} evhost/JetStream {ratio:.2}× (evhost fsyncs before the ack, JetStream 2.9 does not)",
                f(&v["request_p50_ms"]),
                f(&v["request_p99_ms"]),
                v["events_per_fsync"]
                    .as_f64()
                    .map_or(String::new(), |e| format!(" {e:.0} events per fsync;"))
            ),
            "≥ 2× JetStream",
            if ratio.is_nan() {
                "no peer figure".into()
            } else {
                verdict(ratio >= 2.0, format!("{ratio:.2}×"))
            },
            &v["peak_rss"],
            rss_of,
        );
    }
    if !js.is_null() {
        match failed(&js) {
            Some(e) => rows.missing("publish_jetstream", "1 publish", "NATS JetStream (peer)", e),
            None => rows.push(
                "publish_jetstream",
                "1 publish",
                "NATS JetStream, file store (peer)",
                rate(&js),
                format!(
                    "{}; one publish per event, 1000 acks outstanding; ack p50 {:.2} ms, p99 {:.2} ms; acks before fsync",
                    js["server"].as_str().unwrap_or("nats-server"),
                    f(&js["request_p50_ms"]),
                    f(&js["request_p99_ms"])
                ),
                "",
                String::new(),
                &js["peak_rss"],
                "nats-server",
            ),
        }
    }

    // 2. Dispatch.
    for (mode, p, what) in [
        ("parse", 1, "parse JSON, emit nothing, 1 partition"),
        ("parse", 4, "parse JSON, emit nothing, 4 partitions"),
        ("echo", 4, "parse + emit one event per input, 4 partitions"),
    ] {
        let native = get(&format!("dispatch_native_{mode}_p{p}"));
        let wasm = get(&format!("dispatch_wasm_{mode}_p{p}"));
        if native.is_null() && wasm.is_null() {
            continue;
        }
        let ratio = f(&wasm["events_per_sec"]) / f(&native["events_per_sec"]);
        for (kind, v) in [("wasm", &wasm), ("native", &native)] {
            let id = format!("dispatch_{kind}_{mode}_p{p}");
            let label = format!("dispatch, {kind}: {what}");
            if let Some(e) = failed(v) {
                rows.missing(&id, "2 dispatch", &label, e);
                continue;
            }
            let (detail, target, verdict_) = if kind == "wasm" {
                (
                    format!(
                        "wasm/native {ratio:.2}× ({} events timed; best of runs at {})",
                        v["timed_events"],
                        runs(v)
                    ),
                    if mode == "parse" {
                        "≥ 0.5× native"
                    } else {
                        ""
                    },
                    if mode == "parse" {
                        verdict(ratio >= 0.5, format!("{ratio:.2}×"))
                    } else {
                        format!("{ratio:.2}× native")
                    },
                )
            } else {
                (
                    format!(
                        "the same handler in Rust, same pipeline ({} events timed; best of runs at {})",
                        v["timed_events"],
                        runs(v)
                    ),
                    "",
                    String::new(),
                )
            };
            rows.push(
                &id,
                "2 dispatch",
                &label,
                rate(v),
                detail,
                target,
                verdict_,
                &v["peak_rss"],
                "process",
            );
        }
    }

    // 3. Latency.
    for rate_ in [5_000, 10_000] {
        let v = get(&format!("latency_{rate_}"));
        if v.is_null() {
            continue;
        }
        let id = format!("latency_{rate_}");
        let what = format!(
            "publish → handle at {}k events/s (HTTP, Wasm)",
            rate_ / 1000
        );
        if let Some(e) = failed(&v) {
            rows.missing(&id, "3 latency", &what, e);
            continue;
        }
        let p99 = f(&v["p99_ms"]);
        rows.push(
            &id,
            "3 latency",
            &what,
            format!(
                "p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms",
                f(&v["p50_ms"]),
                p99,
                f(&v["max_ms"])
            ),
            format!(
                "{} events, {} per request every 1 ms, achieved {:.0}/s{}; of which publish → 201: p50 {:.2} ms, p99 {:.2} ms; 201 → handle: p50 {:.2} ms, p99 {:.2} ms",
                v["events"],
                v["events_per_request"],
                f(&v["achieved_rate"]),
                if v["producer_fell_behind"] == true { " (producer fell behind)" } else { "" },
                f(&v["ack_p50_ms"]),
                f(&v["ack_p99_ms"]),
                f(&v["after_ack_p50_ms"]),
                f(&v["after_ack_p99_ms"])
            ),
            if rate_ == 10_000 { "p99 ≤ 5 ms" } else { "" },
            if rate_ == 10_000 {
                verdict(p99 <= 5.0, format!("p99 {p99:.2} ms"))
            } else {
                String::new()
            },
            &v["peak_rss"],
            "daemon",
        );
    }

    // 4. Reload and startup.
    let reload = get("reload");
    if !reload.is_null() {
        match failed(&reload) {
            Some(e) => rows.missing("reload", "4 reload", "hot reload (benches/reload.rs)", e),
            None => {
                for row in reload["rows"].as_array().into_iter().flatten() {
                    let default_debounce = row["debounce"].as_str() != Some("10 ms");
                    let median = f(&row["median_ms"]);
                    rows.push(
                        "reload",
                        "4 reload",
                        &format!(
                            "hot reload, {}, debounce {}",
                            match row["component"].as_str() {
                                Some("new (compiled)") => "new component (compiled)",
                                _ => "component from the cache",
                            },
                            row["debounce"].as_str().unwrap_or("?")
                        ),
                        format!("median {median:.1} ms"),
                        format!(
                            "rename → first event committed by the new version; min {:.1} ms, max {:.1} ms, {} swaps, cache hit/miss {}",
                            f(&row["min_ms"]),
                            f(&row["max_ms"]),
                            reload["swaps"],
                            row["cache_hit_miss"].as_str().unwrap_or("?")
                        ),
                        if default_debounce { "median ≤ 250 ms" } else { "" },
                        if default_debounce {
                            verdict(median <= 250.0, format!("{median:.0} ms"))
                        } else {
                            String::new()
                        },
                        &Value::Null,
                        "",
                    );
                }
            }
        }
    }
    let startup = get("startup");
    if !startup.is_null() {
        match failed(&startup) {
            Some(e) => rows.missing("startup", "4 startup", "daemon startup", e),
            None => {
                for (key, what) in [
                    ("no_plugins", "daemon startup, no plugins"),
                    ("cold", "daemon startup, 20 plugins, empty cache"),
                    ("cached", "daemon startup, 20 plugins, precompiled cache"),
                ] {
                    let v = &startup[key];
                    rows.push(
                        &format!("startup_{key}"),
                        "4 startup",
                        what,
                        format!("median {:.0} ms", f(&v["median_ms"])),
                        format!(
                            "spawn → \"listening on\" (plugins loaded); min {:.0} ms, max {:.0} ms, {} runs",
                            f(&v["min_ms"]),
                            f(&v["max_ms"]),
                            v["runs"]
                        ),
                        "",
                        String::new(),
                        &v["peak_rss"],
                        "daemon",
                    );
                }
            }
        }
    }

    // 5. Per-call cost.
    let calls = get("calls");
    if !calls.is_null() {
        match failed(&calls) {
            Some(e) => rows.missing("calls", "5 per call", "per-call cost", e),
            None => {
                let live = f(&calls["live_median_us"]);
                let fresh = f(&calls["fresh_median_us"]);
                rows.push(
                    "calls_live",
                    "5 per call",
                    "handle on a live instance (faulty.done)",
                    format!("median {live:.2} µs"),
                    format!(
                        "p99 {:.2} µs, {} calls",
                        f(&calls["live_p99_us"]),
                        calls["live_calls"]
                    ),
                    "≤ 3 µs",
                    verdict(live <= 3.0, format!("{live:.2} µs")),
                    &calls["peak_rss"],
                    "process",
                );
                rows.push(
                    "calls_fresh",
                    "5 per call",
                    "fresh instantiate + handle + drop",
                    format!("median {fresh:.2} µs"),
                    format!(
                        "p99 {:.2} µs, {} calls; component load: compile {:.1} ms, from cache {:.2} ms",
                        f(&calls["fresh_p99_us"]),
                        calls["fresh_calls"],
                        f(&calls["load_compiled_median_ms"]),
                        f(&calls["load_cached_median_ms"])
                    ),
                    "≤ 30 µs",
                    verdict(fresh <= 30.0, format!("{fresh:.2} µs")),
                    &Value::Null,
                    "",
                );
            }
        }
    }
    rows.0
}

pub fn table(rows: &[Value]) -> String {
    let mut out = String::from(
        "| # | measurement | result | target | verdict | peak RSS | detail |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let rss = match r["peak_rss_mib"].as_f64() {
            Some(m) => format!("{m:.0} MiB ({})", r["rss_of"].as_str().unwrap_or("")),
            None => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r["section"].as_str().unwrap_or(""),
            r["measurement"].as_str().unwrap_or(""),
            r["result"].as_str().unwrap_or(""),
            r["target"].as_str().unwrap_or(""),
            r["verdict"].as_str().unwrap_or(""),
            rss,
            r["detail"].as_str().unwrap_or(""),
        ));
    }
    out
}
