//! `evhost:plugin/log`: structured guest log lines into `tracing`, within the
//! call's output budget (`runtime::budget`): the excess is counted, not written.

use crate::runtime::bindings::Level;
use crate::runtime::bindings::evhost::plugin::log::Host;
use crate::runtime::context::CallState;

/// Fields beyond this many are dropped, so one line stays one line.
const MAX_FIELDS: usize = 32;

impl Host for CallState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let fields = &fields[..fields.len().min(MAX_FIELDS)];
        let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if !self.log_budget.admit(size) {
            return;
        }
        // The call's identity rides on every line, so plugin logs can be tied to
        // events and flows without a per-call tracing span (which would cost a
        // noticeable share of a ~2 µs call).
        let plugin = self.scope.name.as_str();
        let version = self.scope.version.as_str();
        let event = self.current.as_ref().map(|c| &c.event.event);
        let event_id = event.map_or("", |e| e.id.as_str());
        let correlation_id = event.map_or("", |e| e.correlationid.as_str());
        let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let fields = fields.join(" ");
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(target: "evhost::plugin", plugin, version, event_id, correlation_id, fields = %fields, "{message}")
            };
        }
        match level {
            Level::Trace => emit!(trace),
            Level::Debug => emit!(debug),
            Level::Info => emit!(info),
            Level::Warn => emit!(warn),
            Level::Error => emit!(error),
        }
    }
}
