//! `default-storage-class` (initializer): gives PersistentVolumeClaims without a
//! `spec.storageClassName` the one from the settings. See README.md.

use serde::Deserialize;
use wasmgate_sdk::Value;
use wasmgate_sdk::initializer::{AdmissionRequest, Initializer, Mutation};

/// `{"storageClassName": "standard"}`: required, a StorageClass name (a DNS subdomain).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    storage_class_name: String,
}

struct DefaultStorageClass;

impl Initializer for DefaultStorageClass {
    type Settings = Settings;

    fn initialize(request: AdmissionRequest, settings: Settings) -> Result<Mutation, String> {
        let Some(mut object) = request.object_json()? else {
            return Ok(Mutation::unchanged()); // DELETE
        };
        let kind = &request.kind;
        if (kind.group.as_str(), kind.kind.as_str()) != ("", "PersistentVolumeClaim") {
            return Ok(Mutation::unchanged());
        }
        Ok(if set_default(&mut object, &settings.storage_class_name) {
            Mutation::replaced(&object)
        } else {
            Mutation::unchanged()
        })
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        // StorageClass names are DNS subdomains: a claim naming anything else is refused by
        // the API server, so every PVC without a class would fail.
        let name = &settings.storage_class_name;
        let subdomain = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|part| {
                !part.is_empty()
                    && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && part.ends_with(|c: char| c.is_ascii_alphanumeric())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if subdomain {
            Ok(())
        } else {
            Err(format!(
                "storageClassName: {name:?} is not a StorageClass name (a lowercase DNS subdomain)"
            ))
        }
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
