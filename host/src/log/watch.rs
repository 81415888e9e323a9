//! Waiting for new events in a partition without polling.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::LogError;

/// The end offset (the offset the next event will get) of one partition, advanced by the
/// backend after each commit that appended to it. Async waiters park on `notify`, blocking
/// ones on `cv`; both are woken on every advance.
#[derive(Debug, Default)]
pub(crate) struct EndSignal {
    state: Mutex<SignalState>,
    cv: Condvar,
    notify: Notify,
}

#[derive(Debug, Default)]
struct SignalState {
    end: u64,
    closed: bool,
}

impl EndSignal {
    /// Raises the end offset (never lowers it) and wakes every waiter.
    pub(crate) fn advance(&self, end: u64) {
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if end <= state.end {
                return;
            }
            state.end = end;
        }
        self.cv.notify_all();
        self.notify.notify_waiters();
    }

    /// Wakes every waiter with [`LogError::Closed`]; the log shut down.
    pub(crate) fn close(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.cv.notify_all();
        self.notify.notify_waiters();
    }

    fn check(&self, offset: u64) -> Result<Option<u64>, LogError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.end > offset {
            Ok(Some(state.end))
        } else if state.closed {
            Err(LogError::Closed)
        } else {
            Ok(None)
        }
    }
}

/// A handle on one partition's end offset, from [`EventLog::watch`](super::EventLog::watch).
#[derive(Debug, Clone)]
pub struct EndWatch {
    signal: Arc<EndSignal>,
}

impl EndWatch {
    pub(crate) fn new(signal: Arc<EndSignal>) -> Self {
        Self { signal }
    }

    /// The partition's end offset as last committed: the offset the next event will get.
    pub fn end(&self) -> u64 {
        self.signal
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .end
    }

    /// Resolves once an event at `offset` exists (end > `offset`), with the end offset then.
    pub async fn wait_past(&self, offset: u64) -> Result<u64, LogError> {
        loop {
            let notified = self.signal.notify.notified();
            tokio::pin!(notified);
            // Registered before checking, so an advance between the check and the await
            // still wakes us.
            notified.as_mut().enable();
            if let Some(end) = self.signal.check(offset)? {
                return Ok(end);
            }
            notified.await;
        }
    }

    /// Blocks until an event at `offset` exists or `timeout` passes (`Ok(None)`).
    pub fn wait_past_blocking(
        &self,
        offset: u64,
        timeout: Duration,
    ) -> Result<Option<u64>, LogError> {
        let deadline = Instant::now() + timeout;
        let mut state = self
            .signal
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.end > offset {
                return Ok(Some(state.end));
            }
            if state.closed {
                return Err(LogError::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            state = self
                .signal
                .cv
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_async_waiter_wakes_on_advance_and_not_before() {
        let signal = Arc::new(EndSignal::default());
        let watch = EndWatch::new(signal.clone());
        let early = tokio::time::timeout(Duration::from_millis(20), watch.wait_past(0)).await;
        assert!(early.is_err(), "nothing appended yet");
        let waiter = tokio::spawn(async move { watch.wait_past(2).await });
        signal.advance(2);
        signal.advance(3);
        let end = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(end.unwrap().unwrap().unwrap(), 3);
    }

    #[test]
    fn a_blocking_waiter_wakes_on_advance_and_on_close() {
        let signal = Arc::new(EndSignal::default());
        let watch = EndWatch::new(signal.clone());
        assert_eq!(
            watch
                .wait_past_blocking(0, Duration::from_millis(10))
                .unwrap(),
            None
        );
        let w = watch.clone();
        let waiter = std::thread::spawn(move || w.wait_past_blocking(0, Duration::from_secs(5)));
        signal.advance(1);
        assert_eq!(waiter.join().unwrap().unwrap(), Some(1));
        let w = watch.clone();
        let waiter = std::thread::spawn(move || w.wait_past_blocking(5, Duration::from_secs(5)));
        signal.close();
        assert!(matches!(waiter.join().unwrap(), Err(LogError::Closed)));
    }
}
