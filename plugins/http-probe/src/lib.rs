//! `http-probe`: a test plugin for outbound HTTP (`wasi:http`).
//!
//! On `probe.requested` `{url, method?, body?, times?}` it sends the request
//! `times` times (default 1), carrying on after errors, and emits
//! `probe.answered` `{results: [{status, body} | {error, refused}]}`. It
//! imports `wasi:http` whether or not the operator granted it, so it also
//! shows that such a plugin loads without the grant.

use evhost_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

evhost_sdk::plugin!(
    name = "http-probe",
    subscribe = [("probe-events", "probe.requested")],
    handler = handle,
);

#[derive(Debug, Deserialize)]
struct Probe {
    url: String,
    #[serde(default = "get")]
    method: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default = "one")]
    times: u32,
}

fn get() -> String {
    "GET".into()
}

fn one() -> u32 {
    1
}

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    let probe: Probe = event.data_json()?;
    let mut results = Vec::new();
    for _ in 0..probe.times {
        let mut request = HttpRequest::new(probe.method.as_str(), probe.url.as_str());
        if let Some(body) = &probe.body {
            request = request.body(body.as_str());
        }
        results.push(match cx.http(event, request) {
            Ok(res) => json!({
                "status": res.status,
                "body": String::from_utf8_lossy(&res.body),
            }),
            Err(e) => json!({"error": e.message(), "refused": e.is_refused()}),
        });
    }
    cx.emit(
        OutgoingEvent::new("probe.answered")
            .subject(event.id.as_str())
            .json(&json!({ "results": Value::Array(results) }))?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_sdk::testing::{TestEvent, TestHost};

    #[test]
    fn every_answer_and_error_is_reported_in_order() {
        let mut host = TestHost::new().with_http(|req| {
            if req.url.ends_with("/ok") {
                Ok(HttpResponse::new(200).body("pong"))
            } else {
                Err(HttpError::failed("connection refused"))
            }
        });
        host.deliver(
            handle,
            TestEvent::new("probe.requested").json(&json!({"url": "http://h/ok", "times": 2})),
        )
        .unwrap();
        host.deliver(
            handle,
            TestEvent::new("probe.requested").json(&json!({"url": "http://h/down"})),
        )
        .unwrap();
        let data: Vec<Value> = host
            .emitted()
            .iter()
            .map(|e| e.data_json().unwrap())
            .collect();
        assert_eq!(
            data[0]["results"],
            json!([{"status": 200, "body": "pong"}, {"status": 200, "body": "pong"}])
        );
        assert_eq!(
            data[1]["results"],
            json!([{"error": "connection refused", "refused": false}])
        );
    }
}
