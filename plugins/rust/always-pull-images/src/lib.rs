//! `always-pull-images` (initializer): sets `imagePullPolicy: Always` on every container of pods
//! and pod templates. See README.md.

use wasmgate_sdk::initializer::{AdmissionRequest, Initializer, Mutation};
use wasmgate_sdk::{NoSettings, Value, k8s};

struct AlwaysPullImages;

impl Initializer for AlwaysPullImages {
    /// None: any key is refused, so a policy cannot believe it configured something.
    type Settings = NoSettings;

    fn initialize(request: AdmissionRequest, _settings: NoSettings) -> Result<Mutation, String> {
        let Some(mut object) = request.object_json()? else {
            return Ok(Mutation::unchanged()); // DELETE
        };
        Ok(if always_pull(&mut object)? {
            Mutation::replaced(&object)
        } else {
            Mutation::unchanged()
        })
    }
}

/// Sets the policy where it is not `Always` yet; returns whether anything changed.
fn always_pull(object: &mut Value) -> Result<bool, String> {
    let mut changed = false;
    for mut container in k8s::containers_mut(object) {
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
