//! A consumer's live instance of a plugin, and the outcome of one call.
//!
//! One instance serves consecutive calls (a call on a live instance costs a few
//! microseconds, a fresh instantiation tens). After a trap, timeout or
//! out-of-memory the instance is dropped and the next call instantiates anew,
//! since a trapped component instance cannot be entered again.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use wasmtime::{Engine, Store, Trap};

use super::bindings::{self, HandlerError, Plugin};
use super::budget::Capped;
use super::context::{CallState, CurrentCall, PluginScope, new_store};
use super::loader::Code;
use super::{Effects, InstanceSettings, Limits, LoadedPlugin, Runtime};
use crate::event::StoredEvent;

/// Longest guest stderr excerpt kept in a trap message.
const STDERR_EXCERPT: usize = 2048;

/// Why a call failed. Handler errors (the WIT `result`) and traps stay apart.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum Failure {
    /// The handler asked to be called again later.
    #[error("handler asked to retry: {0}")]
    Retry(String),
    /// The event is refused for good: by the handler, or by the host for the
    /// call (a refused grant, an emitted event that fails its schema). The
    /// message says which.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The host refused the call a capability it needs (a missing grant):
    /// rejected for good like the above, and, unlike a handler's rejection, a
    /// health problem of the deployment (every event fails the same way), so
    /// it counts towards the circuit breaker.
    #[error("rejected: {0}")]
    Refused(String),
    /// The guest trapped (a Rust panic arrives here), with its message.
    #[error("trap: {0}")]
    Trap(String),
    #[error("timed out after {:?}{}", .0.limit, .0.note_suffix())]
    Timeout(#[serde(with = "secs")] LimitHit<Duration>),
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("stack overflow")]
    StackOverflow,
    #[error("ran out of fuel ({} units){}", .0.limit, .0.note_suffix())]
    OutOfFuel(#[serde(serialize_with = "limit_only")] LimitHit<u64>),
    /// The host could not run the call (not the plugin's fault).
    #[error("host error: {0}")]
    Host(String),
}

/// The limit a call ran into, and what else the host has to say about the
/// call (e.g. that its output was capped: a looping guest's flood explains the
/// timeout). The note is part of the message, not of the serialized form.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitHit<T> {
    pub limit: T,
    pub note: Option<String>,
}

impl<T> LimitHit<T> {
    pub fn new(limit: T) -> Self {
        LimitHit { limit, note: None }
    }

    fn note_suffix(&self) -> String {
        self.note
            .as_ref()
            .map_or_else(String::new, |n| format!(" ({n})"))
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &super::LimitHit<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.limit.as_secs_f64())
    }
}

fn limit_only<S: serde::Serializer>(d: &LimitHit<u64>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.limit)
}

impl Failure {
    /// A timeout at `limit`.
    pub fn timeout(limit: Duration) -> Self {
        Failure::Timeout(LimitHit::new(limit))
    }

    /// Fuel exhausted at `limit` units.
    pub fn out_of_fuel(limit: u64) -> Self {
        Failure::OutOfFuel(LimitHit::new(limit))
    }

    /// Whether the failure left the instance unusable.
    fn poisons_instance(&self) -> bool {
        !matches!(
            self,
            Failure::Retry(_) | Failure::Rejected(_) | Failure::Refused(_)
        )
    }

    /// Adds `note` to the message (a stack overflow has none to add it to).
    pub(super) fn with_note(self, note: &str) -> Self {
        let add = |m: String| format!("{m} ({note})");
        match self {
            Failure::Retry(m) => Failure::Retry(add(m)),
            Failure::Rejected(m) => Failure::Rejected(add(m)),
            Failure::Refused(m) => Failure::Refused(add(m)),
            Failure::Trap(m) => Failure::Trap(add(m)),
            Failure::OutOfMemory(m) => Failure::OutOfMemory(add(m)),
            Failure::Host(m) => Failure::Host(add(m)),
            Failure::Timeout(hit) => Failure::Timeout(LimitHit {
                note: Some(note.to_owned()),
                ..hit
            }),
            Failure::OutOfFuel(hit) => Failure::OutOfFuel(LimitHit {
                note: Some(note.to_owned()),
                ..hit
            }),
            Failure::StackOverflow => Failure::StackOverflow,
        }
    }
}

