//! `evhost:plugin/state`: reads see committed state overlaid with the call's
//! own buffered writes; writes are buffered until the call's commit.

use crate::runtime::bindings::evhost::plugin::state::Host;
use crate::runtime::context::CallState;

/// Longest accepted key, in bytes.
const MAX_KEY_BYTES: usize = 512;

impl CallState {
    fn state_allowed(&mut self) -> Result<(), String> {
        if !self.scope.grants.state {
            let message = self.scope.grants.refuse_state(&self.scope.name);
            return Err(self.refuse(message));
        }
        Ok(())
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "state key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        ));
    }
    Ok(())
}

impl Host for CallState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        self.state_allowed()?;
        if let Some(pending) = self.effects.state.get(&key) {
            return Ok(pending.clone());
        }
        self.scope.state.get(&self.scope.name, &key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.state_allowed()?;
        check_key(&key)?;
        if value.len() > self.scope.max_event_bytes {
            return Err(format!(
                "state value of {} bytes exceeds the limit of {}",
                value.len(),
                self.scope.max_event_bytes
            ));
        }
        self.effects.state.insert(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: String) -> Result<(), String> {
        self.state_allowed()?;
        check_key(&key)?;
        self.effects.state.insert(key, None);
        Ok(())
    }

    fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, String> {
        self.state_allowed()?;
        let mut keys: std::collections::BTreeSet<String> = self
            .scope
            .state
            .keys(&self.scope.name, &prefix)?
            .into_iter()
            .collect();
        for (key, value) in self.effects.state.range(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            match value {
                Some(_) => keys.insert(key.clone()),
                None => keys.remove(key),
            };
        }
        Ok(keys.into_iter().collect())
    }
}
