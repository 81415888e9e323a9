//! Outbound HTTP for plugins (`wasi:http`, issue 16), end to end: the real
//! `evhost run`, the real `http-probe` and `payment` components, and real
//! servers on loopback — the fake payment gateway of the demo
//! (`xtask/src/gateway.rs`) and a server that accepts and never answers.

mod daemon_support;
#[path = "../xtask/src/gateway.rs"]
mod gateway;
mod support;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_support::{Daemon, Options, event, plugin_dir};
use gateway::Gateway;
use serde_json::{Value, json};
use support::wait_for;

/// The probe's sidecar: `allow` as the `http` grant, one attempt per event
/// (a failure is parked at once), plus `extra` (tables).
fn probe_sidecar(allow: &[String], timeout: &str, extra: &str) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "timeout = \"{timeout}\"\n[grants]\nemit = [\"probe.answered\"]\nhttp = [{}]\n\
         [retry]\nmax-attempts = 1\n{extra}",
        allow.join(", ")
    )
}

fn start(dir: &Path, plugins: &[(&str, &str)]) -> Daemon {
    let plugins = plugin_dir(dir, plugins);
    Daemon::start(
        &dir.join("data"),
        Options {
            plugins: Some(plugins),
            ..Options::default()
        },
    )
}

/// Every stored event of `ty`, over all topics and partitions.
fn events_of(d: &Daemon, ty: &str) -> Vec<Value> {
    let (_, topics) = d.get("/v1/topics");
    let mut out = Vec::new();
    for t in topics["topics"].as_array().into_iter().flatten() {
        let name = t["name"].as_str().unwrap();
        for p in t["partitions"].as_array().unwrap() {
            out.extend(
                d.read_all(name, p["partition"].as_u64().unwrap() as u32)
                    .into_iter()
                    .filter(|e| e["type"] == ty),
            );
        }
    }
    out
}

/// Publishes a probe and returns the results of its `probe.answered`.
fn probe(d: &Daemon, request: Value) -> Vec<Value> {
    let (status, body) = d.publish(&event("probe.requested", request));
    assert_eq!(status, 201, "{body}");
    let mut answered = Vec::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            answered = events_of(d, "probe.answered");
            !answered.is_empty()
        }),
        "no probe.answered; dead letters: {}; stderr:\n{}",
        d.get("/v1/dlq").1,
        d.stderr().join("\n")
    );
    answered[0]["data"]["results"].as_array().unwrap().clone()
}

/// The first dead letter of `plugin`, waited for.
fn dead_letter(d: &Daemon, plugin: &str) -> Value {
    let mut list = Value::Null;
    assert!(
        wait_for(Duration::from_secs(30), || {
            list = d.get(&format!("/v1/dlq?plugin={plugin}")).1;
            list["dead_letters"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        }),
        "no dead letter; stderr:\n{}",
        d.stderr().join("\n")
    );
    list["dead_letters"][0].clone()
}

fn metrics(d: &Daemon) -> String {
    let (status, _, text) =
        daemon_support::request_full("GET", &format!("{}/metrics", d.url), &[], None);
    assert_eq!(status, 200);
    text
}

#[test]
fn an_allowed_request_is_sent_and_its_response_reaches_the_guest() {
    let gw = Gateway::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = probe_sidecar(&[format!("{}/stats", gw.url())], "5s", "");
    let d = start(dir.path(), &[("http-probe", &sidecar)]);

    let results = probe(&d, json!({"url": format!("{}/stats", gw.url())}));
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["status"], 200, "{results:?}");
    let body: Value = serde_json::from_str(results[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["requests"], 1, "the gateway's own answer: {body}");
    let seen = gw.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/stats")
    );

    // Observable: counted by plugin, host and status class, timed, and logged
    // with method, host and status.
    let host = gw.addr.to_string();
    let text = metrics(&d);
    assert!(
        text.contains(&format!(
            "evhost_plugin_http_requests_total{{plugin=\"http-probe\",host=\"{host}\",class=\"2xx\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains("evhost_plugin_http_request_seconds_count{plugin=\"http-probe\"} 1"),
        "{text}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || d.stderr().iter().any(|l| {
            l.contains("outbound request")
                && l.contains("method=GET")
                && l.contains(&format!("host={host}"))
                && l.contains("status=200")
        })),
        "{}",
        d.stderr().join("\n")
    );
}

