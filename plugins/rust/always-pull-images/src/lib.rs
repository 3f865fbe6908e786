//! `always-pull-images` (initializer): sets `imagePullPolicy: Always` on every container of pods
//! and pod templates, answering with RFC 6902 operations (`patched`) rather than the whole
//! object. See README.md.

use serde::Serialize;
use wasmgate_sdk::initializer::{AdmissionRequest, Initializer, Mutation};
use wasmgate_sdk::view::containers::container_field;
use wasmgate_sdk::{NoSettings, k8s};

struct AlwaysPullImages;

impl Initializer for AlwaysPullImages {
    /// None: any key is refused, so a policy cannot believe it configured something.
    type Settings = NoSettings;

    fn initialize(request: AdmissionRequest, _settings: NoSettings) -> Result<Mutation, String> {
        let Some(text) = request.object.as_deref() else {
            return Ok(Mutation::unchanged()); // DELETE
        };
        // What the object is comes from the request (`kind`), not from the object itself; only
        // a hand-written review without one falls back to the object's own (parsed whole).
        let operations = match request.admitted_kind() {
            Some((group, kind)) => always_pull(text, group, kind)?,
            None => {
                let object = request.object_json()?.unwrap_or_default();
                always_pull(text, k8s::group(&object), k8s::kind(&object))?
            }
        };
        Ok(if operations.is_empty() {
            Mutation::unchanged()
        } else {
            Mutation::patched_text(
                wasmgate_sdk::serde_json::to_string(&operations).map_err(|e| e.to_string())?,
            )
        })
    }
}

/// An RFC 6902 `add` of `imagePullPolicy: Always` at `path`.
#[derive(Debug, PartialEq, Serialize)]
struct AddAlways {
    op: &'static str,
    path: String,
    value: &'static str,
}

impl AddAlways {
    fn at(path: String) -> Self {
        Self {
            op: "add",
            path,
            value: "Always",
        }
    }
}

/// One `add` of `imagePullPolicy: Always` per container of the object `json` taken as a
/// `group`/`kind` whose policy is not `Always` yet (an RFC 6902 `add` of a member that exists
/// replaces it); none when nothing needs changing. Idempotent: applied, a second call on the
/// result answers none (as `reinvocation: IfNeeded` needs). Reads only the containers'
/// `imagePullPolicy` from the text (a typed partial view), never the whole object.
fn always_pull(json: &str, group: &str, kind: &str) -> Result<Vec<AddAlways>, String> {
    let pod = container_field(group, kind, json, "imagePullPolicy")
        .map_err(|err| format!("the request's object is not JSON: {err}"))?;
    let Some(pod) = pod else {
        return Ok(Vec::new());
    };
    let mut operations = Vec::new();
    for container in &pod.containers {
        let Some(policy) = &container.value else {
            return Err(format!("{} is not a JSON object", container.path(pod.path)));
        };
        if policy.as_deref() != Some("Always") {
            let (pointer, field) = (pod.pointer, container.list.field());
            let path = format!("{pointer}/{field}/{}/imagePullPolicy", container.index);
            operations.push(AddAlways::at(path));
        }
    }
    Ok(operations)
}

wasmgate_sdk::export_initializer!(AlwaysPullImages);

#[cfg(test)]
mod tests;