/// A failed call, naming the plugin version that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin `{plugin}` {version} ({digest_short}): {failure}")]
pub struct CallError {
    pub plugin: String,
    pub version: String,
    pub digest_short: String,
    pub failure: Failure,
    /// For a `Retry`: the least delay, in milliseconds, the guest asked for
    /// before the next attempt (`evhost:plugin/retry`); the dispatcher keeps
    /// it within the policy's `max-backoff`. (Milliseconds in a `u32` keep
    /// `CallError` small: it travels in every call's `Result`.)
    pub retry_after_ms: Option<u32>,
}

impl CallError {
    /// A failure of a call of `plugin`.
    pub fn new(plugin: &LoadedPlugin, failure: Failure) -> Self {
        CallError {
            plugin: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            digest_short: plugin.digest.chars().take(12).collect(),
            failure,
            retry_after_ms: None,
        }
    }
}

struct Live {
    store: Store<CallState>,
    bindings: Plugin,
}

pub struct Instance {
    engine: Engine,
    plugin: Arc<LoadedPlugin>,
    scope: Arc<PluginScope>,
    limits: Limits,
    live: Option<Live>,
    instantiations: u64,
}

impl Instance {
    pub(super) fn new(
        runtime: &Runtime,
        plugin: Arc<LoadedPlugin>,
        settings: InstanceSettings,
    ) -> Self {
        let scope = Arc::new(PluginScope {
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            grants: settings.grants,
            config: settings.config,
            state: settings.state,
            max_event_bytes: runtime.config.max_event_bytes,
            max_emits_per_call: runtime.config.max_emits_per_call,
            interrupt: runtime.interrupt.clone(),
            pool: runtime.pool_setting.clone(),
            outbound: runtime.outbound.clone(),
        });
        Instance {
            engine: runtime.engine.clone(),
            plugin,
            scope,
            limits: settings.limits,
            live: None,
            instantiations: 0,
        }
    }

    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// How many times a fresh instance was made; grows after each trap.
    pub fn instantiations(&self) -> u64 {
        self.instantiations
    }

    /// Calls `handle` with `event` as delivery number `attempt`. On success
    /// returns the call's buffered effects; on failure nothing of the call
    /// survives.
    pub fn call(&mut self, event: &Arc<StoredEvent>, attempt: u32) -> Result<Effects, CallError> {
        let span = tracing::debug_span!(
            "call",
            plugin = %self.plugin.info.name,
            version = %self.plugin.info.version,
            event_id = %event.event.id,
            correlation_id = %event.event.correlationid,
            attempt,
        );
        let _entered = span.enter();
        let result = self.call_inner(event, attempt);
        let retry_after = self
            .live
            .as_mut()
            .and_then(|live| live.store.data_mut().retry_after.take());
        result.map_err(|failure| CallError {
            retry_after_ms: retry_after
                .filter(|_| matches!(failure, Failure::Retry(_)))
                .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            ..CallError::new(&self.plugin, failure)
        })
    }

