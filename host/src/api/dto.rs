//! Wire types: the JSON answers built from library types. The library's
//! structs (`PluginStatus`, `ReplayOutcome`, `SchemaInfo`, …) derive no
//! `Serialize` for clients, so a change inside dispatch, the loader or the
//! schema registry cannot change an answer without an edit here. Conversions
//! destructure their source whole: a field added there does not compile here
//! until someone decides whether clients see it.
//!
//! Answers that only assemble a few values (`{"plugin","succeeded","failed"}`,
//! dead letters, topics) are built with `json!` next to their handler; they
//! too are made in `api/`.

use serde::Serialize;
use serde_json::Value;

use crate::daemon::schemas::SchemaInfo;
use crate::dispatch::{PartitionLag, PluginStatus, ReplayOutcome, RunState};
use crate::histogram::HistogramSnapshot;
use crate::log::DeadLetterId;
use crate::plugins::FailedLoad;
use crate::runtime::{Grants, Subscription};

/// `GET /v1/plugins`: deployed plugins by name, then files that failed to load.
#[derive(Debug, Serialize)]
pub struct PluginListJson {
    pub plugins: Vec<PluginEntryJson>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PluginEntryJson {
    Deployed(PluginJson),
    Failed(FailedPluginJson),
}

/// A deployed plugin and its progress.
#[derive(Debug, Serialize)]
pub struct PluginJson {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub load_number: u64,
    /// `running`, `paused` (breaker open) or `stopped`.
    pub state: &'static str,
    pub subscriptions: Vec<SubscriptionJson>,
    pub processed: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub last_error: Option<String>,
    pub call_latency: HistogramJson,
    pub lag: u64,
    pub partitions: Vec<PartitionLagJson>,
    /// Consumer tasks that ended unexpectedly and were restarted, and why the last did.
    pub consumer_restarts: u64,
    pub consumer_error: Option<String>,
    pub grants: GrantsJson,
}

impl From<PluginStatus> for PluginJson {
    fn from(s: PluginStatus) -> Self {
        let PluginStatus {
            name,
            version,
            digest,
            load_number,
            state,
            subscriptions,
            processed,
            failed,
            dead_lettered,
            last_error,
            call_latency,
            lag,
            partitions,
            consumer_restarts,
            consumer_error,
            grants,
        } = s;
        PluginJson {
            name,
            version,
            digest,
            load_number,
            state: run_state(state),
            subscriptions: subscriptions.into_iter().map(Into::into).collect(),
            processed,
            failed,
            dead_lettered,
            last_error,
            call_latency: call_latency.into(),
            lag,
            partitions: partitions.into_iter().map(Into::into).collect(),
            consumer_restarts,
            consumer_error,
            grants: grants.into(),
        }
    }
}

/// The capabilities beyond `log` and `config` the operator granted.
#[derive(Debug, Serialize)]
pub struct GrantsJson {
    /// Event-type patterns the plugin may emit (empty: none).
    pub emit: Vec<String>,
    pub state: bool,
}

impl From<Grants> for GrantsJson {
    fn from(g: Grants) -> Self {
        GrantsJson {
            emit: g.emit_patterns().to_vec(),
            state: g.state,
        }
    }
}

fn run_state(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Paused => "paused",
        RunState::Stopped => "stopped",
    }
}

#[derive(Debug, Serialize)]
pub struct SubscriptionJson {
    pub topic: String,
    pub event_type: String,
}

impl From<Subscription> for SubscriptionJson {
    fn from(s: Subscription) -> Self {
        let Subscription { topic, event_type } = s;
        SubscriptionJson { topic, event_type }
    }
}

