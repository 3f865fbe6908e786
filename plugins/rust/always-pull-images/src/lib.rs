//! `always-pull-images` (initializer): sets `imagePullPolicy: Always` on every container of pods
//! and pod templates, answering with RFC 6902 operations (`patched`) rather than the whole
//! object. See README.md.

use wasmgate_sdk::initializer::{AdmissionRequest, Initializer, Mutation};
use wasmgate_sdk::serde_json::json;
use wasmgate_sdk::{NoSettings, Value, json_pointer, k8s};

struct AlwaysPullImages;

impl Initializer for AlwaysPullImages {
    /// None: any key is refused, so a policy cannot believe it configured something.
    type Settings = NoSettings;

    fn initialize(request: AdmissionRequest, _settings: NoSettings) -> Result<Mutation, String> {
        let Some(object) = request.object_json()? else {
            return Ok(Mutation::unchanged()); // DELETE
        };
        let operations = always_pull(&object)?;
        Ok(if operations.is_empty() {
            Mutation::unchanged()
        } else {
            Mutation::patched(&Value::Array(operations))
        })
    }
}

/// One `add` of `imagePullPolicy: Always` per container whose policy is not `Always` yet (an
/// RFC 6902 `add` of a member that exists replaces it); none when nothing needs changing.
fn always_pull(object: &Value) -> Result<Vec<Value>, String> {
    let mut operations = Vec::new();
    for container in k8s::containers(object) {
        let Some(fields) = container.value.as_object() else {
            return Err(format!("{} is not a JSON object", container.path));
        };
        if fields.get("imagePullPolicy").and_then(Value::as_str) != Some("Always") {
            let mut path = pointer(&container.path);
            path.push_str("/imagePullPolicy");
            operations.push(json!({"op": "add", "path": path, "value": "Always"}));
        }
    }
    Ok(operations)
}

/// The JSON Pointer of a container's dotted path: `spec.template.spec.initContainers[1]` is
/// `/spec/template/spec/initContainers/1`.
fn pointer(dotted: &str) -> String {
    json_pointer(dotted.split('.').flat_map(|segment| {
        match segment.strip_suffix(']').and_then(|s| s.split_once('[')) {
            Some((name, index)) => vec![name, index],
            None => vec![segment],
        }
    }))
}

wasmgate_sdk::export_initializer!(AlwaysPullImages);

#[cfg(test)]
mod tests;
