//! `legacy-labels` (validator, test-only, `wasmgate:plugin@0.1.0`): a plugin built against the
//! frozen first contract, without the SDK: it has no `validate-settings` export, so the host
//! skips the settings check at load. Denies objects that lack a label listed in
//! `settings.labels` (`missing labels: a, b`); allows others with the warning
//! `legacy plugin, operation <OP>`. Settings that are not `{"labels": [..]}` fail every call
//! (`invalid settings: ...`), which is what 0.1.0 plugins did.

wit_bindgen::generate!({
    path: "../../../wit/plugin@0.1.0",
    world: "wasmgate:plugin/validator",
});

use wasmgate::plugin::host;
use wasmgate::plugin::types::{Decision, Denial, Operation, Remarks};

#[derive(serde::Deserialize)]
struct Settings {
    labels: Vec<String>,
}

#[derive(serde::Deserialize, Default)]
struct Object {
    #[serde(default)]
    metadata: Metadata,
}

#[derive(serde::Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

struct Legacy;

impl Guest for Legacy {
    fn validate(request: AdmissionRequest) -> Result<Verdict, String> {
        let settings: Settings = serde_json::from_str(&host::settings())
            .map_err(|e| format!("invalid settings: {e}"))?;
        let operation = match request.operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        };
        let labels = match request.object.as_deref() {
            Some(text) => serde_json::from_str::<Object>(text)
                .map_err(|e| format!("the object is not JSON: {e}"))?
                .metadata
                .labels
                .unwrap_or_default(),
            None => Default::default(),
        };
        let missing: Vec<&str> = settings
            .labels
            .iter()
            .map(String::as_str)
            .filter(|l| !labels.contains_key(*l))
            .collect();
        let remarks = Remarks {
            warnings: vec![format!("legacy plugin, operation {operation}")],
            audit_annotations: Vec::new(),
        };
        Ok(Verdict {
            decision: if missing.is_empty() || request.object.is_none() {
                Decision::Allowed
            } else {
                Decision::Denied(Denial {
                    code: 403,
                    reason: "Forbidden".into(),
                    message: format!("missing labels: {}", missing.join(", ")),
                })
            },
            remarks,
        })
    }
}

export!(Legacy);