/// Call durations in seconds: `(upper bound, calls in this bucket)`, not
/// cumulative; the last bound is infinity, which JSON writes as `null`.
#[derive(Debug, Serialize)]
pub struct HistogramJson {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl From<HistogramSnapshot> for HistogramJson {
    fn from(h: HistogramSnapshot) -> Self {
        let HistogramSnapshot {
            buckets,
            sum,
            count,
        } = h;
        HistogramJson {
            buckets,
            sum,
            count,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PartitionLagJson {
    pub topic: String,
    pub partition: u32,
    /// The next offset the plugin will consume.
    pub committed: u64,
    pub end: u64,
    pub lag: u64,
}

impl From<PartitionLag> for PartitionLagJson {
    fn from(p: PartitionLag) -> Self {
        let PartitionLag {
            topic,
            partition,
            committed,
            end,
            lag,
        } = p;
        PartitionLagJson {
            topic,
            partition,
            committed,
            end,
            lag,
        }
    }
}

/// A plugin file that could not be deployed; the running version, if any,
/// is listed separately.
#[derive(Debug, Serialize)]
pub struct FailedPluginJson {
    pub name: String,
    pub file: String,
    /// Always `failed`.
    pub state: &'static str,
    pub last_error: String,
    /// RFC 3339.
    pub failed_at: String,
}

impl From<FailedLoad> for FailedPluginJson {
    fn from(f: FailedLoad) -> Self {
        // `blocked_by` is the loader's own bookkeeping; the error already names it.
        let FailedLoad {
            name,
            file,
            error,
            at,
            blocked_by: _,
        } = f;
        FailedPluginJson {
            name,
            file,
            state: "failed",
            last_error: error,
            failed_at: at,
        }
    }
}

/// `POST /v1/dlq/{id}/replay`.
#[derive(Debug, Serialize)]
pub struct ReplayJson {
    /// `succeeded` or `failed`.
    pub outcome: &'static str,
    /// The replayed dead letter.
    pub id: u64,
    /// When it failed again: the id of the updated dead letter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ReplayJson {
    pub fn new(id: DeadLetterId, outcome: ReplayOutcome) -> Self {
        match outcome {
            ReplayOutcome::Succeeded => ReplayJson {
                outcome: "succeeded",
                id: id.0,
                new_id: None,
                message: None,
            },
            ReplayOutcome::Failed { new_id, message } => ReplayJson {
                outcome: "failed",
                id: id.0,
                new_id: Some(new_id),
                message: Some(message),
            },
        }
    }
}

/// `GET /v1/schemas`.
#[derive(Debug, Serialize)]
pub struct SchemaListJson {
    pub schemas: Vec<SchemaJson>,
}

/// One registered schema: `GET /v1/schemas/{type}/{version}`.
#[derive(Debug, Serialize)]
pub struct SchemaJson {
    #[serde(rename = "type")]
    pub ty: String,
    pub version: String,
    /// RFC 3339.
    pub registered_at: String,
    pub schema: Value,
}

impl From<SchemaInfo> for SchemaJson {
    fn from(s: SchemaInfo) -> Self {
        let SchemaInfo {
            ty,
            version,
            registered_at,
            schema,
        } = s;
        SchemaJson {
            ty,
            version,
            registered_at,
            schema,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The exact JSON a client gets; a change here is a change of the v1 contract.
    fn wire<T: Serialize>(v: T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn plugin_status_keeps_its_v1_fields() {
        let status = PluginStatus {
            name: "counter".into(),
            version: "0.1.0".into(),
            digest: "ab".into(),
            load_number: 3,
            state: RunState::Paused,
            subscriptions: vec![Subscription {
                topic: "orders-*".into(),
                event_type: "order.*".into(),
            }],
            processed: 7,
            failed: 2,
            dead_lettered: 1,
            last_error: Some("trap".into()),
            call_latency: HistogramSnapshot {
                buckets: vec![(0.001, 5), (f64::INFINITY, 2)],
                sum: 0.5,
                count: 7,
            },
            lag: 4,
            partitions: vec![PartitionLag {
                topic: "orders-a".into(),
                partition: 0,
                committed: 6,
                end: 10,
                lag: 4,
            }],
            consumer_restarts: 1,
            consumer_error: Some("orders-a/0: panicked: boom".into()),
            grants: Grants::new(vec!["order.*".into()], true).unwrap(),
        };
        assert_eq!(
            wire(PluginEntryJson::Deployed(status.into())),
            json!({
                "name": "counter", "version": "0.1.0", "digest": "ab", "load_number": 3,
                "state": "paused",
                "subscriptions": [{"topic": "orders-*", "event_type": "order.*"}],
                "processed": 7, "failed": 2, "dead_lettered": 1, "last_error": "trap",
                "call_latency": {"buckets": [[0.001, 5], [null, 2]], "sum": 0.5, "count": 7},
                "lag": 4,
                "partitions": [
                    {"topic": "orders-a", "partition": 0, "committed": 6, "end": 10, "lag": 4}
                ],
                "consumer_restarts": 1,
                "consumer_error": "orders-a/0: panicked: boom",
                "grants": {"emit": ["order.*"], "state": true},
            })
        );
    }

    #[test]
    fn failed_load_is_listed_as_a_failed_plugin() {
        let failed = FailedLoad {
            name: "broken".into(),
            file: "/p/broken.wasm".into(),
            error: "not a Wasm file".into(),
            at: "2026-11-29T23:00:00Z".into(),
            blocked_by: None,
        };
        assert_eq!(
            wire(PluginEntryJson::Failed(failed.into())),
            json!({
                "name": "broken", "file": "/p/broken.wasm", "state": "failed",
                "last_error": "not a Wasm file", "failed_at": "2026-11-29T23:00:00Z",
            })
        );
    }

    #[test]
    fn replay_outcomes_name_the_dead_letter() {
        assert_eq!(
            wire(ReplayJson::new(DeadLetterId(4), ReplayOutcome::Succeeded)),
            json!({"outcome": "succeeded", "id": 4})
        );
        let failed = ReplayOutcome::Failed {
            new_id: 9,
            message: "trap".into(),
        };
        assert_eq!(
            wire(ReplayJson::new(DeadLetterId(4), failed)),
            json!({"outcome": "failed", "id": 4, "new_id": 9, "message": "trap"})
        );
    }

    #[test]
    fn schema_info_keeps_type_as_its_name() {
        let info = SchemaInfo {
            ty: "user.created".into(),
            version: "1".into(),
            registered_at: "2026-11-29T23:00:00Z".into(),
            schema: json!({"type": "object"}),
        };
        assert_eq!(
            wire(SchemaJson::from(info)),
            json!({
                "type": "user.created", "version": "1",
                "registered_at": "2026-11-29T23:00:00Z", "schema": {"type": "object"},
            })
        );
    }
}
