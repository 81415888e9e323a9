//! A 3-node `nats-server` cluster on loopback for tests: each node with JetStream, its own
//! client and route ports and store dir; nodes can be `kill -9`ed and restarted on the same
//! ports and store (so they rejoin and catch up). Every node is killed on drop, also when the
//! test panics. Uses `nats_server.rs` (declared beside it by the test) for the binary.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nats_server;

pub struct Node {
    pub name: String,
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn spawn(conf: &PathBuf) -> Child {
    let mut cmd = Command::new(nats_server::binary());
    cmd.arg("-c").arg(conf);
    // SAFETY: prctl(2) only, between fork and exec: the node dies with the test.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts")
}

impl NatsCluster {
    /// Starts three nodes and waits until JetStream answers (a meta leader is elected).
    pub fn start() -> NatsCluster {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, (port, route))| {
                let name = format!("n{i}");
                let conf = dir.path().join(format!("{name}.conf"));
                let store = dir.path().join(&name);
                std::fs::write(
                    &conf,
                    format!(
                        "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\n\
                         jetstream {{\n  store_dir: {:?}\n}}\n\
                         cluster {{\n  name: evhost-test\n  listen: \"127.0.0.1:{route}\"\n  routes: [{}]\n}}\n",
                        store.display().to_string(),
                        routes.join(", ")
                    ),
                )
                .expect("node config written");
                let child = Some(spawn(&conf));
                Node {
                    name,
                    port: *port,
                    conf,
                    child,
                }
            })
            .collect();
        let cluster = NatsCluster { nodes, _dir: dir };
        cluster.wait_ready();
        cluster
    }

    /// `nats://` URLs of every node, comma-separated (what `--log` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    /// A JetStream API request to any live node; `None` while no node answers it.
    fn api(&self, subject: &str) -> Option<serde_json::Value> {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect();
        Self::runtime().block_on(async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(1))
                .connect(urls.as_slice())
                .await
                .ok()?;
            let reply = tokio::time::timeout(
                Duration::from_secs(2),
                client.request(subject.to_owned(), "".into()),
            )
            .await
            .ok()?
            .ok()?;
            let value: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
            value.get("error").is_none().then_some(value)
        })
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.api("$JS.API.INFO").is_none() {
            assert!(
                Instant::now() < deadline,
                "the 3-node cluster did not elect a JetStream meta leader within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the node leading `stream`, once it has a leader.
    pub fn stream_leader(&self, stream: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = self
                .api(&format!("$JS.API.STREAM.INFO.{stream}"))
                .and_then(|info| info["cluster"]["leader"].as_str().map(str::to_owned));
            if let Some(i) = leader.and_then(|l| self.nodes.iter().position(|n| n.name == l)) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "stream {stream} has no leader after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9` of node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store; waits until it accepts connections.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.child = Some(spawn(&node.conf));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "node {} did not listen again",
                node.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}
