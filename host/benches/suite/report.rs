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
            "peak_rss_mib": mib(rss), "rss_of": rss_of, "vs_peer": "", "ratios": null,
        }));
    }

    /// Sets the last row's ratios against its peer rows: the column text and
    /// the raw figures (`null` where the peer has none).
    fn vs_peer(&mut self, text: String, ratios: Value) {
        if let Some(row) = self.0.last_mut() {
            row["vs_peer"] = json!(text);
            row["ratios"] = ratios;
        }
    }

    /// A row for a result that failed or was skipped; `v` holds the reason.
    fn missing(&mut self, id: &str, section: &str, what: &str, v: &Value) {
        let verdict = if v["skipped"].is_string() {
            "skipped"
        } else {
            "TODO"
        };
        self.0.push(json!({
            "id": id, "section": section, "measurement": what, "result": "—",
            "detail": failed(v).unwrap_or_default(), "target": "", "verdict": verdict,
            "peak_rss_mib": null, "rss_of": "", "vs_peer": "", "ratios": null,
        }));
    }
}

/// "0.62×", or "—" without a peer figure.
fn times(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.2}×")
    } else {
        "—".into()
    }
}

/// A peer's events/s, NaN when it has none (failed or skipped).
fn peer_rate(v: &Value) -> f64 {
    if failed(v).is_some() {
        f64::NAN
    } else {
        f(&v["events_per_sec"])
    }
}

/// "NATS JetStream v2.15.1", or without the version when the server was not found.
fn jetstream(v: &Value) -> String {
    match v["server"].as_str().and_then(|s| s.rsplit(' ').next()) {
        Some(version) => format!("NATS JetStream {version}"),
        None => "NATS JetStream".into(),
    }
}

