//! Warnings for rules that are valid but can never match a built-in resource: a singular
//! (`pod`) or a kind (`Pod`) where the API server sends a lowercase plural. Pure text checks on
//! a policy's rules; must not reject a file (a CRD may have any plural).

use crate::config::Rule;

/// The plurals of the built-in resources of the groups Kubernetes serves itself (`kubectl
/// api-resources` on 1.3x), with the group each belongs to.
const BUILT_IN: &[(&str, &str)] = &[
    ("", "bindings"),
    ("", "componentstatuses"),
    ("", "configmaps"),
    ("", "endpoints"),
    ("", "events"),
    ("", "limitranges"),
    ("", "namespaces"),
    ("", "nodes"),
    ("", "persistentvolumeclaims"),
    ("", "persistentvolumes"),
    ("", "pods"),
    ("", "podtemplates"),
    ("", "replicationcontrollers"),
    ("", "resourcequotas"),
    ("", "secrets"),
    ("", "serviceaccounts"),
    ("", "services"),
    ("apps", "controllerrevisions"),
    ("apps", "daemonsets"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "statefulsets"),
    ("batch", "cronjobs"),
    ("batch", "jobs"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "ingressclasses"),
    ("networking.k8s.io", "networkpolicies"),
    ("policy", "poddisruptionbudgets"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("rbac.authorization.k8s.io", "roles"),
    ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "volumeattachments"),
    ("storage.k8s.io", "csidrivers"),
    ("storage.k8s.io", "csinodes"),
    ("coordination.k8s.io", "leases"),
    ("discovery.k8s.io", "endpointslices"),
    ("scheduling.k8s.io", "priorityclasses"),
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("certificates.k8s.io", "certificatesigningrequests"),
];

/// One warning per rule resource that cannot be what the API server sends.
pub fn rule_warnings(rules: &[Rule]) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        for pattern in &rule.resources {
            let resource = pattern.split('/').next().unwrap_or_default();
            if resource == "*" {
                continue;
            }
            let lower = resource.to_ascii_lowercase();
            let plural = BUILT_IN.iter().find(|(_, plural)| {
                *plural == lower
                    || plural.strip_suffix('s') == Some(&lower)
                    || plural.strip_suffix("es") == Some(&lower)
                    || (plural.ends_with("ies")
                        && format!("{}y", &plural[..plural.len() - 3]) == lower)
            });
            let here = format!("rules[{i}].resources {pattern:?}");
            if resource != lower {
                warnings.push(format!(
                    "{here} can never match: resources are lowercase plurals, not kinds{}",
                    plural
                        .map(|(_, p)| format!(" (did you mean {p:?}?)"))
                        .unwrap_or_default()
                ));
            } else if let Some((group, plural)) = plural
                && *plural != lower
            {
                warnings.push(format!(
                    "{here} can never match a built-in resource: the resource is {plural:?} (group {group:?})"
                ));
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(resources: &[&str]) -> Rule {
        serde_yaml_ng::from_str(&format!(
            "{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [{}]}}",
            resources.join(", ")
        ))
        .unwrap()
    }

    #[test]
    fn singulars_and_kinds_are_warned_about() {
        let w = rule_warnings(&[rule(&[
            "pod",
            "Pod",
            "pods",
            "ingress",
            "policy",
            "'*/scale'",
            "widgets",
        ])]);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains(r#"rules[0].resources "pod" can never match a built-in resource: the resource is "pods""#), "{w:?}");
        assert!(w[1].contains(r#""Pod" can never match: resources are lowercase plurals, not kinds (did you mean "pods"?)"#), "{w:?}");
        assert!(
            w[2].contains(r#""ingress""#) && w[2].contains("ingresses"),
            "{w:?}"
        );
        assert!(rule_warnings(&[rule(&["networkpolicies", "pods/status", "'*'"])]).is_empty());
    }
}
