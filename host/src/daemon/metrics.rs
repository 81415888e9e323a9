//! `/metrics`: the daemon's own counters and histograms (kept by the API as it
//! works) plus values read at scrape time from the dispatcher, the log and the
//! plugin loader, in the Prometheus text format (0.0.4).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::dispatch::{PluginStatus, RunState};
use crate::histogram::HistogramSnapshot;
use crate::log::LogStats;

type Labels = Vec<(&'static str, String)>;

/// The API's instruments; cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<Labels, Counter>,
    events_published: Counter,
    publish_duplicates: Counter,
    publish_rejected: Family<Labels, Counter>,
    publish_batch_events: Histogram,
    append_seconds: Histogram,
}

/// What the scrape reads from the other components.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub plugins: Vec<PluginStatus>,
    pub failed_plugins: usize,
    pub log: LogStats,
    pub dead_letters: u64,
    pub plugin_loads: u64,
    pub plugin_load_failures: u64,
}

#[derive(Debug, Default)]
struct SnapshotCollector(std::sync::Arc<Mutex<Snapshot>>);

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("evhost");
        let http_requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method and status",
            http_requests.clone(),
        );
        let events_published = Counter::default();
        registry.register(
            "events_published",
            "Events appended through the API (duplicates not counted)",
            events_published.clone(),
        );
        let publish_duplicates = Counter::default();
        registry.register(
            "publish_duplicates",
            "Published events whose id was already in the topic (deduplicated)",
            publish_duplicates.clone(),
        );
        let publish_rejected = Family::<Labels, Counter>::default();
        registry.register(
            "publish_rejected",
            "Publish requests refused, by error code",
            publish_rejected.clone(),
        );
        let publish_batch_events = Histogram::new(exponential_buckets(1.0, 4.0, 8));
        registry.register(
            "publish_batch_events",
            "Events per publish request",
            publish_batch_events.clone(),
        );
        let append_seconds = Histogram::new(exponential_buckets(0.0001, 2.5, 14));
        registry.register(
            "log_append_seconds",
            "Time from handing a publish to the log until it is durable (group commit included)",
            append_seconds.clone(),
        );
        Metrics {
            registry,
            http_requests,
            events_published,
            publish_duplicates,
            publish_rejected,
            publish_batch_events,
            append_seconds,
        }
    }

    /// Adds the runtime's outbound-HTTP instruments (plugins' requests).
    pub fn register_outbound(&mut self, outbound: &crate::runtime::OutboundMetrics) {
        outbound.register(&mut self.registry);
    }

    pub fn http_request(&self, method: &str, status: u16) {
        self.http_requests
            .get_or_create(&vec![
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    pub fn published(&self, appended: u64, duplicates: u64, append_time: Duration) {
        self.events_published.inc_by(appended);
        self.publish_duplicates.inc_by(duplicates);
        self.publish_batch_events
            .observe((appended + duplicates) as f64);
        self.append_seconds.observe(append_time.as_secs_f64());
    }

    pub fn publish_rejected(&self, code: &str) {
        self.publish_rejected
            .get_or_create(&vec![("code", code.to_owned())])
            .inc();
    }

    /// The text exposition of everything, with `snapshot` for the scrape-time values.
    pub fn render(&self, snapshot: Snapshot) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        let mut extra = Registry::default();
        extra.register_collector(Box::new(SnapshotCollector(std::sync::Arc::new(
            Mutex::new(snapshot),
        ))));
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &extra);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(0u64);
    let mut m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, &HistogramSnapshot)],
) -> Result<(), std::fmt::Error> {
    let h = Histogram::new([1.0]);
    let mut m = enc.encode_descriptor(name, help, None, h.metric_type())?;
    for (labels, snapshot) in rows {
        m.encode_family(labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                snapshot.sum,
                snapshot.count,
                &snapshot.buckets,
                None,
            )?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(0i64);
    let mut m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let plugin =
            |p: &PluginStatus| vec![("plugin", p.name.clone()), ("version", p.version.clone())];
        let rows = |f: fn(&PluginStatus) -> u64| -> Vec<(Labels, u64)> {
            s.plugins.iter().map(|p| (plugin(p), f(p))).collect()
        };
        counter(
            &mut enc,
            "evhost_plugin_handled",
            "Events a plugin handled successfully (since its version was deployed)",
            &rows(|p| p.processed),
        )?;
        counter(
            &mut enc,
            "evhost_plugin_failed",
            "Failed plugin calls, retries included",
            &rows(|p| p.failed),
        )?;
        counter(
            &mut enc,
            "evhost_plugin_dead_lettered",
            "Events a plugin parked in the dead-letter store",
            &rows(|p| p.dead_lettered),
        )?;
        counter(
            &mut enc,
            "evhost_plugin_consumer_restarts",
            "Consumer tasks of a plugin that ended unexpectedly (a panic, a refused write) and were restarted",
            &rows(|p| p.consumer_restarts),
        )?;
        let calls: Vec<(Labels, &HistogramSnapshot)> = s
            .plugins
            .iter()
            .map(|p| (plugin(p), &p.call_latency))
            .collect();
        histogram(
            &mut enc,
            "evhost_plugin_call_seconds",
            "Duration of plugin calls (successful or not)",
            &calls,
        )?;
        let lag: Vec<(Labels, i64)> = s
            .plugins
            .iter()
            .flat_map(|p| {
                p.partitions.iter().map(|part| {
                    (
                        vec![
                            ("plugin", p.name.clone()),
                            ("topic", part.topic.clone()),
                            ("partition", part.partition.to_string()),
                        ],
                        part.lag as i64,
                    )
                })
            })
            .collect();
        gauge(
            &mut enc,
            "evhost_plugin_lag",
            "Events not yet consumed, per plugin and partition",
            &lag,
        )?;
        let state: Vec<(Labels, i64)> = s
            .plugins
            .iter()
            .flat_map(|p| {
                [RunState::Running, RunState::Paused, RunState::Stopped].map(|st| {
                    let name = match st {
                        RunState::Running => "running",
                        RunState::Paused => "paused",
                        RunState::Stopped => "stopped",
                    };
                    (
                        vec![("plugin", p.name.clone()), ("state", name.to_owned())],
                        i64::from(p.state == st),
                    )
                })
            })
            .collect();
        gauge(
            &mut enc,
            "evhost_plugin_state",
            "1 for the state each plugin is in",
            &state,
        )?;
        gauge(
            &mut enc,
            "evhost_plugins_failed_to_load",
            "Plugin files that did not load",
            &[(vec![], s.failed_plugins as i64)],
        )?;
        counter(
            &mut enc,
            "evhost_plugin_loads",
            "Plugin versions loaded and deployed (start and reloads)",
            &[(vec![], s.plugin_loads)],
        )?;
        counter(
            &mut enc,
            "evhost_plugin_load_failures",
            "Plugin loads that failed",
            &[(vec![], s.plugin_load_failures)],
        )?;
        gauge(
            &mut enc,
            "evhost_dead_letters",
            "Events in the dead-letter store",
            &[(vec![], s.dead_letters as i64)],
        )?;
        let now = |f: fn(&PluginStatus) -> u64| -> Vec<(Labels, i64)> {
            s.plugins
                .iter()
                .map(|p| (plugin(p), i64::try_from(f(p)).unwrap_or(i64::MAX)))
                .collect()
        };
        gauge(
            &mut enc,
            "evhost_plugin_dead_letters",
            "A plugin's events in the dead-letter store now (the log's count)",
            &now(|p| p.dead_letters),
        )?;
        gauge(
            &mut enc,
            "evhost_plugin_consumers_down",
            "A plugin's consumers that ended unexpectedly and wait for their restart",
            &now(|p| p.consumers_down),
        )?;
        let log = &s.log;
        histogram(
            &mut enc,
            "evhost_log_transaction_seconds",
            "Duration of each committed log write transaction, fsync included",
            &[(vec![], &log.transaction_seconds)],
        )?;
        histogram(
            &mut enc,
            "evhost_log_transaction_events",
            "Events appended per committed log transaction (group commit batch size)",
            &[(vec![], &log.transaction_events)],
        )?;
        counter(
            &mut enc,
            "evhost_log_transactions",
            "Log write transactions committed (each fsync'd)",
            &[(vec![], log.transactions)],
        )?;
        counter(
            &mut enc,
            "evhost_log_failed_transactions",
            "Log write transactions that failed",
            &[(vec![], log.failed_transactions)],
        )?;
        counter(
            &mut enc,
            "evhost_log_write_requests",
            "Log write requests (group commit batches several per transaction)",
            &[(vec![], log.requests)],
        )?;
        counter(
            &mut enc,
            "evhost_log_events_appended",
            "Events appended to the log (publishes and plugin emits)",
            &[(vec![], log.events_appended)],
        )?;
        counter(
            &mut enc,
            "evhost_log_duplicates",
            "Appends answered by deduplication",
            &[(vec![], log.duplicates)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_scrape_time_values() {
        let m = Metrics::new();
        m.http_request("POST", 201);
        m.published(3, 1, Duration::from_millis(2));
        let text = m.render(Snapshot {
            dead_letters: 7,
            ..Default::default()
        });
        assert!(text.contains("evhost_events_published_total 3"), "{text}");
        assert!(text.contains("evhost_publish_duplicates_total 1"), "{text}");
        assert!(
            text.contains("evhost_http_requests_total{method=\"POST\",status=\"201\"} 1"),
            "{text}"
        );
        assert!(text.contains("evhost_log_append_seconds_bucket"), "{text}");
        assert!(text.contains("evhost_dead_letters 7"), "{text}");
        assert!(
            !text.contains("# EOF"),
            "0.0.4 text has no EOF marker: {text}"
        );
    }
}
