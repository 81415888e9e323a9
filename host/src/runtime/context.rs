//! The data of one plugin's wasmtime `Store`: WASI with every capability off,
//! the memory limiter, and the buffers of the current call's effects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::budget::Budget;
use super::outbound::OutboundHooks;
use super::stdio::GuestOutput;
use super::{Effects, Grants, StateStore};
use crate::event::StoredEvent;

/// What a store needs to know about the plugin it runs.
pub struct PluginScope {
    pub name: String,
    pub version: String,
    pub grants: Grants,
    /// Operator-supplied settings, served by the `config` import.
    pub config: BTreeMap<String, String>,
    pub state: Arc<dyn StateStore>,
    pub max_event_bytes: usize,
    pub max_emits_per_call: usize,
    /// The runtime's interrupt switch (see `Runtime::interrupt_all`).
    pub interrupt: Arc<AtomicBool>,
    /// The operator's pool setting as written, e.g. "`[runtime] instances = 1000`
    /// in /etc/evhost.toml": what a pool-exhaustion error tells to raise.
    pub pool: Arc<str>,
    /// Outbound HTTP's instruments and the daemon's address.
    pub outbound: Arc<super::OutboundShared>,
}

pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    /// Every `wasi:http` request passes here (allowlist, caps, deadline).
    pub(super) outbound: OutboundHooks,
    pub(super) stdout: GuestOutput,
    pub(super) stderr: GuestOutput,
    pub(super) scope: Arc<PluginScope>,
    memory_limit: usize,
    /// Set when a memory grow was refused, so the resulting trap is reported
    /// as out-of-memory rather than as a generic trap.
    pub(super) memory_exhausted: bool,
    /// When the running call (or instantiation) must stop; checked every epoch tick.
    pub(super) deadline: Instant,
    /// Set when a call was stopped by `Runtime::interrupt_all` rather than its timeout.
    pub(super) interrupted: bool,
    /// The event being handled; `None` during instantiation and `describe`.
    pub(super) current: Option<CurrentCall>,
    pub(super) effects: Effects,
    /// Lines the `log` import forwarded in this call (see `budget`).
    pub(super) log_budget: Budget,
    /// The first grant this call was refused, as told to the guest. A refused
    /// grant can never succeed on a retry, so it decides the call's outcome
    /// whatever the guest made of the error.
    pub(super) refused: Option<String>,
    /// The delay the guest asked for before a retry (`evhost:plugin/retry`).
    pub(super) retry_after: Option<std::time::Duration>,
}

pub struct CurrentCall {
    pub event: Arc<StoredEvent>,
}

impl CallState {
    pub fn new(scope: Arc<PluginScope>, memory_limit: usize) -> Self {
        let stdout = GuestOutput::new(&scope.name, "stdout");
        let stderr = GuestOutput::new(&scope.name, "stderr");
        // No preopens, no env, no args, no network: the builder's defaults deny
        // all of it; only the output streams are wired, to our capture.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        CallState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHooks::new(scope.clone()),
            stdout,
            stderr,
            scope,
            memory_limit,
            memory_exhausted: false,
            deadline: Instant::now(),
            interrupted: false,
            current: None,
            effects: Effects::default(),
            log_budget: Budget::default(),
            refused: None,
            retry_after: None,
        }
    }
}

impl CallState {
    /// Records a refused grant and returns the error the guest gets.
    pub(super) fn refuse(&mut self, message: String) -> String {
        if self.refused.is_none() {
            self.refused = Some(message.clone());
        }
        message
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Tables are capped generously; they hold function references, not data.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exhausted = true;
            // An error (rather than `Ok(false)`) traps at once: a guest allocator
            // would otherwise turn the failed grow into an indistinct abort.
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes exceeded (wanted {desired})",
                self.memory_limit
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A store for one plugin instance, with the memory limiter and the epoch
/// callback that enforces call deadlines and the runtime's interrupt switch.
pub fn new_store(
    engine: &Engine,
    scope: Arc<PluginScope>,
    memory_limit: usize,
) -> Store<CallState> {
    let mut store = Store::new(engine, CallState::new(scope, memory_limit));
    store.limiter(|s| s);
    // Called every epoch tick while guest code runs: cheap, and lets a call be
    // stopped for two reasons the trap alone could not tell apart.
    store.epoch_deadline_callback(|mut cx| {
        let data = cx.data_mut();
        if data.scope.interrupt.load(Ordering::Relaxed) {
            data.interrupted = true;
            return Ok(UpdateDeadline::Interrupt);
        }
        if Instant::now() >= data.deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store
}
