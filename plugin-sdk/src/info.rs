//! What a plugin says about itself in `describe()`.

use std::time::Duration;

/// Who the plugin is and what it consumes, mirroring the WIT record `plugin-info`.
/// The [`plugin!`](crate::plugin) macro builds it; build one by hand to test.
///
/// ```
/// use evhost_sdk::{PluginInfo, RetryPolicy};
///
/// let info = PluginInfo::new("welcome", "1.0.0")
///     .subscribe("user-events", "user.created")
///     .retry(RetryPolicy::attempts(3));
/// assert_eq!(info.subscriptions[0].event_type, "user.created");
/// assert_eq!(info.retry.unwrap().max_attempts, 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// Lowercase letters, digits and `-`, at most 64 characters. Names the
    /// consumer group, the state namespace and the dead letters.
    pub name: String,
    /// The plugin's own version (semver recommended).
    pub version: String,
    /// What to consume; the operator's sidecar may override it.
    pub subscriptions: Vec<Subscription>,
    /// The default retry policy; the host's default when `None`.
    pub retry: Option<RetryPolicy>,
}

impl PluginInfo {
    /// A plugin with no subscriptions and the host's default retry policy.
    ///
    /// ```
    /// let info = evhost_sdk::PluginInfo::new("audit", "0.1.0");
    /// assert!(info.subscriptions.is_empty());
    /// ```
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            subscriptions: Vec::new(),
            retry: None,
        }
    }

    /// Adds a subscription: events on topics matching the `topic` glob whose
    /// type matches the `event_type` glob.
    ///
    /// ```
    /// let info = evhost_sdk::PluginInfo::new("audit", "0.1.0").subscribe("*", "*.failed");
    /// assert_eq!(info.subscriptions.len(), 1);
    /// ```
    pub fn subscribe(mut self, topic: impl Into<String>, event_type: impl Into<String>) -> Self {
        self.subscriptions
            .push(Subscription::new(topic.into(), event_type.into()));
        self
    }

    /// Sets the plugin's default retry policy.
    ///
    /// ```
    /// use evhost_sdk::{PluginInfo, RetryPolicy};
    /// let info = PluginInfo::new("audit", "0.1.0").retry(RetryPolicy::no_retry());
    /// assert_eq!(info.retry.unwrap().max_attempts, 1);
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}

/// A topic glob and an event-type glob (`*`, `?`, `[a-z]`, `{a,b}`), mirroring
/// the WIT record `subscription`. The host does the matching.
///
/// ```
/// let sub = evhost_sdk::Subscription::new("order-events", "order.*");
/// assert_eq!(sub.topic, "order-events");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    /// Glob over topic names.
    pub topic: String,
    /// Glob over CloudEvents `type`.
    pub event_type: String,
}

impl Subscription {
    /// A subscription to `event_type` events on `topic` (both globs).
    ///
    /// ```
    /// let all = evhost_sdk::Subscription::new("*", "*");
    /// assert_eq!(all.event_type, "*");
    /// ```
    pub fn new(topic: impl Into<String>, event_type: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            event_type: event_type.into(),
        }
    }
}

/// How the host retries failed calls, mirroring the WIT record `retry-policy`.
/// Operators may override it in the plugin's sidecar.
///
/// The delay before attempt *n+1* is `initial_backoff_ms * multiplier^(n-1)`,
/// capped at `max_backoff_ms`, with a `jitter` fraction of it randomised.
///
/// ```
/// use std::time::Duration;
/// use evhost_sdk::RetryPolicy;
///
/// let policy = RetryPolicy::attempts(5)
///     .backoff(Duration::from_millis(100), Duration::from_secs(10))
///     .with_multiplier(3.0)
///     .with_jitter(0.1);
/// assert_eq!(policy.initial_backoff_ms, 100);
/// assert_eq!(policy.max_backoff_ms, 10_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total calls for one event, the first included; at least 1.
    pub max_attempts: u32,
    /// Delay before the second attempt, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Upper bound of any delay, in milliseconds.
    pub max_backoff_ms: u64,
    /// Factor applied to the delay after each failed attempt; at least 1.0.
    pub multiplier: f64,
    /// Fraction (0.0 to 1.0) of each delay that is randomised.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 5 attempts, 200 ms doubling up to 30 s, 20 % jitter.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The default policy with `max_attempts` total calls (clamped to at least 1).
    ///
    /// ```
    /// assert_eq!(evhost_sdk::RetryPolicy::attempts(0).max_attempts, 1);
    /// ```
    pub fn attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// One attempt only: any failure goes to the dead-letter store.
    ///
    /// ```
    /// assert_eq!(evhost_sdk::RetryPolicy::no_retry().max_attempts, 1);
    /// ```
    pub fn no_retry() -> Self {
        Self::attempts(1)
    }

    /// Sets the first delay and the cap (millisecond precision).
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = evhost_sdk::RetryPolicy::default().backoff(Duration::from_secs(1), Duration::from_secs(60));
    /// assert_eq!(p.max_backoff_ms, 60_000);
    /// ```
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff_ms = initial.as_millis().try_into().unwrap_or(u64::MAX);
        self.max_backoff_ms = max
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX)
            .max(self.initial_backoff_ms);
        self
    }

    /// Sets the growth factor (clamped to at least 1.0).
    ///
    /// ```
    /// assert_eq!(evhost_sdk::RetryPolicy::default().with_multiplier(0.5).multiplier, 1.0);
    /// ```
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_nan() {
            1.0
        } else {
            multiplier.max(1.0)
        };
        self
    }

    /// Sets the randomised fraction of each delay (clamped to 0.0..=1.0).
    ///
    /// ```
    /// assert_eq!(evhost_sdk::RetryPolicy::default().with_jitter(2.0).jitter, 1.0);
    /// ```
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }
}
