//! The one `wit_bindgen::generate!` for the `plugin` world; compiled for Wasm only.
//!
//! The export macro is public (`__export_plugin`) so that
//! [`plugin!`](crate::plugin) can expand it in the plugin's own crate, where
//! the exported functions must live.

#![allow(missing_docs)]

pub use wit_bindgen;

wit_bindgen::generate!({
    world: "plugin",
    path: "wit",
    pub_export_macro: true,
    export_macro_name: "__export_plugin",
    default_bindings_module: "evhost_sdk::__bindings",
    runtime_path: "evhost_sdk::__bindings::wit_bindgen::rt",
});
