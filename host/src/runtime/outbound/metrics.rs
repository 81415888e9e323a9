//! The instruments of plugins' outbound HTTP, shared by every store of a
//! runtime and registered by the daemon into `/metrics`.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Counters and a latency histogram; cheap to clone and to update from any thread.
#[derive(Clone)]
pub struct OutboundMetrics {
    requests: Family<Labels, Counter>,
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
    refused: Family<Labels, Counter>,
}

/// Why a request was refused or cut short by the host, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The plugin has no `http` grant at all.
    NoGrant,
    /// The URL matches no allowlist entry.
    NotAllowed,
    /// The URL resolves to the daemon's own listen address.
    DaemonAddress,
    /// Outside `handle` (during instantiation or `describe`).
    OutsideCall,
    /// Over the per-call request cap.
    RequestCap,
    /// Over the per-call request-body byte cap.
    RequestBytes,
    /// Over the per-call response-body byte cap.
    ResponseBytes,
}

impl RefusalReason {
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::NoGrant => "no-grant",
            RefusalReason::NotAllowed => "not-allowed",
            RefusalReason::DaemonAddress => "daemon-address",
            RefusalReason::OutsideCall => "outside-call",
            RefusalReason::RequestCap => "request-cap",
            RefusalReason::RequestBytes => "request-bytes",
            RefusalReason::ResponseBytes => "response-bytes",
        }
    }
}

impl OutboundMetrics {
    pub fn new() -> Self {
        OutboundMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(seconds_histogram),
            refused: Family::default(),
        }
    }

    /// Adds the instruments to `registry` (the daemon's, prefix `evhost`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "plugin_http_requests",
            "Outbound HTTP requests made by plugins, by plugin, host and status class \
             (1xx..5xx, or error when no response arrived)",
            self.requests.clone(),
        );
        registry.register(
            "plugin_http_request_seconds",
            "Time from sending an outbound request to its response head, by plugin",
            self.seconds.clone(),
        );
        registry.register(
            "plugin_http_refused",
            "Outbound HTTP requests refused or cut short by the host, by plugin and reason",
            self.refused.clone(),
        );
    }

    /// A request that got a response with `status` (or none: `None`).
    pub fn answered(&self, plugin: &str, host: &str, status: Option<u16>, latency: Duration) {
        let class = match status {
            Some(s) => format!("{}xx", s / 100),
            None => "error".to_owned(),
        };
        self.requests
            .get_or_create(&vec![
                ("plugin", plugin.to_owned()),
                ("host", host.to_owned()),
                ("class", class),
            ])
            .inc();
        if status.is_some() {
            self.seconds
                .get_or_create(&vec![("plugin", plugin.to_owned())])
                .observe(latency.as_secs_f64());
        }
    }

    pub fn refused(&self, plugin: &str, reason: RefusalReason) {
        self.refused
            .get_or_create(&vec![
                ("plugin", plugin.to_owned()),
                ("reason", reason.label().to_owned()),
            ])
            .inc();
    }
}

/// 1 ms to ~15 s.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 12))
}

impl Default for OutboundMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for OutboundMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboundMetrics")
    }
}
