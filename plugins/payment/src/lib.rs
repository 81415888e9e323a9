//! `payment`: takes or declines the payment of an order.
//!
//! On `payment.requested` `{orderId, customerId, amount, currency, cardToken?}`
//! it emits `payment.processed` `{orderId, paymentId, amount, currency}` or
//! `payment.failed` `{orderId, reason, amount, currency}`. The rule stands in
//! for a card processor: an amount over the operator's `limit` (config, default
//! 1000) or a card token listed in `declined-cards` (config, comma-separated,
//! default `tok_declined`) fails.
//!
//! State: `payment/<orderId>`, the outcome. A payment is charged at most once
//! per order: a second request for the same order, under any event id, is
//! answered with nothing (the first outcome is already in the log).

use evhost_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Number;

evhost_sdk::plugin!(
    name = "payment",
    subscribe = [("payment-events", "payment.requested")],
    handler = handle,
);

/// Config: the largest amount that is paid.
pub const LIMIT: &str = "limit";
/// Config: card tokens that are declined, comma-separated.
pub const DECLINED_CARDS: &str = "declined-cards";

const DEFAULT_LIMIT: f64 = 1000.0;
const DEFAULT_DECLINED: &str = "tok_declined";

/// The state key of `order`'s payment outcome.
pub fn payment_key(order: &str) -> String {
    format!("payment/{order}")
}

/// The state record `payment/<orderId>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum Outcome {
    /// Charged.
    #[serde(rename = "processed")]
    Processed { payment_id: String, amount: Number },
    /// Refused; `reason` says why.
    #[serde(rename = "failed")]
    Failed { reason: String, amount: Number },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentRequested {
    order_id: String,
    /// Carried through verbatim (`12` stays `12`, not `12.0`); compared as `f64`.
    amount: Number,
    #[serde(default = "default_currency")]
    currency: String,
    #[serde(default)]
    card_token: Option<String>,
}

fn default_currency() -> String {
    "EUR".to_owned()
}

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    let request: PaymentRequested = event.data_json()?;
    let order = request.order_id.as_str();
    if order.is_empty() {
        return Err(HandlerError::reject("payment.requested without an orderId"));
    }
    if request
        .amount
        .as_f64()
        .is_none_or(|a| !a.is_finite() || a < 0.0)
    {
        return Err(HandlerError::reject(format!(
            "order {order}: amount {} is not a payable amount",
            request.amount
        )));
    }
    let key = payment_key(order);
    if cx.state_get::<Outcome>(&key)?.is_some() {
        cx.log(Level::Info, "payment already decided", &[("order", order)]);
        return Ok(());
    }

    let outcome = decide(cx, &request)?;
    let out = match &outcome {
        Outcome::Processed { payment_id, amount } => OutgoingEvent::new("payment.processed")
            .id(format!("{order}:payment.processed"))
            .json(&serde_json::json!({
                "orderId": order,
                "paymentId": payment_id,
                "amount": amount,
                "currency": request.currency,
            }))?,
        Outcome::Failed { reason, amount } => OutgoingEvent::new("payment.failed")
            .id(format!("{order}:payment.failed"))
            .json(&serde_json::json!({
                "orderId": order,
                "reason": reason,
                "amount": amount,
                "currency": request.currency,
            }))?,
    };
    cx.state_set(&key, &outcome)?;
    cx.emit(out.subject(order))?;
    let verdict = match &outcome {
        Outcome::Processed { .. } => "processed",
        Outcome::Failed { .. } => "failed",
    };
    cx.log(
        Level::Info,
        "payment decided",
        &[("order", order), ("outcome", verdict)],
    );
    Ok(())
}

