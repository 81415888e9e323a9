//! Latency publish → handler call at a fixed rate, end to end through the
//! daemon: producers POST to `evhost run` over HTTP, the `bench-parse`
//! component handles `bench.stamp` events and emits, for each, the wall-clock
//! time at which its `handle` began (read inside the guest through
//! `wasi:clocks`) next to the send time carried in the payload.
//!
//! Open loop: every millisecond a request with `rate / 1000` events is due;
//! its send time is the *scheduled* time, so a producer that falls behind
//! shows up as latency instead of hiding it (no coordinated omission).
//! The handler's clock reading is committed with the consumer's batch, so it
//! is read back after the run; the commit itself is not part of the figure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Samples};
use crate::daemon::{self, Daemon};

const TICK: Duration = Duration::from_millis(1);
const SENDERS: usize = 6;

pub fn run(rate: u64, secs: f64) -> Value {
    let dir = crate::scratch_dir();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    std::fs::copy(
        crate::support::plugin("bench-parse"),
        plugins.join("bench-parse.wasm"),
    )
    .expect("copy plugin");
    std::fs::write(
        plugins.join("bench-parse.toml"),
        "[grants]\nemit = [\"bench.*\"]\n",
    )
    .expect("sidecar");
    let d = Daemon::start(&dir.path().join("data"), &plugins);

    // Warm-up: the consumer's careful start and the instance, off the clock.
    let warm = 200u64;
    for i in 0..warm / 10 {
        let body = daemon::batch_body("bench.stamp", "k", i * 10, 10, common::wall_ns());
        daemon::post_batch(&d.agent, &d.url, "bench-events", &body);
    }
    wait_for(&d, "bench-stamps", warm);

    let per_tick = (rate / 1000).max(1) as usize;
    let ticks = (secs * 1000.0) as u64;
    let (tx, rx) = mpsc::sync_channel::<(u64, u64)>(10_000);
    let rx = Arc::new(Mutex::new(rx));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let late = Arc::new(AtomicBool::new(false));
    // Wall-clock time of each request's 201, by tick.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..ticks).map(|_| AtomicU64::new(0)).collect());
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (rx, acks, acked, url) = (rx.clone(), acks.clone(), acked.clone(), d.url.clone());
            std::thread::spawn(move || {
                let agent = daemon::agent();
                let mut mine = Vec::new();
                loop {
                    let job = rx.lock().expect("jobs").recv();
                    let Ok((k, sent_ns)) = job else { break };
                    let body = daemon::batch_body(
                        "bench.stamp",
                        "k",
                        k * per_tick as u64,
                        per_tick,
                        sent_ns,
                    );
                    daemon::post_batch(&agent, &url, "bench-events", &body);
                    let now = common::wall_ns();
                    acked[k as usize].store(now, Ordering::Relaxed);
                    mine.push(Duration::from_nanos(now.saturating_sub(sent_ns)));
                }
                acks.lock().expect("acks").extend(mine);
            })
        })
        .collect();
    let start_ns = common::wall_ns() + 5_000_000;
    let start = Instant::now() + Duration::from_millis(5);
    for k in 0..ticks {
        let due = start + TICK * k as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_millis(50) {
            late.store(true, Ordering::Relaxed);
        }
        tx.send((k, start_ns + k * TICK.as_nanos() as u64))
            .expect("senders alive");
    }
    drop(tx);
    for s in senders {
        s.join().expect("sender");
    }
    let sent_secs = start.elapsed().as_secs_f64();
    let total = warm + ticks * per_tick as u64;
    wait_for(&d, "bench-stamps", total);

    let mut lat = Vec::new();
    // Handler start minus the producer's 201 (negative: it ran before the answer arrived).
    let mut after_ack: Vec<i64> = Vec::new();
    let mut from = 0;
    while from < total {
        let page = d.get(&format!(
            "/v1/topics/bench-stamps/events?partition=0&from={from}&limit=1000"
        ));
        let events = page["events"].as_array().expect("events");
        for e in events {
            let (sent, called) = (
                e["data"]["sent_ns"].as_u64().unwrap_or(0),
                e["data"]["called_ns"].as_u64().unwrap_or(0),
            );
            if sent >= start_ns {
                lat.push(Duration::from_nanos(called.saturating_sub(sent)));
                let k = ((sent - start_ns) / TICK.as_nanos() as u64) as usize;
                if let Some(ack) = acked.get(k).map(|a| a.load(Ordering::Relaxed)) {
                    after_ack.push(called as i64 - ack as i64);
                }
            }
        }
        from = page["next_offset"].as_u64().expect("next_offset");
        if events.is_empty() {
            break;
        }
    }
    let rss = d.peak_rss();
    d.stop();
    let lat = Samples::new(lat);
    let acks = Samples::new(std::mem::take(&mut *acks.lock().expect("acks")));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    after_ack.sort_unstable();
    let signed_ms = |q: f64| {
        after_ack
            .get(((after_ack.len().max(1) - 1) as f64 * q).round() as usize)
            .map_or(0.0, |ns| *ns as f64 / 1e6)
    };
    json!({
        "rate": rate,
        "events_per_request": per_tick,
        "events": lat.len(),
        "achieved_rate": (ticks * per_tick as u64) as f64 / sent_secs,
        "producer_fell_behind": late.load(Ordering::Relaxed),
        "p50_ms": ms(lat.pct(0.5)),
        "p99_ms": ms(lat.pct(0.99)),
        "max_ms": ms(lat.max()),
        "ack_p50_ms": ms(acks.pct(0.5)),
        "ack_p99_ms": ms(acks.pct(0.99)),
        "after_ack_p50_ms": signed_ms(0.5),
        "after_ack_p99_ms": signed_ms(0.99),
        "peak_rss": rss,
    })
}

fn wait_for(d: &Daemon, topic: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while d.end_offset(topic) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events reached {topic}",
            d.end_offset(topic)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
