//! Dispatch throughput through the real pipeline (redb or NATS log, dispatcher,
//! consumers, batch commits): the `bench-parse` component against the same
//! logic as a native handler (`LoadedPlugin::native`), in a child process each.
//!
//! The topic is filled first; the clock starts once every consumer is past
//! its careful start (the first batch of a consumer is handled event by event
//! with the attempt persisted) and stops when every partition is committed
//! to its end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::dispatch::{Deployment, DispatchConfig, Dispatcher, PluginSettings};
use evhost::event::{self, Event, StoredEvent};
use evhost::log::{EventLog, LogConfig, NewEvent, RedbLog, TopicConfig};
use evhost::runtime::{
    Effects, Emit, Failure, Grants, LoadedPlugin, PluginInfo, Runtime, RuntimeConfig, Subscription,
};
use serde_json::{Value, json};

use crate::common;

const TOPIC: &str = "bench-events";

/// The native twin of `plugins/bench-parse`: the same parse, and for
/// `bench.echo` the same emit, with the envelope filled as the host's `emit`
/// fills it.
fn native_handler(name: &'static str) -> evhost::runtime::NativeHandler {
    Arc::new(move |e: &StoredEvent, _attempt: u32| {
        let bytes = e.event.data.as_deref().unwrap_or(b"null");
        let _: Value =
            serde_json::from_slice(bytes).map_err(|err| Failure::Rejected(err.to_string()))?;
        let mut effects = Effects::default();
        if e.event.ty == "bench.echo" {
            let id = event::new_event_id();
            effects.emits.push(Emit {
                topic: "bench-out".into(),
                event: Event {
                    id,
                    source: format!("evhost://plugin/{name}"),
                    specversion: event::SPEC_VERSION.to_owned(),
                    ty: "bench.echoed".into(),
                    subject: None,
                    time: event::now_rfc3339(),
                    datacontenttype: Some("application/json".into()),
                    dataschema: None,
                    data: Some(bytes.to_vec()),
                    correlationid: e.event.correlationid.clone(),
                    causationid: Some(e.event.id.clone()),
                    actor: e.event.actor.clone(),
                    extensions: BTreeMap::new(),
                    stream: None,
                    streamversion: None,
                },
            });
        }
        Ok(effects)
    })
}

fn prefill_event(ty: &str, n: u64) -> NewEvent {
    let id = event::new_event_id();
    NewEvent::to_topic(
        TOPIC,
        Event {
            correlationid: id.clone(),
            id,
            source: "/bench".into(),
            specversion: "1.0".into(),
            ty: ty.into(),
            // 64 subjects spread the events over the partitions.
            subject: Some(format!("k{}", n % 64)),
            time: event::now_rfc3339(),
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            data: Some(common::payload(n, 0)),
            causationid: None,
            actor: None,
            extensions: BTreeMap::new(),
            stream: None,
            streamversion: None,
        },
    )
}

/// Profiling hook: with `EVHOST_BENCH_PERF_CTL=FIFO`, writes `enable` /
/// `disable` to a `perf record --delay=-1 --control=fifo:FIFO` control pipe, so
/// a profile covers the dispatch phase only (not the prefill).
fn perf_control(cmd: &str) {
    if let Ok(fifo) = std::env::var("EVHOST_BENCH_PERF_CTL") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(fifo) {
            let _ = writeln!(f, "{cmd}");
        }
    }
}

/// `kind` is `wasm` or `native`, `mode` is `parse` or `echo`, `backend` is `redb` or
/// `nats-r1` / `nats-r3` (`crate::nats_log`).
pub fn run(kind: &str, mode: &str, partitions: u32, events: u64, backend: &str) -> Value {
    let dir = crate::scratch_dir();
    let wasm = crate::support::plugin("bench-parse");
    let (log, keep, prefill_batch): (Arc<dyn EventLog>, _, u64) = match backend {
        "redb" => (
            Arc::new(
                RedbLog::open(dir.path().join("log.redb"), LogConfig::default()).expect("open log"),
            ),
            None,
            1000,
        ),
        // An event takes 2 messages of a NATS batch (of at most 1000).
        nats => {
            let (log, keep) = crate::nats_log::open(nats).expect("NATS log");
            (log, Some(keep), 400)
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let mut out = rt.block_on(async {
        log.create_topic(
            TOPIC,
            TopicConfig {
                partitions,
                ..Default::default()
            },
        )
        .await
        .expect("topic");
        let ty = format!("bench.{mode}");
        let mut n = 0;
        while n < events {
            let batch = (n..(n + prefill_batch).min(events))
                .map(|i| prefill_event(&ty, i))
                .collect();
            log.append(batch).await.expect("prefill");
            n += prefill_batch;
        }
        let ends: Vec<u64> = log
            .topic(TOPIC)
            .await
            .expect("topic")
            .expect("exists")
            .partitions
            .iter()
            .map(|p| p.end)
            .collect();

        let runtime = Arc::new(
            Runtime::new(RuntimeConfig {
                cache_dir: Some(dir.path().join("cache")),
                ..Default::default()
            })
            .expect("runtime"),
        );
        let dispatcher = Dispatcher::new(log.clone(), runtime.clone(), DispatchConfig::default());
        let grants = Grants::new(vec!["bench.*".into()], false).expect("grants");
        let plugin = match kind {
            "wasm" => runtime.load_file(&wasm).expect("load bench-parse"),
            _ => LoadedPlugin::native(
                PluginInfo {
                    name: "bench-native".into(),
                    version: "1".into(),
                    subscriptions: vec![Subscription {
                        topic: TOPIC.into(),
                        event_type: "bench.*".into(),
                    }],
                    retry: None,
                },
                native_handler("bench-native"),
            ),
        };
        let group = plugin.info.name.clone();
        perf_control("enable");
        dispatcher.deploy(Deployment {
            plugin,
            settings: PluginSettings {
                grants,
                ..Default::default()
            },
            load_number: 1,
        });

        // Past every consumer's careful start (one batch, event by event).
        let careful = DispatchConfig::default().batch_size as u64;
        let committed = |log: Arc<dyn EventLog>, group: String| async move {
            let mut per = Vec::new();
            for p in 0..partitions {
                per.push(
                    log.committed_offset(&group, TOPIC, p)
                        .await
                        .expect("offset")
                        .unwrap_or(0),
                );
            }
            per
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        let (t0, c0) = loop {
            let per = committed(log.clone(), group.clone()).await;
            if per
                .iter()
                .zip(&ends)
                .all(|(c, e)| *c >= (2 * careful).min(*e))
            {
                break (Instant::now(), per.iter().sum::<u64>());
            }
            assert!(Instant::now() < deadline, "dispatch did not start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let t1 = loop {
            let per = committed(log.clone(), group.clone()).await;
            if per == ends {
                break Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "dispatch did not finish: {per:?} of {ends:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        perf_control("disable");
        let emitted = match log.topic("bench-out").await.expect("topic") {
            Some(t) => t.partitions.iter().map(|p| p.end).sum::<u64>(),
            None => 0,
        };
        dispatcher.shutdown(Duration::from_secs(10)).await;
        let timed = ends.iter().sum::<u64>() - c0;
        json!({
            "kind": kind,
            "mode": mode,
            "backend": backend,
            "partitions": partitions,
            "events": events,
            "timed_events": timed,
            "secs": (t1 - t0).as_secs_f64(),
            "events_per_sec": timed as f64 / (t1 - t0).as_secs_f64(),
            "emitted": emitted,
        })
    });
    out["peak_rss"] = json!(common::own_peak_rss());
    drop(log);
    drop(keep);
    out
}
