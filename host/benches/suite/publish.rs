//! Durable publish throughput: 256-byte events in batches of 100 with a window
//! of 1000 events in flight — over HTTP to the daemon, through the library
//! API, and to a NATS JetStream stream with file storage (the peer), once
//! with its default settings and once with `sync_interval: always`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use evhost::event::{self, Event};
use evhost::log::{EventLog, LogConfig, NewEvent, RedbLog};
use serde_json::{Value, json};

use crate::common::{self, Samples};
use crate::daemon::{self, Daemon};
use crate::nats;

/// Events per publish request (evhost). The JetStream peer publishes each
/// event on its own (the plain publish API; atomic batches are 2.12+ and need
/// a stream setting and hand-made headers).
pub const BATCH: usize = 100;
/// Events in flight at once, on every path: 10 concurrent batches of 100 for
/// evhost, 1000 unacknowledged publishes for JetStream.
pub const WINDOW: usize = 1000;

fn event(subject: &str, n: u64) -> Event {
    let id = event::new_event_id();
    Event {
        correlationid: id.clone(),
        id,
        source: "/bench".into(),
        specversion: "1.0".into(),
        ty: "bench.parse".into(),
        subject: Some(subject.to_owned()),
        time: event::now_rfc3339(),
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        data: Some(common::payload(n, 0)),
        causationid: None,
        actor: None,
        extensions: BTreeMap::new(),
        stream: None,
        streamversion: None,
    }
}

fn result(events: u64, elapsed: Duration, latencies: Vec<Duration>) -> Value {
    let s = Samples::new(latencies);
    json!({
        "events": events,
        "secs": elapsed.as_secs_f64(),
        "events_per_sec": events as f64 / elapsed.as_secs_f64(),
        "request_p50_ms": s.pct(0.5).as_secs_f64() * 1e3,
        "request_p99_ms": s.pct(0.99).as_secs_f64() * 1e3,
    })
}

/// Through `EventLog::append` on a `RedbLog` (in a child process of its own).
pub fn library(secs: f64) -> Value {
    let dir = crate::scratch_dir();
    let log = Arc::new(
        RedbLog::open(dir.path().join("log.redb"), LogConfig::default()).expect("open log"),
    );
    let mut out = library_on(log.clone(), secs);
    log.shutdown();
    out["peak_rss"] = json!(common::own_peak_rss());
    out
}

