//! The component side: [`Host`] over the WIT imports, and the conversions
//! between the generated WIT types and the SDK's own.

use crate::__bindings::evhost::plugin::{config, emit, log, retry, state, types};
use crate::__private::HandlerFn;
use crate::host::Host;
use crate::{Context, ErrorKind, Event, HandlerError, Level, OutgoingEvent, PluginInfo};

/// Serves a [`Context`] with the host's imports. Buffering and the atomic
/// commit happen on the host side.
struct WasmHost;

impl Host for WasmHost {
    fn emit(&mut self, event: OutgoingEvent) -> Result<String, String> {
        emit::emit(&types::OutgoingEvent {
            type_: event.ty,
            subject: event.subject,
            id: event.id,
            topic: event.topic,
            datacontenttype: event.datacontenttype,
            dataschema: event.dataschema,
            data: event.data,
            actor: event.actor,
            extensions: event.extensions,
        })
    }

    fn state_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        state::get(key)
    }

    fn state_set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        state::set(key, value)
    }

    fn state_delete(&mut self, key: &str) -> Result<(), String> {
        state::delete(key)
    }

    fn state_keys(&mut self, prefix: &str) -> Result<Vec<String>, String> {
        state::list_keys(prefix)
    }

    fn log(&mut self, level: Level, message: &str, fields: &[(&str, &str)]) {
        let level = match level {
            Level::Trace => types::Level::Trace,
            Level::Debug => types::Level::Debug,
            Level::Info => types::Level::Info,
            Level::Warn => types::Level::Warn,
            Level::Error => types::Level::Error,
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        log::log(level, message, &fields);
    }

    fn config(&mut self, key: &str) -> Option<String> {
        config::get(key)
    }

    fn config_entries(&mut self) -> Vec<(String, String)> {
        config::entries()
    }
}

/// The body of the exported `describe`.
pub fn describe(info: PluginInfo) -> types::PluginInfo {
    types::PluginInfo {
        name: info.name,
        version: info.version,
        subscriptions: info
            .subscriptions
            .into_iter()
            .map(|sub| types::Subscription {
                topic: sub.topic,
                event_type: sub.event_type,
            })
            .collect(),
        retry: info.retry.map(|policy| types::RetryPolicy {
            max_attempts: policy.max_attempts,
            initial_backoff_ms: policy.initial_backoff_ms,
            max_backoff_ms: policy.max_backoff_ms,
            multiplier: policy.multiplier,
            jitter: policy.jitter,
        }),
    }
}

/// The body of the exported `handle`.
pub fn handle(event: types::Event, handler: HandlerFn) -> Result<(), types::HandlerError> {
    let event = Event {
        id: event.id,
        source: event.source,
        specversion: event.specversion,
        ty: event.type_,
        subject: event.subject,
        time: event.time,
        datacontenttype: event.datacontenttype,
        dataschema: event.dataschema,
        data: event.data,
        correlationid: event.correlationid,
        causationid: event.causationid,
        actor: event.actor,
        extensions: event.extensions,
        topic: event.topic,
        partition: event.partition,
        offset: event.offset,
        stream: event.stream,
        streamversion: event.streamversion,
        attempt: event.attempt,
    };
    let mut host = WasmHost;
    handler(&event, &mut Context::new(&mut host)).map_err(|err: HandlerError| match err.kind() {
        ErrorKind::Retry => {
            if let Some(delay) = err.retry_after() {
                retry::retry_after(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            }
            types::HandlerError::Retry(err.message().to_owned())
        }
        ErrorKind::Reject => types::HandlerError::Reject(err.message().to_owned()),
    })
}
