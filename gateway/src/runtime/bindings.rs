//! Owns the one host-side `bindgen!` of the plugin contract (`wit/plugin@0.1.0`). The three
//! worlds share the `types` and `host` interfaces, which are generated once (by the validator
//! world) and reused by the others through `with:`.

#![allow(missing_docs)]

/// World `validator`, and the shared `types` and `host` interfaces.
pub mod validator {
    wasmtime::component::bindgen!({
        path: "../wit/plugin@0.1.0",
        world: "validator",
    });
}

/// World `initializer`.
pub mod initializer {
    wasmtime::component::bindgen!({
        path: "../wit/plugin@0.1.0",
        world: "initializer",
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
        with: {
            "wasmgate:plugin/types": super::validator::wasmgate::plugin::types,
            "wasmgate:plugin/host": super::validator::wasmgate::plugin::host,
        },
    });
}

pub use audit_sink::wasmgate::plugin::audit_types;
pub use validator::wasmgate::plugin::host;
pub use validator::wasmgate::plugin::types;
