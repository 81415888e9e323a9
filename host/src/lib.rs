//! evhost: a WebAssembly-plugin event pipeline host.
//!
//! # Layout
//! - [`api`]: the HTTP API v1 (axum): CloudEvents in, JSON out; the only DTOs outsiders see.
//! - [`cli`]: the client side of the `evhost` commands (talks to a running daemon) and
//!   `evhost new`.
//! - [`config`]: the daemon's settings: defaults, TOML file, environment, flags.
//! - [`daemon`]: `evhost run`: wiring, data-dir lock, schema store, metrics, shutdown.
//! - [`dispatch`]: consumers: read, call, commit; retries, dead letters, the circuit breaker.
//! - [`event`]: the envelope (CloudEvents attributes + host position fields).
//! - [`log`]: the durable event log (topics, offsets, consumer commits, streams); `log/redb`
//!   is the only module that imports redb.
//! - [`plugins`]: the plugin directory: file + sidecar → deployment, load failures, the hot-reload watcher.
//! - [`runtime`]: the wasmtime engine, component loading and checking, sandboxed calls.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod event;
pub mod histogram;
pub mod log;
pub mod plugins;
pub mod runtime;
