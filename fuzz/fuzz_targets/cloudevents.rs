//! Arbitrary bytes into the CloudEvents HTTP binding (`evhost::api::cloudevents::parse_request`)
//! in each content mode; it must answer `Ok` or a 4xx, never panic.
//!
//! Input layout: the first byte picks the mode; in binary mode the lines up to the first empty
//! line give header values (a fixed set of `ce-*` headers and `Content-Type`, then `name:value`
//! extension headers), the rest is the body. Values that are not valid header bytes are left
//! out, as an HTTP server would never pass them on.
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use evhost::api::cloudevents::parse_request;
use libfuzzer_sys::fuzz_target;

const FIXED: &[&str] = &[
    "ce-specversion",
    "ce-type",
    "ce-source",
    "content-type",
    "ce-id",
    "ce-subject",
    "ce-time",
    "ce-correlationid",
    "ce-causationid",
    "ce-actor",
    "ce-dataschema",
];

fn value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

fn binary(input: &[u8]) -> (HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let mut rest = input;
    let mut i = 0;
    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        if line.is_empty() {
            break;
        }
        if let Some(name) = FIXED.get(i) {
            if let Some(v) = value(line) {
                headers.append(*name, v);
            }
        } else if let Some(colon) = line.iter().position(|b| *b == b':') {
            let name = [b"ce-", &line[..colon]].concat();
            if let (Ok(n), Some(v)) = (HeaderName::from_bytes(&name), value(&line[colon + 1..])) {
                headers.append(n, v);
            }
        }
        i += 1;
    }
    (headers, rest)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let with_type = |ct: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h
    };
    let (headers, body) = match mode % 4 {
        0 => (with_type("application/cloudevents+json"), rest),
        1 => (with_type("application/cloudevents-batch+json"), rest),
        2 => binary(rest),
        // Any Content-Type (first line), so media-type parsing and mode choice are fuzzed too.
        _ => {
            let nl = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let mut h = HeaderMap::new();
            if let Some(v) = value(&rest[..nl]) {
                h.insert(header::CONTENT_TYPE, v);
            }
            h.insert("ce-specversion", HeaderValue::from_static("1.0"));
            (h, rest.get(nl + 1..).unwrap_or(&[]))
        }
    };
    let _ = parse_request(&headers, body);
});
