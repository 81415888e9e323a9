//! The per-plugin circuit breaker. After `failure_threshold` consecutive
//! failed calls the plugin's consumers pause for `cool_down`; then one probe
//! call goes ahead (half-open): success closes the breaker, failure opens it
//! again. A probe's failure does not use up the event's attempts, so a down
//! dependency does not drain a topic into the dead-letter store.
//!
//! An admission is a [`Ticket`]: the call's outcome is recorded through it,
//! and a probe ticket dropped without an outcome (an early return, a stop, a
//! log error) hands the probe back, so the plugin can never stay half-open
//! with nobody probing.

use std::sync::{Arc, Mutex, PoisonError};
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
    pub async fn admit(self: &Arc<Self>) -> Ticket {
        let admission = self.wait_admission().await;
        Ticket {
            breaker: self.clone(),
            admission,
            recorded: false,
        }
    }

    async fn wait_admission(&self) -> Admission {
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

    /// A probe ended without an outcome: the next admission probes instead.
    fn release_probe(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Inner::HalfOpen { probing: true } = *inner {
            *inner = Inner::HalfOpen { probing: false };
            drop(inner);
            self.changed.notify_waiters();
        }
    }

    /// Records a call's outcome; `healthy` is false for failures that say
    /// something about the plugin's health (not for rejections).
    /// Returns the new state if it changed.
    fn record(&self, admission: Admission, healthy: bool) -> Option<BreakerState> {
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

/// One admitted call. Its outcome is recorded with [`Ticket::record`]; a
/// probe ticket dropped unrecorded releases the probe.
#[must_use = "a ticket records the call's outcome; dropping it gives up a probe"]
pub struct Ticket {
    breaker: Arc<Breaker>,
    admission: Admission,
    recorded: bool,
}

impl Ticket {
    #[cfg(test)]
    pub fn admission(&self) -> Admission {
        self.admission
    }

    pub fn is_probe(&self) -> bool {
        self.admission == Admission::Probe
    }

    /// Records a call's outcome. The first outcome answers the admission
    /// (closing or re-opening a half-open breaker); later ones, of calls
    /// made under the same ticket, count as normal calls.
    pub fn record(&mut self, healthy: bool) -> Option<BreakerState> {
        let admission = if self.recorded {
            Admission::Normal
        } else {
            self.admission
        };
        self.recorded = true;
        self.breaker.record(admission, healthy)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.recorded && self.admission == Admission::Probe {
            self.breaker.release_probe();
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("admission", &self.admission)
            .field("recorded", &self.recorded)
            .finish()
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
        let b = Arc::new(Breaker::new(
            BreakerConfig {
                failure_threshold: 3,
                cool_down: Duration::from_secs(10),
            },
            move |s| log.lock().unwrap().push(s),
        ));
        for _ in 0..2 {
            let mut t = b.admit().await;
            assert_eq!(t.admission(), Admission::Normal);
            assert_eq!(t.record(false), None);
        }
        assert_eq!(b.admit().await.record(false), Some(BreakerState::Open));
        let t0 = Instant::now();
        let mut probe = b.admit().await;
        assert_eq!(probe.admission(), Admission::Probe);
        assert!(
            t0.elapsed() >= Duration::from_secs(10),
            "paused for the cool-down"
        );
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A failed probe re-opens it; a successful one closes it.
        assert_eq!(probe.record(false), Some(BreakerState::Open));
        let mut probe = b.admit().await;
        assert_eq!(probe.admission(), Admission::Probe);
        assert_eq!(probe.record(true), Some(BreakerState::Closed));
        assert_eq!(b.admit().await.admission(), Admission::Normal);
        use BreakerState::*;
        assert_eq!(
            *seen.lock().unwrap(),
            [Open, HalfOpen, Open, HalfOpen, Closed]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn probe_now_cuts_the_cool_down_short() {
        let b = Arc::new(Breaker::new(
            BreakerConfig {
                failure_threshold: 1,
                cool_down: Duration::from_secs(3600),
            },
            |_| {},
        ));
        b.record(Admission::Normal, false);
        let waiter = async {
            let t0 = Instant::now();
            let a = b.admit().await.admission();
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

    fn open_breaker(cool_down: Duration) -> Arc<Breaker> {
        let b = Arc::new(Breaker::new(
            BreakerConfig {
                failure_threshold: 1,
                cool_down,
            },
            |_| {},
        ));
        b.record(Admission::Normal, false);
        b
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_without_an_outcome_is_handed_to_the_next_caller() {
        let b = open_breaker(Duration::from_secs(1));
        let probe = b.admit().await;
        assert!(probe.is_probe());
        // While the probe runs, nobody else is admitted.
        let blocked = tokio::time::timeout(Duration::from_secs(60), b.admit()).await;
        assert!(blocked.is_err(), "a second caller waits for the probe");
        // An early return drops the ticket: the next caller probes at once.
        drop(probe);
        let next = tokio::time::timeout(Duration::from_millis(1), b.admit())
            .await
            .expect("the probe was handed back");
        assert!(next.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_caller_wakes_when_a_probe_is_dropped() {
        let b = open_breaker(Duration::from_secs(1));
        let probe = b.admit().await;
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.admit().await.is_probe() }
        });
        tokio::task::yield_now().await;
        drop(probe);
        let probed = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(probed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recorded_probe_is_not_released_and_later_outcomes_count_as_normal() {
        let b = open_breaker(Duration::from_secs(1));
        let mut probe = b.admit().await;
        assert_eq!(probe.record(true), Some(BreakerState::Closed));
        // A second outcome under the same ticket is a normal call's: with a
        // threshold of 1 it opens the closed breaker again.
        assert_eq!(probe.record(false), Some(BreakerState::Open));
        drop(probe);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
