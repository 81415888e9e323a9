//! Harness for the tests that run the real daemon: start `evhost run` on a temp
//! data dir and a free port (port 0, read back from its "listening on" line),
//! talk HTTP to it, stop it with SIGTERM or `kill -9`.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const EVHOST: &str = env!("CARGO_BIN_EXE_evhost");

/// How to start a daemon.
#[derive(Default, Clone)]
pub struct Options {
    pub plugins: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub token: Option<String>,
    pub env: Vec<(String, String)>,
}

/// A running `evhost run`; killed with `kill -9` when dropped if still running.
pub struct Daemon {
    child: Child,
    pub url: String,
    pub addr: String,
    pub data: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line);
        }
    });
}

impl Daemon {
    /// Starts a daemon on `data` and waits until it listens (or panics with its output).
    pub fn start(data: &Path, opts: Options) -> Daemon {
        let mut cmd = Command::new(EVHOST);
        cmd.arg("run")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("EVHOST_TOKEN")
            .env("RUST_LOG", "evhost=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &opts.plugins {
            Some(p) => cmd.arg("--plugins").arg(p),
            None => cmd.arg("--plugins").arg(data.join("no-plugins")),
        };
        if let Some(c) = &opts.config {
            cmd.arg("--config").arg(c);
        }
        if let Some(t) = &opts.token {
            cmd.args(["--token", t]);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("evhost starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        let mut daemon = Daemon {
            child,
            url: String::new(),
            addr: String::new(),
            data: data.to_owned(),
            stdout,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let found = daemon
                .stdout()
                .iter()
                .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned));
            if let Some(url) = found {
                daemon.addr = url.trim_start_matches("http://").to_owned();
                daemon.url = url;
                return daemon;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "evhost run exited with {status} before listening\nstdout:\n{}\nstderr:\n{}",
                    daemon.stdout().join("\n"),
                    daemon.stderr().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "evhost run did not listen in time\nstdout:\n{}\nstderr:\n{}",
                daemon.stdout().join("\n"),
                daemon.stderr().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Bytes the daemon has written to stdout and stderr so far (the log goes
    /// to stderr), counting each line's newline.
    pub fn output_bytes(&self) -> usize {
        let count = |lines: &Mutex<Vec<String>>| -> usize {
            lines.lock().unwrap().iter().map(|l| l.len() + 1).sum()
        };
        count(&self.stdout) + count(&self.stderr)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait; panics unless it exits 0 in time.
    pub fn stop(mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "evhost did not stop cleanly: {status:?}\nstderr:\n{}",
            self.stderr().join("\n")
        );
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        request("GET", &format!("{}{path}", self.url), &[], None)
    }

    pub fn post(&self, path: &str, content_type: &str, body: &str) -> (u16, Value) {
        request(
            "POST",
            &format!("{}{path}", self.url),
            &[("content-type", content_type)],
            Some(body.as_bytes()),
        )
    }

    /// Publishes one structured-mode event to `/v1/events`.
    pub fn publish(&self, event: &Value) -> (u16, Value) {
        self.post(
            "/v1/events",
            "application/cloudevents+json",
            &event.to_string(),
        )
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        request(method, &format!("{}{path}", self.url), headers, body)
    }

    /// Every event of a topic partition, paging through reads.
    pub fn read_all(&self, topic: &str, partition: u32) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let (status, body) = self.get(&format!(
                "/v1/topics/{topic}/events?partition={partition}&from={from}&limit=1000"
            ));
            if status == 404 {
                return out;
            }
            assert_eq!(status, 200, "{body}");
            let events = body["events"].as_array().unwrap().clone();
            if events.is_empty() {
                return out;
            }
            from = body["next_offset"].as_u64().unwrap();
            out.extend(events);
        }
    }

    /// `GET /v1/topics` as (name, partition, end) triples: a fingerprint of the log.
    pub fn log_fingerprint(&self) -> Vec<(String, u64, u64)> {
        let (status, body) = self.get("/v1/topics");
        assert_eq!(status, 200);
        let mut out = Vec::new();
        for t in body["topics"].as_array().unwrap() {
            for p in t["partitions"].as_array().unwrap() {
                out.push((
                    t["name"].as_str().unwrap().to_owned(),
                    p["partition"].as_u64().unwrap(),
                    p["end_offset"].as_u64().unwrap(),
                ));
            }
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

/// One HTTP request; the body as JSON (or a JSON string of the text).
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, Value) {
    let (status, _, text) = request_full(method, url, headers, body);
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json)
}

/// One HTTP request: status, headers (lowercase names) and body text.
pub fn request_full(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, Vec<(String, String)>, String) {
    let method: ureq::http::Method = method.parse().unwrap();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder
        .body(body.map(<[u8]>::to_vec).unwrap_or_default())
        .unwrap();
    let mut resp = agent().run(req).expect("the daemon answers");
    let status = resp.status().as_u16();
    let hdrs = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, hdrs, text)
}

/// Sends raw bytes as one HTTP/1.1 request and returns the status and body of the answer.
pub fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A plugin directory with the given example plugins and their sidecars.
pub fn plugin_dir(root: &Path, plugins: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, sidecar) in plugins {
        let built = crate::support::plugin(name);
        std::fs::copy(&built, dir.join(format!("{name}.wasm"))).unwrap();
        if !sidecar.is_empty() {
            std::fs::write(dir.join(format!("{name}.toml")), sidecar).unwrap();
        }
    }
    dir
}

/// A minimal valid structured-mode event.
pub fn event(ty: &str, data: Value) -> Value {
    serde_json::json!({
        "specversion": "1.0",
        "type": ty,
        "source": "test",
        "data": data,
    })
}
