//! Owns the one host-side `bindgen!` of the plugin contract (`wit/plugin@0.1.0`). The three
//! worlds share the `types` and `host` interfaces, which are generated once (by the validator
//! world) and reused by the others through `with:`. Exports are async: every call runs on a
//! fiber that yields to tokio at each epoch tick, so a call can be dropped at its deadline
//! wherever it is (in Wasm or waiting in a WASI host call). Host imports stay synchronous.

#![allow(missing_docs)]

/// World `validator`, and the shared `types` and `host` interfaces.
pub mod validator {
    wasmtime::component::bindgen!({
        path: "../wit/plugin@0.1.0",
        world: "validator",
        exports: { default: async },
    });
}

/// World `initializer`.
pub mod initializer {
    wasmtime::component::bindgen!({
        path: "../wit/plugin@0.1.0",
        world: "initializer",
        exports: { default: async },
        with: {
            "wasmgate:plugin/types": super::validator::wasmgate::plugin::types,
            "wasmgate:plugin/host": super::validator::wasmgate::plugin::host,
        },
    });
}

/// World `audit-sink`, and the `audit-types` interface.
pub mod audit_sink {
    wasmtime::component::bindgen!({
        path: "../wit/plugin@0.1.0",
        world: "audit-sink",
        exports: { default: async },
        with: {
            "wasmgate:plugin/types": super::validator::wasmgate::plugin::types,
            "wasmgate:plugin/host": super::validator::wasmgate::plugin::host,
        },
    });
}

pub use audit_sink::wasmgate::plugin::audit_types;
pub use validator::wasmgate::plugin::host;
pub use validator::wasmgate::plugin::types;
