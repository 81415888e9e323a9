//! `payment`: charges an order at the payment gateway.
//!
//! On `payment.requested` `{orderId, customerId, amount, currency, cardToken?}`
//! it calls the gateway (`POST {gateway}/charge`, config `gateway`, granted
//! under `[grants] http` in the sidecar) and emits `payment.processed`
//! `{orderId, paymentId, amount, currency}` on `200`, or `payment.failed`
//! `{orderId, reason, amount, currency}` on `402` (declined by the gateway).
//! Any other answer goes through the SDK's status mapping: `5xx` and `429`
//! are retried with backoff (`Retry-After` honoured), other `4xx` rejected.
//!
//! A charge is a side effect outside the log's transaction, so a retried
//! call may charge again; the SDK's `Idempotency-Key` (the event id, the same
//! on every attempt) lets the gateway apply it once. State
//! `payment/<orderId>` holds the outcome: a second request for the same
//! order, under any event id, is answered with nothing.

use evhost_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Number;

evhost_sdk::plugin!(
    name = "payment",
    subscribe = [("payment-events", "payment.requested")],
    handler = handle,
);

/// Config: the gateway's base URL, e.g. `http://127.0.0.1:9000`.
pub const GATEWAY: &str = "gateway";

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
    /// Carried through verbatim (`12` stays `12`, not `12.0`).
    amount: Number,
    #[serde(default = "default_currency")]
    currency: String,
    #[serde(default)]
    card_token: Option<String>,
}

/// The gateway's `200` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Charged {
    payment_id: String,
}

/// The gateway's `402` answer.
#[derive(Debug, Deserialize)]
struct Declined {
    reason: String,
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

    let outcome = charge(event, cx, &request)?;
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

/// Asks the gateway; `402` is a decision (declined), not an error.
fn charge(
    event: &Event,
    cx: &mut Context,
    request: &PaymentRequested,
) -> Result<Outcome, HandlerError> {
    let Some(gateway) = cx.config(GATEWAY) else {
        return Err(HandlerError::reject(format!(
            "config `{GATEWAY}` (the payment gateway's URL) is not set"
        )));
    };
    let url = format!("{}/charge", gateway.trim_end_matches('/'));
    let body = serde_json::json!({
        "orderId": request.order_id,
        "amount": request.amount,
        "currency": request.currency,
        "cardToken": request.card_token,
    });
    let response = cx.http(event, HttpRequest::post(url).json(&body)?)?;
    let amount = request.amount.clone();
    if response.status == 402 {
        let declined: Declined = response.json()?;
        return Ok(Outcome::Failed {
            reason: declined.reason,
            amount,
        });
    }
    let charged: Charged = response.error_for_status()?.json()?;
    Ok(Outcome::Processed {
        payment_id: charged.payment_id,
        amount,
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

    /// A gateway that declines `tok_declined` and charges everything else.
    fn gateway(req: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap_or_default()).unwrap();
        Ok(if body["cardToken"] == "tok_declined" {
            HttpResponse::new(402).body(r#"{"reason":"card declined"}"#)
        } else {
            HttpResponse::new(200).body(format!(
                r#"{{"paymentId":"pay-{}"}}"#,
                body["orderId"].as_str().unwrap()
            ))
        })
    }

    fn shop() -> TestHost {
        TestHost::new()
            .with_plugin_name("payment")
            .with_config(GATEWAY, "http://gw:9000/")
            .with_http(gateway)
    }

    #[test]
    fn describes_its_subscription() {
        assert_eq!(
            describe().subscriptions,
            vec![Subscription::new("payment-events", "payment.requested")]
        );
    }

    #[test]
    fn a_charged_order_is_processed_in_the_same_flow() {
        let mut host = shop();
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
        let [sent] = host.http_requests() else {
            panic!("one request expected")
        };
        assert_eq!(
            (sent.method.as_str(), sent.url.as_str()),
            ("POST", "http://gw:9000/charge")
        );
        assert_eq!(
            sent.header_value("idempotency-key"),
            Some(event.id.as_str())
        );
    }

    #[test]
    fn a_card_the_gateway_declines_fails_with_its_reason() {
        let mut host = shop();
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
    fn an_outage_is_retried_with_the_same_key_and_a_429_waits_its_retry_after() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = calls.clone();
        let mut host = shop().with_http(move |req| {
            match seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                0 => Ok(HttpResponse::new(503)),
                1 => Ok(HttpResponse::new(429).header("Retry-After", "7")),
                _ => gateway(req),
            }
        });
        let event = requested("o-3", 5, None);
        let err = host.deliver(handle, &event).unwrap_err();
        assert!(err.is_retry() && err.retry_after().is_none(), "{err}");
        let err = host.deliver(handle, &event).unwrap_err();
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(7)));
        host.deliver(handle, &event).unwrap();
        assert_eq!(host.emitted()[0].ty, "payment.processed");
        let keys: Vec<_> = host
            .http_requests()
            .iter()
            .map(|r| r.header_value("idempotency-key").unwrap())
            .collect();
        assert_eq!(keys, [event.id.as_str(); 3]);
    }

    #[test]
    fn an_order_is_charged_at_most_once() {
        let mut host = shop();
        let event = requested("o-5", 20, None);
        host.deliver(handle, &event).unwrap();
        host.deliver(handle, &event).unwrap();
        host.deliver(handle, requested("o-5", 20, None)).unwrap();
        assert_eq!(host.emitted().len(), 1);
        assert_eq!(host.http_requests().len(), 1);
        assert_eq!(
            host.state_json::<Outcome>(&payment_key("o-5")),
            Some(Outcome::Processed {
                payment_id: "pay-o-5".into(),
                amount: Number::from(20)
            })
        );
    }

    #[test]
    fn bad_requests_a_4xx_and_a_missing_gateway_are_rejected() {
        let mut host = shop();
        let negative = requested("o-6", -1, None);
        assert!(host.deliver(handle, negative).unwrap_err().is_reject());
        let no_amount = TestEvent::new("payment.requested").json(&json!({"orderId": "o-7"}));
        assert!(host.deliver(handle, no_amount).unwrap_err().is_reject());
        let mut unset = TestHost::new().with_http(gateway);
        let err = unset
            .deliver(handle, requested("o-8", 1.0, None))
            .unwrap_err();
        assert!(err.is_reject() && err.message().contains(GATEWAY), "{err}");
        let mut refusing = shop().with_http(|_| Ok(HttpResponse::new(400).body("bad card")));
        let err = refusing
            .deliver(handle, requested("o-9", 1.0, None))
            .unwrap_err();
        assert!(
            err.is_reject() && err.message().contains("bad card"),
            "{err}"
        );
        let mut ungranted = TestHost::new().with_config(GATEWAY, "http://gw");
        let err = ungranted
            .deliver(handle, requested("o-10", 1.0, None))
            .unwrap_err();
        assert!(err.is_reject() && err.message().contains("grant"), "{err}");
        assert!(host.emitted().is_empty() && refusing.emitted().is_empty());
        assert!(refusing.state_keys().is_empty());
    }
}