#[test]
fn a_request_outside_the_allowlist_is_refused_before_connecting() {
    let gw = Gateway::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Granted: another path on the gateway, and another port.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let allow = [
        format!("{}/stats", gw.url()),
        format!("http://{}", other.local_addr().unwrap()),
    ];
    let sidecar = probe_sidecar(&allow, "5s", "");
    let d = start(dir.path(), &[("http-probe", &sidecar)]);

    let (status, _) = d.publish(&event(
        "probe.requested",
        json!({"url": format!("{}/charge", gw.url()), "method": "POST", "body": "{}"}),
    ));
    assert_eq!(status, 201);
    let dl = dead_letter(&d, "http-probe");
    assert_eq!(dl["error_kind"], "rejected", "{dl}");
    let message = dl["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("may not request POST {}/charge", gw.url()))
            && message.contains("its `http` grant allows")
            && message.contains("http-probe.toml"),
        "the refusal names the request, the grant and the sidecar: {message}"
    );
    assert!(gw.seen().is_empty(), "the gateway saw {:?}", gw.seen());
    assert!(
        metrics(&d).contains(
            "evhost_plugin_http_refused_total{plugin=\"http-probe\",reason=\"not-allowed\"} 1"
        ),
        "{}",
        metrics(&d)
    );
}

#[test]
fn a_plugin_importing_wasi_http_loads_without_the_grant_and_every_request_is_refused() {
    let gw = Gateway::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = "[grants]\nemit = [\"probe.answered\"]\n[retry]\nmax-attempts = 1\n";
    let d = start(dir.path(), &[("http-probe", sidecar)]);
    let (_, plugins) = d.get("/v1/plugins");
    assert_eq!(plugins["plugins"][0]["state"], "running", "{plugins}");

    d.publish(&event("probe.requested", json!({"url": gw.url()})));
    let dl = dead_letter(&d, "http-probe");
    let message = dl["message"].as_str().unwrap();
    assert_eq!(dl["error_kind"], "rejected", "{dl}");
    assert!(
        message.contains("it has no `http` grant")
            && message.contains(&format!("add \"http://{}\"", gw.addr))
            && message.contains("under [grants] in ")
            && message.contains("http-probe.toml"),
        "{message}"
    );
    assert!(gw.seen().is_empty());
    assert!(events_of(&d, "probe.answered").is_empty());
}

#[test]
fn a_server_that_never_answers_ends_the_call_as_timeout_within_the_limit() {
    // Accepts connections and reads nothing, answers nothing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let sidecar = probe_sidecar(&[format!("http://{addr}")], "1s", "");
    let d = start(dir.path(), &[("http-probe", &sidecar)]);

    let started = Instant::now();
    d.publish(&event(
        "probe.requested",
        json!({"url": format!("http://{addr}/hang")}),
    ));
    let dl = dead_letter(&d, "http-probe");
    let waited = started.elapsed();
    assert_eq!(dl["error_kind"], "timeout", "{dl}");
    let message = dl["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("GET http://{addr}/hang")),
        "the timeout names the request: {message}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "parked after {waited:?} with a 1 s timeout"
    );
}

#[test]
fn the_per_call_request_cap_holds() {
    let gw = Gateway::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = probe_sidecar(&[gw.url()], "5s", "[http]\nrequests = 2\n");
    let d = start(dir.path(), &[("http-probe", &sidecar)]);

    let results = probe(
        &d,
        json!({"url": format!("{}/stats", gw.url()), "times": 5}),
    );
    let statuses: Vec<&Value> = results.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses[..2], [&json!(200), &json!(200)], "{results:?}");
    for r in &results[2..] {
        assert_eq!(r["refused"], true, "{r}");
        assert!(
            r["error"]
                .as_str()
                .unwrap()
                .contains("over its limit of 2 requests per call"),
            "{r}"
        );
    }
    assert_eq!(gw.seen().len(), 2);
    assert!(metrics(&d).contains(
        "evhost_plugin_http_refused_total{plugin=\"http-probe\",reason=\"request-cap\"} 3"
    ));
}

