//! `default-storage-class` (initializer): gives PersistentVolumeClaims without a
//! `spec.storageClassName` the one from the settings, answering with one RFC 6902 operation
//! (`patched`) rather than the whole object. See README.md.

use serde::Deserialize;
use wasmgate_sdk::Value;
use wasmgate_sdk::initializer::{AdmissionRequest, Initializer, Mutation};
use wasmgate_sdk::serde_json::json;

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
        let Some(object) = request.object_json()? else {
            return Ok(Mutation::unchanged()); // DELETE
        };
        let kind = &request.kind;
        if (kind.group.as_str(), kind.kind.as_str()) != ("", "PersistentVolumeClaim") {
            return Ok(Mutation::unchanged());
        }
        Ok(match set_default(&object, &settings.storage_class_name) {
            Some(operation) => Mutation::patched(&Value::Array(vec![operation])),
            None => Mutation::unchanged(),
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

/// The RFC 6902 `add` that sets `spec.storageClassName` when it is absent or null (an `add` of
/// a member that exists replaces it); `None` otherwise. `""` is left alone: it means "no class"
/// in Kubernetes, a deliberate choice.
fn set_default(pvc: &Value, class: &str) -> Option<Value> {
    // Not a valid claim without a spec object; the API server's validation will say so.
    let spec = pvc.get("spec").and_then(Value::as_object)?;
    if !spec
        .get("storageClassName")
        .unwrap_or(&Value::Null)
        .is_null()
    {
        return None;
    }
    Some(json!({"op": "add", "path": "/spec/storageClassName", "value": class}))
}

wasmgate_sdk::export_initializer!(DefaultStorageClass);

#[cfg(test)]
mod tests;
