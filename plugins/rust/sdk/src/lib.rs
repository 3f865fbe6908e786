//! The Rust guest SDK for wasmgate plugins (`wasmgate:plugin@0.1.0`).
//!
//! This crate is the only guest-side `wit_bindgen::generate!` site. It owns the generated
//! bindings and small helpers on top of them; it must not hold policy logic of its own.
//!
//! A plugin enables exactly one world feature (`validator`, `initializer` or `audit-sink`),
//! implements that world's `Guest` trait and exports it:
//!
//! ```ignore
//! use wasmgate_sdk::validator::{AdmissionRequest, Guest, Verdict};
//!
//! struct AllowAll;
//!
//! impl Guest for AllowAll {
//!     fn validate(_request: AdmissionRequest) -> Result<Verdict, String> {
//!         Ok(Verdict::allow())
//!     }
//! }
//!
//! wasmgate_sdk::export_validator!(AllowAll);
//! ```
//!
//! Why one feature per world: every `generate!` embeds a component-type custom section, and
//! wasm-component-ld merges all of them into the component's world. A plugin built against all
//! three worlds would import `wasmgate:plugin/audit-types` even as a validator. Build each plugin
//! with its own `cargo build -p NAME` so that features of different plugins do not unify.

#![warn(missing_docs)]

#[cfg(feature = "audit-sink")]
mod audit;
pub mod k8s;
pub mod log;
mod remarks;
mod settings;
pub mod view;

pub use serde_json::{self, Value};
pub use settings::{parse_settings, settings, settings_raw};

/// The interfaces every world shares, generated once so that all worlds use the same types.
///
/// `wasmgate:sdk/base` is an SDK-private world that imports only `host` and `types`, both of
/// which every plugin world imports too, so embedding it never widens a component's world.
#[allow(missing_docs)] // Not every WIT item has a doc comment.
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package wasmgate:sdk;
            world base {
                import wasmgate:plugin/host@0.1.0;
                import wasmgate:plugin/types@0.1.0;
            }
        ",
        path: "../../../wit/plugin@0.1.0",
        world: "base",
        generate_all,
        generate_unused_types: true,
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::wasmgate::plugin::{host, types};

/// The `validator` world: `validate(admission-request) -> result<verdict, string>`.
///
/// Every matching validator runs in parallel on the final (mutated) object; any denial denies
/// the request. An `Err` is a plugin failure, handled by the policy's `failurePolicy`.
#[cfg(feature = "validator")]
#[allow(missing_docs)] // Generated glue (the `Guest` trait, type aliases).
pub mod validator {
    wit_bindgen::generate!({
        path: "../../../wit/plugin@0.1.0",
        world: "wasmgate:plugin/validator",
        with: {
            "wasmgate:plugin/host@0.1.0": crate::host,
            "wasmgate:plugin/types@0.1.0": crate::types,
        },
        pub_export_macro: true,
        export_macro_name: "export_validator",
        default_bindings_module: "wasmgate_sdk::validator",
    });

    pub use crate::types::{Decision, Denial, Remarks};
}

/// The `initializer` world: `initialize(admission-request) -> result<mutation, string>`.
///
/// Matching initializers run one after another in policy-file order; each sees the object as
/// the previous one left it. The host computes the JSONPatch from the returned object.
#[cfg(feature = "initializer")]
#[allow(missing_docs)] // Generated glue (the `Guest` trait, type aliases).
pub mod initializer {
    wit_bindgen::generate!({
        path: "../../../wit/plugin@0.1.0",
        world: "wasmgate:plugin/initializer",
        with: {
            "wasmgate:plugin/host@0.1.0": crate::host,
            "wasmgate:plugin/types@0.1.0": crate::types,
        },
        pub_export_macro: true,
        export_macro_name: "export_initializer",
        default_bindings_module: "wasmgate_sdk::initializer",
    });

    pub use crate::types::{Change, Denial, Remarks};
}

/// The `audit-sink` world: `deliver(list<event>) -> result<list<emission>, string>`.
///
/// A sink receives batches already routed and stripped to its level and returns the lines to
/// write to its granted outputs. Deliveries are retried, so a sink must be free of side effects.
#[cfg(feature = "audit-sink")]
#[allow(missing_docs)] // Generated glue (the `Guest` trait, type aliases).
pub mod audit_sink {
    wit_bindgen::generate!({
        path: "../../../wit/plugin@0.1.0",
        world: "wasmgate:plugin/audit-sink",
        with: {
            "wasmgate:plugin/host@0.1.0": crate::host,
            "wasmgate:plugin/types@0.1.0": crate::types,
            "wasmgate:plugin/audit-types@0.1.0": generate,
        },
        additional_derives: [PartialEq, Eq],
        pub_export_macro: true,
        export_macro_name: "export_audit_sink",
        default_bindings_module: "wasmgate_sdk::audit_sink",
    });

    pub use self::wasmgate::plugin::audit_types::{Level, ObjectReference, Stage};
    pub use crate::types::UserInfo;

    // === impl Emission, Level, Stage ===

    impl Emission {
        /// One line for the output named `output` in the policy file.
        pub fn new(output: impl Into<String>, line: impl Into<String>) -> Self {
            Self {
                output: output.into(),
                line: line.into(),
            }
        }
    }

    impl Level {
        /// The audit.k8s.io/v1 spelling: `None`, `Metadata`, `Request`, `RequestResponse`.
        pub fn as_str(&self) -> &'static str {
            match self {
                Self::None => "None",
                Self::Metadata => "Metadata",
                Self::Request => "Request",
                Self::RequestResponse => "RequestResponse",
            }
        }
    }

    impl Stage {
        /// The audit.k8s.io/v1 spelling: `RequestReceived`, `ResponseStarted`,
        /// `ResponseComplete`, `Panic`.
        pub fn as_str(&self) -> &'static str {
            match self {
                Self::RequestReceived => "RequestReceived",
                Self::ResponseStarted => "ResponseStarted",
                Self::ResponseComplete => "ResponseComplete",
                Self::Panic => "Panic",
            }
        }
    }
}

#[cfg(feature = "validator")]
pub use validator::export_validator;

#[cfg(feature = "initializer")]
pub use initializer::export_initializer;

#[cfg(feature = "audit-sink")]
pub use audit_sink::export_audit_sink;
