//! `namespace-labels` (initializer): copies chosen labels of a Pod's Namespace onto the Pod.
//! Reads the Namespace through the `cluster` import, so its policy needs the grant
//! `context: [{apiGroup: "", version: v1, resource: namespaces, metadataOnly: true}]`. See
//! README.md.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::cluster::{self, LookupError};
use wasmgate_sdk::initializer::{AdmissionRequest, Initializer, Mutation};
use wasmgate_sdk::serde_json::json;
use wasmgate_sdk::types::GroupVersionResource;
use wasmgate_sdk::{Value, json_pointer};

/// `{"labels": ["team", "cost-center"], "overwrite": false}`: `labels` required (at least one
/// label key); `overwrite` (default false) also replaces a value the Pod already has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    labels: Vec<String>,
    #[serde(default)]
    overwrite: bool,
}

/// The labels of an object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Labeled {
    metadata: Metadata,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metadata {
    labels: Option<BTreeMap<String, Value>>,
}

struct NamespaceLabels;

impl Initializer for NamespaceLabels {
    type Settings = Settings;

    fn initialize(request: AdmissionRequest, settings: Settings) -> Result<Mutation, String> {
        let kind = &request.kind;
        if (kind.group.as_str(), kind.kind.as_str()) != ("", "Pod") || request.namespace.is_empty()
        {
            return Ok(Mutation::unchanged());
        }
        let Some(pod) = request.object_view::<Labeled>()? else {
            return Ok(Mutation::unchanged()); // DELETE
        };
        let namespaces = GroupVersionResource {
            group: String::new(),
            version: "v1".into(),
            resource: "namespaces".into(),
        };
        let found = cluster::get(&namespaces, "", &request.namespace).map_err(|e| match e {
            LookupError::Denied(why) => format!("cannot read Namespaces: {why}"),
            LookupError::NotReady => "the gateway's Namespace cache has not synced yet".into(),
            LookupError::Invalid(why) | LookupError::TooLarge(why) => {
                format!("cannot read Namespace {:?}: {why}", request.namespace)
            }
        })?;
        // A Pod in a Namespace that does not exist is refused by the API server anyway.
        let Some(text) = found else {
            return Ok(Mutation::unchanged());
        };
        let namespace: Labeled = wasmgate_sdk::serde_json::from_str(&text)
            .map_err(|e| format!("the Namespace from the cache is not JSON: {e}"))?;
        let from = namespace.metadata.labels.unwrap_or_default();
        let has = pod.metadata.labels.as_ref();
        let mut copy = BTreeMap::new();
        for key in &settings.labels {
            let Some(Value::String(value)) = from.get(key) else {
                continue;
            };
            let current = has.and_then(|l| l.get(key));
            let set = match current {
                None => true,
                Some(v) => settings.overwrite && v.as_str() != Some(value),
            };
            if set {
                copy.insert(key.as_str(), value.as_str());
            }
        }
        if copy.is_empty() {
            return Ok(Mutation::unchanged());
        }
        let operations: Vec<Value> = if has.is_none() {
            vec![json!({"op": "add", "path": "/metadata/labels", "value": copy})]
        } else {
            copy.iter()
                .map(|(k, v)| {
                    json!({"op": "add", "path": json_pointer(["metadata", "labels", k]), "value": v})
                })
                .collect()
        };
        Ok(Mutation::patched(&Value::Array(operations)))
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if settings.labels.is_empty() {
            return Err("labels: list at least one label key".into());
        }
        for (i, key) in settings.labels.iter().enumerate() {
            wasmgate_sdk::k8s::label_key(key)
                .map_err(|why| format!("labels[{i}]: {key:?} {why}"))?;
        }
        Ok(())
    }
}

wasmgate_sdk::export_initializer!(NamespaceLabels);
