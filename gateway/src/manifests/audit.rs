//! Owns the API server's side of audit: the audit webhook kubeconfig and the audit Policy
//! derived from the sinks. Must not render webhooks or the objects that run the gateway.

use base64::Engine as _;
use serde_yaml_ng::{Mapping, Value};

use super::{ClientCredentials, ManifestError, Options, bad};
use crate::config::{AuditRule, Config};
use crate::wire::audit::{Level, Stage};

/// The kubeconfig for kube-apiserver's `--audit-webhook-config-file`: the gateway's `/audit`
/// endpoint, its CA, and optionally the client certificate the API server presents.
pub fn audit_kubeconfig(options: &Options) -> Result<Value, ManifestError> {
    options.validate()?;
    let mut cluster = yaml!({ "server": (options.target.endpoint_url("/audit")) });
    if let (Some(ca), Value::Mapping(map)) = (options.ca_b64(), &mut cluster) {
        map.insert("certificate-authority-data".into(), ca.into());
    }
    let mut user = Mapping::new();
    match &options.audit_client {
        None => {}
        Some(ClientCredentials::Files { cert, key }) => {
            user.insert("client-certificate".into(), cert.as_str().into());
            user.insert("client-key".into(), key.as_str().into());
        }
        Some(ClientCredentials::Embedded { cert_pem, key_pem }) => {
            let b64 = &base64::engine::general_purpose::STANDARD;
            user.insert(
                "client-certificate-data".into(),
                b64.encode(cert_pem).into(),
            );
            user.insert("client-key-data".into(), b64.encode(key_pem).into());
        }
    }
    Ok(yaml!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": (options.name.as_str()), "cluster": cluster }],
        "users": [{ "name": "kube-apiserver", "user": (Value::Mapping(user)) }],
        "contexts": [{
            "name": (options.name.as_str()),
            "context": { "cluster": (options.name.as_str()), "user": "kube-apiserver" },
        }],
        "current-context": (options.name.as_str()),
    }))
}

/// Requests the generated audit Policy drops at the API server when no sink wants any of them:
/// the control plane's heartbeats, events, and health probes, which are most of the volume of
/// an idle cluster.
const AUDIT_NOISE: &[Noise] = &[
    Noise::Resource("coordination.k8s.io", "leases"),
    Noise::Resource("", "events"),
    Noise::Resource("events.k8s.io", "events"),
    Noise::Url("/healthz"),
    Noise::Url("/livez"),
    Noise::Url("/readyz"),
];

