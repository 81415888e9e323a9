//! `order-saga`: drives each order to `order.completed` or `order.cancelled`,
//! compensating what was done when a step fails.
//!
//! The happy path: `order.created` → (inventory) `inventory.reserved` → saga
//! emits `payment.requested` → (payment) `payment.processed` → saga emits
//! `order.completed`. On any `*.failed` of the order (`inventory.reservation.failed`,
//! `payment.failed`, or any other topic's `*.failed` carrying an `orderId`) the
//! saga emits `inventory.release.requested` if stock was reserved, then
//! `order.cancelled` with the failure's reason.
//!
//! **The seed's bug, fixed.** The seed's saga requested the payment with
//! `amount: event.data.totalAmount` of the `inventory.reserved` event, which
//! has no amount. Here the order's details (customer, amount, currency, card)
//! are kept in the saga's state from `order.created`, and `payment.requested`
//! takes its amount from there.
//!
//! **No ordering between topics.** The saga consumes three topics, each with
//! its own consumer, so `inventory.reserved` may reach it before the
//! `order.created` that caused it. The saga therefore records facts
//! ([`Saga`], one state record `saga/<orderId>` per order) and then asks
//! [`Saga::advance`] which steps are now due; a step is emitted once, when its
//! preconditions hold, whatever order the facts came in. Recording a fact twice
//! changes nothing, so redelivered or republished events are harmless.
//! Finished sagas keep their record (a late duplicate must not restart them).
//!
//! Emitted events carry the order id as `subject` and a deterministic id
//! (`<orderId>:<type>`), so even a saga whose state was lost could not publish
//! a step twice within the host's dedupe window.

use evhost_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value, json};

evhost_sdk::plugin!(
    name = "order-saga",
    subscribe = [
        ("order-events", "order.created"),
        ("inventory-events", "inventory.reserved"),
        ("payment-events", "payment.processed"),
        ("*", "*.failed"),
    ],
    handler = handle,
);

/// The state key of `order`'s saga record.
pub fn saga_key(order: &str) -> String {
    format!("saga/{order}")
}

/// What the saga knows about one order: the facts seen so far and the steps
/// already taken. Stored as JSON under [`saga_key`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Saga {
    /// From `order.created`; every step needs it.
    pub order: Option<Order>,
    /// `inventory.reserved` was seen: stock is held and must be released on failure.
    pub inventory_reserved: bool,
    /// `payment.processed` was seen, with its payment id.
    pub payment_id: Option<String>,
    /// The first `*.failed` seen (before the order completed).
    pub failure: Option<Failure>,
    /// Steps taken (each emitted exactly once).
    pub payment_requested: bool,
    pub release_requested: bool,
    pub outcome: Option<Outcome>,
}

/// The part of `order.created` the saga keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub customer_id: String,
    /// Carried verbatim into `payment.requested` and `order.completed`.
    pub total_amount: Number,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_token: Option<String>,
}

/// A failure of some step, from a `*.failed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The type of the failed event, e.g. `payment.failed`.
    pub event_type: String,
    pub reason: String,
}

/// How the order ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Completed,
    Cancelled,
}

/// A step the saga takes: one emitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    RequestPayment,
    RequestRelease,
    Complete,
    Cancel,
}

