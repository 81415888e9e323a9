//! `faulty`: misbehaves on request, so the host's tests can prove that each
//! failure ends in the right outcome and that the sandbox holds.
//!
//! The mode is the event type's suffix, `faulty.<mode>`:
//!
//! | mode | what it does | outcome the host should see |
//! |---|---|---|
//! | `ok` | emits `faulty.done` | success, one emit |
//! | `panic` | `panic!` (aborts: plugins build with `panic = "abort"`) | trap |
//! | `loop` | spins forever | timeout (epoch interruption) or fuel exhaustion |
//! | `alloc` | hoards 1 MiB chunks, writing every byte | memory limit: trap / out-of-memory |
//! | `recurse` | recursion without end, on the Wasm call stack | stack-overflow trap |
//! | `read-file` | reads `/etc/passwd` | reject `file denied: ...` |
//! | `read-env` | reads `PATH`, `HOME` and every variable | reject `env denied: ...` |
//! | `socket` | TCP connect to 127.0.0.1:`port` (data `{"port": N}`, default 80) | reject `socket denied: ...` |
//! | `reject` | returns reject | reject `faulty: rejected as asked` |
//! | `retry` | returns retry | retry `faulty: retry as asked` |
//! | `fail-until` | retry until `attempt >= succeed_on_attempt` (data `{"succeed_on_attempt": N}`), then as `ok` | N-1 retries, then success |
//! | `log-flood` | calls the `log` import in an endless loop | timeout or fuel exhaustion, with the log output capped |
//! | `swallow-refusal` | writes state and emits `faulty.done`, ignoring both errors, returns ok | without the `state` grant: reject (the refused grant), nothing committed |
//! | `done`, `leaked` | nothing (its own outputs, should they be routed back) | success, no emit |
//! | anything else | | reject `faulty: unknown mode ...` |
//!
//! When an access mode unexpectedly *succeeds*, the call succeeds and emits
//! `faulty.leaked` with what it got (and logs it at error level, in case
//! `emit` is not granted) — a test that sees it knows the sandbox failed.
//!
//! Outputs go to the topic `faulty-results`, not the derived `faulty-events`,
//! so the plugin never consumes its own events. `ok`/`fail-until` need the
//! operator's `emit` grant; without it they end in reject `emit refused: ...`.

use std::hint::black_box;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use evhost_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

evhost_sdk::plugin!(
    name = "faulty",
    subscribe = [("faulty-events", "faulty.*")],
    handler = handle,
    retry = RetryPolicy::attempts(5).backoff(Duration::from_millis(10), Duration::from_millis(100)),
);

/// Where `faulty.done` and `faulty.leaked` are published.
pub const RESULTS_TOPIC: &str = "faulty-results";

/// The data of `faulty.done`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Done {
    /// The mode that succeeded.
    pub mode: String,
    /// The id of the event handled.
    pub event: String,
    /// Its delivery attempt.
    pub attempt: u32,
}

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    let mode = event.ty.strip_prefix("faulty.").unwrap_or(&event.ty);
    match mode {
        "ok" => done(event, cx, mode),
        "done" | "leaked" => Ok(()),
        "panic" => panic!("faulty: panic requested by event {}", event.id),
        "loop" => {
            // Tells crash tests (through the host's stdout capture) that the call is under way.
            println!(
                "faulty: looping on delivery {} of {}",
                event.attempt, event.id
            );
            spin()
        }
        "alloc" => hoard_memory(),
        "log-flood" => flood_log(cx),
        "swallow-refusal" => {
            // A careless guest: errors ignored, success claimed.
            let _ = cx.state_set("faulty/swallowed", &event.id);
            let _ = done(event, cx, mode);
            Ok(())
        }
        "recurse" => {
            let depth = recurse(0, black_box(u64::MAX));
            Err(HandlerError::reject(format!(
                "faulty: recursion ended at depth {depth}"
            )))
        }
        "read-file" => read_file(cx),
        "read-env" => read_env(cx),
        "socket" => open_socket(event, cx),
        "reject" => Err(HandlerError::reject("faulty: rejected as asked")),
        "retry" => Err(HandlerError::retry("faulty: retry as asked")),
        "fail-until" => fail_until(event, cx),
        other => Err(HandlerError::reject(format!(
            "faulty: unknown mode `{other}`"
        ))),
    }
}

fn done(event: &Event, cx: &mut Context, mode: &str) -> Result<(), HandlerError> {
    let data = Done {
        mode: mode.to_owned(),
        event: event.id.clone(),
        attempt: event.attempt,
    };
    cx.emit(
        OutgoingEvent::new("faulty.done")
            .topic(RESULTS_TOPIC)
            .subject(event.id.as_str())
            .json(&data)?,
    )?;
    Ok(())
}

/// The sandbox let `what` through: succeed, and say so loudly.
fn leaked(cx: &mut Context, what: &str, detail: &str) -> Result<(), HandlerError> {
    cx.log(
        Level::Error,
        "sandbox leak",
        &[("what", what), ("detail", detail)],
    );
    cx.emit(
        OutgoingEvent::new("faulty.leaked")
            .topic(RESULTS_TOPIC)
            .json(&json!({"what": what, "detail": detail}))?,
    )?;
    Ok(())
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Logs as fast as the host lets it, forever: the host must cap what reaches
/// its own log, and still stop the call at its limit.
fn flood_log(cx: &mut Context) -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
        cx.log(
            Level::Info,
            "faulty: flooding the log with a line of about a hundred bytes, as a chatty loop would",
            &[("n", &n.to_string())],
        );
    }
}

