//! evhost: a WebAssembly-plugin event pipeline host.
//!
//! # Layout
//! - [`event`]: the envelope (CloudEvents attributes + host position fields).
//! - [`runtime`]: the wasmtime engine, component loading and checking, sandboxed calls.

pub mod event;
pub mod runtime;
