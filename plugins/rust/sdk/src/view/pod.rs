//! The pod fields that Pod Security decisions read (the `k8s.io/pod-security-admission`
//! checks): a pod's `metadata.annotations` and the security-relevant part of its `spec`, for a
//! Pod and for the pod template of every workload kind. Deserializing skips every other field
//! without building it. Absent and `null` read alike (`None`), as Go's pointer fields do.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// A Pod: `metadata` and `spec`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Pod {
    /// `metadata`.
    pub metadata: Option<PodMeta>,
    /// `spec`.
    pub spec: Option<PodSpec>,
}

/// A workload whose pod template is `spec.template` (Deployments, StatefulSets, DaemonSets,
/// ReplicaSets, Jobs, ReplicationControllers).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Templated {
    /// `spec`, holding `template`.
    pub spec: Option<JobSpec>,
}

/// A CronJob: its pod template is `spec.jobTemplate.spec.template`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CronJob {
    /// `spec`, holding `jobTemplate`.
    pub spec: Option<CronJobSpec>,
}

/// A CronJob's `spec`, as far as `jobTemplate`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CronJobSpec {
    /// `jobTemplate`.
    pub job_template: Option<JobTemplate>,
}

/// A PodTemplate object: its pod template is `template`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PodTemplateObject {
    /// `template`.
    pub template: Option<PodTemplate>,
}

/// A CronJob's `spec.jobTemplate`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobTemplate {
    /// `spec`, holding `template`.
    pub spec: Option<JobSpec>,
}

/// A Job spec, as far as its pod template.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobSpec {
    /// `template`.
    pub template: Option<PodTemplate>,
}

/// A pod template: `metadata` and `spec`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PodTemplate {
    /// `metadata`.
    pub metadata: Option<PodMeta>,
    /// `spec`.
    pub spec: Option<PodSpec>,
}

/// `metadata`, as far as `annotations`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PodMeta {
    /// `annotations`.
    pub annotations: Option<BTreeMap<String, String>>,
}

impl PodMeta {
    /// The value of annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// A pod spec, as far as Pod Security reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    /// `hostNetwork`.
    pub host_network: Option<bool>,
    /// `hostPID`.
    #[serde(rename = "hostPID")]
    pub host_pid: Option<bool>,
    /// `hostIPC`.
    #[serde(rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    /// `hostUsers`.
    pub host_users: Option<bool>,
    /// `os`.
    pub os: Option<PodOs>,
    /// `runtimeClassName`.
    pub runtime_class_name: Option<String>,
    /// `securityContext`.
    pub security_context: Option<PodSecurityContext>,
    /// `containers`.
    pub containers: Option<Vec<Container>>,
    /// `initContainers`.
    pub init_containers: Option<Vec<Container>>,
    /// `ephemeralContainers`.
    pub ephemeral_containers: Option<Vec<Container>>,
    /// `volumes`.
    pub volumes: Option<Vec<Volume>>,
}

/// `spec.os`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PodOs {
    /// `name`: `linux` or `windows`.
    pub name: Option<String>,
}

/// `spec.securityContext`, as far as Pod Security reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSecurityContext {
    /// `runAsUser`.
    pub run_as_user: Option<i64>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<bool>,
    /// `seLinuxOptions`.
    pub se_linux_options: Option<SeLinuxOptions>,
    /// `seccompProfile`.
    pub seccomp_profile: Option<Profile>,
    /// `appArmorProfile`.
    pub app_armor_profile: Option<Profile>,
    /// `windowsOptions`.
    pub windows_options: Option<WindowsOptions>,
    /// `sysctls`.
    pub sysctls: Option<Vec<Sysctl>>,
}

/// A container (of any of the three lists), as far as Pod Security reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    /// `name`.
    pub name: Option<String>,
    /// `image`.
    pub image: Option<String>,
    /// `ports`.
    pub ports: Option<Vec<ContainerPort>>,
    /// `securityContext`.
    pub security_context: Option<SecurityContext>,
    /// `livenessProbe`.
    pub liveness_probe: Option<Handler>,
    /// `readinessProbe`.
    pub readiness_probe: Option<Handler>,
    /// `startupProbe`.
    pub startup_probe: Option<Handler>,
    /// `lifecycle`.
    pub lifecycle: Option<Lifecycle>,
}

impl Container {
    /// `name`, `""` when absent.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// A container port, as far as `hostPort`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerPort {
    /// `hostPort`.
    pub host_port: Option<i32>,
}

/// A container's `securityContext`, as far as Pod Security reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SecurityContext {
    /// `privileged`.
    pub privileged: Option<bool>,
    /// `allowPrivilegeEscalation`.
    pub allow_privilege_escalation: Option<bool>,
    /// `capabilities`.
    pub capabilities: Option<Capabilities>,
    /// `procMount`.
    pub proc_mount: Option<String>,
    /// `runAsUser`.
    pub run_as_user: Option<i64>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<bool>,
    /// `seLinuxOptions`.
    pub se_linux_options: Option<SeLinuxOptions>,
    /// `seccompProfile`.
    pub seccomp_profile: Option<Profile>,
    /// `appArmorProfile`.
    pub app_armor_profile: Option<Profile>,
    /// `windowsOptions`.
    pub windows_options: Option<WindowsOptions>,
}

