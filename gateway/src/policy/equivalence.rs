//! Whether policies can share one webhook (`wasmgate manifests --aggregate`) given how the API
//! server matches with `matchPolicy: Equivalent`. Pure decisions on validated entries.
//!
//! Upstream (`apiserver/pkg/admission/plugin/webhook/generic/webhook.go`, `ShouldCallHook`): a
//! webhook whose rules match the request's resource gets it as it is; otherwise the API server
//! looks for an equivalent resource (another version of the same resource, or the same
//! resource in another group: `events` in the core group and `events.k8s.io`) that the rules
//! match, and sends the request converted to that version. One webhook gets one version. So
//! where per-policy webhooks would each get the request in the version they cover, one
//! aggregated webhook gets it in one version only, and a policy covering another version of
//! the same resource would be skipped. Such a set cannot be aggregated.

use std::collections::BTreeSet;

use crate::config::{PolicyEntry, Rule};

/// Resources the API server serves in more than one group under one storage (equivalent by
/// `EquivalentResourceMapper`), as of Kubernetes 1.36: only Events.
const CROSS_GROUP_EQUIVALENTS: &[(&str, &[&str])] = &[("events", &["", "events.k8s.io"])];

/// Built-in groups that serve every resource in one version only (Kubernetes 1.36, beta APIs
/// off by default): in them, rules that name different versions cannot see different
/// conversions of one request.
const SINGLE_VERSION_GROUPS: &[&str] =
    &["", "apps", "batch", "policy", "rbac.authorization.k8s.io"];

/// Why `entries` (policies of one kind) cannot be served by one webhook, or `None` when they
/// can: two policies whose rules cover the same resource (with overlapping operations) in
/// different groups or versions.
pub fn aggregation_conflict(entries: &[&PolicyEntry]) -> Option<String> {
    for (i, a) in entries.iter().enumerate() {
        for b in &entries[i + 1..] {
            for ra in &a.rules {
                for rb in &b.rules {
                    if let Some(resource) = conflict(ra, rb) {
                        return Some(format!(
                            "policies {:?} and {:?} cover {resource} in different API groups or versions \
                             ({} and {}); with matchPolicy: Equivalent the API server sends one webhook a \
                             request in one version only, so one of them would be skipped: register them \
                             without --aggregate (one webhook per policy), or give them the same \
                             apiGroups and apiVersions",
                            a.name,
                            b.name,
                            coverage(ra),
                            coverage(rb),
                        ));
                    }
                }
            }
        }
    }
    None
}

/// The resource two rules both cover under different groups or versions, if any.
fn conflict(a: &Rule, b: &Rule) -> Option<String> {
    let ops_overlap = a
        .operations
        .iter()
        .any(|o| o == "*" || b.operations.contains(o))
        || b.operations.iter().any(|o| o == "*");
    if !ops_overlap {
        return None;
    }
    for ra in &a.resources {
        for rb in &b.resources {
            let Some(resource) = shared_resource(ra, rb) else {
                continue;
            };
            let groups = |r: &Rule| r.api_groups.iter().cloned().collect::<BTreeSet<_>>();
            let versions = |r: &Rule| r.api_versions.iter().cloned().collect::<BTreeSet<_>>();
            let (ga, gb) = (groups(a), groups(b));
            let shared: BTreeSet<String> = match (ga.contains("*"), gb.contains("*")) {
                (true, _) => gb,
                (false, true) => ga,
                (false, false) => ga.intersection(&gb).cloned().collect(),
            };
            let multi_version_group = shared
                .iter()
                .any(|g| g == "*" || !SINGLE_VERSION_GROUPS.contains(&g.as_str()));
            // The same resource in two groups is only equivalent where the API server says so.
            let cross_group = CROSS_GROUP_EQUIVALENTS.iter().any(|(name, eq)| {
                (resource == "*" || resource == *name)
                    && eq.iter().any(|g| covers(&a.api_groups, g))
                    && eq.iter().any(|g| covers(&b.api_groups, g))
                    && eq
                        .iter()
                        .any(|g| covers(&a.api_groups, g) != covers(&b.api_groups, g))
            });
            if (multi_version_group && versions(a) != versions(b)) || cross_group {
                return Some(if resource == "*" {
                    "the same resources".to_owned()
                } else {
                    format!("{resource:?}")
                });
            }
        }
    }
    None
}

