//! wasmgate: a Kubernetes admission and audit gateway whose policies are sandboxed WebAssembly
//! components.
//!
//! The API server calls it as a validating webhook (`/validate`: every matching validator runs in
//! parallel, any deny denies), as a mutating webhook (`/mutate`: matching initializers run in
//! order, one combined JSONPatch), and as its audit webhook backend (`/audit`: batches are
//! spooled durably, then every audit sink whose rules match gets them, independently). See
//! `DESIGN.md` for the architecture; each module's `//!` line says what it owns.

#![forbid(unsafe_code)]
#![deny(missing_docs, rust_2018_idioms)]

pub mod admission;
pub mod audit;
pub mod cli;
pub mod config;
pub mod context;
pub mod gateway;
pub mod manifests;
pub mod policy;
pub mod register;
pub mod reload;
pub mod reports;
pub mod runtime;
pub mod scaffold;
pub mod server;
pub mod snapshot;
pub mod suite;
pub mod supply;
pub mod telemetry;
pub mod wire;