    fn call_inner(&mut self, event: &Arc<StoredEvent>, attempt: u32) -> Result<Effects, Failure> {
        if let Code::Native(handler) = &self.plugin.code {
            return handler(event, attempt);
        }
        let live = match self.live.take() {
            Some(live) => live,
            None => self.instantiate()?,
        };
        let Live {
            mut store,
            bindings,
        } = live;
        arm(&mut store, &self.limits);
        let data = store.data_mut();
        data.effects = Effects::default();
        data.memory_exhausted = false;
        data.refused = None;
        data.retry_after = None;
        data.current = Some(CurrentCall {
            event: event.clone(),
        });
        let deadline = data.deadline;
        data.outbound.begin_call(deadline, &event.event.id);

        let result = bindings.call_handle(&mut store, &to_wit(event, attempt));

        let data = store.data_mut();
        let output = end_output(data);
        data.current = None;
        let effects = std::mem::take(&mut data.effects);
        let http = data.outbound.end_call();
        let refused = data.refused.take().or(http.refused);
        let outcome = match result {
            Ok(Ok(())) => Ok(effects),
            Ok(Err(HandlerError::Retry(m))) => Err(Failure::Retry(m)),
            Ok(Err(HandlerError::Reject(m))) => Err(Failure::Rejected(m)),
            Err(e) => Err(with_stderr(
                classify(e, store.data(), &self.limits),
                &output.stderr,
            )),
        };
        let poisoned = matches!(&outcome, Err(f) if f.poisons_instance());
        if !poisoned {
            self.live = Some(Live { store, bindings });
        } // else dropped: the next call instantiates anew
        let outcome = match refused {
            Some(refusal) => Err(refused_outcome(refusal, outcome)),
            None => outcome,
        };
        let outcome = match http.timed_out {
            Some(request) => Err(request_timeout(request, &self.limits, outcome)),
            None => outcome,
        };
        match output.capped {
            Some(note) => outcome.map_err(|f| f.with_note(&note)),
            None => outcome,
        }
    }

    fn instantiate(&mut self) -> Result<Live, Failure> {
        self.instantiations += 1;
        let mut store = new_store(&self.engine, self.scope.clone(), self.limits.memory);
        // Instantiation runs guest code (start functions), so it is limited too.
        arm(&mut store, &self.limits);
        let Code::Wasm(pre) = &self.plugin.code else {
            return Err(Failure::Host("a native plugin has no instance".into()));
        };
        match pre.instantiate(&mut store) {
            Ok(bindings) => Ok(Live { store, bindings }),
            Err(e) => {
                let output = end_output(store.data_mut());
                let failure = with_stderr(classify(e, store.data(), &self.limits), &output.stderr);
                Err(match output.capped {
                    Some(note) => failure.with_note(&note),
                    None => failure,
                })
            }
        }
    }
}

/// Sets the per-call fuel and deadline.
pub(super) fn arm(store: &mut Store<CallState>, limits: &Limits) {
    // Cannot fail: fuel is enabled on every engine the runtime builds.
    let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
    let data = store.data_mut();
    data.deadline = std::time::Instant::now() + limits.timeout;
    data.interrupted = false;
    // The epoch callback (see `new_store`) decides at every tick.
    store.set_epoch_deadline(1);
}

/// Maps a wasmtime error from a call into a [`Failure`].
pub(super) fn classify(error: wasmtime::Error, state: &CallState, limits: &Limits) -> Failure {
    if state.interrupted {
        return Failure::Host("the call was interrupted: the host is shutting down".into());
    }
    if state.memory_exhausted {
        return Failure::OutOfMemory(format!(
            "the memory limit of {} bytes was reached",
            limits.memory
        ));
    }
    if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return Failure::Host(format!(
            "no free instance slot ({full}): the pool holds {}; raise it, or run fewer consumers",
            state.scope.pool
        ));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::timeout(limits.timeout),
        Some(Trap::OutOfFuel) => Failure::out_of_fuel(limits.fuel.unwrap_or(u64::MAX)),
        Some(Trap::StackOverflow) => Failure::StackOverflow,
        Some(trap) => Failure::Trap(trap.to_string()),
        None => Failure::Trap(format!("{error:#}")),
    }
}

