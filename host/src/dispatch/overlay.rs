//! The state a consumer's calls see: the plugin's committed state in the log,
//! overlaid with the writes of the batch not yet committed, so consecutive
//! calls in one batch build on each other.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::log::{EventLog, StateChange, StateRead};
use crate::runtime::StateStore;

/// Keys listed per `list-keys` call at most.
const MAX_KEYS: usize = 10_000;

pub struct Overlay {
    log: Arc<dyn EventLog>,
    pending: Mutex<BTreeMap<String, Option<Vec<u8>>>>,
    /// Entries read from the log with the value first seen, when reads are fenced (daemons
    /// sharing the log): the commit lands only if they are unchanged.
    reads: Option<Mutex<BTreeMap<String, Option<Vec<u8>>>>>,
}

impl Overlay {
    /// `fence_reads`: record what calls read from the log for the commit to check.
    pub fn new(log: Arc<dyn EventLog>, fence_reads: bool) -> Self {
        Overlay {
            log,
            pending: Mutex::new(BTreeMap::new()),
            reads: fence_reads.then(|| Mutex::new(BTreeMap::new())),
        }
    }

    /// Takes what the calls since the last take read from the log, as a commit's fences.
    pub fn take_reads(&self, namespace: &str) -> Vec<StateRead> {
        let Some(reads) = &self.reads else {
            return Vec::new();
        };
        std::mem::take(&mut *reads.lock().unwrap_or_else(PoisonError::into_inner))
            .into_iter()
            .map(|(key, value)| StateRead {
                namespace: namespace.to_owned(),
                key,
                value,
            })
            .collect()
    }

    pub fn apply(&self, writes: BTreeMap<String, Option<Vec<u8>>>) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(writes);
    }

    /// Takes the batch's writes as state changes of `namespace`.
    pub fn take(&self, namespace: &str) -> Vec<StateChange> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
            .into_iter()
            .map(|(key, value)| StateChange {
                namespace: namespace.to_owned(),
                key,
                value,
            })
            .collect()
    }

    /// Forgets uncommitted writes and what was read (the batch will be redelivered).
    pub fn discard(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        if let Some(reads) = &self.reads {
            reads.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }
}

impl StateStore for Overlay {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        if let Some(v) = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Ok(v.clone());
        }
        let value = self
            .log
            .state_get(plugin, key)
            .wait()
            .map_err(|e| e.to_string())?;
        if let Some(reads) = &self.reads {
            reads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key.to_owned())
                .or_insert_with(|| value.clone());
        }
        Ok(value)
    }

    fn keys(&self, plugin: &str, prefix: &str) -> Result<Vec<String>, String> {
        let mut keys: std::collections::BTreeSet<String> = self
            .log
            .state_keys(plugin, prefix, MAX_KEYS)
            .wait()
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (k, v) in pending
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            match v {
                Some(_) => keys.insert(k.clone()),
                None => keys.remove(k),
            };
        }
        Ok(keys.into_iter().collect())
    }
}
