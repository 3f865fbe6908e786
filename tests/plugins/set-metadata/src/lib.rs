//! `set-metadata` (initializer, test-only): sets `metadata.<field>` to `value` (e.g. renames
//! the object), so the host's refusal of identity changes can be seen.

use serde::Deserialize;
use wasmgate_sdk::initializer::{AdmissionRequest, Guest, Mutation};

#[derive(Default, Deserialize)]
#[serde(default)]
struct Settings {
    field: String,
    value: String,
}

struct SetMetadata;

impl Guest for SetMetadata {
    fn initialize(request: AdmissionRequest) -> Result<Mutation, String> {
        let settings: Settings = wasmgate_sdk::settings()?;
        let Some(mut object) = request.object_json()? else {
            return Ok(Mutation::unchanged());
        };
        let metadata = object
            .pointer_mut("/metadata")
            .and_then(|m| m.as_object_mut())
            .ok_or("the object has no metadata")?;
        metadata.insert(settings.field, settings.value.into());
        Ok(Mutation::replaced(&object))
    }
}

wasmgate_sdk::export_initializer!(SetMetadata);
