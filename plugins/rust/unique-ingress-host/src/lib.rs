//! `unique-ingress-host` (validator): no two Ingresses in the cluster claim the same host
//! (`spec.rules[].host`). Reads the other Ingresses through the `cluster` import, so its policy
//! needs the grant `context: [{apiGroup: networking.k8s.io, version: v1, resource: ingresses}]`
//! (metadata-only is not enough: hosts are in the spec). See README.md.

use std::collections::BTreeSet;

use serde::Deserialize;
use wasmgate_sdk::NoSettings;
use wasmgate_sdk::cluster::{self, LookupError};
use wasmgate_sdk::types::GroupVersionResource;
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};

/// The part of an Ingress this plugin reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Ingress {
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metadata {
    name: String,
    namespace: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Spec {
    rules: Vec<Rule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Rule {
    host: Option<String>,
}

impl Ingress {
    fn hosts(&self) -> BTreeSet<&str> {
        self.spec
            .rules
            .iter()
            .filter_map(|r| r.host.as_deref())
            .filter(|h| !h.is_empty())
            .collect()
    }
}

struct UniqueIngressHost;

impl Validator for UniqueIngressHost {
    type Settings = NoSettings;

    fn validate(request: AdmissionRequest, _settings: NoSettings) -> Result<Verdict, String> {
        let kind = &request.kind;
        if (kind.group.as_str(), kind.kind.as_str()) != ("networking.k8s.io", "Ingress") {
            return Ok(Verdict::allow());
        }
        let Some(ingress) = request.object_as::<Ingress>()? else {
            return Ok(Verdict::allow()); // DELETE frees its hosts.
        };
        let hosts = ingress.hosts();
        if hosts.is_empty() {
            return Ok(Verdict::allow());
        }
        let resource = GroupVersionResource {
            group: "networking.k8s.io".into(),
            version: "v1".into(),
            resource: "ingresses".into(),
        };
        let others = cluster::list(&resource, "", "").map_err(|e| match e {
            LookupError::Denied(why) => format!("cannot read Ingresses: {why}"),
            LookupError::NotReady => "the gateway's Ingress cache has not synced yet".into(),
            LookupError::Invalid(why) | LookupError::TooLarge(why) => {
                format!("cannot list Ingresses: {why}")
            }
        })?;
        let namespace = &request.namespace;
        let name = &request.name;
        let mut taken = Vec::new();
        for text in &others {
            let other: Ingress = wasmgate_sdk::serde_json::from_str(text)
                .map_err(|e| format!("an Ingress from the cache is not JSON: {e}"))?;
            // The object being updated does not conflict with its own earlier version.
            if &other.metadata.namespace == namespace && &other.metadata.name == name {
                continue;
            }
            for host in other.hosts().intersection(&hosts) {
                taken.push(format!(
                    "host {host:?} is already claimed by Ingress {}/{}",
                    other.metadata.namespace, other.metadata.name
                ));
            }
        }
        if taken.is_empty() {
            Ok(Verdict::allow())
        } else {
            taken.sort();
            Ok(Verdict::deny(taken.join("; ")))
        }
    }
}

wasmgate_sdk::export_validator!(UniqueIngressHost);
