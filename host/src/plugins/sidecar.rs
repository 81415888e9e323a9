//! The operator's sidecar `NAME.toml` next to `NAME.wasm`: what the operator
//! decides about a plugin. Every key is optional; unknown keys are refused by
//! name. The format is documented in the README (section "Plugin sidecar").

use std::collections::BTreeMap;
use std::path::Path;

// `[grants]` and the `[config]` value conversion are the SDK's, so that
// `TestHost::with_sidecar` reads and enforces exactly what the daemon does.
use evhost_sdk::sidecar::{GrantsSpec, config_value};
use serde::Deserialize;

use crate::config::{ByteSize, HumanDuration};
use crate::dispatch::{OrderingMode, PluginSettings};
use crate::runtime::{Grants, HttpGrant, HttpLimits, Limits, RetryPolicy, Subscription};

/// A parsed sidecar, before it is combined with what the plugin describes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Sidecar {
    /// Replaces the plugin's own subscriptions.
    subscriptions: Option<Vec<SubscriptionSpec>>,
    /// Overrides fields of the plugin's retry policy (or of the host default).
    retry: Option<RetrySpec>,
    timeout: Option<HumanDuration>,
    memory: Option<ByteSize>,
    fuel: Option<u64>,
    concurrency: Option<usize>,
    /// `strict` (default) or `non-blocking`.
    ordering: Option<OrderingMode>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    grants: GrantsSpec,
    /// Per-call limits of outbound HTTP (with `grants.http`).
    http: Option<HttpLimitsSpec>,
}

/// `[http]`: the per-call caps of outbound HTTP; each key overrides the default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HttpLimitsSpec {
    requests: Option<u32>,
    request_bytes: Option<ByteSize>,
    response_bytes: Option<ByteSize>,
    timeout: Option<HumanDuration>,
}

