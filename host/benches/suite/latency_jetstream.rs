//! The latency peer: JetStream publish → durable pull consumer delivery at a
//! fixed rate, the counterpart of `latency.rs` (in a child process of its own).
//!
//! The same open-loop producer: every millisecond `rate / 1000` events are due,
//! each carrying its *scheduled* send time in the same 256-byte payload, so a
//! producer that falls behind shows up as latency. A scheduler thread keeps the
//! clock (as in `latency.rs`); one async task publishes (a JetStream publish
//! does not wait for its ack, so one task keeps up) and another collects the
//! acks. The consumer is a durable pull consumer with explicit acks, reading
//! through `messages()`; delivery is the moment a message reaches it.
//! The server runs with its default settings: it delivers once a message is
//! written to the OS, before any fsync (evhost's handler sees an event only
//! after its fsync).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::{self, Samples};
use crate::nats;

const TICK: Duration = Duration::from_millis(1);
const SUBJECT: &str = "bench.stamp";

fn sent_ns(payload: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v["sent_ns"].as_u64())
        .unwrap_or(0)
}

pub fn run(rate: u64, secs: f64) -> Value {
    let sync = nats::Sync::Default;
    let found = match nats::find() {
        Ok(f) => f,
        Err(e) => return json!({"skipped": e}),
    };
    let server = match nats::Server::start(&found, sync) {
        Ok(s) => s,
        Err(e) => return json!({"skipped": e, "server": found.version}),
    };
    let per_tick = (rate / 1000).max(1) as usize;
    let ticks = (secs * 1000.0) as u64;
    let warm = 200u64;
    let total = warm + ticks * per_tick as u64;

    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let mut out = rt.block_on(async {
        use async_nats::jetstream::{self, consumer, stream};
        let client = async_nats::connect(server.url()).await.expect("connect");
        let js = jetstream::new(client);
        let stream = js
            .create_stream(stream::Config {
                name: "BENCH".into(),
                subjects: vec![SUBJECT.into()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .expect("create stream");
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("bench".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .expect("create consumer");

        // The consumer: delivery time minus the send time in the payload.
        let (warm_tx, warm_rx) = tokio::sync::oneshot::channel::<()>();
        let reader = tokio::spawn(async move {
            let mut messages = consumer.messages().await.expect("messages");
            let (mut seen, mut lat) = (0u64, Vec::with_capacity(total as usize));
            let mut warm_tx = Some(warm_tx);
            let deadline =
                Instant::now() + Duration::from_secs_f64(secs) + Duration::from_secs(120);
            while seen < total {
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(Some(msg)) = tokio::time::timeout(left, messages.next()).await else {
                    break;
                };
                let at = common::wall_ns();
                // Status messages (a missed heartbeat) are not deliveries.
                let Ok(msg) = msg else { continue };
                lat.push((sent_ns(&msg.payload), at));
                msg.ack().await.expect("ack");
                seen += 1;
                if seen == warm
                    && let Some(tx) = warm_tx.take()
                {
                    let _ = tx.send(());
                }
            }
            (seen, lat)
        });

        // Warm-up, off the clock: the stream, the consumer's first pulls.
        for i in 0..warm {
            js.publish(SUBJECT, common::payload(i, common::wall_ns()).into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
        warm_rx.await.expect("warm-up delivered");

        // Acks, in publish order: publish → ack from the scheduled send time.
        let (ack_tx, mut ack_rx) =
            tokio::sync::mpsc::unbounded_channel::<(u64, jetstream::context::PublishAckFuture)>();
        let acker = tokio::spawn(async move {
            let mut lat = Vec::new();
            while let Some((sent, ack)) = ack_rx.recv().await {
                ack.await.expect("ack");
                lat.push(Duration::from_nanos(common::wall_ns().saturating_sub(sent)));
            }
            lat
        });

        // The clock: a thread that sleeps to each tick, as in `latency.rs`.
        let (tick_tx, mut tick_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        let start_ns = common::wall_ns() + 5_000_000;
        let start = Instant::now() + Duration::from_millis(5);
        let clock = std::thread::spawn(move || {
            let mut late = false;
            for k in 0..ticks {
                let due = start + TICK * k as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                } else if now - due > Duration::from_millis(50) {
                    late = true;
                }
                if tick_tx
                    .send((k, start_ns + k * TICK.as_nanos() as u64))
                    .is_err()
                {
                    break;
                }
            }
            late
        });
        while let Some((k, sent)) = tick_rx.recv().await {
            for i in 0..per_tick as u64 {
                let n = warm + k * per_tick as u64 + i;
                let ack = js
                    .publish(SUBJECT, common::payload(n, sent).into())
                    .await
                    .expect("publish");
                let _ = ack_tx.send((sent, ack));
            }
        }
        let late = clock.join().expect("clock");
        let sent_secs = start.elapsed().as_secs_f64();
        drop(ack_tx);
        let acks = Samples::new(acker.await.expect("acker"));
        let (seen, stamps) = reader.await.expect("reader");
        let lat = Samples::new(
            stamps
                .into_iter()
                .filter(|(sent, _)| *sent >= start_ns)
                .map(|(sent, at)| Duration::from_nanos(at.saturating_sub(sent)))
                .collect(),
        );
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut r = json!({
            "rate": rate,
            "events_per_tick": per_tick,
            "events": lat.len(),
            "achieved_rate": (ticks * per_tick as u64) as f64 / sent_secs,
            "producer_fell_behind": late,
            "p50_ms": ms(lat.pct(0.5)),
            "p99_ms": ms(lat.pct(0.99)),
            "max_ms": ms(lat.max()),
            "ack_p50_ms": ms(acks.pct(0.5)),
            "ack_p99_ms": ms(acks.pct(0.99)),
        });
        if seen < total {
            r["error"] = json!(format!(
                "only {seen} of {total} messages reached the consumer"
            ));
        }
        r
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