/// A class of requests: a resource (without subresources) of a group, or the non-resource URLs
/// under a path prefix.
#[derive(Debug, Clone, Copy)]
enum Noise {
    Resource(&'static str, &'static str),
    Url(&'static str),
}

/// The audit Policy for kube-apiserver's `--audit-policy-file`, from the policy file's audit
/// sinks. The gateway routes every event through each sink's own rules and strips it to that
/// sink's level, so this policy only has to produce every event some sink wants, at the highest
/// level any sink wants anything: the noise classes no sink wants are dropped (level `None`),
/// everything else is sent at that level, and the stages every sink omits are omitted.
pub fn audit_policy(config: &Config) -> Result<Value, ManifestError> {
    let sinks = &config.sinks;
    if sinks.is_empty() {
        return Err(bad(format!(
            "{}: no auditSinks, so the API server has nothing to send",
            config.file.display()
        )));
    }
    let top = sinks
        .iter()
        .flat_map(|s| s.entry.rules.iter().map(|r| r.level))
        .max()
        .unwrap_or(Level::None);
    if top == Level::None {
        return Err(bad(format!(
            "{}: every audit sink's rules say None, so the API server has nothing to send",
            config.file.display()
        )));
    }
    let unwanted: Vec<Noise> = AUDIT_NOISE
        .iter()
        .copied()
        .filter(|noise| sinks.iter().all(|s| never_wants(&s.entry.rules, *noise)))
        .collect();
    let mut rules = Vec::new();
    let mut resources: Vec<(&str, Vec<&str>)> = Vec::new();
    for noise in &unwanted {
        if let Noise::Resource(group, resource) = *noise {
            match resources.iter_mut().find(|(g, _)| *g == group) {
                Some((_, list)) => list.push(resource),
                None => resources.push((group, vec![resource])),
            }
        }
    }
    if !resources.is_empty() {
        let resources: Vec<Value> = resources
            .into_iter()
            .map(|(group, list)| yaml!({ "group": group, "resources": list }))
            .collect();
        rules.push(yaml!({ "level": "None", "resources": resources }));
    }
    let urls: Vec<String> = unwanted
        .iter()
        .filter_map(|noise| match noise {
            Noise::Url(prefix) => Some(format!("{prefix}*")),
            Noise::Resource(..) => None,
        })
        .collect();
    if !urls.is_empty() {
        rules.push(yaml!({ "level": "None", "nonResourceURLs": urls }));
    }
    rules.push(yaml!({ "level": (top.as_str()) }));
    // A stage is left out only if every sink leaves it out everywhere.
    let mut omit: Option<Vec<Stage>> = None;
    for sink in sinks {
        let mine = &sink.entry.omit_stages;
        omit = Some(match omit {
            None => mine.clone(),
            Some(all) => all.into_iter().filter(|s| mine.contains(s)).collect(),
        });
    }
    let omit: Vec<Value> = omit
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.as_str().into())
        .collect();
    let omit_managed_fields = sinks.iter().all(|s| {
        s.entry.omit_managed_fields
            && s.entry
                .rules
                .iter()
                .all(|r| r.omit_managed_fields != Some(false))
    });
    let mut policy = yaml!({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
    });
    if let Value::Mapping(map) = &mut policy {
        if !omit.is_empty() {
            map.insert("omitStages".into(), omit.into());
        }
        if omit_managed_fields {
            map.insert("omitManagedFields".into(), true.into());
        }
        map.insert("rules".into(), rules.into());
    }
    Ok(policy)
}

/// Whether a sink with these rules (first match wins, no match is `None`) gives every request
/// of `noise` the level `None`.
fn never_wants(rules: &[AuditRule], noise: Noise) -> bool {
    for rule in rules {
        if !could_match(rule, noise) {
            continue;
        }
        if rule.level != Level::None {
            return false;
        }
        if covers(rule, noise) {
            return true;
        }
    }
    true
}

/// Whether `rule` matches at least one request of `noise`.
fn could_match(rule: &AuditRule, noise: Noise) -> bool {
    match noise {
        Noise::Resource(group, resource) => {
            rule.non_resource_urls.is_empty()
                && (rule.resources.is_empty()
                    || rule.resources.iter().any(|gr| {
                        (gr.group == "*" || gr.group == group)
                            && (gr.resources.is_empty()
                                || gr.resources.iter().any(|r| r == "*" || r == resource))
                    }))
        }
        Noise::Url(prefix) => {
            rule.resources.is_empty()
                && rule.namespaces.is_empty()
                && (rule.non_resource_urls.is_empty()
                    || rule
                        .non_resource_urls
                        .iter()
                        .any(|p| match p.strip_suffix('*') {
                            Some(p) => p.starts_with(prefix) || prefix.starts_with(p),
                            None => p.starts_with(prefix),
                        }))
        }
    }
}

/// Whether `rule` matches every request of `noise`.
fn covers(rule: &AuditRule, noise: Noise) -> bool {
    if !(rule.users.is_empty() && rule.user_groups.is_empty() && rule.verbs.is_empty()) {
        return false;
    }
    match noise {
        Noise::Resource(group, resource) => {
            rule.namespaces.is_empty()
                && rule.non_resource_urls.is_empty()
                && (rule.resources.is_empty()
                    || rule.resources.iter().any(|gr| {
                        (gr.group == "*" || gr.group == group)
                            && gr.resource_names.is_empty()
                            && (gr.resources.is_empty()
                                || gr.resources.iter().any(|r| r == "*" || r == resource))
                    }))
        }
        Noise::Url(prefix) => {
            rule.non_resource_urls.is_empty()
                || rule
                    .non_resource_urls
                    .iter()
                    .any(|p| p.strip_suffix('*').is_some_and(|p| prefix.starts_with(p)))
        }
    }
}
