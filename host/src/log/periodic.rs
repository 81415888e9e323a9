//! A background thread that runs a task every interval until stopped — what both backends
//! use to trigger retention passes.

use std::ops::ControlFlow;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub(crate) struct Periodic {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Periodic {
    /// Runs `task` every `interval` on a thread named `name`, until [`Periodic::stop`] or
    /// until `task` answers `Break`.
    pub(crate) fn spawn(
        name: &str,
        interval: Duration,
        mut task: impl FnMut() -> ControlFlow<()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let (flag, cv) = &*stopped;
                loop {
                    let guard = flag.lock().unwrap_or_else(PoisonError::into_inner);
                    let (guard, _) = cv
                        .wait_timeout_while(guard, interval, |stop| !*stop)
                        .unwrap_or_else(PoisonError::into_inner);
                    if *guard {
                        return;
                    }
                    drop(guard);
                    if task().is_break() {
                        return;
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread (a task running finishes first) and waits for it.
    pub(crate) fn stop(self) {
        let (flag, cv) = &*self.stop;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
        let _ = self.thread.join();
    }
}