fn hoard_memory() -> ! {
    const CHUNK: usize = 1 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Non-zero fill writes every page, so the memory is really committed.
        let chunk = black_box(vec![0xA5u8; CHUNK]);
        hoard.push(chunk);
        black_box(&hoard);
    }
}

/// Not a tail call and not an accumulator LLVM can fold (`* 3 + depth`), and
/// only scalar locals, so every level is a frame on the Wasm call stack (not
/// the shadow stack in linear memory): the engine's stack limit trips first.
#[inline(never)]
fn recurse(depth: u64, limit: u64) -> u64 {
    if depth == limit {
        return depth;
    }
    recurse(depth + 1, limit)
        .wrapping_mul(3)
        .wrapping_add(depth)
}

fn read_file(cx: &mut Context) -> Result<(), HandlerError> {
    match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => leaked(cx, "file", &text.chars().take(200).collect::<String>()),
        Err(err) => Err(HandlerError::reject(format!("file denied: {err}"))),
    }
}

fn read_env(cx: &mut Context) -> Result<(), HandlerError> {
    let path = std::env::var("PATH");
    let home = std::env::var("HOME");
    let vars: Vec<(String, String)> = std::env::vars().collect();
    if path.is_ok() || home.is_ok() || !vars.is_empty() {
        let detail = format!(
            "PATH={:?} HOME={:?} vars={:?}",
            path.ok(),
            home.ok(),
            vars.iter().map(|(name, _)| name).collect::<Vec<_>>()
        );
        return leaked(cx, "env", &detail);
    }
    Err(HandlerError::reject(format!(
        "env denied: PATH: {}; HOME: {}; {} variables visible",
        path.unwrap_err(),
        home.unwrap_err(),
        vars.len()
    )))
}

fn open_socket(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    #[derive(Deserialize)]
    struct Target {
        port: Option<u16>,
    }
    let port = match event.data_bytes() {
        Some(_) => event.data_json::<Target>()?.port.unwrap_or(80),
        None => 80,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpStream::connect(addr) {
        Ok(stream) => {
            let peer = stream.peer_addr().map(|a| a.to_string());
            leaked(
                cx,
                "socket",
                &format!("connected to {addr} (peer {peer:?})"),
            )
        }
        Err(err) => Err(HandlerError::reject(format!(
            "socket denied: {addr}: {err}"
        ))),
    }
}

fn fail_until(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    #[derive(Deserialize)]
    struct FailUntil {
        succeed_on_attempt: u32,
    }
    let wanted = event.data_json::<FailUntil>()?.succeed_on_attempt;
    if event.attempt < wanted {
        return Err(HandlerError::retry(format!(
            "faulty: attempt {} fails until attempt {wanted}",
            event.attempt
        )));
    }
    done(event, cx, "fail-until")
}

#[cfg(test)]
mod tests {
    //! Only the harmless modes run natively: the others would really panic,
    //! spin, exhaust memory or touch this machine.

    use super::*;
    use evhost_sdk::testing::{TestEvent, TestHost};

    #[test]
    fn ok_emits_done_to_the_results_topic() {
        let mut host = TestHost::new();
        let event = TestEvent::new("faulty.ok").build();
        host.deliver(handle, &event).unwrap();
        let [out] = host.emitted() else { panic!() };
        assert_eq!(
            (out.ty.as_str(), out.topic.as_str()),
            ("faulty.done", RESULTS_TOPIC)
        );
        assert_eq!(out.data_json::<Done>().unwrap().event, event.id);
    }

    #[test]
    fn reject_retry_and_unknown_modes_report_their_kind() {
        let mut host = TestHost::new();
        assert!(
            host.deliver(handle, TestEvent::new("faulty.reject"))
                .unwrap_err()
                .is_reject()
        );
        assert!(
            host.deliver(handle, TestEvent::new("faulty.retry"))
                .unwrap_err()
                .is_retry()
        );
        let err = host
            .deliver(handle, TestEvent::new("faulty.nope"))
            .unwrap_err();
        assert!(
            err.is_reject() && err.message().contains("unknown mode"),
            "{err}"
        );
        assert!(host.deliver(handle, TestEvent::new("faulty.done")).is_ok());
        assert!(host.emitted().is_empty());
    }

    #[test]
    fn fail_until_retries_before_the_given_attempt_then_succeeds() {
        let mut host = TestHost::new();
        let event = |attempt| {
            TestEvent::new("faulty.fail-until")
                .id("f-1")
                .attempt(attempt)
                .json(&json!({"succeed_on_attempt": 3}))
        };
        assert!(host.deliver(handle, event(1)).unwrap_err().is_retry());
        assert!(host.deliver(handle, event(2)).unwrap_err().is_retry());
        host.deliver(handle, event(3)).unwrap();
        assert_eq!(host.emitted().len(), 1);
        assert!(
            host.deliver(handle, TestEvent::new("faulty.fail-until"))
                .unwrap_err()
                .is_reject()
        );
    }

    #[test]
    fn fail_until_succeeds_within_its_own_retry_policy() {
        let mut host = TestHost::new();
        let event = TestEvent::new("faulty.fail-until").json(&json!({"succeed_on_attempt": 4}));
        let run = host.deliver_with_retries(handle, event, &describe().retry.unwrap());
        assert_eq!(run.attempts, 4);
        assert!(run.result.is_ok());
        assert_eq!(host.emitted()[0].data_json::<Done>().unwrap().attempt, 4);
    }

    #[test]
    fn describes_a_fast_retry_policy() {
        let info = describe();
        assert_eq!(info.name, "faulty");
        assert_eq!(info.retry.unwrap().initial_backoff_ms, 10);
    }
}
