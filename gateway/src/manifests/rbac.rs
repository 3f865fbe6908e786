//! Owns wasmgate's identity in the cluster: its ServiceAccount and its least-privilege RBAC: for
//! `serve --register` a ClusterRole and its binding for the gateway's own webhook
//! configurations by name, a Role and its binding for its own Lease; for the policy file's
//! `context:` grants a ClusterRole and its binding with `get`, `list`, `watch` on exactly the
//! granted resources (none without grants); for `background: true` policies a ClusterRole and its
//! binding for the OpenReports objects. Must not grant anything else, nor render workloads.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::{Options, Service};
use crate::config::Config;

/// The Lease `serve --register` elects its writer on: `<name>-register` in the Service's
/// namespace (`crate::register` uses the same name).
pub fn lease_name(service: &Service) -> String {
    format!("{}-register", service.name)
}

/// The ServiceAccount the StatefulSet's Pods run as. Its token is mounted: `serve --register`
/// writes the gateway's own webhook configurations and Lease with it, and [`rbac`] grants it
/// nothing else.
pub fn service_account(options: &Options) -> Value {
    let Service {
        namespace, name, ..
    } = &options.service;
    yaml!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": (name.as_str()),
            "namespace": (namespace.as_str()),
            "labels": (options.labels()),
        },
    })
}

/// ClusterRole + ClusterRoleBinding (its webhook configurations), Role + RoleBinding (its
/// Lease), and, when a policy of `config` has `context:` grants, [`context_rbac`]; all bound to
/// the ServiceAccount `options.service.name`.
pub fn rbac(options: &Options, config: &Config) -> Vec<Value> {
    let mut docs = register_rbac(options);
    docs.extend(context_rbac(options, config));
    docs.extend(reports_rbac(options, config));
    docs
}

/// The ClusterRole `<namespace>-<service>-reports` and its binding when a policy of `config`
/// has `background: true`: the OpenReports objects the leader writes (`openreports.io`
/// `reports` in every namespace, `clusterreports`); nothing without background policies.
pub fn reports_rbac(options: &Options, config: &Config) -> Vec<Value> {
    if !config.entries.iter().any(|e| e.entry.background) {
        return Vec::new();
    }
    cluster_role(
        options,
        "reports",
        yaml!([{
            "apiGroups": ["openreports.io"],
            "resources": ["reports", "clusterreports"],
            "verbs": ["get", "list", "create", "patch", "delete"],
        }]),
    )
}

/// The ClusterRole `<namespace>-<service>-context` and its binding: `get`, `list`, `watch` on
/// every resource a `context:` entry of `config` grants, one rule per API group (its resources
/// sorted), nothing else; no objects at all when no policy has `context:`.
///
/// Cluster-wide even for grants limited to namespaces: `serve` feeds each granted resource's
/// cache from one watch over all namespaces (the namespaces limit what a policy's lookups see,
/// not what the gateway reads), and its access review at load asks for `list` and `watch` in
/// all namespaces. Namespaced Roles would make the gateway refuse its own policy file.
pub fn context_rbac(options: &Options, config: &Config) -> Vec<Value> {
    let mut by_group: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for resolved in &config.entries {
        for grant in resolved.entry.watched() {
            by_group
                .entry(grant.api_group)
                .or_default()
                .insert(grant.resource);
        }
    }
    if by_group.is_empty() {
        return Vec::new();
    }
    let rules: Vec<Value> = by_group
        .iter()
        .map(|(group, resources)| {
            yaml!({
                "apiGroups": [(group.as_str())],
                "resources": (resources.iter().map(|r| Value::from(r.as_str())).collect::<Vec<_>>()),
                "verbs": ["get", "list", "watch"],
            })
        })
        .collect();
    cluster_role(options, "context", Value::Sequence(rules))
}

