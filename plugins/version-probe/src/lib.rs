//! `version-probe`: says which version of it handled each event.
//!
//! For every `work.*` event on `work-events` it adds one to the state key
//! `count/total` and emits `probe.handled` (topic `probe-events`) with the
//! handled event's id, position and the operator's `label` config value. Two
//! deployments of the same component that differ only in `label` are thus told
//! apart in the log, which is what the hot-reload tests and the reload benchmark
//! watch. It needs the grants `state` and `emit = ["probe.*"]`.
//!
//! An event whose data has `"sleep_ms": N` is held for N ms before it is handled (a
//! long call, for the tests of daemons taking partitions over while a call runs).
//!
//! Deliberately *not* idempotent (no [`Context::once`]): if the host ever
//! committed one event's effects twice, `count/total` and the `probe.handled`
//! events would show it instead of hiding it.

use evhost_sdk::prelude::*;
use serde::{Deserialize, Serialize};

evhost_sdk::plugin!(
    name = "version-probe",
    subscribe = [("work-events", "work.*")],
    handler = handle,
);

/// The state key of the number of handled events.
pub const TOTAL_KEY: &str = "count/total";

/// The data of an emitted `probe.handled`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Handled {
    /// Id of the handled event.
    pub event: String,
    pub partition: u32,
    pub offset: u64,
    /// The `label` config value of the deployment that handled it.
    pub label: String,
}

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    let sleep_ms = event
        .data
        .as_deref()
        .and_then(|data| serde_json::from_slice::<serde_json::Value>(data).ok())
        .and_then(|data| data.get("sleep_ms").and_then(serde_json::Value::as_u64));
    if let Some(ms) = sleep_ms {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let label = cx.config_or("label", "unlabelled");
    let total = cx.state_get::<u64>(TOTAL_KEY)?.unwrap_or(0) + 1;
    cx.state_set(TOTAL_KEY, &total)?;
    let handled = Handled {
        event: event.id.clone(),
        partition: event.partition,
        offset: event.offset,
        label,
    };
    // No explicit id: every committed call gets a fresh one, so duplicates stay visible.
    cx.emit(OutgoingEvent::new("probe.handled").json(&handled)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_sdk::testing::{TestEvent, TestHost};

    #[test]
    fn records_the_label_and_counts_every_call() {
        let mut host = TestHost::new().with_config("label", "v2");
        let event = TestEvent::new("work.item").build();
        host.deliver(handle, &event).unwrap();
        host.deliver(handle, &event).unwrap();
        assert_eq!(host.state_json::<u64>(TOTAL_KEY), Some(2));
        let sent: Handled = host.emitted()[0].data_json().unwrap();
        assert_eq!(sent.event, event.id);
        assert_eq!(sent.label, "v2");
        assert_eq!(host.emitted()[0].topic, "probe-events");
    }

    #[test]
    fn without_a_label_it_says_so() {
        let mut host = TestHost::new();
        host.deliver(handle, TestEvent::new("work.item")).unwrap();
        let sent: Handled = host.emitted()[0].data_json().unwrap();
        assert_eq!(sent.label, "unlabelled");
    }
}
