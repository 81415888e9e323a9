//! Malformed and hostile requests: each gets the documented JSON error with the
//! right status, and the log (topics, offsets, streams, schemas, dead letters) is
//! exactly as before afterwards.

mod daemon_support;
mod support;

use daemon_support::{Daemon, Options, event};
use serde_json::{Value, json};

const TOKEN: &str = "hostile-test-token";
const AUTH: (&str, &str) = ("authorization", "Bearer hostile-test-token");
const CE: (&str, &str) = ("content-type", "application/cloudevents+json");
const BATCH: (&str, &str) = ("content-type", "application/cloudevents-batch+json");

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    status: u16,
}

fn case(
    name: &'static str,
    method: &'static str,
    path: &str,
    headers: &[(&'static str, &'static str)],
    body: impl Into<Vec<u8>>,
    status: u16,
) -> Case {
    Case {
        name,
        method,
        path: path.to_owned(),
        headers: headers.to_vec(),
        body: body.into(),
        status,
    }
}

/// A structured event with `patch` applied over a valid one.
fn ev(patch: Value) -> String {
    let mut e = json!({"specversion": "1.0", "type": "probe.sent", "source": "hostile"});
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            e.as_object_mut().unwrap().remove(k);
        } else {
            e[k] = v.clone();
        }
    }
    e.to_string()
}

