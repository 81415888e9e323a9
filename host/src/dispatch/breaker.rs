//! The per-plugin circuit breaker. After `failure_threshold` consecutive
//! failed calls the plugin's consumers pause for `cool_down`; then one probe
//! call goes ahead (half-open): success closes the breaker, failure opens it
//! again. A probe's failure does not use up the event's attempts, so a down
//! dependency does not drain a topic into the dead-letter store.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Consecutive failed calls (traps, timeouts, retry answers) that open the breaker.
    pub failure_threshold: u32,
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 10,
            cool_down: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// What a call was admitted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    Probe,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

type OnChange = Box<dyn Fn(BreakerState) + Send + Sync>;

pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    changed: Notify,
    /// Told about every state change (metrics, the dispatch event feed).
    on_change: OnChange,
}

impl Breaker {
    pub fn new(
        config: BreakerConfig,
        on_change: impl Fn(BreakerState) + Send + Sync + 'static,
    ) -> Self {
        Breaker {
            config,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            changed: Notify::new(),
            on_change: Box::new(on_change),
        }
    }

    pub fn state(&self) -> BreakerState {
        match *self.inner.lock().unwrap_or_else(PoisonError::into_inner) {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Waits until a call may go ahead.
    pub async fn admit(&self) -> Admission {
        loop {
            let notified = self.changed.notified();
            let wait_until = {
                let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                match *inner {
                    Inner::Closed { .. } => return Admission::Normal,
                    Inner::Open { until } if Instant::now() >= until => {
                        *inner = Inner::HalfOpen { probing: true };
                        drop(inner);
                        (self.on_change)(BreakerState::HalfOpen);
                        return Admission::Probe;
                    }
                    Inner::HalfOpen { probing: false } => {
                        *inner = Inner::HalfOpen { probing: true };
                        return Admission::Probe;
                    }
                    Inner::Open { until } => Some(until),
                    Inner::HalfOpen { probing: true } => None,
                }
            };
            match wait_until {
                Some(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Ends an open breaker's cool-down now, so the next call is the probe.
    pub fn probe_now(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Inner::Open { .. } = *inner {
            *inner = Inner::Open {
                until: Instant::now(),
            };
            drop(inner);
            self.changed.notify_waiters();
        }
    }

    /// Records a call's outcome; `healthy` is false for failures that say
    /// something about the plugin's health (not for rejections).
    /// Returns the new state if it changed.
    pub fn record(&self, admission: Admission, healthy: bool) -> Option<BreakerState> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let before = std::mem::discriminant(&*inner);
        *inner = match (&*inner, admission, healthy) {
            (_, _, true) => Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, Admission::Normal, false) => {
                let failures = failures + 1;
                if failures >= self.config.failure_threshold {
                    Inner::Open {
                        until: Instant::now() + self.config.cool_down,
                    }
                } else {
                    Inner::Closed { failures }
                }
            }
            // A failed probe, or a failure of a call admitted before the breaker opened.
            (_, _, false) => Inner::Open {
                until: Instant::now() + self.config.cool_down,
            },
        };
        let changed = before != std::mem::discriminant(&*inner);
        drop(inner);
        if changed {
            self.changed.notify_waiters();
            let state = self.state();
            (self.on_change)(state);
            Some(state)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_half_opens_and_closes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let b = Breaker::new(
            BreakerConfig {
                failure_threshold: 3,
                cool_down: Duration::from_secs(10),
            },
            move |s| log.lock().unwrap().push(s),
        );
        for _ in 0..2 {
            assert_eq!(b.admit().await, Admission::Normal);
            assert_eq!(b.record(Admission::Normal, false), None);
        }
        assert_eq!(b.record(Admission::Normal, false), Some(BreakerState::Open));
        let t0 = Instant::now();
        assert_eq!(b.admit().await, Admission::Probe);
        assert!(
            t0.elapsed() >= Duration::from_secs(10),
            "paused for the cool-down"
        );
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A failed probe re-opens it; a successful one closes it.
        assert_eq!(b.record(Admission::Probe, false), Some(BreakerState::Open));
        assert_eq!(b.admit().await, Admission::Probe);
        assert_eq!(b.record(Admission::Probe, true), Some(BreakerState::Closed));
        assert_eq!(b.admit().await, Admission::Normal);
        use BreakerState::*;
        assert_eq!(
            *seen.lock().unwrap(),
            [Open, HalfOpen, Open, HalfOpen, Closed]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn probe_now_cuts_the_cool_down_short() {
        let b = Breaker::new(
            BreakerConfig {
                failure_threshold: 1,
                cool_down: Duration::from_secs(3600),
            },
            |_| {},
        );
        b.record(Admission::Normal, false);
        let waiter = async {
            let t0 = Instant::now();
            let a = b.admit().await;
            (a, t0.elapsed())
        };
        let kick = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            b.probe_now();
        };
        let ((admission, waited), ()) = tokio::join!(waiter, kick);
        assert_eq!(admission, Admission::Probe);
        assert!(waited < Duration::from_secs(60), "waited {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_consecutive_count() {
        let b = Breaker::new(
            BreakerConfig {
                failure_threshold: 2,
                cool_down: Duration::from_secs(1),
            },
            |_| {},
        );
        b.record(Admission::Normal, false);
        b.record(Admission::Normal, true);
        assert_eq!(b.record(Admission::Normal, false), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