fn register_rbac(options: &Options) -> Vec<Value> {
    let Service {
        namespace, name, ..
    } = &options.service;
    let ns = namespace.as_str();
    let labels = options.labels();
    let configs = options.name.as_str();
    let lease = lease_name(&options.service);
    let subject = yaml!([{ "kind": "ServiceAccount", "name": (name.as_str()), "namespace": ns }]);
    let mut docs = cluster_role(
        options,
        "register",
        yaml!([
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
                "resourceNames": [configs],
                "verbs": ["get", "patch", "delete"],
            },
            // The first server-side apply creates the object: RBAC cannot restrict a
            // create by name (the name is in the body), so this rule has no resourceNames.
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
                "verbs": ["create"],
            },
        ]),
    );
    docs.extend([
        yaml!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {
                "name": (format!("{name}-register")),
                "namespace": ns,
                "labels": (labels.clone()),
            },
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "resourceNames": [(lease.as_str())],
                    "verbs": ["get", "update"],
                },
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["create"],
                },
            ],
        }),
        yaml!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {
                "name": (format!("{name}-register")),
                "namespace": ns,
                "labels": (labels.clone()),
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": (format!("{name}-register")),
            },
            "subjects": subject,
        }),
    ]);
    docs
}

/// A ClusterRole `<namespace>-<service>-<suffix>` (cluster-scoped names are per installation)
/// with `rules`, and its ClusterRoleBinding to the ServiceAccount `options.service.name`.
fn cluster_role(options: &Options, suffix: &str, rules: Value) -> Vec<Value> {
    let Service {
        namespace, name, ..
    } = &options.service;
    let ns = namespace.as_str();
    let labels = options.labels();
    let cluster_name = format!("{ns}-{name}-{suffix}");
    vec![
        yaml!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": (cluster_name.as_str()), "labels": (labels.clone()) },
            "rules": rules,
        }),
        yaml!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": (cluster_name.as_str()), "labels": labels },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": (cluster_name.as_str()),
            },
            "subjects": [{ "kind": "ServiceAccount", "name": (name.as_str()), "namespace": ns }],
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Value) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn grants_only_its_own_configurations_and_lease() {
        let mut options = Options::new(Service::parse("gw/edge:443").unwrap());
        options.name = "edge-hooks".into();
        let docs: Vec<_> = register_rbac(&options).iter().map(json).collect();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
        );
        let cluster_rules = docs[0]["rules"].as_array().unwrap();
        assert_eq!(docs[0]["metadata"]["name"], "gw-edge-register");
        assert_eq!(
            cluster_rules[0]["resourceNames"],
            serde_json::json!(["edge-hooks"])
        );
        assert_eq!(
            cluster_rules[0]["verbs"],
            serde_json::json!(["get", "patch", "delete"])
        );
        // create cannot be restricted by name: the only rule without resourceNames, and
        // it grants nothing else.
        assert_eq!(cluster_rules[1]["verbs"], serde_json::json!(["create"]));
        assert!(cluster_rules[1].get("resourceNames").is_none());
        let role_rules = docs[2]["rules"].as_array().unwrap();
        assert_eq!(docs[2]["metadata"]["namespace"], "gw");
        assert_eq!(role_rules[0]["resources"], serde_json::json!(["leases"]));
        assert_eq!(
            role_rules[0]["resourceNames"],
            serde_json::json!([lease_name(&options.service)])
        );
        assert_eq!(role_rules[0]["verbs"], serde_json::json!(["get", "update"]));
        assert_eq!(role_rules[1]["verbs"], serde_json::json!(["create"]));
        for binding in [&docs[1], &docs[3]] {
            assert_eq!(
                binding["subjects"],
                serde_json::json!([{"kind": "ServiceAccount", "name": "edge", "namespace": "gw"}])
            );
        }
        // No rule anywhere grants list, watch or a wildcard.
        let text = serde_json::to_string(&docs).unwrap();
        assert!(
            !text.contains("\"list\"") && !text.contains("\"watch\"") && !text.contains("\"*\"")
        );
    }
}
