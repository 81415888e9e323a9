//! `notification`: tells the customer how their order ended, once.
//!
//! On `order.completed` or `order.cancelled` it "sends" a notification: the
//! state record `sent/<orderId>/<kind>` (kind `completed` or `cancelled`) is
//! the sending, and `notification.sent` `{orderId, customerId, channel, kind,
//! message}` announces it. The channel is the operator's `channel` (default
//! `email`).
//!
//! Nothing is sent twice, on two levels:
//! - **the same event again** (same id — delivered once more, e.g. replayed
//!   into a second topic this plugin reads) is skipped through the SDK's
//!   handled-id records, and counted in `stats/duplicate-deliveries`;
//! - **the same outcome under another id** (a producer republished it) finds
//!   its `sent/` record and sends nothing; counted in `stats/duplicate-outcomes`.
//!
//! `stats/sent` counts what was sent. Counters and records commit with the
//! consumer offset, so they are exact, not estimates.

use evhost_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Number, json};

evhost_sdk::plugin!(
    name = "notification",
    subscribe = [
        ("order-events", "order.completed"),
        ("order-events", "order.cancelled"),
    ],
    handler = handle,
);

/// State: notifications sent.
pub const SENT: &str = "stats/sent";
/// State: deliveries of an event id that was already handled.
pub const DUPLICATE_DELIVERIES: &str = "stats/duplicate-deliveries";
/// State: outcomes already notified, arriving under a new event id.
pub const DUPLICATE_OUTCOMES: &str = "stats/duplicate-outcomes";

/// The state key recording that `order`'s `kind` notification was sent.
pub fn sent_key(order: &str, kind: &str) -> String {
    format!("sent/{order}/{kind}")
}

/// The record under [`sent_key`]: what was sent, and because of which event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    pub to: String,
    pub channel: String,
    pub message: String,
    pub event_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    order_id: String,
    customer_id: String,
    #[serde(default)]
    total_amount: Option<Number>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    let kind = match event.ty.as_str() {
        "order.completed" => "completed",
        "order.cancelled" => "cancelled",
        other => {
            cx.log(Level::Warn, "ignoring an event type", &[("type", other)]);
            return Ok(());
        }
    };
    if cx.already_handled(event)? {
        bump(cx, DUPLICATE_DELIVERIES)?;
        cx.log(Level::Info, "event already handled", &[("id", &event.id)]);
        return Ok(());
    }
    let outcome: Outcome = event.data_json()?;
    let order = outcome.order_id.as_str();
    if order.is_empty() || outcome.customer_id.is_empty() {
        return Err(HandlerError::reject(format!(
            "{} needs an orderId and a customerId",
            event.ty
        )));
    }
    let key = sent_key(order, kind);
    if cx.state_get::<Sent>(&key)?.is_some() {
        bump(cx, DUPLICATE_OUTCOMES)?;
        cx.log(
            Level::Info,
            "already notified",
            &[("order", order), ("kind", kind)],
        );
    } else {
        let message = match kind {
            "completed" => format!(
                "Your order {order} is complete: {} {} charged.",
                outcome
                    .total_amount
                    .map_or_else(|| "?".to_owned(), |a| a.to_string()),
                outcome.currency.as_deref().unwrap_or("EUR")
            ),
            _ => format!(
                "Your order {order} was cancelled: {}.",
                outcome.reason.as_deref().unwrap_or("no reason given")
            ),
        };
        let channel = cx.config_or("channel", "email");
        cx.state_set(
            &key,
            &Sent {
                to: outcome.customer_id.clone(),
                channel: channel.clone(),
                message: message.clone(),
                event_id: event.id.clone(),
            },
        )?;
        cx.emit(
            OutgoingEvent::new("notification.sent")
                .id(format!("{order}:notification.{kind}"))
                .subject(order)
                .json(&json!({
                    "orderId": order,
                    "customerId": outcome.customer_id,
                    "channel": channel,
                    "kind": kind,
                    "message": message,
                }))?,
        )?;
        bump(cx, SENT)?;
        cx.log(Level::Info, "notified", &[("order", order), ("kind", kind)]);
    }
    cx.mark_handled(event)?;
    Ok(())
}

