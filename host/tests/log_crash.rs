//! Guarantee 1: an acknowledged publish survives `kill -9`, on both durable backends.
//!
//! The test binary re-executes itself as the child (when `EVHOST_LOG_CRASH_CHILD` names a
//! log, `redb:<file>` or `nats:<url>`; it has its own `main`, `harness = false`, so the
//! child is no test of its own): it appends from blocking threads and async tasks at once
//! and prints one `ACK` line per acknowledged event. The parent SIGKILLs it at a random
//! moment, reopens the same log (the redb file; a new client of the same `nats-server`,
//! which keeps running: only the writer dies) and checks every acknowledged event. Several
//! rounds run on the same log, so recovery after recovery is covered too.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use evhost::event::Event;
use evhost::log::{EventLog, LogConfig, NatsConfig, NatsLog, NewEvent, RedbLog};

#[path = "../../tests/support/nats_server.rs"]
mod nats_server;

const CHILD_ENV: &str = "EVHOST_LOG_CRASH_CHILD";
const ROUND_ENV: &str = "EVHOST_LOG_CRASH_ROUND";
const TOPIC: &str = "crash";
const PARTITIONS: u32 = 4;
const BLOCKING_PUBLISHERS: usize = 4;
const ASYNC_PUBLISHERS: usize = 4;

fn config() -> LogConfig {
    LogConfig {
        default_partitions: PARTITIONS,
        ..LogConfig::default()
    }
}

fn event(publisher: &str, seq: u64) -> Event {
    Event {
        id: format!("{publisher}-{seq}"),
        source: "/crash".into(),
        specversion: "1.0".into(),
        ty: "crash.tick".into(),
        subject: Some(publisher.to_owned()),
        time: "2026-11-02T10:00:00Z".into(),
        datacontenttype: None,
        dataschema: None,
        data: Some(vec![b'x'; 256]),
        correlationid: format!("{publisher}-{seq}"),
        causationid: None,
        actor: None,
        extensions: BTreeMap::new(),
        stream: None,
        streamversion: None,
    }
}

fn main() {
    match std::env::var(CHILD_ENV) {
        Ok(log) => crash_child(&log),
        Err(_) => {
            // Run by `cargo test`: one test per backend, reported the way the test harness
            // would (a failure panics, which fails the run).
            for (name, backend) in [("redb", Backend::Redb), ("nats", Backend::Nats)] {
                acked_publish_survives_kill_9(backend);
                println!("test {name}::acked_publish_survives_kill_9 ... ok");
            }
            println!("2 passed, 0 failed");
        }
    }
}

/// Where the crash test's log lives.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Redb,
    Nats,
}

/// The log a `redb:<file>` or `nats:<url>` spec names, opened.
fn open(spec: &str) -> std::sync::Arc<dyn EventLog> {
    match spec.split_once(':') {
        Some(("redb", path)) => std::sync::Arc::new(RedbLog::open(path, config()).unwrap()),
        Some(("nats", url)) => {
            let config = NatsConfig {
                log: config(),
                ..NatsConfig::new(vec![url.to_owned()], "crash")
            };
            // The server listens before JetStream is ready: retry the first connect briefly.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match NatsLog::connect(config.clone()) {
                    Ok(log) => return std::sync::Arc::new(log),
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("NATS log not ready yet: {e}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("cannot open the NATS log: {e}"),
                }
            }
        }
        _ => panic!("not a log spec: {spec}"),
    }
}

/// The child's side: append forever, report each acknowledgement, wait for the kill.
fn crash_child(spec: &str) {
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let log = open(spec);
    report("READY\n");

    let publish = |log: &dyn EventLog, publisher: &str, seq: u64| {
        // 1 to 4 events per request, so batches mix request sizes.
        let n = 1 + (seq % 4);
        let events = (seq..seq + n)
            .map(|s| NewEvent::to_topic(TOPIC, event(publisher, s)))
            .collect();
        (log.append(events), n)
    };
    let ack_lines = |acks: Vec<evhost::log::Appended>| {
        acks.iter()
            .map(|a| {
                format!(
                    "ACK {} {} {}\n",
                    a.id, a.position.partition, a.position.offset
                )
            })
            .collect::<String>()
    };

    for p in 0..BLOCKING_PUBLISHERS {
        let log = log.clone();
        std::thread::spawn(move || {
            let publisher = format!("r{round}b{p}");
            let mut seq = 0;
            loop {
                let (pending, n) = publish(&*log, &publisher, seq);
                report(&ack_lines(pending.wait().unwrap_or_else(|e| die(e))));
                seq += n;
            }
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for p in 0..ASYNC_PUBLISHERS {
            let log = log.clone();
            tokio::spawn(async move {
                let publisher = format!("r{round}a{p}");
                let mut seq = 0;
                loop {
                    let (pending, n) = publish(&*log, &publisher, seq);
                    report(&ack_lines(pending.await.unwrap_or_else(|e| die(e))));
                    seq += n;
                }
            });
        }
        // Publish until killed.
        std::future::pending::<()>().await
    });
}

/// A failed append ends the child with an exit code, which the parent reports (it expects
/// death by SIGKILL only).
fn die(e: evhost::log::LogError) -> ! {
    eprintln!("append failed in the crash child: {e}");
    std::process::exit(2)
}

/// One write per report, so a kill cannot interleave two lines (a torn last line is
/// recognised by its missing newline).
fn report(lines: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(lines.as_bytes()).unwrap();
    out.flush().unwrap();
}

struct Ack {
    id: String,
    partition: u32,
    offset: u64,
}

fn parse(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        id: parts.next()?.to_owned(),
        partition: parts.next()?.parse().ok()?,
        offset: parts.next()?.parse().ok()?,
    })
}

