//! The restricted checks (upstream level `Restricted`), in upstream's ID order.

use std::collections::BTreeSet;

use wasmgate_sdk::view::pod::{Container, Volume};

use super::baseline::{seccomp_type, valid_seccomp_type};
use super::*;

// === check_allowPrivilegeEscalation.go ===

pub fn allow_privilege_escalation_1_8(pod: &Pod) -> Outcome {
    let bad: Vec<&str> = containers(pod.spec)
        .filter(|c| {
            c.security_context
                .as_ref()
                .and_then(|sc| sc.allow_privilege_escalation)
                != Some(false)
        })
        .map(Container::name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    forbid(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

pub fn allow_privilege_escalation_1_25(pod: &Pod) -> Outcome {
    if windows(pod.spec) {
        return None;
    }
    allow_privilege_escalation_1_8(pod)
}

// === check_capabilities_restricted.go ===

pub fn capabilities_restricted_1_22(pod: &Pod) -> Outcome {
    let mut missing_drop_all: Vec<&str> = Vec::new();
    let mut adding: Vec<&str> = Vec::new();
    let mut forbidden_caps: BTreeSet<String> = BTreeSet::new();
    for c in containers(pod.spec) {
        let Some(capabilities) = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.capabilities.as_ref())
        else {
            missing_drop_all.push(c.name());
            continue;
        };
        if !capabilities.drop.iter().flatten().any(|cap| cap == "ALL") {
            missing_drop_all.push(c.name());
        }
        let mut added_forbidden = false;
        for cap in capabilities.add.iter().flatten() {
            if cap != "NET_BIND_SERVICE" {
                added_forbidden = true;
                forbidden_caps.insert(cap.clone());
            }
        }
        if added_forbidden {
            adding.push(c.name());
        }
    }
    let mut details: Vec<String> = Vec::new();
    if !missing_drop_all.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop_all)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&sorted(&forbidden_caps))
        ));
    }
    if details.is_empty() {
        return None;
    }
    forbid("unrestricted capabilities", details.join("; "))
}

pub fn capabilities_restricted_1_25(pod: &Pod) -> Outcome {
    if windows(pod.spec) {
        return None;
    }
    capabilities_restricted_1_22(pod)
}

// === check_restrictedVolumes.go ===

pub fn restricted_volumes_1_0(pod: &Pod) -> Outcome {
    let mut bad: Vec<&str> = Vec::new();
    let mut types: BTreeSet<String> = BTreeSet::new();
    for v in pod.spec.volumes.iter().flatten() {
        let allowed = [
            &v.config_map,
            &v.csi,
            &v.downward_api,
            &v.empty_dir,
            &v.ephemeral,
            &v.image,
            &v.persistent_volume_claim,
            &v.projected,
            &v.secret,
        ];
        // A volume with no source at all is defaulted to `emptyDir` by the API server
        // (`SetDefaults_Volume`) before admission sees it.
        if allowed.iter().any(|source| source.is_some()) || no_source(v) {
            continue;
        }
        bad.push(v.name.as_deref().unwrap_or_default());
        let named = [
            (&v.host_path, "hostPath"),
            (&v.gce_persistent_disk, "gcePersistentDisk"),
            (&v.aws_elastic_block_store, "awsElasticBlockStore"),
            (&v.git_repo, "gitRepo"),
            (&v.nfs, "nfs"),
            (&v.iscsi, "iscsi"),
            (&v.glusterfs, "glusterfs"),
            (&v.rbd, "rbd"),
            (&v.flex_volume, "flexVolume"),
            (&v.cinder, "cinder"),
            (&v.cephfs, "cephfs"),
            (&v.flocker, "flocker"),
            (&v.fc, "fc"),
            (&v.azure_file, "azureFile"),
            (&v.vsphere_volume, "vsphereVolume"),
            (&v.quobyte, "quobyte"),
            (&v.azure_disk, "azureDisk"),
            (&v.photon_persistent_disk, "photonPersistentDisk"),
            (&v.portworx_volume, "portworxVolume"),
            (&v.scale_io, "scaleIO"),
            (&v.storageos, "storageos"),
        ];
        let kind = named
            .iter()
            .find(|(source, _)| source.is_some())
            .map_or("unknown", |(_, name)| name);
        types.insert(kind.to_owned());
    }
    if bad.is_empty() {
        return None;
    }
    forbid(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&sorted(&types))
        ),
    )
}

