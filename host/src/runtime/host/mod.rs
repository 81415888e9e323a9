//! Host implementations of the world's imports, one file per WIT interface.

mod config;
mod emit;
mod log;
mod retry;
mod state;

impl super::bindings::evhost::plugin::types::Host for super::context::CallState {}
