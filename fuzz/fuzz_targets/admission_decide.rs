//! The whole decision path on any body, through the gateway library's own code and no HTTP:
//! decode -> match -> real plugin calls (require-labels and deny-privileged validating,
//! always-pull-images and default-storage-class mutating, as built into plugins/dist) -> merge
//! -> encode. `Gateway::review` is what the server and `wasmgate check` run.
//!
//! What must hold for every body: no panic in the host; a body that decodes gets an answer that
//! echoes its uid in its version; a denial carries a code the API server takes (400-599); the
//! first-party plugins never trap, fail in the host or run out of time on any request (a review
//! whose operation the contract cannot express is not given to them, by design); a JSONPatch
//! is valid base64 of a JSON Patch that applies to the object it was computed from.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use wasmgate::config::{Config, PluginKind};
use wasmgate::gateway::Gateway;
use wasmgate::runtime::{Runtime, RuntimeConfig};
use wasmgate::snapshot::Snapshot;
use wasmgate::telemetry::Metrics;
use wasmgate::wire::{AdmissionReview, Operation};

/// Every policy matches every request (any operation, group, version, resource, scope), so that
/// any body that decodes reaches the plugins. Generous deadlines: a fuzzing machine is busy, and
/// a deadline hit here is reported as a finding.
const POLICIES: &str = r#"
apiVersion: wasmgate.io/v1alpha1
kind: PolicySet
policies:
  - name: always-pull-images
    kind: initializer
    module: plugins/dist/always-pull-images.wasm
    rules: [{operations: ["*"], apiGroups: ["*"], apiVersions: ["*"], resources: ["*/*"]}]
    timeout: 20s
  - name: default-storage-class
    kind: initializer
    module: plugins/dist/default-storage-class.wasm
    settings: {storageClassName: standard}
    rules: [{operations: ["*"], apiGroups: ["*"], apiVersions: ["*"], resources: ["*/*"]}]
    timeout: 20s
  - name: require-labels
    kind: validator
    module: plugins/dist/require-labels.wasm
    settings: {labels: [team, app.kubernetes.io/name]}
    rules: [{operations: ["*"], apiGroups: ["*"], apiVersions: ["*"], resources: ["*/*"]}]
    excludeNamespaces: [kube-system]
    timeout: 20s
  - name: deny-privileged
    kind: validator
    module: plugins/dist/deny-privileged.wasm
    rules: [{operations: ["*"], apiGroups: ["*"], apiVersions: ["*"], resources: ["*/*"]}]
    objectSelector: {matchExpressions: [{key: privileged-ok, operator: DoesNotExist}]}
    timeout: 20s
"#;

struct Harness {
    rt: tokio::runtime::Runtime,
    gateway: Gateway,
    /// Kept alive: its epoch ticker enforces the plugins' deadlines.
    _runtime: Runtime,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        for name in [
            "always-pull-images",
            "default-storage-class",
            "require-labels",
            "deny-privileged",
        ] {
            wasmgate_fuzz::plugin(name);
        }
        let file = wasmgate_fuzz::repo().join("fuzz-policies.yaml");
        let config = Config::parse(&file, POLICIES).expect("the fuzz policy file is valid");
        let runtime = Runtime::new(&RuntimeConfig { cache_dir: None }).expect("runtime");
        let snapshot = Snapshot::build(&config, &runtime, 1, None).expect("the plugins load");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio");
        Harness {
            rt,
            gateway: Gateway::new(snapshot, Arc::new(Metrics::new())),
            _runtime: runtime,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let decodes = AdmissionReview::decode(data).ok();
    for kind in [PluginKind::Validator, PluginKind::Initializer] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
        let answer =
            h.rt.block_on(async { h.gateway.review(kind, None, data, deadline).await });
        let Some(expected) = &decodes else {
            assert!(answer.is_err(), "a body that does not decode was answered");
            continue;
        };
        let (review, response) = answer.expect("a review that decodes is answered");
        assert_eq!(response.uid, expected.request.uid);
        if let Some(status) = &response.status {
            let message = &status.message;
            // An operation the plugin contract does not know is not given to plugins: by
            // design, each matching policy fails with that reason (and its failurePolicy
            // applies), which is not a plugin's bug.
            let unknown_operation = matches!(expected.request.operation, Operation::Other(_));
            for bug in ["trapped", "could not be run", "deadline", "memory limit"] {
                let failure = format!("failed: plugin {bug}");
                let expected_failure = unknown_operation
                    && bug == "could not be run"
                    && message.contains("cannot be given to a wasmgate:plugin");
                assert!(
                    expected_failure || !message.contains(&failure),
                    "a first-party plugin failed: {message}"
                );
            }
            if !response.allowed {
                let code = status.code.unwrap_or(0);
                assert!((400..=599).contains(&code), "denial code {code}");
            }
        }
        if let Some(patch) = response.patch() {
            check_patch(&review, patch);
        }
        let version = review.version;
        let out: serde_json::Value =
            serde_json::from_slice(&response.into_review_json(version)).expect("answer is JSON");
        assert_eq!(out["apiVersion"], version.api_version());
        assert_eq!(out["response"]["uid"], expected.request.uid.as_str());
    }
});

/// The patch is base64 of a JSON Patch that applies to the object it was computed from.
fn check_patch(review: &AdmissionReview, patch: &str) {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("the patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
    let object = review
        .request
        .object
        .as_ref()
        .expect("only a request with an object is patched");
    let mut doc: serde_json::Value =
        serde_json::from_str(object.get()).expect("the object is JSON");
    json_patch::patch(&mut doc, &patch).expect("the patch applies to the object");
}
