//! JSON helpers for Kubernetes objects held as `serde_json::Value`: labels and annotations,
//! and discovery of the pod spec (of a Pod, or the pod template of a workload) and its
//! containers, each with its JSON path for messages. No host calls, no panics.

use serde_json::{Map, Value};

// === metadata ===

/// The object's `kind` (`""` when absent).
pub fn kind(object: &Value) -> &str {
    object.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// The API group of the object's `apiVersion` (`""` for the core group, `apps` for `apps/v1`).
pub fn group(object: &Value) -> &str {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Whether `key` is a label key the API server accepts: an optional DNS subdomain prefix
/// (at most 253 characters) and `/`, then a name of at most 63 characters of `[A-Za-z0-9._-]`
/// that starts and ends alphanumeric. `Err` says what is wrong, for a settings message.
pub fn label_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let alnum_ends = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if name.is_empty() || name.len() > 63 {
        return Err("is not a label key: the name must be 1-63 characters");
    }
    if !alnum_ends(name)
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(
            "is not a label key: the name must be alphanumerics, '-', '_' or '.', alphanumeric at both ends",
        );
    }
    if let Some(prefix) = prefix {
        let dns = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && alnum_ends(part)
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !dns {
            return Err("is not a label key: the prefix must be a lowercase DNS subdomain");
        }
    }
    Ok(())
}

/// `metadata.labels`, when present and an object.
pub fn labels(object: &Value) -> Option<&Map<String, Value>> {
    object.pointer("/metadata/labels")?.as_object()
}

/// The value of label `key`, when present and a string.
pub fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    labels(object)?.get(key)?.as_str()
}

/// `metadata.annotations`, when present and an object.
pub fn annotations(object: &Value) -> Option<&Map<String, Value>> {
    object.pointer("/metadata/annotations")?.as_object()
}

/// The value of annotation `key`, when present and a string.
pub fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    annotations(object)?.get(key)?.as_str()
}

/// Set label `key` to `value`, creating `metadata` and `metadata.labels` when missing.
/// Returns whether the object changed. `Err` when one of them is not a JSON object.
pub fn set_label(object: &mut Value, key: &str, value: &str) -> Result<bool, String> {
    set_string(metadata_map_mut(object, "labels")?, key, value)
}

/// Set annotation `key` to `value`, creating `metadata` and `metadata.annotations` when
/// missing. Returns whether the object changed. `Err` when one of them is not a JSON object.
pub fn set_annotation(object: &mut Value, key: &str, value: &str) -> Result<bool, String> {
    set_string(metadata_map_mut(object, "annotations")?, key, value)
}

fn set_string(map: &mut Map<String, Value>, key: &str, value: &str) -> Result<bool, String> {
    if map.get(key).and_then(Value::as_str) == Some(value) {
        return Ok(false);
    }
    map.insert(key.to_owned(), Value::from(value));
    Ok(true)
}

/// `metadata.<field>` as a mutable map, creating it (and `metadata`) when missing or null.
fn metadata_map_mut<'a>(
    object: &'a mut Value,
    field: &str,
) -> Result<&'a mut Map<String, Value>, String> {
    let root = object
        .as_object_mut()
        .ok_or("the object is not a JSON object")?;
    let metadata = child_map_mut(root, "metadata").ok_or("metadata is not a JSON object")?;
    child_map_mut(metadata, field).ok_or_else(|| format!("metadata.{field} is not a JSON object"))
}

/// `parent[field]` as a mutable map, created when missing or null; `None` when it is something
/// else.
fn child_map_mut<'a>(
    parent: &'a mut Map<String, Value>,
    field: &str,
) -> Option<&'a mut Map<String, Value>> {
    let child = parent.entry(field).or_insert(Value::Null);
    if child.is_null() {
        *child = Value::Object(Map::new());
    }
    child.as_object_mut()
}

// === pod specs ===

/// Where the pod spec sits in an object of `group` and `kind`, as a dotted path for messages
/// and a JSON pointer: `spec` for a Pod, `spec.template.spec` for Deployments, StatefulSets,
/// DaemonSets, ReplicaSets, Jobs and ReplicationControllers, `template.spec` for a
/// PodTemplate, `spec.jobTemplate.spec.template.spec` for CronJobs. `None` for other kinds.
pub fn pod_spec_location(group: &str, kind: &str) -> Option<(&'static str, &'static str)> {
    const POD: (&str, &str) = ("spec", "/spec");
    const TEMPLATE: (&str, &str) = ("spec.template.spec", "/spec/template/spec");
    const POD_TEMPLATE: (&str, &str) = ("template.spec", "/template/spec");
    const CRON_JOB: (&str, &str) = (
        "spec.jobTemplate.spec.template.spec",
        "/spec/jobTemplate/spec/template/spec",
    );
    match (group, kind) {
        ("", "Pod") => Some(POD),
        ("", "PodTemplate") => Some(POD_TEMPLATE),
        ("", "ReplicationController") => Some(TEMPLATE),
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some(TEMPLATE)
        }
        ("batch", "Job") => Some(TEMPLATE),
        ("batch", "CronJob") => Some(CRON_JOB),
        _ => None,
    }
}

/// The object's pod spec and its dotted path (e.g. `spec.template.spec`), found by the
/// object's own `apiVersion` and `kind`. `None` for other kinds or when the spec is absent.
pub fn pod_spec(object: &Value) -> Option<(&'static str, &Value)> {
    let (path, pointer) = pod_spec_location(group(object), kind(object))?;
    Some((path, object.pointer(pointer)?))
}

