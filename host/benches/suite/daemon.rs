//! The real `evhost run` as the benchmarks use it: started on a temp data dir
//! and port 0, timed until it prints "listening on", its peak RSS read from
//! `/proc`, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;

const EVHOST: &str = env!("CARGO_BIN_EXE_evhost");

pub struct Daemon {
    child: Child,
    pub url: String,
    /// From spawning the process to its "listening on" line (plugins are
    /// loaded before it is printed).
    pub startup: Duration,
    /// Its stdout lines up to "listening on".
    pub startup_lines: Vec<String>,
    pub agent: ureq::Agent,
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

impl Daemon {
    pub fn start(data: &Path, plugins: &Path) -> Daemon {
        let started = Instant::now();
        let mut child = Command::new(EVHOST)
            .arg("run")
            .arg("--data")
            .arg(data)
            .arg("--plugins")
            .arg(plugins)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("EVHOST_TOKEN")
            // Logging is not what is measured.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("evhost starts");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    // Nobody listens any more; keep draining so the daemon never blocks.
                    continue;
                }
            }
        });
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok((at, line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        let url = url.trim().to_owned();
                        // The reader thread keeps draining stdout after this.
                        drop(rx);
                        return Daemon {
                            child,
                            url,
                            startup: at - started,
                            startup_lines: lines,
                            agent: agent(),
                        };
                    }
                    lines.push(line);
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("evhost run did not listen: {e}; output so far: {lines:#?}");
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn peak_rss(&self) -> Option<u64> {
        common::peak_rss(self.pid())
    }

    pub fn get(&self, path: &str) -> Value {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.url))
            .call()
            .expect("GET");
        let text = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .expect("body");
        serde_json::from_str(&text).expect("JSON answer")
    }

    /// End offset of partition 0 of `topic` (0 while it does not exist).
    pub fn end_offset(&self, topic: &str) -> u64 {
        let topics = self.get("/v1/topics");
        topics["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"] == topic)
            .and_then(|t| t["partitions"][0]["end_offset"].as_u64())
            .unwrap_or(0)
    }

    /// SIGTERM, then wait (kill -9 after 30 s).
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("evhost did not stop within 30 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A structured-mode batch body of `events` `ty` events with 256-byte payloads.
pub fn batch_body(ty: &str, subject: &str, first: u64, events: usize, sent_ns: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(events * (common::PAYLOAD + 128));
    body.push(b'[');
    for i in 0..events {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(
            format!(
                r#"{{"specversion":"1.0","type":"{ty}","source":"/bench","subject":"{subject}","datacontenttype":"application/json","data":"#
            )
            .as_bytes(),
        );
        body.extend(common::payload(first + i as u64, sent_ns));
        body.push(b'}');
    }
    body.push(b']');
    body
}

/// POSTs a batch; panics unless the daemon answers 201.
pub fn post_batch(agent: &ureq::Agent, url: &str, topic: &str, body: &[u8]) {
    let mut resp = agent
        .post(format!("{url}/v1/topics/{topic}/events"))
        .header("content-type", "application/cloudevents-batch+json")
        .send(body)
        .expect("POST");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 201, "publish answered {status}: {text}");
}
