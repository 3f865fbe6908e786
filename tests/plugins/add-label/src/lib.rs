//! `add-label` (initializer, test-only): sets label `settings.key` to `settings.value`, creating
//! `metadata.labels` when missing. Paired with `copy-label` to prove that initializers run in
//! order and each sees the previous one's change.

use serde::Deserialize;
use wasmgate_sdk::initializer::{AdmissionRequest, Initializer, Mutation};
use wasmgate_sdk::k8s;

#[derive(Default, Deserialize)]
#[serde(default)]
struct Settings {
    key: String,
    value: String,
}

struct AddLabel;

impl Initializer for AddLabel {
    type Settings = Settings;

    fn initialize(request: AdmissionRequest, settings: Settings) -> Result<Mutation, String> {
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

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if settings.key.is_empty() {
            return Err("key is required".into());
        }
        Ok(())
    }
}

wasmgate_sdk::export_initializer!(AddLabel);
