//! The precompiled-component cache: serialized components keyed by the
//! component's content digest and a fingerprint of the engine's settings, so
//! a restart does not recompile and an engine change never loads stale code.

use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct Cache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256, giving a fingerprint that is stable
/// across processes (std's hashers are not guaranteed to be).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is read with `finalize`
    }
}

impl Cache {
    pub fn open(dir: &Path, engine: &Engine) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..8]);
        Ok(Cache {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of the component with `digest`, if present and loadable.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: files in the cache directory are written only by `put` below,
        // from `Component::serialize` of an engine with the same fingerprint;
        // `deserialize_file` still checks the header and engine compatibility.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding unusable cached component: {e}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `component`; a failure only costs a recompile next time.
    pub fn put(&self, digest: &str, component: &Component) {
        let path = self.path(digest);
        let result = component
            .serialize()
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|bytes| {
                // Write-then-rename: a crash never leaves a half-written entry under the final name.
                // Unique per write: two files with the same bytes may be loaded
                // concurrently (startup compiles in parallel).
                static WRITES: AtomicU64 = AtomicU64::new(0);
                let n = WRITES.fetch_add(1, Ordering::Relaxed);
                let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), "cannot write the component cache: {e}");
        }
    }
}
