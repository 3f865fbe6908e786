//! wasmgate's integration tests: the real `wasmgate` binary, started on an ephemeral port with
//! real TLS, called by a real HTTPS client (reqwest over rustls). Plugins come from
//! `scripts/build-plugins` (`plugins/dist`, `tests/plugins/dist`).

mod harness;

mod admission;
mod apiserver_client;
mod audit;
mod audit_delivery;
mod audit_intake;
mod captured;
mod check;
mod containment;
mod context;
mod faults;
mod hostile_clients;
mod huge_text;
mod image;
mod kafka;
mod manifests;
mod new;
mod oci;
mod pod_security;
mod protocol;
mod readme;
mod reliability;
mod reload;
mod reports;
mod reuse;
mod semantics;
mod settings;
mod suite;
