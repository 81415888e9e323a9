//! `evhost:plugin/config`: read-only operator settings.

use crate::runtime::bindings::evhost::plugin::config::Host;
use crate::runtime::context::CallState;

impl Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.scope.config.get(&key).cloned()
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.scope
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
