//! `deny-privileged` (validator): denies pods and pod templates with a container whose
//! `securityContext.privileged` is `true`. See README.md.

use serde::Deserialize;
use wasmgate_sdk::Value;
use wasmgate_sdk::k8s::ContainerList;
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};
use wasmgate_sdk::view::Workload;

/// `{"skip_init_containers": false, "skip_ephemeral_containers": false}` (the defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    skip_init_containers: bool,
    skip_ephemeral_containers: bool,
}

impl Settings {
    fn checks(&self, list: ContainerList) -> bool {
        match list {
            ContainerList::Containers => true,
            ContainerList::InitContainers => !self.skip_init_containers,
            ContainerList::EphemeralContainers => !self.skip_ephemeral_containers,
        }
    }
}

struct DenyPrivileged;

impl Validator for DenyPrivileged {
    type Settings = Settings;

    fn validate(request: AdmissionRequest, settings: Settings) -> Result<Verdict, String> {
        match request.object_as::<Workload>()? {
            Some(object) => Ok(check(&settings, &object)),
            None => Ok(Verdict::allow()), // DELETE
        }
    }
}

fn check(settings: &Settings, object: &Workload) -> Verdict {
    let Some(pod) = object.pod_spec() else {
        return Verdict::allow(); // Not a kind that runs containers.
    };
    let offenders: Vec<String> = pod
        .containers()
        .filter(|(list, _, _)| settings.checks(*list))
        .filter(|(_, _, c)| {
            c.security_context
                .as_ref()
                .is_some_and(|s| s.is_privileged())
        })
        .map(|(list, i, c)| {
            format!(
                "{}.{}[{i}] {}",
                pod.path,
                list.field(),
                Value::from(c.name.as_str())
            )
        })
        .collect();
    if offenders.is_empty() {
        Verdict::allow()
    } else {
        let offenders = offenders.join(", ");
        Verdict::deny(format!(
            "privileged containers are not allowed: {offenders}"
        ))
    }
}

wasmgate_sdk::export_validator!(DenyPrivileged);

#[cfg(test)]
mod tests;
