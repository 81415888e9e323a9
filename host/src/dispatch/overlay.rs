//! The state a consumer's calls see: the plugin's committed state in the log,
//! overlaid with the writes of the batch not yet committed, so consecutive
//! calls in one batch build on each other.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::log::{EventLog, StateChange};
use crate::runtime::StateStore;

/// Keys listed per `list-keys` call at most.
const MAX_KEYS: usize = 10_000;

pub struct Overlay {
    log: Arc<dyn EventLog>,
    pending: Mutex<BTreeMap<String, Option<Vec<u8>>>>,
}

impl Overlay {
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Overlay {
            log,
            pending: Mutex::new(BTreeMap::new()),
        }
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

    /// Forgets uncommitted writes (the batch will be redelivered).
    pub fn discard(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
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
        self.log
            .state_get(plugin, key)
            .wait()
            .map_err(|e| e.to_string())
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
