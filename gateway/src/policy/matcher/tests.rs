use super::*;

fn entry(yaml: &str) -> PolicyEntry {
    let base = "name: p\nkind: validator\nmodule: x.wasm\n";
    serde_yaml_ng::from_str(&format!("{base}{yaml}")).unwrap()
}

const CREATE: &Operation = &Operation::Create;
const UPDATE: &Operation = &Operation::Update;
const DELETE: &Operation = &Operation::Delete;
const CONNECT: &Operation = &Operation::Connect;

fn resource<'a>(group: &'a str, version: &'a str, resource: &'a str) -> ResourceRef<'a> {
    ResourceRef {
        group,
        version,
        resource,
        sub_resource: "",
    }
}

fn pods<'a>(op: &'a Operation, namespace: &'a str) -> RequestAttributes<'a> {
    RequestAttributes {
        operation: op,
        resource: resource("", "v1", "pods"),
        requested: None,
        name: "web",
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
    assert!(m.matches(&pods(CREATE, "default"), no_labels));
    assert!(!m.matches(&pods(DELETE, "default"), no_labels));
    let mut deploy = pods(CREATE, "default");
    deploy.resource = resource("apps", "v1", "deployments");
    assert!(!m.matches(&deploy, no_labels));
    let mut status = pods(UPDATE, "default");
    status.resource.sub_resource = "status";
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
    assert!(!m.matches(&pods(CREATE, "kube-system"), no_labels));
    assert!(m.matches(&pods(CREATE, "default"), no_labels));
    let m = Matcher::new(&entry(&format!("{POD_RULE}namespaces: [team-a]\n")));
    assert!(m.matches(&pods(CREATE, "team-a"), no_labels));
    assert!(!m.matches(&pods(CREATE, "team-b"), no_labels));

    let ns_rule = "rules:\n- {operations: ['*'], apiGroups: [''], apiVersions: ['*'], resources: [namespaces], scope: Cluster}\n";
    let m = Matcher::new(&entry(ns_rule));
    let namespace = RequestAttributes {
        operation: CREATE,
        resource: resource("", "v1", "namespaces"),
        requested: None,
        name: "foo",
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
    let attrs = pods(UPDATE, "default");
    assert!(m.matches(&attrs, || (labels(&[("app", "web")]), None)));
    assert!(!m.matches(&attrs, || (labels(&[("app", "web"), ("tier", "db")]), None)));
    assert!(m.matches(&attrs, || (labels(&[]), labels(&[("app", "web")]))));
    assert!(
        !m.matches(&attrs, no_labels),
        "an absent object never matches a selector"
    );
}

#[test]
fn an_unknown_operation_matches_only_star() {
    let other = Operation::Other("UPGRADE".into());
    let m = Matcher::new(&entry(POD_RULE));
    assert!(!m.matches(&pods(&other, "default"), no_labels));
    let m = Matcher::new(&entry(&POD_RULE.replace("CREATE, UPDATE", "'*'")));
    assert!(m.matches(&pods(&other, "default"), no_labels));
}

#[test]
fn a_namespace_object_is_judged_by_its_own_name() {
    // Upstream, a webhook's namespaceSelector reads a Namespace object's own labels
    // (kubernetes.io/metadata.name is its name): `namespaces`/`excludeNamespaces` do the same.
    let ns_rule = "rules:\n- {operations: ['*'], apiGroups: [''], apiVersions: ['*'], resources: ['namespaces', 'namespaces/*']}\n";
    let namespace = |operation, name, namespace| RequestAttributes {
        operation,
        resource: resource("", "v1", "namespaces"),
        requested: None,
        name,
        namespace,
    };
    let m = Matcher::new(&entry(&format!(
        "{ns_rule}excludeNamespaces: [kube-system]\n"
    )));
    // CREATE names no namespace in its URL: the name is the object's.
    assert!(!m.matches(&namespace(CREATE, "kube-system", ""), no_labels));
    assert!(!m.matches(&namespace(DELETE, "kube-system", "kube-system"), no_labels));
    assert!(m.matches(&namespace(UPDATE, "team-a", "team-a"), no_labels));
    let m = Matcher::new(&entry(&format!("{ns_rule}namespaces: [team-a]\n")));
    assert!(m.matches(&namespace(CREATE, "team-a", ""), no_labels));
    assert!(!m.matches(&namespace(CREATE, "team-b", ""), no_labels));
    let mut finalize = namespace(UPDATE, "team-a", "team-a");
    finalize.resource.sub_resource = "finalize";
    assert!(m.matches(&finalize, no_labels));
    // Other cluster-scoped objects have no namespace and never match a list.
    let node = RequestAttributes {
        operation: CREATE,
        resource: resource("", "v1", "nodes"),
        requested: None,
        name: "team-a",
        namespace: "",
    };
    let m = Matcher::new(&entry(
        "rules:\n- {operations: ['*'], apiGroups: [''], apiVersions: ['*'], resources: ['*']}\nnamespaces: [team-a]\n",
    ));
    assert!(!m.matches(&node, no_labels));
}

#[test]
fn an_object_selector_never_matches_connect() {
    // The object of a CONNECT is its options (PodExecOptions): no metadata, no labels. A NotIn
    // or DoesNotExist selector must not take that for "no labels".
    let m = Matcher::new(&entry(
        "rules:\n- {operations: ['*'], apiGroups: [''], apiVersions: [v1], resources: ['pods/exec']}\nobjectSelector:\n  matchExpressions:\n  - {key: exempt, operator: DoesNotExist}\n",
    ));
    let mut exec = pods(CONNECT, "default");
    exec.resource.sub_resource = "exec";
    let empty = || (Some(Labels::new()), None);
    assert!(!m.matches(&exec, empty));
    let mut create = pods(CREATE, "default");
    create.resource.sub_resource = "exec";
    assert!(
        m.matches(&create, empty),
        "control: the selector matches no labels"
    );
}

#[test]
fn equivalent_requests_match_by_the_requested_resource_too() {
    // matchPolicy Equivalent: a request for widgets v2 sent as v1 (the version of the first rule
    // that matched) matches a policy on v1 by `resource`, and one on v2 by `requestResource`.
    let v1 = "rules:\n- {operations: [CREATE], apiGroups: [example.com], apiVersions: [v1], resources: [widgets]}\n";
    let v2 = v1.replace("[v1]", "[v2]");
    let converted = RequestAttributes {
        operation: CREATE,
        resource: resource("example.com", "v1", "widgets"),
        requested: Some(resource("example.com", "v2", "widgets")),
        name: "w",
        namespace: "default",
    };
    assert!(Matcher::new(&entry(v1)).matches(&converted, no_labels));
    assert!(Matcher::new(&entry(&v2)).matches(&converted, no_labels));
    let v3 = v1.replace("[v1]", "[v3]");
    assert!(!Matcher::new(&entry(&v3)).matches(&converted, no_labels));
}