/// xorshift64*, seeded per run (printed, and settable with EVHOST_LOG_CRASH_SEED).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn acked_publish_survives_kill_9(backend: Backend) {
    const ROUNDS: u64 = 6;
    let seed = std::env::var("EVHOST_LOG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| RandomState::new().hash_one("seed") | 1);
    eprintln!("kill points from seed {seed} (EVHOST_LOG_CRASH_SEED to repeat)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // Stays up through every kill of the writer.
    let mut server = None;
    let spec = match backend {
        Backend::Redb => format!("redb:{}", dir.path().join("log.redb").display()),
        Backend::Nats => {
            let url = server.insert(nats_server::NatsServer::start()).url.clone();
            format!("nats:{url}")
        }
    };
    eprintln!("{backend:?}: {spec}");
    let mut acked: Vec<Ack> = Vec::new();

    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, &spec)
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    // A torn last line (no newline) is no acknowledgement.
                    Ok(_) if line.ends_with(b"\n") => {
                        let _ = lines_tx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
                    }
                    Ok(_) => return,
                }
            }
        });

        // Kill at a random moment after the first acknowledgement.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut round_acks = Vec::new();
        loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the child acknowledged nothing within 60 s");
            if let Some(ack) = parse(&line) {
                round_acks.push(ack);
                break;
            }
        }
        // A NATS write is a few network round trips, queued one at a time per client: a
        // longer window gives it as many acknowledgements to lose as redb's group commit.
        let window = match backend {
            Backend::Redb => 400,
            Backend::Nats => 2000,
        };
        let kill_at = Instant::now() + Duration::from_millis(rng.below(window));
        while let Ok(line) = lines.recv_timeout(kill_at.saturating_duration_since(Instant::now())) {
            round_acks.extend(parse(&line));
            if Instant::now() >= kill_at {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the child died of SIGKILL, not otherwise"
        );
        reader.join().unwrap();
        round_acks.extend(lines.try_iter().filter_map(|l| parse(&l)));
        eprintln!(
            "round {round}: {} acknowledged events before the kill",
            round_acks.len()
        );
        acked.extend(round_acks);

        verify(&spec, &acked);
    }
    assert!(
        acked.len() as u64 > ROUNDS,
        "too few acknowledgements to prove anything"
    );
}

/// Reopens the log after the crash: every acknowledged event is where its ack said, each
/// partition is gap-free from offset 0, and each publisher's events are stored in its
/// publishing order without holes.
fn verify(spec: &str, acked: &[Ack]) {
    let log = open(spec);
    let mut stored: HashMap<(u32, u64), String> = HashMap::new();
    let mut per_publisher: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let events = log.read(TOPIC, partition, 0, usize::MAX).wait().unwrap();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.position.offset, i as u64, "gap in partition {partition}");
            let (publisher, seq) = e.event.id.rsplit_once('-').unwrap();
            per_publisher
                .entry(publisher.to_owned())
                .or_default()
                .push(seq.parse().unwrap());
            stored.insert((partition, e.position.offset), e.event.id.clone());
        }
    }
    for ack in acked {
        assert_eq!(
            stored.get(&(ack.partition, ack.offset)),
            Some(&ack.id),
            "acknowledged event {} lost (or moved) after kill -9",
            ack.id
        );
    }
    for (publisher, seqs) in per_publisher {
        let expected: Vec<u64> = (0..seqs.len() as u64).collect();
        assert_eq!(
            seqs, expected,
            "{publisher}'s events out of order or with holes"
        );
    }
}
