//! `deny-privileged` (validator): denies pods and pod templates with a container whose
//! `securityContext.privileged` is `true`. See README.md.

use serde::Deserialize;
use wasmgate_sdk::Value;
use wasmgate_sdk::k8s::{self, Container, ContainerList};
use wasmgate_sdk::validator::{AdmissionRequest, Guest, Verdict};

/// `{"skip_init_containers": false, "skip_ephemeral_containers": false}` (the defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    skip_init_containers: bool,
    skip_ephemeral_containers: bool,
}

impl Settings {
    fn checks(&self, container: &Container<'_>) -> bool {
        match container.list {
            ContainerList::Containers => true,
            ContainerList::InitContainers => !self.skip_init_containers,
            ContainerList::EphemeralContainers => !self.skip_ephemeral_containers,
        }
    }
}

struct DenyPrivileged;

impl Guest for DenyPrivileged {
    fn validate(request: AdmissionRequest) -> Result<Verdict, String> {
        let settings: Settings = wasmgate_sdk::settings()?;
        match request.object_json()? {
            Some(object) => Ok(check(&settings, &object)),
            None => Ok(Verdict::allow()), // DELETE
        }
    }
}

fn check(settings: &Settings, object: &Value) -> Verdict {
    let offenders: Vec<String> = k8s::containers(object)
        .filter(|container| settings.checks(container))
        .filter(|container| {
            container.value.pointer("/securityContext/privileged") == Some(&Value::Bool(true))
        })
        .map(|container| format!("{} {}", container.path, Value::from(container.name())))
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