impl HttpLimitsSpec {
    fn limits(&self) -> HttpLimits {
        let d = HttpLimits::default();
        HttpLimits {
            requests: self.requests.unwrap_or(d.requests),
            request_bytes: self.request_bytes.map_or(d.request_bytes, |b| b.0 as u64),
            response_bytes: self.response_bytes.map_or(d.response_bytes, |b| b.0 as u64),
            timeout: self.timeout.map_or(d.timeout, |t| t.0),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionSpec {
    topic: String,
    #[serde(rename = "type")]
    event_type: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RetrySpec {
    max_attempts: Option<u32>,
    initial_backoff: Option<HumanDuration>,
    max_backoff: Option<HumanDuration>,
    multiplier: Option<f64>,
    jitter: Option<f64>,
}

impl Sidecar {
    /// Reads and parses a sidecar file; the error message names the file and the key.
    pub fn read(path: &Path) -> Result<Sidecar, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        Sidecar::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Sidecar, String> {
        let sidecar: Sidecar =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        sidecar.check()?;
        Ok(sidecar)
    }

    /// The memory limit the sidecar sets, in bytes, if any.
    pub fn memory(&self) -> Option<usize> {
        self.memory.map(|m| m.0)
    }

    /// Checks what can be checked without the plugin.
    fn check(&self) -> Result<(), String> {
        for s in self.subscriptions.iter().flatten() {
            for (key, pattern) in [("topic", &s.topic), ("type", &s.event_type)] {
                if pattern.is_empty() {
                    return Err(format!("subscriptions: `{key}` must not be empty"));
                }
                globset::Glob::new(pattern).map_err(|e| {
                    format!("subscriptions: `{key}` pattern {pattern:?} is invalid: {e}")
                })?;
            }
        }
        evhost_sdk::sidecar::EmitGrant::new(self.grants.emit.clone())
            .map_err(|e| format!("grants.emit: {e}"))?;
        self.http_grant()?;
        if let Some(t) = self.http.as_ref().and_then(|h| h.timeout)
            && t.0.is_zero()
        {
            return Err("http.timeout must be more than zero".into());
        }
        if self.concurrency == Some(0) {
            return Err("concurrency must be at least 1".into());
        }
        if let Some(t) = self.timeout
            && t.0.is_zero()
        {
            return Err("timeout must be more than zero".into());
        }
        if let Some(m) = self.memory
            && m.0 < 64 << 10
        {
            return Err("memory must be at least 64 KiB (one Wasm page)".into());
        }
        for (key, value) in &self.config {
            config_value(value).map_err(|e| format!("config.{key}: {e}"))?;
        }
        Ok(())
    }

    /// Combines the sidecar with the plugin's own retry policy into the settings the
    /// dispatcher runs the plugin with.
    pub fn settings(&self, plugin_retry: Option<&RetryPolicy>) -> Result<PluginSettings, String> {
        let defaults = Limits::default();
        let limits = Limits {
            timeout: self.timeout.map_or(defaults.timeout, |t| t.0),
            memory: self.memory.map_or(defaults.memory, |m| m.0),
            fuel: self.fuel.or(defaults.fuel),
        };
        let retry = match &self.retry {
            None => None,
            Some(spec) => {
                let mut policy = plugin_retry.cloned().unwrap_or_default();
                if let Some(v) = spec.max_attempts {
                    policy.max_attempts = v;
                }
                if let Some(v) = spec.initial_backoff {
                    policy.initial_backoff = v.0;
                }
                if let Some(v) = spec.max_backoff {
                    policy.max_backoff = v.0;
                }
                if let Some(v) = spec.multiplier {
                    policy.multiplier = v;
                }
                if let Some(v) = spec.jitter {
                    policy.jitter = v;
                }
                policy.validate().map_err(|e| format!("retry: {e}"))?;
                Some(policy)
            }
        };
        let grants = Grants::new(self.grants.emit.clone(), self.grants.state)
            .map_err(|e| format!("grants.emit: {e}"))?
            .with_http(self.http_grant()?);
        let config = self
            .config
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    config_value(v).map_err(|e| format!("config.{k}: {e}"))?,
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(PluginSettings {
            subscriptions: self.subscriptions.as_ref().map(|subs| {
                subs.iter()
                    .map(|s| Subscription {
                        topic: s.topic.clone(),
                        event_type: s.event_type.clone(),
                    })
                    .collect()
            }),
            retry,
            limits,
            concurrency: self.concurrency,
            config,
            grants,
            ordering: self.ordering.unwrap_or_default(),
        })
    }
}

impl Sidecar {
    /// `grants.http` with the `[http]` limits.
    fn http_grant(&self) -> Result<HttpGrant, String> {
        let limits = self
            .http
            .as_ref()
            .map(HttpLimitsSpec::limits)
            .unwrap_or_default();
        HttpGrant::new(&self.grants.http, limits).map_err(|e| format!("grants.http: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_empty_sidecar_changes_nothing_and_grants_nothing() {
        let s = Sidecar::parse("").unwrap().settings(None).unwrap();
        assert!(s.subscriptions.is_none() && s.retry.is_none());
        assert_eq!(s.limits, Limits::default());
        assert!(!s.grants.may_emit("anything") && !s.grants.state);
        assert!(s.grants.http.is_empty());
    }

    #[test]
    fn the_http_grant_and_its_limits_are_read() {
        let text = r#"
            [grants]
            http = ["https://api.example.com/v1/*", "http://127.0.0.1:9000"]
            [http]
            requests = 3
            response-bytes = "64 KiB"
            timeout = "2s"
        "#;
        let s = Sidecar::parse(text).unwrap().settings(None).unwrap();
        assert_eq!(
            s.grants.http.describe(),
            "https://api.example.com/v1/*, http://127.0.0.1:9000"
        );
        let l = &s.grants.http.limits;
        assert_eq!((l.requests, l.response_bytes), (3, 64 << 10));
        assert_eq!(l.timeout, Duration::from_secs(2));
        assert_eq!(l.request_bytes, HttpLimits::default().request_bytes);
    }

    #[test]
    fn every_key_is_applied() {
        let text = r#"
            timeout = "250ms"
            memory = "16 MiB"
            fuel = 1000000
            concurrency = 2
            [[subscriptions]]
            topic = "user-events"
            type = "user.*"
            [retry]
            max-attempts = 3
            initial-backoff = "10ms"
            [grants]
            emit = ["notification.*"]
            state = true
            [config]
            greeting = "Hej"
            times = 3
        "#;
        let s = Sidecar::parse(text).unwrap().settings(None).unwrap();
        assert_eq!(s.limits.timeout, Duration::from_millis(250));
        assert_eq!(s.limits.memory, 16 << 20);
        assert_eq!(s.limits.fuel, Some(1_000_000));
        assert_eq!(s.concurrency, Some(2));
        assert_eq!(s.subscriptions.unwrap()[0].event_type, "user.*");
        let retry = s.retry.unwrap();
        assert_eq!(retry.max_attempts, 3);
        assert_eq!(retry.initial_backoff, Duration::from_millis(10));
        assert_eq!(retry.max_backoff, RetryPolicy::default().max_backoff);
        assert!(s.grants.may_emit("notification.requested") && !s.grants.may_emit("user.created"));
        assert!(s.grants.state);
        assert_eq!(s.config["greeting"], "Hej");
        assert_eq!(s.config["times"], "3");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Sidecar::parse("timeot = \"1s\"").unwrap_err();
        assert!(e.contains("timeot"), "{e}");
        let e = Sidecar::parse("[grants]\nemitt = []").unwrap_err();
        assert!(e.contains("emitt"), "{e}");
        let e = Sidecar::parse("timeout = \"soon\"").unwrap_err();
        assert!(e.contains("soon"), "{e}");
        let e = Sidecar::parse("[retry]\nmax-attempts = 0")
            .unwrap()
            .settings(None)
            .unwrap_err();
        assert!(e.contains("max-attempts"), "{e}");
        let e = Sidecar::parse("[config]\nlist = [1]").unwrap_err();
        assert!(e.contains("config.list"), "{e}");
        let e = Sidecar::parse("[grants]\nemit = [\"a[\"]").unwrap_err();
        assert!(e.contains("grants.emit"), "{e}");
        let e = Sidecar::parse("[grants]\nhttp = [\"example.com\"]").unwrap_err();
        assert!(
            e.contains("grants.http") && e.contains("example.com"),
            "{e}"
        );
        let e = Sidecar::parse("[http]\nrequest = 3").unwrap_err();
        assert!(e.contains("request"), "{e}");
    }
}
