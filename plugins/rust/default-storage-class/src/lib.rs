//! `default-storage-class` (initializer): gives PersistentVolumeClaims without a
//! `spec.storageClassName` the one from the settings. See README.md.

use serde::Deserialize;
use wasmgate_sdk::Value;
use wasmgate_sdk::initializer::{AdmissionRequest, Guest, Mutation};

/// `{"storageClassName": "standard"}`; without it the plugin changes nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    storage_class_name: Option<String>,
}

struct DefaultStorageClass;

impl Guest for DefaultStorageClass {
    fn initialize(request: AdmissionRequest) -> Result<Mutation, String> {
        let settings: Settings = wasmgate_sdk::settings()?;
        let Some(mut object) = request.object_json()? else {
            return Ok(Mutation::unchanged()); // DELETE
        };
        let kind = &request.kind;
        if (kind.group.as_str(), kind.kind.as_str()) != ("", "PersistentVolumeClaim") {
            return Ok(Mutation::unchanged());
        }
        Ok(match &settings.storage_class_name {
            Some(class) if set_default(&mut object, class) => Mutation::replaced(&object),
            _ => Mutation::unchanged(),
        })
    }
}

/// Sets `spec.storageClassName` when it is absent or null. `""` is left alone: it means "no
/// class" in Kubernetes, a deliberate choice. Returns whether the object changed.
fn set_default(pvc: &mut Value, class: &str) -> bool {
    let Some(spec) = pvc.get_mut("spec").and_then(Value::as_object_mut) else {
        return false; // Not a valid claim; the API server's validation will say so.
    };
    let current = spec.entry("storageClassName").or_insert(Value::Null);
    if !current.is_null() {
        return false;
    }
    *current = class.into();
    true
}

wasmgate_sdk::export_initializer!(DefaultStorageClass);

#[cfg(test)]
mod tests;
