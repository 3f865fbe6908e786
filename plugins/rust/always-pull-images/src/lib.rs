//! `always-pull-images` (initializer): sets `imagePullPolicy: Always` on every container of pods
//! and pod templates, answering with RFC 6902 operations (`patched`) rather than the whole
//! object. See README.md.

use wasmgate_sdk::initializer::{AdmissionRequest, Initializer, Mutation};
use wasmgate_sdk::serde_json::json;
use wasmgate_sdk::{NoSettings, Value, k8s};

struct AlwaysPullImages;

impl Initializer for AlwaysPullImages {
    /// None: any key is refused, so a policy cannot believe it configured something.
    type Settings = NoSettings;

    fn initialize(request: AdmissionRequest, _settings: NoSettings) -> Result<Mutation, String> {
        let Some(object) = request.object_json()? else {
            return Ok(Mutation::unchanged()); // DELETE
        };
        // What the object is comes from the request (`kind`), not from the object itself.
        let (group, kind) = request.kind_of(&object);
        let operations = always_pull(&object, group, kind)?;
        Ok(if operations.is_empty() {
            Mutation::unchanged()
        } else {
            Mutation::patched(&Value::Array(operations))
        })
    }
}

/// One `add` of `imagePullPolicy: Always` per container of `object` taken as a `group`/`kind`
/// whose policy is not `Always` yet (an RFC 6902 `add` of a member that exists replaces it);
/// none when nothing needs changing. Idempotent: applied, a second call on the result answers
/// none (as `reinvocation: IfNeeded` needs).
fn always_pull(object: &Value, group: &str, kind: &str) -> Result<Vec<Value>, String> {
    let Some((path, pointer)) = k8s::pod_spec_location(group, kind) else {
        return Ok(Vec::new());
    };
    let Some(spec) = object.pointer(pointer) else {
        return Ok(Vec::new());
    };
    let mut operations = Vec::new();
    for container in k8s::pod_containers(path, spec) {
        let Some(fields) = container.value.as_object() else {
            return Err(format!("{} is not a JSON object", container.path));
        };
        if fields.get("imagePullPolicy").and_then(Value::as_str) != Some("Always") {
            let field = container.list.field();
            let path = format!("{pointer}/{field}/{}/imagePullPolicy", container.index);
            operations.push(json!({"op": "add", "path": path, "value": "Always"}));
        }
    }
    Ok(operations)
}

wasmgate_sdk::export_initializer!(AlwaysPullImages);

#[cfg(test)]
mod tests;
