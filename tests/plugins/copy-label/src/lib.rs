//! `copy-label` (initializer, test-only): copies label `settings.from` into annotation
//! `settings.to`; denies with `label <from> is missing` when the label is absent.

use serde::Deserialize;
use wasmgate_sdk::initializer::{AdmissionRequest, Initializer, Mutation};
use wasmgate_sdk::k8s;

#[derive(Default, Deserialize)]
#[serde(default)]
struct Settings {
    from: String,
    to: String,
}

struct CopyLabel;

impl Initializer for CopyLabel {
    type Settings = Settings;

    fn initialize(request: AdmissionRequest, settings: Settings) -> Result<Mutation, String> {
        let Some(mut object) = request.object_json()? else {
            return Ok(Mutation::unchanged());
        };
        let Some(value) = k8s::label(&object, &settings.from).map(str::to_owned) else {
            return Ok(Mutation::deny(format!(
                "label {} is missing",
                settings.from
            )));
        };
        k8s::set_annotation(&mut object, &settings.to, &value)?;
        Ok(Mutation::replaced(&object))
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if settings.from.is_empty() || settings.to.is_empty() {
            return Err("from and to are required".into());
        }
        Ok(())
    }
}

wasmgate_sdk::export_initializer!(CopyLabel);