fn covers(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// The main resource two resource patterns both cover (`*` for "any"), if they can overlap.
fn shared_resource<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
    let split = |p: &'a str| match p.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (p, None),
    };
    let ((ra, sa), (rb, sb)) = (split(a), split(b));
    let subs_overlap = match (sa, sb) {
        (None, None) => true,
        (Some("*"), _) | (_, Some("*")) => true,
        (Some(x), Some(y)) => x == y,
        _ => false,
    };
    if !subs_overlap {
        return None;
    }
    match (ra, rb) {
        ("*", "*") => Some("*"),
        ("*", r) | (r, "*") => Some(r),
        (x, y) if x == y => Some(x),
        _ => None,
    }
}

fn coverage(rule: &Rule) -> String {
    format!(
        "apiGroups {:?}, apiVersions {:?}",
        rule.api_groups, rule.api_versions
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, rules: &str) -> PolicyEntry {
        serde_yaml_ng::from_str(&format!(
            "name: {name}\nkind: validator\nmodule: x.wasm\nrules:\n{rules}"
        ))
        .unwrap()
    }

    fn rule(groups: &str, versions: &str, resources: &str) -> String {
        format!(
            "- {{operations: [CREATE, UPDATE], apiGroups: {groups}, apiVersions: {versions}, resources: {resources}}}\n"
        )
    }

    #[test]
    fn two_versions_of_one_crd_cannot_share_a_webhook() {
        let a = entry("a", &rule("[example.com]", "[v1]", "[widgets]"));
        let b = entry("b", &rule("[example.com]", "[v2]", "[widgets]"));
        let why = aggregation_conflict(&[&a, &b]).expect("a conflict");
        assert!(
            why.contains(r#"policies "a" and "b" cover "widgets""#),
            "{why}"
        );
        assert!(why.contains("without --aggregate"), "{why}");
        let all = entry("all", &rule("[example.com]", "['*']", "[widgets]"));
        assert!(aggregation_conflict(&[&a, &all]).is_some());
    }

    #[test]
    fn events_in_two_groups_cannot_share_a_webhook() {
        let core = entry("core", &rule("['']", "[v1]", "[events]"));
        let new = entry("new", &rule("[events.k8s.io]", "[v1]", "[events]"));
        assert!(aggregation_conflict(&[&core, &new]).is_some());
        let both = entry("both", &rule("['', events.k8s.io]", "[v1]", "[events]"));
        let both2 = entry("both2", &rule("['', events.k8s.io]", "[v1]", "['*']"));
        assert_eq!(aggregation_conflict(&[&both, &both2]), None);
    }

    #[test]
    fn the_same_coverage_or_other_resources_can() {
        let a = entry("a", &rule("['', apps]", "[v1]", "[pods, deployments]"));
        let b = entry("b", &rule("['', apps]", "[v1]", "[pods]"));
        let c = entry("c", &rule("[batch]", "[v1, v2]", "[jobs]"));
        assert_eq!(aggregation_conflict(&[&a, &b, &c]), None);
        // Disjoint operations: no request is for both.
        let d = entry(
            "d",
            "- {operations: [DELETE], apiGroups: [''], apiVersions: ['*'], resources: [pods]}\n",
        );
        assert_eq!(aggregation_conflict(&[&a, &d]), None);
        // Different sub-resources of one resource.
        let e = entry("e", &rule("['']", "['*']", "[pods/status]"));
        assert_eq!(aggregation_conflict(&[&b, &e]), None);
        // A catch-all next to a core-group policy: the core group has v1 only.
        let all = entry("all", &rule("['*']", "['*']", "['*/*']"));
        assert_eq!(aggregation_conflict(&[&all, &b]), None);
        // ... but next to a CRD policy on one version, it takes the others first.
        let crd = entry("crd", &rule("[example.com]", "[v1]", "[widgets]"));
        assert!(aggregation_conflict(&[&all, &crd]).is_some());
    }

    #[test]
    fn the_demo_set_can() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/demo.yaml"
        ))
        .unwrap();
        let file: crate::config::PolicyFile = serde_yaml_ng::from_str(&text).unwrap();
        for kind in [
            crate::config::PluginKind::Validator,
            crate::config::PluginKind::Initializer,
        ] {
            let entries: Vec<_> = file.policies.iter().filter(|e| e.kind == kind).collect();
            assert_eq!(aggregation_conflict(&entries), None);
        }
    }
}
