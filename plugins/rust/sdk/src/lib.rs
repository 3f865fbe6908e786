//! The Rust guest SDK for wasmgate plugins (`wasmgate:plugin@0.2.0`).
//!
//! This crate is the only guest-side `wit_bindgen::generate!` site. It owns the generated
//! bindings and small helpers on top of them; it must not hold policy logic of its own.
//!
//! A plugin enables exactly one world feature (`validator`, `initializer` or `audit-sink`),
//! implements that world's trait ([`validator::Validator`], [`initializer::Initializer`],
//! [`audit_sink::AuditSink`]) with its settings type, and exports it:
//!
//! ```ignore
//! use serde::Deserialize;
//! use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings {
//!     label: String, // required: a policy without it is refused at load
//! }
//!
//! struct HasLabel;
//!
//! impl Validator for HasLabel {
//!     type Settings = Settings;
//!
//!     fn validate(request: AdmissionRequest, settings: Settings) -> Result<Verdict, String> {
//!         Ok(Verdict::allow())
//!     }
//! }
//!
//! wasmgate_sdk::export_validator!(HasLabel);
//! ```
//!
//! The export macro derives the world's `validate-settings` export from `Settings`: the host
//! calls it when the policy is loaded (start and every reload), and a policy whose settings do
//! not deserialize (a wrong type, a missing required field, an unknown key under
//! `deny_unknown_fields`) or fail the trait's `check_settings` is refused with the message, the
//! file and the line, before any request. Each call then gets the settings already parsed.
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

pub use remarks::json_pointer;
pub use serde_json::{self, Value};
pub use settings::{NoSettings, parse_settings, settings, settings_raw, validate_settings};

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
                import wasmgate:plugin/host@0.2.0;
                import wasmgate:plugin/types@0.2.0;
            }
        ",
        path: "../../../wit/plugin@0.2.0",
        world: "base",
        generate_all,
        generate_unused_types: true,
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::wasmgate::plugin::{host, types};

/// Reading cluster objects the policy is granted (`wasmgate:plugin/cluster`, validators and
/// initializers): `cluster::get(resource, namespace, name)` and `cluster::list(resource,
/// namespace, label_selector)`, objects as JSON text. A plugin that never calls them does not
/// import the interface (the toolchain drops unused imports) and needs no grant. Only what the
/// policy's `context:` grants can be read; anything else answers `LookupError::Denied`.
#[cfg(any(feature = "validator", feature = "initializer"))]
#[allow(missing_docs)] // Generated.
pub mod cluster {
    mod generated {
        wit_bindgen::generate!({
            inline: "
                package wasmgate:sdk-cluster;
                world cluster {
                    import wasmgate:plugin/cluster@0.2.0;
                }
            ",
            path: "../../../wit/plugin@0.2.0",
            world: "cluster",
            with: {
                "wasmgate:plugin/types@0.2.0": crate::types,
                "wasmgate:plugin/cluster@0.2.0": generate,
            },
            additional_derives: [PartialEq, Eq],
        });
    }

    pub use generated::wasmgate::plugin::cluster::*;
}

/// The glue every world module shares, given the world's trait, its call (`fn` name, argument
/// and answer, and the trait method it calls) and the bindings' `with` entries beyond `host` and
/// `types`: the derived `validate_settings::<P>`, the hidden call that parses the settings, and
/// the world's generated bindings (`wit`, with the `export!` macro the export macros use).
#[cfg(any(feature = "validator", feature = "initializer", feature = "audit-sink"))]
macro_rules! world_glue {
    (
        trait $trait:ident, world $world:tt, module $module:tt,
        fn $call:ident($arg:ident: $arg_ty:ty) -> $answer:ty => $method:ident,
        with { $($with:tt)* }
        $(, $($option:tt)*)?
    ) => {
        /// The derived `validate-settings` export of `P`: [`crate::validate_settings`] with
        /// `P::check_settings`. Call it in native unit tests to see what the host will be told.
        pub fn validate_settings<P: $trait>(settings: &str) -> Result<(), String> {
            crate::validate_settings::<P::Settings>(settings, P::check_settings)
        }

        #[doc(hidden)]
        pub fn $call<P: $trait>($arg: $arg_ty) -> Result<$answer, String> {
            P::$method($arg, crate::settings()?)
        }

        #[doc(hidden)]
        #[allow(missing_docs)] // Generated glue.
        pub mod wit {
            wit_bindgen::generate!({
                path: "../../../wit/plugin@0.2.0",
                world: $world,
                with: {
                    "wasmgate:plugin/host@0.2.0": crate::host,
                    "wasmgate:plugin/types@0.2.0": crate::types,
                    $($with)*
                },
                $($($option)*)?
                pub_export_macro: true,
                export_macro_name: "export",
                default_bindings_module: $module,
            });
        }
    };
}

