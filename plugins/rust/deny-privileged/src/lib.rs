//! `deny-privileged` (validator): denies pods and pod templates with a container whose
//! `securityContext.privileged` is `true`, whatever the object's own `apiVersion`/`kind` say:
//! what it is comes from the request (`kind`, `requestKind`). See README.md.

use serde::Deserialize;
use wasmgate_sdk::Value;
use wasmgate_sdk::k8s::ContainerList;
use wasmgate_sdk::validator::{AdmissionRequest, Guest, Verdict};
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

impl Guest for DenyPrivileged {
    fn validate(request: AdmissionRequest) -> Result<Verdict, String> {
        let settings: Settings = wasmgate_sdk::settings()?;
        let Some(object) = request.object_as::<Workload>()? else {
            return Ok(Verdict::allow()); // DELETE
        };
        // The API server's word for what this is, not the object's: a review whose object
        // lacks (or misstates) its kind must not let a privileged workload through.
        let kind = request.admitted_kind().unwrap_or_else(|| object.own_kind());
        Ok(check(&settings, &object, kind))
    }
}

fn check(settings: &Settings, object: &Workload, (group, kind): (&str, &str)) -> Verdict {
    let Some(pod) = object.pod_spec_of(group, kind) else {
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
