//! The one `bindgen!` for the `evhost:plugin` world; everyone shares its types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "evhost:plugin/plugin",
});

pub use self::evhost::plugin::types::{Level, OutgoingEvent};