/// The body of the three export macros: the component's export of `$world`, whose one call
/// goes to `$crate::$world::$call::<$plugin>` and whose `validate-settings` goes to
/// `$crate::$world::validate_settings::<$plugin>`.
#[cfg(any(feature = "validator", feature = "initializer", feature = "audit-sink"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_world {
    (
        $world:ident, $export:ident, $plugin:ty,
        fn $name:ident($arg:ident: $arg_ty:ty) -> $answer:ty => $call:ident
    ) => {
        #[doc(hidden)]
        pub struct $export;

        impl $crate::$world::wit::Guest for $export {
            fn $name($arg: $arg_ty) -> ::core::result::Result<$answer, ::std::string::String> {
                $crate::$world::$call::<$plugin>($arg)
            }

            fn validate_settings(
                settings: ::std::string::String,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::$world::validate_settings::<$plugin>(&settings)
            }
        }

        $crate::$world::wit::export!($export with_types_in $crate::$world::wit);
    };
}

/// The `validator` world: `validate(admission-request) -> result<verdict, string>`.
///
/// Every matching validator runs in parallel on the final (mutated) object; any denial denies
/// the request. An `Err` is a plugin failure, handled by the policy's `failurePolicy`.
#[cfg(feature = "validator")]
pub mod validator {
    pub use crate::types::{
        AdmissionRequest, Decision, Denial, GroupVersionKind, GroupVersionResource, Operation,
        Remarks, UserInfo, Verdict,
    };

    /// A validator plugin. Implement it and export it with [`crate::export_validator!`].
    pub trait Validator {
        /// The plugin's settings: what the policy entry's `settings` must deserialize into
        /// (see [`crate::parse_settings`]). [`crate::NoSettings`] takes none.
        type Settings: serde::de::DeserializeOwned;

        /// Decides one request, with the settings already parsed. `Err` is a plugin failure.
        fn validate(request: AdmissionRequest, settings: Self::Settings)
        -> Result<Verdict, String>;

        /// Checks what the settings type cannot express (a range, a format, a combination);
        /// `Err(why)` refuses the policy at load. Runs after the settings deserialized.
        fn check_settings(settings: &Self::Settings) -> Result<(), String> {
            let _ = settings;
            Ok(())
        }
    }

    world_glue! {
        trait Validator, world "wasmgate:plugin/validator", module "wasmgate_sdk::validator::wit",
        fn __validate(request: AdmissionRequest) -> Verdict => validate,
        with { "wasmgate:plugin/cluster@0.2.0": crate::cluster, }
    }
}

/// Exports a [`validator::Validator`] as the component's `validator` world, with the
/// `validate-settings` export derived from its `Settings` type.
#[cfg(feature = "validator")]
#[macro_export]
macro_rules! export_validator {
    ($plugin:ty) => {
        $crate::__export_world! {
            validator, __WasmgateValidatorExport, $plugin,
            fn validate(request: $crate::types::AdmissionRequest) -> $crate::types::Verdict => __validate
        }
    };
}

