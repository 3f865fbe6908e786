//! Typed, partial views of Kubernetes objects. Deserializing into a view skips every field the
//! view does not name without building it, which inside Wasm is several times faster than
//! parsing the whole object into a [`Value`](serde_json::Value) (measured: a 4.5 KB Pod costs
//! require-labels ~30 µs as a `Value`, a few µs as a view). Use them with
//! `AdmissionRequest::object_view::<view::...>()` when a plugin only reads: that also stops
//! reading after the last member a view names (see [`from_str`]).

use serde::Deserialize;

use crate::k8s::{ContainerList, pod_spec_location};

pub mod containers;
mod partial;
pub mod pod;

pub use partial::from_str;

/// Only `metadata.labels`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Labels {
    metadata: LabelsMeta,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LabelsMeta {
    // A map as the API server always sends it; read leniently so that a malformed value makes
    // the label absent rather than the plugin fail (as the `Value` helpers in `k8s` do).
    labels: Option<serde_json::Value>,
}

impl Labels {
    /// The value of label `key`, if set to a string.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key)?.as_str()
    }
}

/// A workload's identity and every place a pod spec can sit (Pods, pod templates, CronJob job
/// templates, PodTemplates), with only the container fields below.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Workload {
    api_version: String,
    kind: String,
    spec: Option<WorkloadSpec>,
    template: Option<Template>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WorkloadSpec {
    containers: Option<Vec<Container>>,
    init_containers: Option<Vec<Container>>,
    ephemeral_containers: Option<Vec<Container>>,
    template: Option<Template>,
    job_template: Option<JobTemplate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Template {
    spec: Option<PodSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JobTemplate {
    spec: Option<JobSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JobSpec {
    template: Option<Template>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodSpec {
    containers: Option<Vec<Container>>,
    init_containers: Option<Vec<Container>>,
    ephemeral_containers: Option<Vec<Container>>,
}

/// A container: its name and security context.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    /// `name`.
    pub name: String,
    /// `securityContext`.
    pub security_context: Option<SecurityContext>,
}

/// A container's `securityContext`, as far as views read it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SecurityContext {
    /// `privileged`, as written (the API server always sends a boolean; a view does not fail on
    /// anything else).
    pub privileged: Option<serde_json::Value>,
}

impl SecurityContext {
    /// Whether `privileged` is `true`.
    pub fn is_privileged(&self) -> bool {
        self.privileged == Some(serde_json::Value::Bool(true))
    }
}

/// The three container lists of one pod spec.
#[derive(Debug, Clone, Copy)]
pub struct PodSpecView<'a> {
    /// The dotted path of the pod spec, e.g. `spec.template.spec`.
    pub path: &'static str,
    lists: [&'a [Container]; 3],
}

impl<'a> PodSpecView<'a> {
    /// Every container with its list and index, in `containers`, `initContainers`,
    /// `ephemeralContainers` order.
    pub fn containers(&self) -> impl Iterator<Item = (ContainerList, usize, &'a Container)> + '_ {
        ContainerList::ALL
            .into_iter()
            .zip(self.lists)
            .flat_map(|(list, items)| items.iter().enumerate().map(move |(i, c)| (list, i, c)))
    }
}

fn template_spec(template: &Option<Template>) -> Option<&PodSpec> {
    template.as_ref()?.spec.as_ref()
}

fn lists<'a>(
    containers: &'a Option<Vec<Container>>,
    init: &'a Option<Vec<Container>>,
    ephemeral: &'a Option<Vec<Container>>,
) -> [&'a [Container]; 3] {
    [
        containers.as_deref().unwrap_or_default(),
        init.as_deref().unwrap_or_default(),
        ephemeral.as_deref().unwrap_or_default(),
    ]
}

impl Workload {
    /// The object's own API group (from `apiVersion`) and `kind`; empty when absent.
    pub fn own_kind(&self) -> (&str, &str) {
        let group = self
            .api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group);
        (group, &self.kind)
    }

    /// The pod spec of this object, found by its own `apiVersion` and `kind`. Prefer
    /// [`Self::pod_spec_of`] with the request's kind (`AdmissionRequest::admitted_kind`): an
    /// object's own `kind` is the client's word and may be missing.
    pub fn pod_spec(&self) -> Option<PodSpecView<'_>> {
        let (group, kind) = self.own_kind();
        self.pod_spec_of(group, kind)
    }

    /// The pod spec of this object taken as an object of `group` and `kind`, as
    /// [`pod_spec_location`] says; `None` for other kinds or when it is absent.
    pub fn pod_spec_of(&self, group: &str, kind: &str) -> Option<PodSpecView<'_>> {
        let (path, _) = pod_spec_location(group, kind)?;
        let pod = match path {
            "spec" => {
                let s = self.spec.as_ref()?;
                return Some(PodSpecView {
                    path,
                    lists: lists(&s.containers, &s.init_containers, &s.ephemeral_containers),
                });
            }
            "template.spec" => template_spec(&self.template)?,
            "spec.template.spec" => template_spec(&self.spec.as_ref()?.template)?,
            _ => template_spec(
                &self
                    .spec
                    .as_ref()?
                    .job_template
                    .as_ref()?
                    .spec
                    .as_ref()?
                    .template,
            )?,
        };
        Some(PodSpecView {
            path,
            lists: lists(
                &pod.containers,
                &pod.init_containers,
                &pod.ephemeral_containers,
            ),
        })
    }
}
