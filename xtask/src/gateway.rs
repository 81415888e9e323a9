//! A fake payment gateway for the demo and the tests: plain HTTP/1.1 on
//! loopback, one thread per connection, std and serde_json only (the tests
//! include this file with `#[path]`).
//!
//! - `POST /charge` with `Idempotency-Key` and `{orderId, amount, currency,
//!   cardToken?}`: `200 {"paymentId"}` or `402 {"reason"}` (a declined card,
//!   an amount over the limit). A key seen before gets its first answer again
//!   (`idempotent-replayed: true`) and charges nothing. During an outage the
//!   answer is `503` and nothing is recorded.
//! - `POST /outage?requests=N`: the next N charge requests fail with `503`
//!   (`&status=429&retry-after=S`: with that status and `Retry-After`).
//! - `POST /slow?requests=N&ms=T`: the next N charges are made at once but
//!   answered only after T ms (a client that gives up first charged anyway).
//! - `GET /stats`: `{"requests", "unavailable", "replayed", "charges": {key:
//!   n}, "orders": {orderId: n}}` — a charge per key above 1 would be a bug.

#![allow(dead_code)] // the tests and xtask each use a part

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

/// Amounts above this are declined.
pub const LIMIT: f64 = 1000.0;
/// Card tokens that are declined.
pub const DECLINED: [&str; 2] = ["tok_declined", "tok_stolen"];

/// One request as the gateway saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    seen: Vec<Seen>,
    outage: u64,
    /// The outage's answer: status and `Retry-After` seconds.
    outage_status: u16,
    outage_retry_after: Option<u64>,
    slow: u64,
    slow_for: Duration,
    unavailable: u64,
    replayed: u64,
    /// Idempotency key → the first answer.
    answers: BTreeMap<String, (u16, Value)>,
    charges: BTreeMap<String, u64>,
    orders: BTreeMap<String, u64>,
}

/// Status, extra headers, JSON body.
type Answer = (u16, Vec<(&'static str, String)>, Value);

/// A running gateway; stops when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Gateway {
    /// Listens on `addr` (port 0: a free one) and serves on a thread.
    pub fn start(addr: &str) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Ok(Gateway { addr, state, stop })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `n` charge requests fail with `503`.
    pub fn outage(&self, n: u64) {
        self.outage_with(n, 503, None);
    }

    /// The next `n` charge requests fail with `status` (and `Retry-After`).
    pub fn outage_with(&self, n: u64, status: u16, retry_after: Option<u64>) {
        self.with(|s| {
            s.outage = n;
            s.outage_status = status;
            s.outage_retry_after = retry_after;
        });
    }

    /// The next `n` charges are made but answered only after `delay`.
    pub fn slow(&self, n: u64, delay: Duration) {
        self.with(|s| {
            s.slow = n;
            s.slow_for = delay;
        });
    }

    /// Every request seen, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    /// The stats document of `GET /stats`.
    pub fn stats(&self) -> Value {
        self.with(|s| stats(s))
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn stats(s: &State) -> Value {
    json!({
        "requests": s.seen.len(),
        "unavailable": s.unavailable,
        "replayed": s.replayed,
        "charges": s.charges,
        "orders": s.orders,
    })
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let Some(req) = read_request(&mut reader) else {
        return;
    };
    let (status, headers, body, delay) = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.seen.push(req.clone());
        let (status, headers, body) = answer(&mut s, &req);
        let delay = if req.path == "/charge" && status == 200 && s.slow > 0 {
            s.slow -= 1;
            s.slow_for
        } else {
            Duration::ZERO
        };
        (status, headers, body, delay)
    };
    std::thread::sleep(delay);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        402 => "Payment Required",
        429 => "Too Many Requests",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = writer.write_all(head.as_bytes());
    let _ = writer.write_all(body.as_bytes());
    let _ = writer.flush();
}

fn answer(s: &mut State, req: &Seen) -> Answer {
    let path = req.path.split('?').next().unwrap_or("");
    match (req.method.as_str(), path) {
        ("GET", "/stats") => (200, vec![], stats(s)),
        ("POST", "/outage") => {
            let n = param(req, "requests").unwrap_or(1);
            s.outage = n;
            s.outage_status = param(req, "status").map_or(503, |c| c as u16);
            s.outage_retry_after = param(req, "retry-after");
            (200, vec![], json!({"outage": n}))
        }
        ("POST", "/slow") => {
            s.slow = param(req, "requests").unwrap_or(1);
            s.slow_for = Duration::from_millis(param(req, "ms").unwrap_or(1000));
            (200, vec![], json!({"slow": s.slow}))
        }
        ("POST", "/charge") => charge(s, req),
        _ => (404, vec![], json!({"error": "no such endpoint"})),
    }
}

/// The query parameter `name` of `req` as a number.
fn param(req: &Seen, name: &str) -> Option<u64> {
    let (_, query) = req.path.split_once('?')?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}

fn charge(s: &mut State, req: &Seen) -> Answer {
    if s.outage > 0 {
        s.outage -= 1;
        s.unavailable += 1;
        let headers = match s.outage_retry_after {
            Some(secs) => vec![("retry-after", secs.to_string())],
            None => vec![],
        };
        let status = if s.outage_status == 0 {
            503
        } else {
            s.outage_status
        };
        return (status, headers, json!({"error": "gateway unavailable"}));
    }
    let Some(key) = req.header("idempotency-key").map(str::to_owned) else {
        return (400, vec![], json!({"error": "Idempotency-Key is required"}));
    };
    if let Some((status, body)) = s.answers.get(&key) {
        s.replayed += 1;
        return (
            *status,
            vec![("idempotent-replayed", "true".into())],
            body.clone(),
        );
    }
    let Ok(order) = serde_json::from_slice::<Value>(&req.body) else {
        return (400, vec![], json!({"error": "the body is not JSON"}));
    };
    let id = order["orderId"].as_str().unwrap_or_default().to_owned();
    let amount = order["amount"].as_f64().unwrap_or(f64::NAN);
    let currency = order["currency"].as_str().unwrap_or("EUR");
    let card = order["cardToken"].as_str().unwrap_or_default();
    let (status, body) = if id.is_empty() || !amount.is_finite() {
        (400, json!({"error": "orderId and amount are required"}))
    } else if DECLINED.contains(&card) {
        (402, json!({"reason": "card declined"}))
    } else if amount > LIMIT {
        let reason = format!(
            "amount {} {currency} is over the limit of {LIMIT}",
            order["amount"]
        );
        (402, json!({"reason": reason}))
    } else {
        *s.charges.entry(key.clone()).or_insert(0) += 1;
        *s.orders.entry(id.clone()).or_insert(0) += 1;
        (200, json!({"paymentId": format!("pay-{id}")}))
    };
    if status != 400 {
        s.answers.insert(key, (status, body.clone()));
    }
    (status, vec![], body)
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body).ok()?;
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
        at: std::time::Instant::now(),
    })
}