/// Whether `v` sets none of the volume sources (the API server defaults it to `emptyDir`).
fn no_source(v: &Volume) -> bool {
    [
        &v.host_path,
        &v.empty_dir,
        &v.gce_persistent_disk,
        &v.aws_elastic_block_store,
        &v.git_repo,
        &v.secret,
        &v.nfs,
        &v.iscsi,
        &v.glusterfs,
        &v.persistent_volume_claim,
        &v.rbd,
        &v.flex_volume,
        &v.cinder,
        &v.cephfs,
        &v.flocker,
        &v.downward_api,
        &v.fc,
        &v.azure_file,
        &v.config_map,
        &v.vsphere_volume,
        &v.quobyte,
        &v.azure_disk,
        &v.photon_persistent_disk,
        &v.projected,
        &v.portworx_volume,
        &v.scale_io,
        &v.storageos,
        &v.csi,
        &v.ephemeral,
        &v.image,
    ]
    .iter()
    .all(|source| source.is_none())
}

// === check_runAsNonRoot.go ===

pub fn run_as_non_root_1_0(pod: &Pod) -> Outcome {
    let mut setters: Vec<String> = Vec::new();
    let mut pod_non_root = false;
    match pod
        .spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.run_as_non_root)
    {
        Some(false) => setters.push("pod".into()),
        Some(true) => pod_non_root = true,
        None => {}
    }
    let mut explicit: Vec<&str> = Vec::new();
    let mut implicit: Vec<&str> = Vec::new();
    for c in containers(pod.spec) {
        match c
            .security_context
            .as_ref()
            .and_then(|sc| sc.run_as_non_root)
        {
            Some(false) => explicit.push(c.name()),
            Some(true) => {}
            None if !pod_non_root => implicit.push(c.name()),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return forbid(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    if !implicit.is_empty() {
        return forbid(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

pub fn run_as_non_root_1_35(pod: &Pod) -> Outcome {
    if user_namespace(pod.spec) {
        return None;
    }
    run_as_non_root_1_0(pod)
}

// === check_runAsUser.go ===

pub fn run_as_user_1_23(pod: &Pod) -> Outcome {
    let mut setters: Vec<String> = Vec::new();
    if pod
        .spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.run_as_user)
        == Some(0)
    {
        setters.push("pod".into());
    }
    let explicit: Vec<&str> = containers(pod.spec)
        .filter(|c| c.security_context.as_ref().and_then(|sc| sc.run_as_user) == Some(0))
        .map(Container::name)
        .collect();
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if setters.is_empty() {
        return None;
    }
    forbid(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters.join(" and ")),
    )
}

pub fn run_as_user_1_35(pod: &Pod) -> Outcome {
    if user_namespace(pod.spec) {
        return None;
    }
    run_as_user_1_23(pod)
}

// === check_seccompProfile_restricted.go ===

pub fn seccomp_profile_restricted_1_19(pod: &Pod) -> Outcome {
    let mut setters: Vec<String> = Vec::new();
    let mut values: BTreeSet<String> = BTreeSet::new();
    let mut pod_set = false;
    if let Some(profile) = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.seccomp_profile.as_ref())
    {
        if valid_seccomp_type(seccomp_type(profile)) {
            pod_set = true;
        } else {
            setters.push("pod".into());
            values.insert(seccomp_type(profile).into());
        }
    }
    let mut explicit: Vec<&str> = Vec::new();
    let mut implicit: Vec<&str> = Vec::new();
    for c in containers(pod.spec) {
        match c
            .security_context
            .as_ref()
            .and_then(|sc| sc.seccomp_profile.as_ref())
        {
            Some(profile) if !valid_seccomp_type(seccomp_type(profile)) => {
                explicit.push(c.name());
                values.insert(seccomp_type(profile).into());
            }
            Some(_) => {}
            None if !pod_set => implicit.push(c.name()),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return forbid(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&sorted(&values))
            ),
        );
    }
    if !implicit.is_empty() {
        return forbid(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

pub fn seccomp_profile_restricted_1_25(pod: &Pod) -> Outcome {
    if windows(pod.spec) {
        return None;
    }
    seccomp_profile_restricted_1_19(pod)
}
