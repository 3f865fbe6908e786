//! Owns the one host-side `bindgen!` site of the plugin contract, for every version wasmgate
//! serves: `wit/plugin@0.2.0` (current) and `wit/plugin@0.1.0` (frozen). Each version's shared
//! interfaces (`types`, `host`, and in 0.2.0 `cluster`) are generated once, by its validator
//! world, and reused by its other worlds through `with:`. The rest of the gateway speaks 0.2.0;
//! a 0.1.0 plugin's values cross over through the `From` impls in `conversions.rs`. Exports
//! are async: every call runs on a fiber that yields to tokio at each epoch tick, so a call can
//! be dropped at its deadline wherever it is (in Wasm or waiting in a WASI host call). Host
//! imports stay synchronous.

#![allow(missing_docs)]

/// `wasmgate:plugin@0.2.0`: what the gateway speaks.
pub mod v2 {
    /// World `validator`, and the shared `types`, `host` and `cluster` interfaces.
    pub mod validator {
        wasmtime::component::bindgen!({
            path: "../wit/plugin@0.2.0",
            world: "validator",
            exports: { default: async },
        });
    }

    /// World `initializer`.
    pub mod initializer {
        wasmtime::component::bindgen!({
            path: "../wit/plugin@0.2.0",
            world: "initializer",
            exports: { default: async },
            with: {
                "wasmgate:plugin/types": super::validator::wasmgate::plugin::types,
                "wasmgate:plugin/host": super::validator::wasmgate::plugin::host,
                "wasmgate:plugin/cluster": super::validator::wasmgate::plugin::cluster,
            },
        });
    }

    /// World `audit-sink`, and the `audit-types` interface.
    pub mod audit_sink {
        wasmtime::component::bindgen!({
            path: "../wit/plugin@0.2.0",
            world: "audit-sink",
            exports: { default: async },
            with: {
                "wasmgate:plugin/types": super::validator::wasmgate::plugin::types,
                "wasmgate:plugin/host": super::validator::wasmgate::plugin::host,
            },
        });
    }

    pub use audit_sink::wasmgate::plugin::audit_types;
    pub use validator::wasmgate::plugin::{cluster, host, types};
}

/// `wasmgate:plugin@0.1.0`, frozen: plugins built for it keep loading and serving.
pub mod v1 {
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
    pub use validator::wasmgate::plugin::{host, types};
}

pub use v2::{audit_types, cluster, host, types};