/// The library's publish workload on any log.
pub fn library_on(log: Arc<dyn EventLog>, secs: f64) -> Value {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        log.append(vec![NewEvent::to_topic("bench-events", event("w", 0))])
            .await
            .expect("warm-up");
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks: Vec<_> = (0..WINDOW / BATCH)
            .map(|p| {
                let (log, stop) = (log.clone(), stop.clone());
                tokio::spawn(async move {
                    let subject = format!("k{p}");
                    let (mut n, mut lat) = (0u64, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let events = (0..BATCH as u64)
                            .map(|i| NewEvent::to_topic("bench-events", event(&subject, n + i)))
                            .collect();
                        let t = Instant::now();
                        log.append(events).await.expect("append");
                        lat.push(t.elapsed());
                        n += BATCH as u64;
                    }
                    (n, lat)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let (mut events, mut lat) = (0, Vec::new());
        for t in tasks {
            let (n, l) = t.await.expect("publisher");
            events += n;
            lat.extend(l);
        }
        let elapsed = started.elapsed();
        let stats = log.stats();
        let mut r = result(events, elapsed, lat);
        r["events_per_fsync"] =
            json!(stats.events_appended as f64 / stats.transactions.max(1) as f64);
        r
    })
}

/// `POST /v1/topics/bench-events/events` (batch mode) to a daemon with no plugins.
pub fn http(secs: f64) -> Value {
    let dir = crate::scratch_dir();
    let d = Daemon::start(&dir.path().join("data"), &dir.path().join("plugins"));
    let body = Arc::new(daemon::batch_body("bench.parse", "k", 0, BATCH, 0));
    daemon::post_batch(&d.agent, &d.url, "bench-events", &body);
    let stop = Arc::new(AtomicBool::new(false));
    let publishers = WINDOW / BATCH;
    let barrier = Arc::new(Barrier::new(publishers + 1));
    let threads: Vec<_> = (0..publishers)
        .map(|_| {
            let (stop, barrier, body, url) =
                (stop.clone(), barrier.clone(), body.clone(), d.url.clone());
            std::thread::spawn(move || {
                // One keep-alive connection per publisher.
                let agent = daemon::agent();
                let (mut n, mut lat) = (0u64, Vec::new());
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    daemon::post_batch(&agent, &url, "bench-events", &body);
                    lat.push(t.elapsed());
                    n += BATCH as u64;
                }
                (n, lat)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let (mut events, mut lat) = (0, Vec::new());
    for t in threads {
        let (n, l) = t.join().expect("publisher");
        events += n;
        lat.extend(l);
    }
    let elapsed = started.elapsed();
    let mut r = result(events, elapsed, lat);
    r["peak_rss"] = json!(d.peak_rss());
    d.stop();
    r
}

/// The peer: JetStream with a file-store stream on its own `nats-server`,
/// `async-nats` publishing the same payload with [`WINDOW`] acks outstanding
/// (in a child process of its own). `sync` says what an ack means.
pub fn nats(secs: f64, sync: nats::Sync) -> Value {
    let found = match nats::find() {
        Ok(f) => f,
        Err(e) => return json!({"skipped": e}),
    };
    let server = match nats::Server::start(&found, sync) {
        Ok(s) => s,
        Err(e) => return json!({"skipped": e, "server": found.version}),
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let mut out = rt.block_on(async {
        use async_nats::jetstream::{self, stream};
        let client = async_nats::connect(server.url()).await.expect("connect");
        // An ack may wait for ~1000 fsyncs ahead of it in `always` mode.
        let js = jetstream::ContextBuilder::new()
            .ack_timeout(Duration::from_secs(120))
            .build(client);
        js.create_stream(stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.events".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create stream");
        let body = bytes::Bytes::from(common::payload(0, 0));
        js.publish("bench.events", body.clone())
            .await
            .expect("publish")
            .await
            .expect("ack");
        let mut inflight = std::collections::VecDeque::with_capacity(WINDOW);
        let mut lat = Vec::new();
        let mut events = 0u64;
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(secs);
        loop {
            if inflight.len() >= WINDOW || (Instant::now() >= until && !inflight.is_empty()) {
                let (t, ack): (Instant, jetstream::context::PublishAckFuture) =
                    inflight.pop_front().expect("in flight");
                ack.await.expect("ack");
                lat.push(t.elapsed());
                events += 1;
                continue;
            }
            if Instant::now() >= until {
                break;
            }
            let ack = js
                .publish("bench.events", body.clone())
                .await
                .expect("publish");
            inflight.push_back((Instant::now(), ack));
        }
        let elapsed = started.elapsed();
        result(events, elapsed, lat)
    });
    out["peak_rss"] = json!(server.peak_rss());
    out["server"] = json!(found.version);
    out["sync"] = json!(sync.name());
    out["ack_means"] = json!(sync.ack_meaning());
    if !found.is_modern() {
        out["note"] = json!(found.old_note());
    }
    out
}

/// The disk under the log: a 4 KiB write in place into a preallocated file,
/// then `fdatasync`, repeated for a second. What one durable transaction costs
/// at least (redb syncs with fdatasync too).
pub fn disk() -> Value {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let dir = crate::scratch_dir();
    let path = dir.path().join("fsync.bin");
    let mut file = std::fs::File::create(&path).expect("file");
    file.write_all(&vec![0u8; 16 << 20]).expect("prefill");
    file.sync_all().expect("sync");
    let block = vec![0xabu8; 4096];
    let (mut lat, mut at) = (Vec::new(), 0u64);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        file.write_all_at(&block, at).expect("write");
        file.sync_data().expect("fdatasync");
        lat.push(t.elapsed());
        at = (at + 4096) % (16 << 20);
    }
    let n = lat.len();
    let s = Samples::new(lat);
    json!({
        "syncs": n,
        "syncs_per_sec": n as f64 / started.elapsed().as_secs_f64(),
        "p50_ms": s.pct(0.5).as_secs_f64() * 1e3,
        "p99_ms": s.pct(0.99).as_secs_f64() * 1e3,
        "max_ms": s.max().as_secs_f64() * 1e3,
    })
}