fn decide(cx: &mut Context, request: &PaymentRequested) -> Result<Outcome, HandlerError> {
    let limit = match cx.config(LIMIT) {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|l| l.is_finite() && *l >= 0.0)
            .ok_or_else(|| {
                HandlerError::reject(format!("config {LIMIT}: {text:?} is not an amount"))
            })?,
    };
    let declined = cx.config_or(DECLINED_CARDS, DEFAULT_DECLINED);
    let amount = request.amount.clone();
    let value = amount.as_f64().unwrap_or(f64::INFINITY);
    let card_declined = request
        .card_token
        .as_deref()
        .is_some_and(|token| declined.split(',').any(|d| d.trim() == token));
    Ok(if card_declined {
        Outcome::Failed {
            reason: "card declined".to_owned(),
            amount,
        }
    } else if value > limit {
        Outcome::Failed {
            reason: format!(
                "amount {amount} {} is over the limit of {limit}",
                request.currency
            ),
            amount,
        }
    } else {
        Outcome::Processed {
            payment_id: format!("pay-{}", request.order_id),
            amount,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_sdk::testing::{TestEvent, TestHost};
    use serde_json::{Value, json};

    fn requested(order: &str, amount: impl Serialize, card: Option<&str>) -> Event {
        TestEvent::new("payment.requested")
            .subject(order)
            .correlationid("flow-1")
            .json(
                &json!({"orderId": order, "customerId": "c-1", "amount": amount,
                          "currency": "EUR", "cardToken": card}),
            )
            .build()
    }

    #[test]
    fn describes_its_subscription() {
        assert_eq!(
            describe().subscriptions,
            vec![Subscription::new("payment-events", "payment.requested")]
        );
    }

    #[test]
    fn a_payable_order_is_processed_in_the_same_flow() {
        let mut host = TestHost::new().with_plugin_name("payment");
        let event = requested("o-1", 99.5, Some("tok_visa"));
        host.deliver(handle, &event).unwrap();
        let [paid] = host.emitted() else {
            panic!("one event expected")
        };
        assert_eq!(paid.ty, "payment.processed");
        assert_eq!(paid.topic, "payment-events");
        assert_eq!(paid.subject.as_deref(), Some("o-1"));
        assert_eq!(paid.causationid.as_deref(), Some(event.id.as_str()));
        assert_eq!(paid.correlationid, "flow-1");
        let data: Value = paid.data_json().unwrap();
        assert_eq!(
            data,
            json!({"orderId": "o-1", "paymentId": "pay-o-1", "amount": 99.5, "currency": "EUR"})
        );
    }

    #[test]
    fn a_declined_card_fails() {
        let mut host = TestHost::new();
        host.deliver(handle, requested("o-2", 10.0, Some("tok_declined")))
            .unwrap();
        let failed = &host.emitted()[0];
        assert_eq!(failed.ty, "payment.failed");
        assert_eq!(
            failed.data_json::<Value>().unwrap()["reason"],
            "card declined"
        );
    }

    #[test]
    fn an_amount_over_the_limit_fails_and_the_limit_is_configurable() {
        let mut host = TestHost::new();
        host.deliver(handle, requested("o-3", 1000.01, None))
            .unwrap();
        let data: Value = host.emitted()[0].data_json().unwrap();
        assert_eq!(host.emitted()[0].ty, "payment.failed");
        assert!(
            data["reason"]
                .as_str()
                .unwrap()
                .contains("over the limit of 1000")
        );

        let mut generous = TestHost::new()
            .with_config(LIMIT, "5000")
            .with_config(DECLINED_CARDS, "tok_stolen, tok_expired");
        generous
            .deliver(handle, requested("o-3", 1000.01, Some("tok_declined")))
            .unwrap();
        generous
            .deliver(handle, requested("o-4", 1.0, Some("tok_expired")))
            .unwrap();
        let types: Vec<&str> = generous.emitted().iter().map(|e| e.ty.as_str()).collect();
        assert_eq!(types, ["payment.processed", "payment.failed"]);
    }

    #[test]
    fn an_order_is_charged_at_most_once() {
        let mut host = TestHost::new();
        let event = requested("o-5", 20, None);
        host.deliver(handle, &event).unwrap();
        host.deliver(handle, &event).unwrap();
        host.deliver(handle, requested("o-5", 20, None)).unwrap();
        assert_eq!(host.emitted().len(), 1);
        assert_eq!(
            host.state_json::<Outcome>(&payment_key("o-5")),
            Some(Outcome::Processed {
                payment_id: "pay-o-5".into(),
                amount: Number::from(20)
            })
        );
    }

    #[test]
    fn bad_requests_and_a_bad_limit_are_rejected() {
        let mut host = TestHost::new();
        let negative = requested("o-6", -1, None);
        assert!(host.deliver(handle, negative).unwrap_err().is_reject());
        let no_amount = TestEvent::new("payment.requested").json(&json!({"orderId": "o-7"}));
        assert!(host.deliver(handle, no_amount).unwrap_err().is_reject());
        let mut bad = TestHost::new().with_config(LIMIT, "lots");
        let err = bad
            .deliver(handle, requested("o-8", 1.0, None))
            .unwrap_err();
        assert!(err.is_reject() && err.message().contains("limit"), "{err}");
        assert!(host.emitted().is_empty() && bad.emitted().is_empty());
        assert!(bad.state_keys().is_empty());
    }
}
