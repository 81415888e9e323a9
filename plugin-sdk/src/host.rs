//! The seam between [`Context`](crate::Context) and whatever serves its calls:
//! the WIT imports inside a component (`wasm.rs`) or the in-memory
//! [`TestHost`](crate::testing::TestHost) natively.

#[cfg(not(target_family = "wasm"))]
use crate::{HttpError, HttpRequest, HttpResponse};
use crate::{Level, OutgoingEvent};

/// One implementation per environment. Errors are the host's messages; the
/// [`Context`](crate::Context) wraps them into [`SdkError`](crate::SdkError).
pub(crate) trait Host {
    /// Buffers `event`; returns the id it will carry.
    fn emit(&mut self, event: OutgoingEvent) -> Result<String, String>;
    fn state_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn state_set(&mut self, key: &str, value: &[u8]) -> Result<(), String>;
    fn state_delete(&mut self, key: &str) -> Result<(), String>;
    /// Keys starting with `prefix`, ascending byte order.
    fn state_keys(&mut self, prefix: &str) -> Result<Vec<String>, String>;
    fn log(&mut self, level: Level, message: &str, fields: &[(&str, &str)]);
    fn config(&mut self, key: &str) -> Option<String>;
    /// Sorted by key.
    fn config_entries(&mut self) -> Vec<(String, String)>;
    /// Sends `request` (headers already complete) and reads the whole response.
    /// Native only: in a component `Context::http` calls `wasm_http` directly,
    /// so a plugin that never sends a request links no `wasi:http` code (a
    /// trait method would be kept alive by the vtable).
    #[cfg(not(target_family = "wasm"))]
    fn http(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpError>;
}