/// The `initializer` world: `initialize(admission-request) -> result<mutation, string>`.
///
/// Matching initializers run one after another in policy-file order; each sees the object as
/// the previous one left it. A change is the whole new object (`Mutation::replaced`) or RFC
/// 6902 operations (`Mutation::patched`); either way the host computes the answer's JSONPatch.
#[cfg(feature = "initializer")]
pub mod initializer {
    pub use crate::types::{
        AdmissionRequest, Change, Denial, GroupVersionKind, GroupVersionResource, Mutation,
        Operation, Remarks, UserInfo,
    };

    /// An initializer plugin. Implement it and export it with [`crate::export_initializer!`].
    pub trait Initializer {
        /// The plugin's settings (see [`crate::validator::Validator::Settings`]).
        type Settings: serde::de::DeserializeOwned;

        /// Changes (or not) one request's object, with the settings already parsed. `Err` is
        /// a plugin failure.
        fn initialize(
            request: AdmissionRequest,
            settings: Self::Settings,
        ) -> Result<Mutation, String>;

        /// Checks what the settings type cannot express; `Err(why)` refuses the policy at load.
        fn check_settings(settings: &Self::Settings) -> Result<(), String> {
            let _ = settings;
            Ok(())
        }
    }

    world_glue! {
        trait Initializer, world "wasmgate:plugin/initializer", module "wasmgate_sdk::initializer::wit",
        fn __initialize(request: AdmissionRequest) -> Mutation => initialize,
        with { "wasmgate:plugin/cluster@0.2.0": crate::cluster, }
    }
}

/// Exports an [`initializer::Initializer`] as the component's `initializer` world, with the
/// `validate-settings` export derived from its `Settings` type.
#[cfg(feature = "initializer")]
#[macro_export]
macro_rules! export_initializer {
    ($plugin:ty) => {
        $crate::__export_world! {
            initializer, __WasmgateInitializerExport, $plugin,
            fn initialize(request: $crate::types::AdmissionRequest) -> $crate::types::Mutation => __initialize
        }
    };
}

/// The `audit-sink` world: `deliver(list<event>) -> result<list<emission>, string>`.
///
/// A sink receives batches already routed and stripped to its level and returns the lines to
/// write to its granted outputs. Deliveries are retried, so a sink must be free of side effects.
#[cfg(feature = "audit-sink")]
pub mod audit_sink {
    pub use self::wit::wasmgate::plugin::audit_types::{
        Emission, Event, Level, ObjectReference, Stage,
    };
    pub use crate::types::UserInfo;

    /// An audit sink plugin. Implement it and export it with [`crate::export_audit_sink!`].
    pub trait AuditSink {
        /// The plugin's settings (see [`crate::validator::Validator::Settings`] when built
        /// with that feature: the same rules).
        type Settings: serde::de::DeserializeOwned;

        /// Turns one batch into the lines to write, with the settings already parsed. `Err`
        /// fails the delivery, which is retried.
        fn deliver(batch: Vec<Event>, settings: Self::Settings) -> Result<Vec<Emission>, String>;

        /// Checks what the settings type cannot express; `Err(why)` refuses the policy at load.
        fn check_settings(settings: &Self::Settings) -> Result<(), String> {
            let _ = settings;
            Ok(())
        }
    }

    world_glue! {
        trait AuditSink, world "wasmgate:plugin/audit-sink", module "wasmgate_sdk::audit_sink::wit",
        fn __deliver(batch: Vec<Event>) -> Vec<Emission> => deliver,
        with { "wasmgate:plugin/audit-types@0.2.0": generate, },
        additional_derives: [PartialEq, Eq],
    }

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

/// Exports an [`audit_sink::AuditSink`] as the component's `audit-sink` world, with the
/// `validate-settings` export derived from its `Settings` type.
#[cfg(feature = "audit-sink")]
#[macro_export]
macro_rules! export_audit_sink {
    ($plugin:ty) => {
        $crate::__export_world! {
            audit_sink, __WasmgateAuditSinkExport, $plugin,
            fn deliver(batch: ::std::vec::Vec<$crate::audit_sink::Event>) -> ::std::vec::Vec<$crate::audit_sink::Emission> => __deliver
        }
    };
}