/// `capabilities`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// `add`.
    pub add: Option<Vec<String>>,
    /// `drop`.
    pub drop: Option<Vec<String>>,
}

/// `seLinuxOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SeLinuxOptions {
    /// `user`.
    pub user: Option<String>,
    /// `role`.
    pub role: Option<String>,
    /// `type`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

/// A `seccompProfile` or `appArmorProfile`, as far as its `type`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// `type`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

/// `windowsOptions`, as far as `hostProcess`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WindowsOptions {
    /// `hostProcess`.
    pub host_process: Option<bool>,
}

/// A sysctl, as far as its `name`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Sysctl {
    /// `name`.
    pub name: Option<String>,
}

/// A probe or lifecycle handler, as far as the hosts of `httpGet` and `tcpSocket`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Handler {
    /// `httpGet`.
    pub http_get: Option<HostField>,
    /// `tcpSocket`.
    pub tcp_socket: Option<HostField>,
}

/// An `httpGet` or `tcpSocket` action, as far as `host`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HostField {
    /// `host`.
    pub host: Option<String>,
}

/// A container's `lifecycle`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Lifecycle {
    /// `postStart`.
    pub post_start: Option<Handler>,
    /// `preStop`.
    pub pre_stop: Option<Handler>,
}

/// A pod volume: its name and which source it sets (each source's content is skipped).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(missing_docs)] // One field per `VolumeSource` member, named as in the API.
pub struct Volume {
    pub name: Option<String>,
    pub host_path: Option<IgnoredAny>,
    pub empty_dir: Option<IgnoredAny>,
    pub gce_persistent_disk: Option<IgnoredAny>,
    pub aws_elastic_block_store: Option<IgnoredAny>,
    pub git_repo: Option<IgnoredAny>,
    pub secret: Option<IgnoredAny>,
    pub nfs: Option<IgnoredAny>,
    pub iscsi: Option<IgnoredAny>,
    pub glusterfs: Option<IgnoredAny>,
    pub persistent_volume_claim: Option<IgnoredAny>,
    pub rbd: Option<IgnoredAny>,
    pub flex_volume: Option<IgnoredAny>,
    pub cinder: Option<IgnoredAny>,
    pub cephfs: Option<IgnoredAny>,
    pub flocker: Option<IgnoredAny>,
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<IgnoredAny>,
    pub fc: Option<IgnoredAny>,
    pub azure_file: Option<IgnoredAny>,
    pub config_map: Option<IgnoredAny>,
    pub vsphere_volume: Option<IgnoredAny>,
    pub quobyte: Option<IgnoredAny>,
    pub azure_disk: Option<IgnoredAny>,
    pub photon_persistent_disk: Option<IgnoredAny>,
    pub projected: Option<IgnoredAny>,
    pub portworx_volume: Option<IgnoredAny>,
    #[serde(rename = "scaleIO")]
    pub scale_io: Option<IgnoredAny>,
    pub storageos: Option<IgnoredAny>,
    pub csi: Option<IgnoredAny>,
    pub ephemeral: Option<IgnoredAny>,
    pub image: Option<IgnoredAny>,
}

/// The pod of an object: its metadata and spec, either possibly absent.
#[derive(Debug, Default)]
pub struct PodParts {
    /// The pod's (or pod template's) `metadata`.
    pub metadata: Option<PodMeta>,
    /// The pod spec.
    pub spec: Option<PodSpec>,
}

impl From<PodTemplate> for PodParts {
    fn from(template: PodTemplate) -> Self {
        Self {
            metadata: template.metadata,
            spec: template.spec,
        }
    }
}

/// Reads the pod of `json`, an object of `group` and `kind`, wherever
/// [`crate::k8s::pod_spec_location`] places it, reading nothing else. `Ok(None)` for kinds
/// without a pod, and when the template holding the pod is absent; `Err` when the JSON does not
/// have the shape of such an object.
pub fn pod_of(group: &str, kind: &str, json: &str) -> Result<Option<PodParts>, serde_json::Error> {
    let Some((path, _)) = crate::k8s::pod_spec_location(group, kind) else {
        return Ok(None);
    };
    Ok(match path {
        "spec" => {
            let pod: Pod = serde_json::from_str(json)?;
            Some(PodParts {
                metadata: pod.metadata,
                spec: pod.spec,
            })
        }
        "template.spec" => serde_json::from_str::<PodTemplateObject>(json)?
            .template
            .map(PodParts::from),
        "spec.template.spec" => serde_json::from_str::<Templated>(json)?
            .spec
            .and_then(|spec| spec.template)
            .map(PodParts::from),
        _ => serde_json::from_str::<CronJob>(json)?
            .spec
            .and_then(|spec| spec.job_template)
            .and_then(|job| job.spec)
            .and_then(|spec| spec.template)
            .map(PodParts::from),
    })
}
