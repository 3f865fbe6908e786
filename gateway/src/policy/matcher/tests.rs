use super::*;

fn entry(yaml: &str) -> PolicyEntry {
    let base = "name: p\nkind: validator\nmodule: x.wasm\n";
    serde_yaml_ng::from_str(&format!("{base}{yaml}")).unwrap()
}

fn pods(op: Operation, namespace: &str) -> RequestAttributes<'_> {
    RequestAttributes {
        operation: op,
        group: "",
        version: "v1",
        resource: "pods",
        sub_resource: "",
        namespace,
    }
}

const POD_RULE: &str = "rules:\n- {operations: [CREATE, UPDATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}\n";

fn no_labels() -> (Option<Labels>, Option<Labels>) {
    (None, None)
}

#[test]
fn rules_match_operation_group_version_resource() {
    let m = Matcher::new(&entry(POD_RULE));
    assert!(m.matches(&pods(Operation::Create, "default"), no_labels));
    assert!(!m.matches(&pods(Operation::Delete, "default"), no_labels));
    let mut deploy = pods(Operation::Create, "default");
    deploy.group = "apps";
    deploy.resource = "deployments";
    assert!(!m.matches(&deploy, no_labels));
    let mut status = pods(Operation::Update, "default");
    status.sub_resource = "status";
    assert!(
        !m.matches(&status, no_labels),
        "pods does not cover pods/status"
    );
}

#[test]
fn resource_patterns() {
    assert!(resource_matches("*", "pods", ""));
    assert!(!resource_matches("*", "pods", "status"));
    assert!(resource_matches("pods/*", "pods", "exec"));
    assert!(resource_matches("pods/*", "pods", ""));
    assert!(resource_matches("*/scale", "deployments", "scale"));
    assert!(!resource_matches("*/scale", "deployments", ""));
    assert!(resource_matches("*/*", "anything", "sub"));
    assert!(resource_matches("pods/exec", "pods", "exec"));
    assert!(!resource_matches("pods/exec", "pods", "attach"));
}

#[test]
fn namespaces_and_scope() {
    let m = Matcher::new(&entry(&format!(
        "{POD_RULE}excludeNamespaces: [kube-system]\n"
    )));
    assert!(!m.matches(&pods(Operation::Create, "kube-system"), no_labels));
    assert!(m.matches(&pods(Operation::Create, "default"), no_labels));
    let m = Matcher::new(&entry(&format!("{POD_RULE}namespaces: [team-a]\n")));
    assert!(m.matches(&pods(Operation::Create, "team-a"), no_labels));
    assert!(!m.matches(&pods(Operation::Create, "team-b"), no_labels));

    let ns_rule = "rules:\n- {operations: ['*'], apiGroups: [''], apiVersions: ['*'], resources: [namespaces], scope: Cluster}\n";
    let m = Matcher::new(&entry(ns_rule));
    let namespace = RequestAttributes {
        operation: Operation::Create,
        group: "",
        version: "v1",
        resource: "namespaces",
        sub_resource: "",
        namespace: "foo",
    };
    assert!(
        m.matches(&namespace, no_labels),
        "a Namespace is cluster-scoped even though it names itself"
    );
    let m = Matcher::new(&entry(&ns_rule.replace("Cluster", "Namespaced")));
    assert!(!m.matches(&namespace, no_labels));
}

#[test]
fn object_selector_tries_new_then_old_object() {
    let m = Matcher::new(&entry(&format!(
        "{POD_RULE}objectSelector:\n  matchLabels: {{app: web}}\n  matchExpressions:\n  - {{key: tier, operator: NotIn, values: [db]}}\n"
    )));
    let labels = |pairs: &[(&str, &str)]| {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
        )
    };
    let attrs = pods(Operation::Update, "default");
    assert!(m.matches(&attrs, || (labels(&[("app", "web")]), None)));
    assert!(!m.matches(&attrs, || (labels(&[("app", "web"), ("tier", "db")]), None)));
    assert!(m.matches(&attrs, || (labels(&[]), labels(&[("app", "web")]))));
    assert!(
        !m.matches(&attrs, no_labels),
        "an absent object never matches a selector"
    );
}