impl Saga {
    /// The steps that are due now, each marked as taken. Pure: the handler
    /// turns them into events, committed with the updated record.
    pub fn advance(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.order.is_none() || self.outcome == Some(Outcome::Completed) {
            return steps;
        }
        if self.failure.is_some() {
            // Compensate whatever is done, even if it became known only after the
            // cancellation (a reservation whose event arrived late).
            if self.inventory_reserved && !self.release_requested {
                self.release_requested = true;
                steps.push(Step::RequestRelease);
            }
            if self.outcome.is_none() {
                self.outcome = Some(Outcome::Cancelled);
                steps.push(Step::Cancel);
            }
            return steps;
        }
        if self.inventory_reserved && !self.payment_requested {
            self.payment_requested = true;
            steps.push(Step::RequestPayment);
        }
        if self.payment_requested && self.payment_id.is_some() {
            self.outcome = Some(Outcome::Completed);
            steps.push(Step::Complete);
        }
        steps
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderCreated {
    order_id: String,
    customer_id: String,
    total_amount: Number,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    card_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderRef {
    order_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentProcessed {
    order_id: String,
    payment_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Failed {
    order_id: String,
    #[serde(default)]
    reason: Option<String>,
}

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    let ty = event.ty.as_str();
    let (order_id, fact) = match ty {
        "order.created" => {
            let created: OrderCreated = event.data_json()?;
            let order = Order {
                customer_id: created.customer_id,
                total_amount: created.total_amount,
                currency: created.currency.unwrap_or_else(|| "EUR".to_owned()),
                card_token: created.card_token,
            };
            (created.order_id, Fact::Created(order))
        }
        "inventory.reserved" => (event.data_json::<OrderRef>()?.order_id, Fact::Reserved),
        "payment.processed" => {
            let paid: PaymentProcessed = event.data_json()?;
            (paid.order_id, Fact::Paid(paid.payment_id))
        }
        _ if ty.ends_with(".failed") => match event.data_json::<Failed>() {
            Ok(failed) => {
                let reason = failed.reason.unwrap_or_else(|| ty.to_owned());
                (failed.order_id, Fact::Failed(reason))
            }
            // `*.failed` of every topic reaches the saga; not every one is an order's.
            Err(_) => {
                cx.log(Level::Debug, "not an order's failure", &[("type", ty)]);
                return Ok(());
            }
        },
        _ => {
            cx.log(Level::Warn, "ignoring an event type", &[("type", ty)]);
            return Ok(());
        }
    };
    if order_id.is_empty() {
        return Err(HandlerError::reject(format!("{ty} without an orderId")));
    }

    let key = saga_key(&order_id);
    let mut saga: Saga = cx.state_get(&key)?.unwrap_or_default();
    let before = saga.clone();
    record(&mut saga, fact, ty, cx, &order_id);
    for step in saga.advance() {
        emit_step(cx, &saga, &order_id, step)?;
    }
    if saga != before {
        cx.state_set(&key, &saga)?;
    }
    Ok(())
}

/// A fact about an order, as one event tells it.
enum Fact {
    Created(Order),
    Reserved,
    Paid(String),
    Failed(String),
}

fn record(saga: &mut Saga, fact: Fact, ty: &str, cx: &mut Context, order_id: &str) {
    match fact {
        Fact::Created(order) => {
            if saga.order.is_none() {
                saga.order = Some(order);
            } else {
                cx.log(Level::Info, "order already known", &[("order", order_id)]);
            }
        }
        Fact::Reserved => saga.inventory_reserved = true,
        Fact::Paid(payment_id) => {
            saga.payment_id.get_or_insert(payment_id);
        }
        Fact::Failed(reason) => {
            if saga.outcome == Some(Outcome::Completed) {
                // Undoing a completed order (refunds) is not this saga's job.
                cx.log(
                    Level::Warn,
                    "failure after the order completed; ignored",
                    &[("order", order_id), ("type", ty)],
                );
            } else if saga.failure.is_none() {
                saga.failure = Some(Failure {
                    event_type: ty.to_owned(),
                    reason,
                });
            }
        }
    }
}

fn emit_step(
    cx: &mut Context,
    saga: &Saga,
    order_id: &str,
    step: Step,
) -> Result<(), HandlerError> {
    // `advance` only returns steps once the order is known.
    let Some(order) = &saga.order else {
        return Ok(());
    };
    let (ty, data): (&str, Value) = match step {
        Step::RequestPayment => (
            "payment.requested",
            json!({
                "orderId": order_id,
                "customerId": order.customer_id,
                "amount": order.total_amount,
                "currency": order.currency,
                "cardToken": order.card_token,
            }),
        ),
        Step::RequestRelease => (
            "inventory.release.requested",
            json!({"orderId": order_id, "reason": failure_reason(saga)}),
        ),
        Step::Complete => (
            "order.completed",
            json!({
                "orderId": order_id,
                "customerId": order.customer_id,
                "totalAmount": order.total_amount,
                "currency": order.currency,
                "paymentId": saga.payment_id,
            }),
        ),
        Step::Cancel => (
            "order.cancelled",
            json!({
                "orderId": order_id,
                "customerId": order.customer_id,
                "reason": failure_reason(saga),
                "failedStep": saga.failure.as_ref().map(|f| f.event_type.as_str()),
            }),
        ),
    };
    let mut data = data;
    if let Value::Object(map) = &mut data {
        map.retain(|_, v| !v.is_null());
    }
    cx.emit(
        OutgoingEvent::new(ty)
            .id(format!("{order_id}:{ty}"))
            .subject(order_id)
            .json(&data)?,
    )?;
    cx.log(
        Level::Info,
        "saga step",
        &[("order", order_id), ("emitted", ty)],
    );
    Ok(())
}

fn failure_reason(saga: &Saga) -> &str {
    saga.failure
        .as_ref()
        .map_or("unknown failure", |f| f.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_sdk::testing::{TestEvent, TestHost};

    const FLOW: &str = "flow-o-1";

    fn ev(ty: &str, data: Value) -> Event {
        TestEvent::new(ty)
            .subject("o-1")
            .correlationid(FLOW)
            .json(&data)
            .build()
    }

    fn created() -> Event {
        ev(
            "order.created",
            json!({"orderId": "o-1", "customerId": "c-1",
                   "items": [{"productId": "apple", "quantity": 2}],
                   "totalAmount": 42.5, "cardToken": "tok_visa"}),
        )
    }

    fn reserved() -> Event {
        ev(
            "inventory.reserved",
            json!({"orderId": "o-1", "items": [{"productId": "apple", "quantity": 2}]}),
        )
    }

    fn paid() -> Event {
        ev(
            "payment.processed",
            json!({"orderId": "o-1", "paymentId": "pay-o-1", "amount": 42.5, "currency": "EUR"}),
        )
    }

    fn failed(ty: &str, reason: &str) -> Event {
        ev(ty, json!({"orderId": "o-1", "reason": reason}))
    }

    fn types(host: &TestHost) -> Vec<&str> {
        host.emitted().iter().map(|e| e.ty.as_str()).collect()
    }

    fn data(host: &TestHost, ty: &str) -> Value {
        host.emitted()
            .iter()
            .find(|e| e.ty == ty)
            .unwrap_or_else(|| panic!("no {ty} in {:?}", types(host)))
            .data_json()
            .unwrap()
    }

    fn saga(host: &TestHost) -> Saga {
        host.state_json(&saga_key("o-1")).unwrap()
    }

    #[test]
    fn subscribes_like_the_seed() {
        let subs = describe().subscriptions;
        assert!(subs.contains(&Subscription::new("*", "*.failed")));
        assert!(subs.contains(&Subscription::new("order-events", "order.created")));
        assert_eq!(describe().name, "order-saga");
    }

    #[test]
    fn the_happy_path_requests_payment_and_completes_each_caused_by_its_trigger() {
        let mut host = TestHost::new().with_plugin_name("order-saga");
        let (c, r, p) = (created(), reserved(), paid());
        host.deliver(handle, &c).unwrap();
        assert!(
            host.emitted().is_empty(),
            "nothing is due before the stock is reserved"
        );
        host.deliver(handle, &r).unwrap();
        host.deliver(handle, &p).unwrap();

        assert_eq!(types(&host), ["payment.requested", "order.completed"]);
        let [request, completed] = host.emitted() else {
            unreachable!()
        };
        assert_eq!(request.causationid.as_deref(), Some(r.id.as_str()));
        assert_eq!(completed.causationid.as_deref(), Some(p.id.as_str()));
        for e in host.emitted() {
            assert_eq!(e.correlationid, FLOW);
            assert_eq!(e.subject.as_deref(), Some("o-1"));
            assert_eq!(e.id, format!("o-1:{}", e.ty));
        }
        assert_eq!(completed.topic, "order-events");
        assert_eq!(
            data(&host, "order.completed"),
            json!({"orderId": "o-1", "customerId": "c-1", "totalAmount": 42.5,
                   "currency": "EUR", "paymentId": "pay-o-1"})
        );
        assert_eq!(saga(&host).outcome, Some(Outcome::Completed));
    }

    /// The seed's saga read `totalAmount` from `inventory.reserved`. Here the
    /// reservation even carries a wrong amount, and the payment still asks for
    /// the order's.
    #[test]
    fn the_payment_amount_comes_from_order_created_not_from_the_reservation() {
        let mut host = TestHost::new();
        host.deliver(handle, created()).unwrap();
        host.deliver(
            handle,
            ev(
                "inventory.reserved",
                json!({"orderId": "o-1", "items": [], "totalAmount": 0.01}),
            ),
        )
        .unwrap();
        assert_eq!(
            data(&host, "payment.requested"),
            json!({"orderId": "o-1", "customerId": "c-1", "amount": 42.5,
                   "currency": "EUR", "cardToken": "tok_visa"})
        );
    }

    #[test]
    fn a_declined_payment_releases_the_stock_then_cancels() {
        let mut host = TestHost::new();
        host.deliver(handle, created()).unwrap();
        host.deliver(handle, reserved()).unwrap();
        let declined = failed("payment.failed", "card declined");
        host.deliver(handle, &declined).unwrap();

        assert_eq!(
            types(&host),
            [
                "payment.requested",
                "inventory.release.requested",
                "order.cancelled"
            ]
        );
        for e in &host.emitted()[1..] {
            assert_eq!(e.causationid.as_deref(), Some(declined.id.as_str()));
        }
        assert_eq!(host.emitted()[1].topic, "inventory-events");
        assert_eq!(
            data(&host, "order.cancelled"),
            json!({"orderId": "o-1", "customerId": "c-1", "reason": "card declined",
                   "failedStep": "payment.failed"})
        );
        // A late payment confirmation changes nothing.
        host.deliver(handle, paid()).unwrap();
        assert_eq!(host.emitted().len(), 3);
    }

    #[test]
    fn out_of_stock_cancels_without_payment_or_release() {
        let mut host = TestHost::new();
        host.deliver(handle, created()).unwrap();
        host.deliver(
            handle,
            failed("inventory.reservation.failed", "apple out of stock"),
        )
        .unwrap();
        assert_eq!(types(&host), ["order.cancelled"]);
        assert_eq!(
            data(&host, "order.cancelled")["reason"],
            "apple out of stock"
        );
    }

    #[test]
    fn a_reservation_seen_before_its_order_waits_for_the_order() {
        let mut host = TestHost::new();
        let (c, r) = (created(), reserved());
        host.deliver(handle, &r).unwrap();
        assert!(host.emitted().is_empty());
        host.deliver(handle, &c).unwrap();
        assert_eq!(types(&host), ["payment.requested"]);
        // The step became due when the order arrived: that is its cause.
        assert_eq!(
            host.emitted()[0].causationid.as_deref(),
            Some(c.id.as_str())
        );
        assert_eq!(data(&host, "payment.requested")["amount"], 42.5);
    }

    #[test]
    fn a_reservation_arriving_after_a_cancellation_is_released() {
        let mut host = TestHost::new();
        host.deliver(handle, created()).unwrap();
        host.deliver(handle, failed("fraud.check.failed", "suspicious"))
            .unwrap();
        assert_eq!(types(&host), ["order.cancelled"]);
        host.deliver(handle, reserved()).unwrap();
        assert_eq!(
            types(&host),
            ["order.cancelled", "inventory.release.requested"]
        );
        assert_eq!(
            data(&host, "inventory.release.requested")["reason"],
            "suspicious"
        );
    }

    #[test]
    fn a_failure_after_completion_is_ignored() {
        let mut host = TestHost::new();
        for e in [
            created(),
            reserved(),
            paid(),
            failed("shipping.failed", "late"),
        ] {
            host.deliver(handle, e).unwrap();
        }
        assert_eq!(types(&host), ["payment.requested", "order.completed"]);
        assert_eq!(saga(&host).failure, None);
    }

    #[test]
    fn redelivered_and_republished_events_change_nothing() {
        let mut host = TestHost::new();
        let events = [created(), reserved(), paid()];
        for e in &events {
            host.deliver(handle, e).unwrap();
            host.deliver(handle, e).unwrap(); // the same id again
        }
        let settled = saga(&host);
        // The same facts under new ids (a producer republishing a range).
        for e in [created(), reserved(), paid(), failed("payment.failed", "x")] {
            host.deliver(handle, e).unwrap();
        }
        assert_eq!(types(&host), ["payment.requested", "order.completed"]);
        assert_eq!(saga(&host), settled);
    }

    #[test]
    fn every_arrival_order_ends_the_same_way() {
        let happy = [created(), reserved(), paid()];
        let declined = [
            created(),
            reserved(),
            failed("payment.failed", "card declined"),
        ];
        for (events, want) in [
            (&happy, vec!["order.completed"]),
            (
                &declined,
                vec!["inventory.release.requested", "order.cancelled"],
            ),
        ] {
            for perm in permutations(3) {
                let mut host = TestHost::new();
                for i in &perm {
                    host.deliver(handle, &events[*i]).unwrap();
                }
                let mut got: Vec<&str> = types(&host)
                    .into_iter()
                    .filter(|t| *t != "payment.requested")
                    .collect();
                got.sort();
                assert_eq!(got, want, "arrival order {perm:?}");
            }
        }
    }

    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut out = Vec::new();
        for rest in permutations(n - 1) {
            for at in 0..=rest.len() {
                let mut p = rest.clone();
                p.insert(at, n - 1);
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn failures_that_are_not_an_orders_are_ignored() {
        let mut host = TestHost::new();
        let foreign = TestEvent::new("import.failed").json(&json!({"file": "x.csv"}));
        host.deliver(handle, foreign).unwrap();
        host.deliver(handle, TestEvent::new("report.failed").text("boom"))
            .unwrap();
        assert!(host.emitted().is_empty());
        assert!(host.state_keys().is_empty());
    }

    #[test]
    fn malformed_order_events_are_rejected() {
        let mut host = TestHost::new();
        let no_amount = ev(
            "order.created",
            json!({"orderId": "o-1", "customerId": "c"}),
        );
        assert!(host.deliver(handle, no_amount).unwrap_err().is_reject());
        let empty_id = ev("inventory.reserved", json!({"orderId": ""}));
        assert!(host.deliver(handle, empty_id).unwrap_err().is_reject());
        assert!(host.state_keys().is_empty());
    }
}