/// The daemon's memory ceiling at full publish speed (issue 13).
const RSS_TARGET_MIB: f64 = 128.0;

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

    // 1. Durable publish, against JetStream as shipped (ack = written to the
    // OS) and with `sync_interval: always` (ack = fsync'd, as evhost's 201).
    let js = get("publish_jetstream");
    let js_always = get("publish_jetstream_always");
    let (js_rate, always_rate) = (peer_rate(&js), peer_rate(&js_always));
    for (key, what, rss_of, min_ratio) in [
        (
            "publish_http",
            "publish over HTTP to the daemon",
            "daemon",
            1.0,
        ),
        (
            "publish_library",
            "publish through EventLog::append",
            "process",
            2.0,
        ),
    ] {
        let v = get(key);
        if v.is_null() {
            continue;
        }
        if failed(&v).is_some() {
            rows.missing(key, "1 publish", what, &v);
            continue;
        }
        let mine = f(&v["events_per_sec"]);
        let (ratio, ratio_always) = (mine / js_rate, mine / always_rate);
        rows.push(
            key,
            "1 publish",
            what,
            rate(&v),
            format!(
                "batch 100, 1000 in flight; request p50 {:.2} ms, p99 {:.2} ms;{} ack (201) = fsync'd",
                f(&v["request_p50_ms"]),
                f(&v["request_p99_ms"]),
                v["events_per_fsync"]
                    .as_f64()
                    .map_or(String::new(), |e| format!(" {e:.0} events per fsync;"))
            ),
            &format!("≥ {min_ratio}× JetStream default"),
            if ratio.is_nan() {
                "no peer figure".into()
            } else {
                verdict(ratio >= min_ratio, format!("{ratio:.2}×"))
            },
            &v["peak_rss"],
            rss_of,
        );
        rows.vs_peer(
            format!(
                "{} JS default · {} JS always",
                times(ratio),
                times(ratio_always)
            ),
            json!({"jetstream_default": ratio, "jetstream_always": ratio_always}),
        );
        if key == "publish_http" {
            let rss = v["peak_rss"].as_f64().map(|b| b / (1 << 20) as f64);
            rows.push(
                "publish_http_rss",
                "1 publish",
                "daemon peak RSS at full publish speed",
                rss.map_or("—".into(), |m| format!("{m:.0} MiB")),
                "VmHWM of `evhost run` at the end of the HTTP publish run (default [log] cache-size)".into(),
                &format!("≤ {RSS_TARGET_MIB:.0} MiB"),
                match rss {
                    Some(m) => verdict(m <= RSS_TARGET_MIB, format!("{m:.0} MiB")),
                    None => "no figure".into(),
                },
                &v["peak_rss"],
                "daemon",
            );
        }
    }
    for (key, v, settings) in [
        ("publish_jetstream", &js, "default settings"),
        (
            "publish_jetstream_always",
            &js_always,
            "sync_interval: always",
        ),
    ] {
        if v.is_null() {
            continue;
        }
        let what = format!("{}, file store, {settings} (peer)", jetstream(v));
        if failed(v).is_some() {
            rows.missing(key, "1 publish", &what, v);
            continue;
        }
        rows.push(
            key,
            "1 publish",
            &what,
            rate(v),
            format!(
                "{}; one publish per event, 1000 acks outstanding; ack p50 {:.2} ms, p99 {:.2} ms{}",
                v["ack_means"].as_str().unwrap_or("?"),
                f(&v["request_p50_ms"]),
                f(&v["request_p99_ms"]),
                v["note"]
                    .as_str()
                    .map_or(String::new(), |n| format!("; {n}"))
            ),
            "",
            String::new(),
            &v["peak_rss"],
            "nats-server",
        );
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
            if failed(v).is_some() {
                rows.missing(&id, "2 dispatch", &label, v);
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

    // 2b. evhost on its NATS log, as ratios of the redb rows of the same run.
    for (key, base, what) in [
        (
            "publish_library_nats_r1",
            "publish_library",
            "publish through EventLog::append, NATS log R1 (sync always)",
        ),
        (
            "publish_library_nats_r3",
            "publish_library",
            "publish through EventLog::append, NATS log R3 (3-node cluster)",
        ),
        (
            "dispatch_wasm_echo_p4_nats_r1",
            "dispatch_wasm_echo_p4",
            "dispatch, wasm: parse + emit, 4 partitions, NATS log R1 (sync always)",
        ),
        (
            "dispatch_wasm_echo_p4_nats_r3",
            "dispatch_wasm_echo_p4",
            "dispatch, wasm: parse + emit, 4 partitions, NATS log R3 (3-node cluster)",
        ),
    ] {
        let v = get(key);
        if v.is_null() {
            continue;
        }
        if failed(&v).is_some() {
            rows.missing(key, "2b NATS log", what, &v);
            continue;
        }
        let ratio = f(&v["events_per_sec"]) / peer_rate(&get(base));
        let detail = if key.starts_with("publish") {
            format!(
                "batch 100, 1000 in flight; request p50 {:.2} ms, p99 {:.2} ms; {:.0} events per atomic batch; {}",
                f(&v["request_p50_ms"]),
                f(&v["request_p99_ms"]),
                f(&v["events_per_fsync"]),
                v["ack_means"].as_str().unwrap_or("?")
            )
        } else {
            format!(
                "{} events timed; each commit (offset + emit) one fenced atomic batch",
                v["timed_events"]
            )
        };
        rows.push(
            key,
            "2b NATS log",
            what,
            rate(&v),
            detail,
            "",
            String::new(),
            &v["peak_rss"],
            "process",
        );
        rows.vs_peer(format!("{} redb", times(ratio)), json!({ "redb": ratio }));
    }

    // 3. Latency, each rate next to its JetStream peer row.
    for rate_ in [5_000, 10_000] {
        let v = get(&format!("latency_{rate_}"));
        let js = get(&format!("latency_jetstream_{rate_}"));
        let js_p99 = if failed(&js).is_some() {
            f64::NAN
        } else {
            f(&js["p99_ms"])
        };
        let id = format!("latency_{rate_}");
        let what = format!(
            "publish → handle at {}k events/s (HTTP, Wasm)",
            rate_ / 1000
        );
        // (`failed` of an absent result is None.)
        if failed(&v).is_some() {
            rows.missing(&id, "3 latency", &what, &v);
        } else if !v.is_null() {
            let p99 = f(&v["p99_ms"]);
            let ratio = p99 / js_p99;
            let target = rate_ == 10_000;
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
                if target { "p99 ≤ 5 ms; p99 ≤ JetStream's" } else { "" },
                if target {
                    format!(
                        "{} · {}",
                        verdict(p99 <= 5.0, format!("p99 {p99:.2} ms")),
                        if ratio.is_nan() {
                            "no peer figure".into()
                        } else {
                            verdict(ratio <= 1.0, format!("{ratio:.2}× JS"))
                        }
                    )
                } else {
                    String::new()
                },
                &v["peak_rss"],
                "daemon",
            );
            rows.vs_peer(
                format!("p99 {} JS", times(ratio)),
                json!({"jetstream_p99": ratio}),
            );
        }
        if js.is_null() {
            continue;
        }
        let id = format!("latency_jetstream_{rate_}");
        let what = format!(
            "{} publish → pull consumer at {}k events/s (peer)",
            jetstream(&js),
            rate_ / 1000
        );
        if failed(&js).is_some() {
            rows.missing(&id, "3 latency", &what, &js);
            continue;
        }
        rows.push(
            &id,
            "3 latency",
            &what,
            format!(
                "p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms",
                f(&js["p50_ms"]),
                js_p99,
                f(&js["max_ms"])
            ),
            format!(
                "default settings: delivered once written to the OS, before fsync; durable pull consumer, explicit acks; {} events, {} per 1 ms tick, achieved {:.0}/s{}; publish → ack p50 {:.2} ms, p99 {:.2} ms{}",
                js["events"],
                js["events_per_tick"],
                f(&js["achieved_rate"]),
                if js["producer_fell_behind"] == true { " (producer fell behind)" } else { "" },
                f(&js["ack_p50_ms"]),
                f(&js["ack_p99_ms"]),
                js["note"]
                    .as_str()
                    .map_or(String::new(), |n| format!("; {n}"))
            ),
            "",
            String::new(),
            &js["peak_rss"],
            "nats-server",
        );
    }

    // 4. Reload and startup.
    let reload = get("reload");
    if !reload.is_null() {
        match failed(&reload) {
            Some(_) => rows.missing(
                "reload",
                "4 reload",
                "hot reload (benches/reload.rs)",
                &reload,
            ),
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
            Some(_) => rows.missing("startup", "4 startup", "daemon startup", &startup),
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
            Some(_) => rows.missing("calls", "5 per call", "per-call cost", &calls),
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
        "| # | measurement | result | target | verdict | vs peer | peak RSS | detail |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let rss = match r["peak_rss_mib"].as_f64() {
            Some(m) => format!("{m:.0} MiB ({})", r["rss_of"].as_str().unwrap_or("")),
            None => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["section"].as_str().unwrap_or(""),
            r["measurement"].as_str().unwrap_or(""),
            r["result"].as_str().unwrap_or(""),
            r["target"].as_str().unwrap_or(""),
            r["verdict"].as_str().unwrap_or(""),
            r["vs_peer"].as_str().unwrap_or(""),
            rss,
            r["detail"].as_str().unwrap_or(""),
        ));
    }
    out
}
