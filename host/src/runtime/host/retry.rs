//! `evhost:plugin/retry`: the guest's advice on the delay before the next
//! attempt, read by the dispatcher when the call ends in `retry`.

use std::time::Duration;

use crate::runtime::bindings::evhost::plugin::retry::Host;
use crate::runtime::context::CallState;

impl Host for CallState {
    fn retry_after(&mut self, delay_ms: u64) {
        self.retry_after = Some(Duration::from_millis(delay_ms));
    }
}
