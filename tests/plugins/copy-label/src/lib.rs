//! `copy-label` (initializer, test-only): copies label `settings.from` into annotation
//! `settings.to`; denies with `label <from> is missing` when the label is absent.

use serde::Deserialize;
use wasmgate_sdk::initializer::{AdmissionRequest, Guest, Mutation};
use wasmgate_sdk::k8s;

#[derive(Default, Deserialize)]
#[serde(default)]
struct Settings {
    from: String,
    to: String,
}

struct CopyLabel;

impl Guest for CopyLabel {
    fn initialize(request: AdmissionRequest) -> Result<Mutation, String> {
        let settings: Settings = wasmgate_sdk::settings()?;
        if settings.from.is_empty() || settings.to.is_empty() {
            return Err("settings.from and settings.to are required".into());
        }
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
}

wasmgate_sdk::export_initializer!(CopyLabel);