fn bump(cx: &mut Context, key: &str) -> Result<u64, SdkError> {
    let next = cx.state_get::<u64>(key)?.unwrap_or(0) + 1;
    cx.state_set(key, &next)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_sdk::testing::{TestEvent, TestHost};
    use serde_json::Value;

    fn completed(order: &str) -> Event {
        TestEvent::new("order.completed")
            .subject(order)
            .correlationid(format!("flow-{order}"))
            .json(
                &json!({"orderId": order, "customerId": "c-1", "totalAmount": 12,
                          "currency": "EUR", "paymentId": "pay-1"}),
            )
            .build()
    }

    fn cancelled(order: &str) -> Event {
        TestEvent::new("order.cancelled")
            .subject(order)
            .json(&json!({"orderId": order, "customerId": "c-2", "reason": "card declined"}))
            .build()
    }

    fn count(host: &TestHost, key: &str) -> u64 {
        host.state_json(key).unwrap_or(0)
    }

    #[test]
    fn describes_its_subscriptions() {
        assert_eq!(describe().subscriptions.len(), 2);
        assert_eq!(describe().name, "notification");
    }

    #[test]
    fn a_completed_order_is_notified_in_its_flow() {
        let mut host = TestHost::new().with_plugin_name("notification");
        let event = completed("o-1");
        host.deliver(handle, &event).unwrap();
        let [sent] = host.emitted() else {
            panic!("one event expected")
        };
        assert_eq!(sent.ty, "notification.sent");
        assert_eq!(sent.topic, "notification-events");
        assert_eq!(sent.causationid.as_deref(), Some(event.id.as_str()));
        assert_eq!(sent.correlationid, "flow-o-1");
        let data: Value = sent.data_json().unwrap();
        assert_eq!(
            data["message"],
            "Your order o-1 is complete: 12 EUR charged."
        );
        assert_eq!(data["channel"], "email");
        let record: Sent = host.state_json(&sent_key("o-1", "completed")).unwrap();
        assert_eq!((record.to.as_str(), record.event_id), ("c-1", event.id));
        assert_eq!(count(&host, SENT), 1);
    }

    #[test]
    fn a_cancelled_order_is_told_why_on_the_configured_channel() {
        let mut host = TestHost::new().with_config("channel", "sms");
        host.deliver(handle, cancelled("o-2")).unwrap();
        let data: Value = host.emitted()[0].data_json().unwrap();
        assert_eq!(data["kind"], "cancelled");
        assert_eq!(data["channel"], "sms");
        assert_eq!(
            data["message"],
            "Your order o-2 was cancelled: card declined."
        );
    }

    #[test]
    fn the_same_event_twice_sends_once_and_counts_the_duplicate() {
        let mut host = TestHost::new();
        let event = completed("o-3");
        host.deliver(handle, &event).unwrap();
        let mut replayed = event.clone();
        replayed.topic = "order-replay".into();
        replayed.offset = 0;
        host.deliver(handle, &replayed).unwrap();
        assert_eq!(host.emitted().len(), 1);
        assert_eq!(count(&host, SENT), 1);
        assert_eq!(count(&host, DUPLICATE_DELIVERIES), 1);
        assert_eq!(count(&host, DUPLICATE_OUTCOMES), 0);
    }

    #[test]
    fn the_same_outcome_under_a_new_id_sends_once_and_counts_it() {
        let mut host = TestHost::new();
        host.deliver(handle, completed("o-4")).unwrap();
        host.deliver(handle, completed("o-4")).unwrap();
        host.deliver(handle, cancelled("o-5")).unwrap();
        assert_eq!(host.emitted().len(), 2);
        assert_eq!(count(&host, SENT), 2);
        assert_eq!(count(&host, DUPLICATE_OUTCOMES), 1);
    }

    #[test]
    fn a_failed_call_sends_nothing_and_its_retry_sends_once() {
        let mut host = TestHost::new();
        let event = completed("o-6");
        let crashing = |e: &Event, cx: &mut Context| {
            handle(e, cx)?;
            Err(HandlerError::retry("mail server away"))
        };
        assert!(host.deliver(crashing, &event).is_err());
        assert!(host.emitted().is_empty() && host.state_keys().is_empty());
        host.deliver(handle, &event).unwrap();
        host.deliver(handle, &event).unwrap();
        assert_eq!(host.emitted().len(), 1);
        assert_eq!(count(&host, SENT), 1);
    }

    #[test]
    fn an_outcome_without_a_customer_is_rejected() {
        let mut host = TestHost::new();
        let bad =
            TestEvent::new("order.completed").json(&json!({"orderId": "o-7", "customerId": ""}));
        assert!(host.deliver(handle, bad).unwrap_err().is_reject());
        assert!(host.emitted().is_empty());
    }
}