/// The seed's flow made real: the gateway is down (503), then charges but
/// answers too late for the call's timeout; the payment is retried with
/// backoff, the retry carries the same `Idempotency-Key`, and the order is
/// charged once.
#[test]
fn a_gateway_outage_then_recovery_handles_the_event_once_with_one_charge() {
    let gw = Gateway::start("127.0.0.1:0").unwrap();
    gw.outage(2);
    gw.slow(1, Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let sidecar = format!(
        "timeout = \"1s\"\n\
         [grants]\nemit = [\"payment.processed\", \"payment.failed\"]\nstate = true\nhttp = [\"{}\"]\n\
         [retry]\nmax-attempts = 8\ninitial-backoff = \"50ms\"\nmax-backoff = \"500ms\"\n\
         [config]\ngateway = \"{}\"\n",
        gw.url(),
        gw.url()
    );
    let d = start(dir.path(), &[("payment", &sidecar)]);
    let (status, body) = d.publish(&json!({
        "specversion": "1.0", "type": "payment.requested", "source": "test", "subject": "o-1",
        "data": {"orderId": "o-1", "customerId": "ada", "amount": 42, "currency": "EUR", "cardToken": "tok_visa"},
    }));
    assert_eq!(status, 201, "{body}");
    let id = body["events"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        wait_for(Duration::from_secs(60), || !events_of(
            &d,
            "payment.processed"
        )
        .is_empty()),
        "not processed; dead letters {}; stderr:\n{}",
        d.get("/v1/dlq").1,
        d.stderr().join("\n")
    );
    let stats = gw.stats();
    assert_eq!(stats["unavailable"], 2, "{stats}");
    assert_eq!(stats["charges"], json!({ id.as_str(): 1 }), "{stats}");
    assert_eq!(stats["orders"], json!({"o-1": 1}), "{stats}");
    assert_eq!(
        stats["replayed"], 1,
        "the retry after the timeout was a replay: {stats}"
    );
    let keys: Vec<String> = gw
        .seen()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(
        keys,
        vec![id.clone(); 4],
        "every attempt sent the event's id"
    );
    assert_eq!(events_of(&d, "payment.processed").len(), 1);
    assert!(
        d.get("/v1/dlq").1["dead_letters"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The timed-out attempt (the last failure) names the request it waited for.
    let (_, plugins) = d.get("/v1/plugins");
    let last = plugins["plugins"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        last.contains("timed out")
            && last.contains(&format!(
                "waiting for the HTTP request POST {}/charge",
                gw.url()
            )),
        "{plugins}"
    );
}

/// A `429` with `Retry-After: 1` delays the next attempt by at least a
/// second, though the retry policy's own backoff is 10 ms (the SDK passes
/// it through `evhost:plugin/retry`; the dispatcher honours it).
#[test]
fn a_429_retry_after_is_honoured_as_the_backoff() {
    let gw = Gateway::start("127.0.0.1:0").unwrap();
    gw.outage_with(1, 429, Some(1));
    let dir = tempfile::tempdir().unwrap();
    let sidecar = format!(
        "[grants]\nemit = [\"payment.processed\", \"payment.failed\"]\nstate = true\nhttp = [\"{0}\"]\n\
         [retry]\nmax-attempts = 3\ninitial-backoff = \"10ms\"\nmax-backoff = \"10s\"\njitter = 0.0\n\
         [config]\ngateway = \"{0}\"\n",
        gw.url()
    );
    let d = start(dir.path(), &[("payment", &sidecar)]);
    d.publish(&json!({
        "specversion": "1.0", "type": "payment.requested", "source": "test", "subject": "o-2",
        "data": {"orderId": "o-2", "customerId": "bob", "amount": 5, "currency": "EUR"},
    }));
    assert!(
        wait_for(Duration::from_secs(30), || !events_of(
            &d,
            "payment.processed"
        )
        .is_empty()),
        "{}",
        d.stderr().join("\n")
    );
    let charges: Vec<Instant> = gw
        .seen()
        .iter()
        .filter(|r| r.path == "/charge")
        .map(|r| r.at)
        .collect();
    assert_eq!(charges.len(), 2, "one 429, then the charge");
    let gap = charges[1] - charges[0];
    assert!(
        gap >= Duration::from_millis(1000),
        "the retry came {gap:?} after the 429"
    );
}

/// A refused connection reaches the guest as an error (the call goes on and
/// commits), and so does a response larger than the call's byte cap.
#[test]
fn connect_errors_and_a_response_over_the_byte_cap_reach_the_guest_as_errors() {
    let gw = Gateway::start("127.0.0.1:0").unwrap();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // dropped: nothing listens there now
    let dir = tempfile::tempdir().unwrap();
    let allow = [gw.url(), format!("http://{closed}")];
    let sidecar = probe_sidecar(&allow, "5s", "[http]\nresponse-bytes = 16\n");
    let d = start(dir.path(), &[("http-probe", &sidecar)]);

    let results = probe(&d, json!({"url": format!("http://{closed}/")}));
    assert_eq!(results[0]["refused"], false, "{results:?}");
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap()
            .contains("ConnectionRefused"),
        "a connection error: {results:?}"
    );

    let (status, body) = d.publish(&event(
        "probe.requested",
        json!({"url": format!("{}/stats", gw.url())}),
    ));
    assert_eq!(status, 201);
    let id = body["events"][0]["id"].clone();
    let mut answer = None;
    assert!(wait_for(Duration::from_secs(30), || {
        answer = events_of(&d, "probe.answered")
            .into_iter()
            .find(|e| e["causationid"] == id);
        answer.is_some()
    }));
    let answer = answer.unwrap();
    let big = &answer["data"]["results"][0];
    assert_eq!(big["refused"], true, "{big}");
    assert!(
        big["error"]
            .as_str()
            .unwrap()
            .contains("exceeds limit: 16 bytes"),
        "{big}"
    );
    assert!(metrics(&d).contains(
        "evhost_plugin_http_refused_total{plugin=\"http-probe\",reason=\"response-bytes\"} 1"
    ));
}