/// [`pod_spec`], mutably.
pub fn pod_spec_mut(object: &mut Value) -> Option<(&'static str, &mut Value)> {
    let (group, kind) = (group(object).to_owned(), kind(object).to_owned());
    pod_spec_mut_of(object, &group, &kind)
}

/// The pod spec of `object` taken as an object of `group` and `kind` (from the request:
/// `AdmissionRequest::kind_of`), mutably.
pub fn pod_spec_mut_of<'a>(
    object: &'a mut Value,
    group: &str,
    kind: &str,
) -> Option<(&'static str, &'a mut Value)> {
    let (path, pointer) = pod_spec_location(group, kind)?;
    Some((path, object.pointer_mut(pointer)?))
}

// === containers ===

/// The three container lists of a pod spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerList {
    /// `containers`
    Containers,
    /// `initContainers`
    InitContainers,
    /// `ephemeralContainers`
    EphemeralContainers,
}

impl ContainerList {
    /// All three, in the order the helpers visit them.
    pub const ALL: [Self; 3] = [
        Self::Containers,
        Self::InitContainers,
        Self::EphemeralContainers,
    ];

    /// The pod spec field: `containers`, `initContainers` or `ephemeralContainers`.
    pub fn field(self) -> &'static str {
        match self {
            Self::Containers => "containers",
            Self::InitContainers => "initContainers",
            Self::EphemeralContainers => "ephemeralContainers",
        }
    }
}

/// One container of a pod spec.
#[derive(Clone, Debug)]
pub struct Container<'a> {
    /// Its dotted path in the object, e.g. `spec.template.spec.initContainers[1]`.
    pub path: String,
    /// The list it is in.
    pub list: ContainerList,
    /// Its index in that list.
    pub index: usize,
    /// The container object.
    pub value: &'a Value,
}

impl<'a> Container<'a> {
    /// Its `name` (`""` when absent).
    pub fn name(&self) -> &'a str {
        self.value.get("name").and_then(Value::as_str).unwrap_or("")
    }
}

/// One container of a pod spec, mutably.
#[derive(Debug)]
pub struct ContainerMut<'a> {
    /// Its dotted path in the object, e.g. `spec.template.spec.initContainers[1]`.
    pub path: String,
    /// The list it is in.
    pub list: ContainerList,
    /// Its index in that list.
    pub index: usize,
    /// The container object.
    pub value: &'a mut Value,
}

impl ContainerMut<'_> {
    /// Its `name` (`""` when absent).
    pub fn name(&self) -> &str {
        self.value.get("name").and_then(Value::as_str).unwrap_or("")
    }

    /// The container's fields, or `Err` naming its path when it is not a JSON object.
    pub fn fields_mut(&mut self) -> Result<&mut Map<String, Value>, String> {
        let path = &self.path;
        self.value
            .as_object_mut()
            .ok_or_else(|| format!("{path} is not a JSON object"))
    }
}

/// Every container of the object's pod spec ([`pod_spec`]): `containers`, then
/// `initContainers`, then `ephemeralContainers`, each in list order. Empty for other kinds.
pub fn containers(object: &Value) -> impl Iterator<Item = Container<'_>> {
    pod_spec(object)
        .into_iter()
        .flat_map(|(path, spec)| pod_containers(path, spec))
}

/// [`containers`], mutably.
pub fn containers_mut(object: &mut Value) -> impl Iterator<Item = ContainerMut<'_>> {
    pod_spec_mut(object)
        .into_iter()
        .flat_map(|(path, spec)| pod_containers_mut(path, spec))
}

/// [`containers_mut`] of `object` taken as an object of `group` and `kind`.
pub fn containers_mut_of<'a>(
    object: &'a mut Value,
    group: &str,
    kind: &str,
) -> impl Iterator<Item = ContainerMut<'a>> {
    pod_spec_mut_of(object, group, kind)
        .into_iter()
        .flat_map(|(path, spec)| pod_containers_mut(path, spec))
}

/// Every container of the pod spec `spec` found at dotted path `pod_path`, in the order of
/// [`containers`]. Lists that are absent or not arrays are skipped.
pub fn pod_containers<'a>(
    pod_path: &'a str,
    spec: &'a Value,
) -> impl Iterator<Item = Container<'a>> {
    ContainerList::ALL.into_iter().flat_map(move |list| {
        let items = spec.get(list.field()).and_then(Value::as_array);
        items
            .into_iter()
            .flatten()
            .enumerate()
            .map(move |(index, value)| Container {
                path: container_path(pod_path, list, index),
                list,
                index,
                value,
            })
    })
}

/// [`pod_containers`], mutably.
pub fn pod_containers_mut<'a>(
    pod_path: &'a str,
    spec: &'a mut Value,
) -> impl Iterator<Item = ContainerMut<'a>> {
    // A map cannot lend three fields mutably by key at once, so sort its entries into slots.
    let mut slots: [Option<&'a mut Vec<Value>>; 3] = [None, None, None];
    for (field, items) in spec.as_object_mut().into_iter().flatten() {
        if let Some(slot) = ContainerList::ALL.iter().position(|l| l.field() == field) {
            slots[slot] = items.as_array_mut();
        }
    }
    ContainerList::ALL
        .into_iter()
        .zip(slots)
        .flat_map(move |(list, items)| {
            items
                .into_iter()
                .flatten()
                .enumerate()
                .map(move |(index, value)| ContainerMut {
                    path: container_path(pod_path, list, index),
                    list,
                    index,
                    value,
                })
        })
}

fn container_path(pod_path: &str, list: ContainerList, index: usize) -> String {
    format!("{pod_path}.{}[{index}]", list.field())
}

#[cfg(test)]
mod tests;
