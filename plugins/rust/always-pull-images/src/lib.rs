//! `always-pull-images` (initializer): sets `imagePullPolicy: Always` on every container of pods
//! and pod templates. See README.md.

use wasmgate_sdk::initializer::{AdmissionRequest, Guest, Mutation};
use wasmgate_sdk::{Value, k8s};

struct AlwaysPullImages;

impl Guest for AlwaysPullImages {
    fn initialize(request: AdmissionRequest) -> Result<Mutation, String> {
        let Some(mut object) = request.object_json()? else {
            return Ok(Mutation::unchanged()); // DELETE
        };
        // What the object is comes from the request (`kind`), not from the object itself.
        let (group, kind) = request.kind_of(&object);
        let (group, kind) = (group.to_owned(), kind.to_owned());
        Ok(if always_pull(&mut object, &group, &kind)? {
            Mutation::replaced(&object)
        } else {
            Mutation::unchanged()
        })
    }
}

/// Sets the policy where it is not `Always` yet on the containers of `object` taken as a
/// `group`/`kind`; returns whether anything changed. Idempotent: a second call on its own
/// output changes nothing (as `reinvocation: IfNeeded` needs).
fn always_pull(object: &mut Value, group: &str, kind: &str) -> Result<bool, String> {
    let mut changed = false;
    for mut container in k8s::containers_mut_of(object, group, kind) {
        let fields = container.fields_mut()?;
        if fields.get("imagePullPolicy").and_then(Value::as_str) != Some("Always") {
            fields.insert("imagePullPolicy".into(), "Always".into());
            changed = true;
        }
    }
    Ok(changed)
}

wasmgate_sdk::export_initializer!(AlwaysPullImages);

#[cfg(test)]
mod tests;
