//! `bench-parse`: the Wasm side of the benchmark harness (`host/benches/suite.rs`).
//!
//! It subscribes to `bench.*` on `bench-events`; the mode is the event type:
//!
//! | type | what it does |
//! |---|---|
//! | `bench.parse` | parses the JSON payload into a `serde_json::Value`, emits nothing |
//! | `bench.echo` | parses, then emits `bench.echoed` to `bench-out` with the same payload |
//! | `bench.stamp` | reads the wall clock first, parses, then emits `bench.stamped` to `bench-stamps` with `{"sent_ns": <the payload's>, "called_ns": <now>}` |
//! | anything else | rejected |
//!
//! The native baseline in the harness does exactly the same work in plain
//! Rust, so the ratio of the two is the cost of the Wasm boundary and of
//! running guest code. `echo` and `stamp` need the operator's
//! `emit = ["bench.*"]` grant.

use evhost_sdk::prelude::*;

evhost_sdk::plugin!(
    name = "bench-parse",
    subscribe = [("bench-events", "bench.*")],
    handler = handle,
);

/// Where `bench.echoed` goes.
pub const OUT_TOPIC: &str = "bench-out";
/// Where `bench.stamped` goes.
pub const STAMP_TOPIC: &str = "bench-stamps";

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    match event.ty.as_str() {
        "bench.parse" => {
            let _: serde_json::Value = event.data_json()?;
            Ok(())
        }
        "bench.echo" => {
            let _: serde_json::Value = event.data_json()?;
            let data = event.data_bytes().unwrap_or_default().to_vec();
            cx.emit(
                OutgoingEvent::new("bench.echoed")
                    .topic(OUT_TOPIC)
                    .bytes(data, "application/json"),
            )?;
            Ok(())
        }
        "bench.stamp" => {
            let called_ns = now_ns();
            let value: serde_json::Value = event.data_json()?;
            let sent_ns = value["sent_ns"].as_u64().unwrap_or(0);
            cx.emit(
                OutgoingEvent::new("bench.stamped")
                    .topic(STAMP_TOPIC)
                    .json(&serde_json::json!({"sent_ns": sent_ns, "called_ns": called_ns}))?,
            )?;
            Ok(())
        }
        other => Err(HandlerError::reject(format!(
            "bench-parse: unknown type `{other}`"
        ))),
    }
}

/// Nanoseconds since the Unix epoch (a Wasm guest reads the host's wall clock
/// through `wasi:clocks`).
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_sdk::testing::{TestEvent, TestHost};
    use serde_json::json;

    #[test]
    fn parse_emits_nothing_and_rejects_bad_json() {
        let mut host = TestHost::new();
        host.deliver(handle, TestEvent::new("bench.parse").json(&json!({"n": 1})))
            .unwrap();
        assert!(host.emitted().is_empty());
        let bad = TestEvent::new("bench.parse").bytes(b"{".to_vec(), "application/json");
        assert!(host.deliver(handle, bad).unwrap_err().is_reject());
    }

    #[test]
    fn echo_emits_the_payload_once() {
        let mut host = TestHost::new();
        host.deliver(handle, TestEvent::new("bench.echo").json(&json!({"n": 2})))
            .unwrap();
        let [out] = host.emitted() else { panic!() };
        assert_eq!(
            (out.ty.as_str(), out.topic.as_str()),
            ("bench.echoed", OUT_TOPIC)
        );
        assert_eq!(
            out.data_json::<serde_json::Value>().unwrap(),
            json!({"n": 2})
        );
    }

    #[test]
    fn stamp_reports_both_times() {
        let mut host = TestHost::new();
        host.deliver(
            handle,
            TestEvent::new("bench.stamp").json(&json!({"sent_ns": 5})),
        )
        .unwrap();
        let v: serde_json::Value = host.emitted()[0].data_json().unwrap();
        assert_eq!(v["sent_ns"], 5);
        assert!(v["called_ns"].as_u64().unwrap() > 5);
    }
}
