//! `add-label` (initializer, test-only): sets label `settings.key` to `settings.value`, creating
//! `metadata.labels` when missing. Paired with `copy-label` to prove that initializers run in
//! order and each sees the previous one's change.

use serde::Deserialize;
use wasmgate_sdk::initializer::{AdmissionRequest, Guest, Mutation};
use wasmgate_sdk::k8s;

#[derive(Default, Deserialize)]
#[serde(default)]
struct Settings {
    key: String,
    value: String,
}

struct AddLabel;

impl Guest for AddLabel {
    fn initialize(request: AdmissionRequest) -> Result<Mutation, String> {
        let settings: Settings = wasmgate_sdk::settings()?;
        if settings.key.is_empty() {
            return Err("settings.key is required".into());
        }
        let Some(mut object) = request.object_json()? else {
            return Ok(Mutation::unchanged());
        };
        Ok(
            if k8s::set_label(&mut object, &settings.key, &settings.value)? {
                Mutation::replaced(&object)
            } else {
                Mutation::unchanged()
            },
        )
    }
}

wasmgate_sdk::export_initializer!(AddLabel);