fn cases() -> Vec<Case> {
    let p = "/v1/topics/probe/events";
    let ce = &[AUTH, CE][..];
    vec![
        case("malformed JSON", "POST", p, ce, r#"{"specversion":"#, 400),
        case("JSON array in structured mode", "POST", p, ce, "[]", 400),
        case(
            "JSON string in structured mode",
            "POST",
            p,
            ce,
            r#""hi""#,
            400,
        ),
        case("empty structured body", "POST", p, ce, "", 400),
        case(
            "invalid UTF-8 body",
            "POST",
            p,
            ce,
            vec![b'{', 0xff, 0xfe, b'}'],
            400,
        ),
        case(
            "nesting deeper than the parser allows",
            "POST",
            p,
            ce,
            "[".repeat(10_000),
            400,
        ),
        case(
            "missing specversion",
            "POST",
            p,
            ce,
            ev(json!({"specversion": null})),
            400,
        ),
        case(
            "wrong specversion",
            "POST",
            p,
            ce,
            ev(json!({"specversion": "0.3"})),
            400,
        ),
        case(
            "specversion as a number",
            "POST",
            p,
            ce,
            ev(json!({"specversion": 1.0})),
            400,
        ),
        case(
            "missing type",
            "POST",
            p,
            ce,
            ev(json!({"type": null})),
            400,
        ),
        case(
            "missing source",
            "POST",
            p,
            ce,
            ev(json!({"source": null})),
            400,
        ),
        case("empty type", "POST", p, ce, ev(json!({"type": ""})), 400),
        case(
            "type as a number",
            "POST",
            p,
            ce,
            ev(json!({"type": 7})),
            400,
        ),
        case(
            "type with control characters",
            "POST",
            p,
            ce,
            ev(json!({"type": "a\u{1}b"})),
            400,
        ),
        case("empty id", "POST", p, ce, ev(json!({"id": ""})), 400),
        case(
            "id of 5000 bytes",
            "POST",
            p,
            ce,
            ev(json!({"id": "i".repeat(5000)})),
            400,
        ),
        case(
            "time that is not RFC 3339",
            "POST",
            p,
            ce,
            ev(json!({"time": "yesterday"})),
            400,
        ),
        case(
            "data and data_base64 together",
            "POST",
            p,
            ce,
            ev(json!({"data": 1, "data_base64": "AA=="})),
            400,
        ),
        case(
            "data_base64 that is not base64",
            "POST",
            p,
            ce,
            ev(json!({"data_base64": "***"})),
            400,
        ),
        case(
            "host attribute offset",
            "POST",
            p,
            ce,
            ev(json!({"offset": 3})),
            400,
        ),
        case(
            "host attribute topic",
            "POST",
            p,
            ce,
            ev(json!({"topic": "elsewhere"})),
            400,
        ),
        case(
            "host attribute streamversion",
            "POST",
            p,
            ce,
            ev(json!({"streamversion": 9})),
            400,
        ),
        case(
            "extension name with uppercase",
            "POST",
            p,
            ce,
            ev(json!({"TraceParent": "x"})),
            400,
        ),
        case(
            "extension value that is an object",
            "POST",
            p,
            ce,
            ev(json!({"ext": {"a": 1}})),
            400,
        ),
        case(
            "binary mode without ce-specversion",
            "POST",
            p,
            &[AUTH, ("content-type", "text/plain")],
            "hello",
            400,
        ),
        case(
            "no content type and no ce headers",
            "POST",
            p,
            &[AUTH],
            "hello",
            400,
        ),
        case(
            "binary JSON content type with a body that is not JSON",
            "POST",
            p,
            &[
                AUTH,
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-type", "a.b"),
                ("ce-source", "s"),
            ],
            "{not json",
            400,
        ),
        case(
            "binary mode with ce-datacontenttype",
            "POST",
            p,
            &[
                AUTH,
                ("content-type", "text/plain"),
                ("ce-specversion", "1.0"),
                ("ce-type", "a.b"),
                ("ce-source", "s"),
                ("ce-datacontenttype", "text/plain"),
            ],
            "x",
            400,
        ),
        case(
            "binary header that does not percent-decode to UTF-8",
            "POST",
            p,
            &[
                AUTH,
                ("content-type", "text/plain"),
                ("ce-specversion", "1.0"),
                ("ce-type", "a.b"),
                ("ce-source", "s"),
                ("ce-subject", "%FF%FE"),
            ],
            "x",
            400,
        ),
        case(
            "binary mode missing ce-source",
            "POST",
            p,
            &[
                AUTH,
                ("content-type", "text/plain"),
                ("ce-specversion", "1.0"),
                ("ce-type", "a.b"),
            ],
            "x",
            400,
        ),
        case(
            "unsupported event format",
            "POST",
            p,
            &[AUTH, ("content-type", "application/cloudevents+xml")],
            "<event/>",
            415,
        ),
        case(
            "batch that is not an array",
            "POST",
            p,
            &[AUTH, BATCH],
            ev(json!({})),
            400,
        ),
        case("empty batch", "POST", p, &[AUTH, BATCH], "[]", 400),
        case(
            "batch with a non-object",
            "POST",
            p,
            &[AUTH, BATCH],
            format!("[{}, 5]", ev(json!({}))),
            400,
        ),
        case(
            "batch with one bad event among good ones",
            "POST",
            p,
            &[AUTH, BATCH],
            format!(
                "[{}, {}, {}]",
                ev(json!({})),
                ev(json!({"source": null})),
                ev(json!({}))
            ),
            400,
        ),
        case(
            "body over the limit",
            "POST",
            p,
            ce,
            ev(json!({"data": "z".repeat(70_000)})),
            413,
        ),
        case(
            "invalid topic name",
            "POST",
            "/v1/topics/bad%20name/events",
            ce,
            ev(json!({})),
            400,
        ),
        case(
            "topic name of 250 characters",
            "POST",
            &format!("/v1/topics/{}/events", "t".repeat(250)),
            ce,
            ev(json!({})),
            400,
        ),
        case(
            "unknown query parameter on publish",
            "POST",
            "/v1/topics/probe/events?partition=3",
            ce,
            ev(json!({})),
            400,
        ),
        case(
            "no token on a mutation",
            "POST",
            p,
            &[CE],
            ev(json!({})),
            401,
        ),
        case(
            "wrong token",
            "POST",
            p,
            &[("authorization", "Bearer nope"), CE],
            ev(json!({})),
            401,
        ),
        case(
            "basic auth instead of bearer",
            "POST",
            p,
            &[("authorization", "Basic aG9zdGlsZQ=="), CE],
            ev(json!({})),
            401,
        ),
        case(
            "schema violation",
            "POST",
            "/v1/events",
            ce,
            ev(json!({"type": "typed.event", "data": {"n": "one"}})),
            422,
        ),
        case(
            "schema violation inside a batch",
            "POST",
            "/v1/events",
            &[AUTH, BATCH],
            format!(
                "[{}, {}]",
                ev(json!({"type": "typed.event", "data": {"n": 1}})),
                ev(json!({"type": "typed.event", "data": {}}))
            ),
            422,
        ),
        case(
            "stale expectedVersion",
            "POST",
            "/v1/streams/s-1/events?expectedVersion=5",
            ce,
            ev(json!({})),
            409,
        ),
        case(
            "expectedVersion that is not a number",
            "POST",
            "/v1/streams/s-1/events?expectedVersion=abc",
            ce,
            ev(json!({})),
            400,
        ),
        case(
            "If-Match and expectedVersion that disagree",
            "POST",
            "/v1/streams/s-1/events?expectedVersion=1",
            &[AUTH, CE, ("if-match", "\"0\"")],
            ev(json!({})),
            400,
        ),
        case(
            "stream name with a space",
            "POST",
            "/v1/streams/a%20b/events",
            ce,
            ev(json!({})),
            400,
        ),
        case("unknown route", "GET", "/v1/nothing", &[AUTH], "", 404),
        case(
            "unknown route outside v1",
            "POST",
            "/admin",
            &[AUTH],
            "",
            404,
        ),
        case("wrong method", "DELETE", "/v1/topics", &[AUTH], "", 405),
        case(
            "read limit of 0",
            "GET",
            "/v1/topics/seed/events?limit=0",
            &[],
            "",
            400,
        ),
        case(
            "read limit too large",
            "GET",
            "/v1/topics/seed/events?limit=100000",
            &[],
            "",
            400,
        ),
        case(
            "negative partition",
            "GET",
            "/v1/topics/seed/events?partition=-1",
            &[],
            "",
            400,
        ),
        case(
            "follow that is not a boolean",
            "GET",
            "/v1/topics/seed/events?follow=maybe",
            &[],
            "",
            400,
        ),
        case(
            "repeated query parameter",
            "GET",
            "/v1/topics/seed/events?from=1&from=2",
            &[],
            "",
            400,
        ),
        case(
            "dead letter id that is not a number",
            "GET",
            "/v1/dlq/abc",
            &[],
            "",
            400,
        ),
        case(
            "unknown dead letter",
            "DELETE",
            "/v1/dlq/999",
            &[AUTH],
            "",
            404,
        ),
        case(
            "replay of an unknown dead letter",
            "POST",
            "/v1/dlq/999/replay",
            &[AUTH],
            "",
            404,
        ),
        case(
            "replay many without a plugin",
            "POST",
            "/v1/dlq/replay",
            &[AUTH],
            "",
            400,
        ),
        case(
            "schema that is not JSON",
            "PUT",
            "/v1/schemas/x.y/1",
            &[AUTH],
            "{nope",
            400,
        ),
        case(
            "schema type name with a leading dot",
            "PUT",
            "/v1/schemas/..x/1",
            &[AUTH],
            "{}",
            400,
        ),
        case(
            "schema that does not compile",
            "PUT",
            "/v1/schemas/x.y/1",
            &[AUTH],
            r#"{"minimum":"ten"}"#,
            422,
        ),
        case(
            "changing a registered schema version",
            "PUT",
            "/v1/schemas/typed.event/1",
            &[AUTH],
            r#"{"type":"string"}"#,
            409,
        ),
    ]
}

/// Everything the log holds, as the API shows it.
fn snapshot(d: &Daemon) -> Value {
    let topics = d.log_fingerprint();
    let probe = d.read_all("probe", 0);
    let stream = d.get("/v1/streams/s-1/events").1["version"].clone();
    let schemas = d.get("/v1/schemas").1;
    let dlq = d.get("/v1/dlq").1;
    json!({"topics": topics, "probe": probe, "stream": stream, "schemas": schemas, "dlq": dlq})
}

#[test]
fn hostile_requests_get_their_error_and_leave_the_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("evhost.toml");
    std::fs::write(
        &config,
        format!("[api]\ntoken = \"{TOKEN}\"\nmax-body-bytes = \"64 KiB\"\n"),
    )
    .unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            config: Some(config),
            ..Options::default()
        },
    );
    // Some state to disturb: a topic, a stream at version 1, a schema.
    let auth = [AUTH, CE];
    assert_eq!(
        d.request(
            "POST",
            "/v1/topics/seed/events",
            &auth,
            Some(event("seed.one", json!(1)).to_string().as_bytes())
        )
        .0,
        201
    );
    assert_eq!(
        d.request(
            "POST",
            "/v1/streams/s-1/events?expectedVersion=0",
            &auth,
            Some(ev(json!({})).as_bytes())
        )
        .0,
        201
    );
    let schema =
        json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
    assert_eq!(
        d.request(
            "PUT",
            "/v1/schemas/typed.event/1",
            &[AUTH],
            Some(schema.to_string().as_bytes())
        )
        .0,
        201
    );

    let before = snapshot(&d);
    let cases = cases();
    assert!(cases.len() >= 30, "the table has {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let body = (!c.body.is_empty()).then_some(c.body.as_slice());
        let (status, answer) = d.request(c.method, &c.path, &c.headers, body);
        let code = answer["error"]["code"].as_str().unwrap_or("");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        if status != c.status || code.is_empty() || message.is_empty() {
            failures.push(format!(
                "{}: expected {} with a JSON error, got {status} {answer}",
                c.name, c.status
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(snapshot(&d), before, "a refused request changed the log");

    // The daemon still works.
    assert_eq!(
        d.request(
            "POST",
            "/v1/topics/probe/events",
            &auth,
            Some(ev(json!({})).as_bytes())
        )
        .0,
        201
    );
}

#[test]
fn raw_protocol_garbage_is_refused_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let before = d.log_fingerprint();
    // Not HTTP at all: hyper answers 400 (or closes); either way nothing is written.
    let (status, _) = daemon_support::raw(&d.addr, b"HELLO THERE\r\n\r\n");
    assert!(status == 400 || status == 0, "{status}");
    // A content length that lies about the body.
    let (status, _) = daemon_support::raw(
        &d.addr,
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"a\":1}",
    );
    assert_ne!(status, 201);
    assert_eq!(d.log_fingerprint(), before);
    assert_eq!(d.get("/healthz").0, 200, "the daemon is still up");
}
