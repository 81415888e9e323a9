//! evhost on its NATS JetStream log (`NatsLog`), for the rows beside the redb ones: the
//! log R1 on one `nats-server` with `sync_interval: always` (an ack is fsync'd, like
//! redb's), or R3 on a 3-node loopback cluster (`tests/support/nats_cluster.rs`; an ack
//! means "stored on a quorum"; the nodes keep the shipped `sync_interval`). Either way guarantee 1 holds as the README
//! states it for the NATS backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::log::{EventLog, NatsConfig, NatsLog};
use serde_json::{Value, json};

use crate::nats_cluster::NatsCluster;
use crate::nats_server::NatsServer;

/// What keeps the log's servers running; they are killed when it is dropped.
pub enum Servers {
    One { _server: NatsServer },
    Three { _cluster: NatsCluster },
}

/// `nats-r1` or `nats-r3`: starts the servers and connects a `NatsLog` to them.
pub fn open(backend: &str) -> Result<(Arc<dyn EventLog>, Servers), String> {
    let found = crate::nats::find()?;
    if !found.is_modern() {
        return Err(found.old_note());
    }
    let (servers, urls, replicas) = match backend {
        "nats-r1" => {
            let server = NatsServer::spawn(
                &found.path,
                "  sync_interval: always\n",
                crate::scratch_dir(),
            )?;
            let urls = vec![server.url.clone()];
            (Servers::One { _server: server }, urls, 1)
        }
        "nats-r3" => {
            // The tests' cluster finds its binary the same way (`nats_server::binary`).
            let cluster = NatsCluster::start();
            let urls = cluster.urls().split(',').map(str::to_owned).collect();
            (Servers::Three { _cluster: cluster }, urls, 3)
        }
        other => return Err(format!("unknown NATS backend {other:?}")),
    };
    let config = NatsConfig {
        replicas,
        ..NatsConfig::new(urls, "bench")
    };
    // JetStream (and on a cluster, the stream's placement) needs a moment after the
    // servers listen.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match NatsLog::connect(config.clone()) {
            Ok(log) => return Ok((Arc::new(log), servers)),
            Err(e) if Instant::now() < deadline => {
                eprintln!("NATS log not ready yet: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("cannot open the NATS log: {e}")),
        }
    }
}

/// What an ack means on `backend`.
pub fn ack_means(backend: &str) -> &'static str {
    if backend == "nats-r3" {
        "R3 on a 3-node loopback cluster: ack = stored on a quorum (2 of 3)"
    } else {
        "R1, sync_interval: always: ack = fsync'd"
    }
}

/// The library's publish workload (`publish::library_on`) on the NATS log.
pub fn publish(secs: f64, backend: &str) -> Value {
    let (log, servers) = match open(backend) {
        Ok(opened) => opened,
        Err(e) => return json!({"skipped": e}),
    };
    let mut out = crate::publish::library_on(log.clone(), secs);
    drop(log);
    drop(servers);
    out["backend"] = json!(backend);
    out["ack_means"] = json!(ack_means(backend));
    out["peak_rss"] = json!(crate::common::own_peak_rss());
    out
}
