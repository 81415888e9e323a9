//! Read access to a plugin's committed key-value state.
//!
//! The runtime only reads committed state; a call's writes are buffered in its
//! store and handed back in [`Effects`](super::Effects) for the caller to commit
//! atomically with the consumer offset.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Committed plugin state, as the runtime sees it. Implemented by the event log;
/// [`MemoryState`] serves `evhost check`, tests and tools.
pub trait StateStore: Send + Sync + 'static {
    /// The committed value of `key` in `plugin`'s namespace.
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Committed keys of `plugin` starting with `prefix`, ascending.
    fn keys(&self, plugin: &str, prefix: &str) -> Result<Vec<String>, String>;
}

/// An in-memory [`StateStore`].
#[derive(Default)]
pub struct MemoryState {
    entries: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

impl MemoryState {
    /// Applies one call's state writes (`None` deletes), as a commit would.
    pub fn apply(&self, plugin: &str, writes: &BTreeMap<String, Option<Vec<u8>>>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, value) in writes {
            let k = (plugin.to_owned(), key.clone());
            match value {
                Some(v) => entries.insert(k, v.clone()),
                None => entries.remove(&k),
            };
        }
    }
}

impl StateStore for MemoryState {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(entries.get(&(plugin.to_owned(), key.to_owned())).cloned())
    }

    fn keys(&self, plugin: &str, prefix: &str) -> Result<Vec<String>, String> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(entries
            .range((plugin.to_owned(), prefix.to_owned())..)
            .take_while(|((p, k), _)| p == plugin && k.starts_with(prefix))
            .map(|((_, k), _)| k.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_listed_by_prefix_within_one_plugin() {
        let s = MemoryState::default();
        let w = |k: &str| (k.to_owned(), Some(b"1".to_vec()));
        s.apply("a", &[w("count/x"), w("count/y"), w("other")].into());
        s.apply("b", &[w("count/z")].into());
        assert_eq!(s.keys("a", "count/").unwrap(), ["count/x", "count/y"]);
        s.apply("a", &[("count/x".to_owned(), None)].into());
        assert_eq!(s.keys("a", "count/").unwrap(), ["count/y"]);
        assert_eq!(s.get("b", "count/z").unwrap(), Some(b"1".to_vec()));
    }
}