/// The outcome of a call that was refused a grant: a refusal, whatever the
/// guest made of the error (swallowed it, asked for a retry, trapped). Retrying
/// cannot help, and committing the call's other effects would silently lose the
/// refused one. A shutdown stays a host error (it is not the call's verdict).
fn refused_outcome(refusal: String, outcome: Result<Effects, Failure>) -> Failure {
    match outcome {
        Err(host @ Failure::Host(_)) => host,
        // The guest passed the refusal on as its own rejection: keep its words.
        Err(Failure::Rejected(m)) if m.contains(&refusal) => Failure::Refused(m),
        Err(other) if !other.to_string().contains(&refusal) => {
            Failure::Refused(format!("{refusal} (the call then ended: {other})"))
        }
        _ => Failure::Refused(refusal),
    }
}

/// The outcome of a call whose HTTP request ran into the call's deadline:
/// the call's timeout, naming the request, whatever the guest made of the
/// error it got (a shutdown stays a host error).
fn request_timeout(request: String, limits: &Limits, outcome: Result<Effects, Failure>) -> Failure {
    match outcome {
        Err(host @ Failure::Host(_)) => host,
        _ => Failure::Timeout(LimitHit {
            limit: limits.timeout,
            note: Some(format!("waiting for the HTTP request {request}")),
        }),
    }
}

/// Appends what the guest wrote to stderr during the call (a Rust panic's
/// message, typically) to a trap's message.
/// The excerpt is one line (lines joined by " | "), so the message stays one
/// log line and one table cell; the Rust runtime's hint to set
/// `RUST_BACKTRACE`, which an operator cannot do for a guest, is left out.
pub(super) fn with_stderr(failure: Failure, stderr: &str) -> Failure {
    let stderr = stderr.trim();
    match failure {
        Failure::Trap(msg) if !stderr.is_empty() => {
            let mut start = stderr.len().saturating_sub(STDERR_EXCERPT);
            while !stderr.is_char_boundary(start) {
                start += 1;
            }
            let excerpt = stderr[start..]
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
                .collect::<Vec<_>>()
                .join(" | ");
            Failure::Trap(format!("{msg}; guest stderr: {excerpt}"))
        }
        other => other,
    }
}

/// What a call (or instantiation, or `describe`) left of its output.
pub(super) struct CallOutput {
    /// The guest's stderr tail.
    pub stderr: String,
    /// What the output caps dropped, as a note for the failure; `None` when
    /// nothing was.
    pub capped: Option<String>,
}

/// Ends a call's guest output: flushes stdout/stderr, ends the output budgets
/// and reports what they dropped in one warning line for the whole call.
pub(super) fn end_output(state: &mut CallState) -> CallOutput {
    let (_, stdout) = state.stdout.drain();
    let (stderr, stderr_dropped) = state.stderr.drain();
    let mut capped = Capped::default();
    capped.add("log", state.log_budget.finish());
    capped.add(state.stdout.name(), stdout);
    capped.add(state.stderr.name(), stderr_dropped);
    let capped = (!capped.is_empty()).then(|| {
        let note = capped.to_string();
        let event_id = state
            .current
            .as_ref()
            .map_or("", |c| c.event.event.id.as_str());
        tracing::warn!(
            target: "evhost::plugin",
            plugin = %state.scope.name,
            version = %state.scope.version,
            event_id,
            "{note}"
        );
        note
    });
    CallOutput { stderr, capped }
}

fn to_wit(stored: &StoredEvent, attempt: u32) -> bindings::Event {
    let e = &stored.event;
    bindings::Event {
        id: e.id.clone(),
        source: e.source.clone(),
        specversion: e.specversion.clone(),
        type_: e.ty.clone(),
        subject: e.subject.clone(),
        time: e.time.clone(),
        datacontenttype: e.datacontenttype.clone(),
        dataschema: e.dataschema.clone(),
        data: e.data.clone(),
        correlationid: e.correlationid.clone(),
        causationid: e.causationid.clone(),
        actor: e.actor.clone(),
        extensions: e
            .extensions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        topic: stored.position.topic.clone(),
        partition: stored.position.partition,
        offset: stored.position.offset,
        stream: e.stream.clone(),
        streamversion: e.streamversion,
        attempt,
    }
}
