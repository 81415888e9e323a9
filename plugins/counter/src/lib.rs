//! `counter`: counts every event it handles, once per event id.
//!
//! State (JSON numbers): `count/total` and `count/type/<type>` for each type
//! seen. Handling goes through [`Context::once`], and the count and the
//! "handled" record are committed together with the consumer offset, so the
//! total equals the number of distinct event ids handled — across retries,
//! redeliveries and hot reloads (within the SDK's dedupe window of
//! [`evhost_sdk::DEFAULT_DEDUPE_WINDOW`] ids for duplicate copies of an id).

use evhost_sdk::prelude::*;

evhost_sdk::plugin!(name = "counter", subscribe = [("*", "*")], handler = handle,);

/// The state key of the total.
pub const TOTAL_KEY: &str = "count/total";

/// The state key of the count of `ty` events.
pub fn type_key(ty: &str) -> String {
    format!("count/type/{ty}")
}

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    cx.once(event, |cx| {
        let total = increment(cx, TOTAL_KEY)?;
        let of_type = increment(cx, &type_key(&event.ty))?;
        cx.log(
            Level::Debug,
            "counted",
            &[
                ("type", &event.ty),
                ("total", &total.to_string()),
                ("of_type", &of_type.to_string()),
            ],
        );
        Ok(())
    })
}

fn increment(cx: &mut Context, key: &str) -> Result<u64, SdkError> {
    let next = cx.state_get::<u64>(key)?.unwrap_or(0) + 1;
    cx.state_set(key, &next)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_sdk::testing::{TestEvent, TestHost};

    #[test]
    fn subscribes_to_everything() {
        assert_eq!(describe().subscriptions, vec![Subscription::new("*", "*")]);
    }

    #[test]
    fn counts_per_type_and_in_total() {
        let mut host = TestHost::new();
        for ty in ["user.created", "user.created", "order.placed"] {
            host.deliver(handle, TestEvent::new(ty)).unwrap();
        }
        assert_eq!(host.state_json::<u64>(TOTAL_KEY), Some(3));
        assert_eq!(host.state_json::<u64>(&type_key("user.created")), Some(2));
        assert_eq!(host.state_json::<u64>(&type_key("order.placed")), Some(1));
    }

    #[test]
    fn a_redelivered_event_id_is_counted_once() {
        let mut host = TestHost::new();
        let event = TestEvent::new("user.created").build();
        host.deliver(handle, &event).unwrap();
        // The same id again: a second publish, a replay, or a later attempt.
        let mut again = event.clone();
        again.offset += 10;
        again.attempt = 2;
        host.deliver(handle, again).unwrap();
        host.deliver(handle, TestEvent::new("user.created"))
            .unwrap();
        assert_eq!(host.state_json::<u64>(TOTAL_KEY), Some(2));
        assert_eq!(host.state_json::<u64>(&type_key("user.created")), Some(2));
    }

    #[test]
    fn a_failed_call_commits_nothing_and_the_retry_counts_once() {
        let mut host = TestHost::new();
        let event = TestEvent::new("user.created").build();
        let failing = |event: &Event, cx: &mut Context| {
            handle(event, cx)?;
            Err(HandlerError::retry("downstream hiccup after counting"))
        };
        assert!(host.deliver(failing, &event).unwrap_err().is_retry());
        assert_eq!(host.state_json::<u64>(TOTAL_KEY), None);
        assert!(host.state_keys().is_empty());

        host.deliver(handle, &event).unwrap();
        assert_eq!(host.state_json::<u64>(TOTAL_KEY), Some(1));
    }

    #[test]
    fn total_equals_distinct_ids_over_a_noisy_stream() {
        let mut host = TestHost::new();
        let events: Vec<Event> = (0..50)
            .map(|i| TestEvent::new(format!("kind{}.happened", i % 3)).build())
            .collect();
        // Every event twice, the second copies in reverse order.
        for event in events.iter().chain(events.iter().rev()) {
            host.deliver(handle, event).unwrap();
        }
        assert_eq!(host.state_json::<u64>(TOTAL_KEY), Some(50));
        let per_type: u64 = (0..3)
            .map(|k| {
                host.state_json::<u64>(&type_key(&format!("kind{k}.happened")))
                    .unwrap()
            })
            .sum();
        assert_eq!(per_type, 50);
    }
}
