use super::*;

/// The example audit Policy of the Kubernetes documentation ("Auditing", audit-policy.yaml), as
/// the rules of a sink.
const EXAMPLE: &str = r#"
- level: RequestResponse
  resources:
  - group: ""
    resources: ["pods"]
- level: Metadata
  resources:
  - group: ""
    resources: ["pods/log", "pods/status"]
- level: None
  resources:
  - group: ""
    resources: ["configmaps"]
    resourceNames: ["controller-leader"]
- level: None
  users: ["system:kube-proxy"]
  verbs: ["watch"]
  resources:
  - group: ""
    resources: ["endpoints", "services"]
- level: None
  userGroups: ["system:authenticated"]
  nonResourceURLs:
  - "/api*"
  - "/version"
- level: Request
  resources:
  - group: ""
    resources: ["configmaps"]
  namespaces: ["kube-system"]
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets", "configmaps"]
- level: Request
  resources:
  - group: ""
  - group: "extensions"
- level: Metadata
  omitStages:
    - "RequestReceived"
"#;

fn rules(yaml: &str, omit: &[Stage]) -> AuditRules {
    let rules: Vec<AuditRule> = serde_yaml_ng::from_str(yaml).unwrap();
    AuditRules::new(&rules, omit, false)
}

/// An event at RequestResponse for `verb` on `resource` (`pods/log`) in `namespace`, or on the
/// non-resource `path` when `resource` is empty.
#[allow(clippy::too_many_arguments)]
fn event(
    user: &str,
    groups: &[&str],
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
    stage: Stage,
) -> Event {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let object_ref = (!resource.is_empty()).then(|| {
        serde_json::json!({
            "resource": resource, "subresource": subresource, "apiGroup": group,
            "namespace": namespace, "name": name,
        })
    });
    let path = if resource.is_empty() {
        namespace
    } else {
        "/api/v1/x"
    };
    let mut json = serde_json::json!({
        "level": "RequestResponse", "auditID": "id", "stage": stage.as_str(), "verb": verb,
        "requestURI": format!("{path}?watch=true"),
        "user": {"username": user, "groups": groups},
        "requestObject": {"kind": "X"}, "responseObject": {"kind": "X"},
    });
    if let Some(o) = object_ref {
        json["objectRef"] = o;
    }
    Event::decode(&json.to_string()).unwrap()
}

fn level(rules: &AuditRules, e: &Event) -> Level {
    rules.route(e).map_or(Level::None, |r| r.level)
}

#[test]
fn the_documentation_example_routes_as_the_api_server_would() {
    let r = rules(EXAMPLE, &[Stage::RequestReceived]);
    let done = Stage::ResponseComplete;
    let user = |verb, group, res, ns, name| {
        event(
            "alice",
            &["system:authenticated"],
            verb,
            group,
            res,
            ns,
            name,
            done,
        )
    };
    assert_eq!(
        level(&r, &user("get", "", "pods", "default", "web")),
        Level::RequestResponse
    );
    assert_eq!(
        level(&r, &user("get", "", "pods/log", "default", "web")),
        Level::Metadata
    );
    assert_eq!(
        level(&r, &user("get", "", "pods/exec", "default", "web")),
        Level::Request,
        "pods/exec falls to the core-group rule"
    );
    assert_eq!(
        level(
            &r,
            &user(
                "update",
                "",
                "configmaps",
                "kube-system",
                "controller-leader"
            )
        ),
        Level::None
    );
    assert_eq!(
        level(&r, &user("get", "", "configmaps", "kube-system", "cfg")),
        Level::Request
    );
    assert_eq!(
        level(&r, &user("get", "", "configmaps", "default", "cfg")),
        Level::Metadata
    );
    assert_eq!(
        level(&r, &user("get", "", "secrets", "default", "token")),
        Level::Metadata
    );
    assert_eq!(
        level(&r, &user("create", "apps", "deployments", "default", "d")),
        Level::Metadata
    );
    assert_eq!(
        level(
            &r,
            &user("create", "extensions", "ingresses", "default", "i")
        ),
        Level::Request
    );
    // Non-resource requests by authenticated users under /api are not recorded; others are.
    assert_eq!(
        level(&r, &user("get", "", "", "/apis/apps/v1", "")),
        Level::None
    );
    assert_eq!(level(&r, &user("get", "", "", "/version", "")), Level::None);
    assert_eq!(
        level(&r, &user("get", "", "", "/healthz", "")),
        Level::Metadata
    );
    // kube-proxy's watches are ignored, its other requests are not.
    let proxy = |verb| {
        event(
            "system:kube-proxy",
            &["system:authenticated"],
            verb,
            "",
            "endpoints",
            "default",
            "e",
            done,
        )
    };
    assert_eq!(level(&r, &proxy("watch")), Level::None);
    assert_eq!(level(&r, &proxy("list")), Level::Request);
    // The sink-wide omitStages applies to every rule.
    let received = event(
        "alice",
        &[],
        "get",
        "",
        "pods",
        "default",
        "web",
        Stage::RequestReceived,
    );
    assert_eq!(r.route(&received), None);
}

#[test]
fn the_level_never_exceeds_what_was_recorded() {
    let r = rules("- level: RequestResponse\n", &[]);
    let mut e = event(
        "u",
        &[],
        "get",
        "",
        "pods",
        "ns",
        "n",
        Stage::ResponseComplete,
    );
    e.level = Level::Metadata;
    assert_eq!(level(&r, &e), Level::Metadata);
}

#[test]
fn resource_patterns_and_names() {
    let r = rules(
        r#"
- level: Request
  resources: [{group: "*", resources: ["*/scale"]}]
- level: Metadata
  resources: [{group: apps, resources: ["deployments/*"]}]
- level: RequestResponse
  resources: [{group: "", resources: [secrets], resourceNames: [special]}]
  namespaces: [""]
- level: None
"#,
        &[],
    );
    let e = |group, res, ns, name| {
        event(
            "u",
            &[],
            "get",
            group,
            res,
            ns,
            name,
            Stage::ResponseComplete,
        )
    };
    assert_eq!(
        level(&r, &e("apps", "deployments/scale", "ns", "d")),
        Level::Request
    );
    assert_eq!(
        level(&r, &e("apps", "deployments/status", "ns", "d")),
        Level::Metadata
    );
    assert_eq!(
        level(&r, &e("apps", "deployments", "ns", "d")),
        Level::Metadata,
        "res/* matches the resource itself"
    );
    assert_eq!(
        level(&r, &e("", "secrets", "", "special")),
        Level::RequestResponse
    );
    assert_eq!(
        level(&r, &e("", "secrets", "ns", "special")),
        Level::None,
        "namespaced"
    );
    assert_eq!(level(&r, &e("", "secrets", "", "other")), Level::None);
}

#[test]
fn users_groups_verbs_and_rule_stages() {
    let r = rules(
        r#"
- level: Metadata
  users: [bob]
  omitStages: [ResponseStarted]
- level: Request
  userGroups: [admins, ops]
  verbs: [delete]
"#,
        &[],
    );
    let bob = event(
        "bob",
        &[],
        "get",
        "",
        "pods",
        "ns",
        "n",
        Stage::ResponseComplete,
    );
    assert_eq!(level(&r, &bob), Level::Metadata);
    let bob_started = event(
        "bob",
        &[],
        "get",
        "",
        "pods",
        "ns",
        "n",
        Stage::ResponseStarted,
    );
    assert_eq!(
        r.route(&bob_started),
        None,
        "first match wins, even when it omits the stage"
    );
    let ops = event(
        "carol",
        &["ops"],
        "delete",
        "",
        "pods",
        "ns",
        "n",
        Stage::ResponseComplete,
    );
    assert_eq!(level(&r, &ops), Level::Request);
    let ops_get = event(
        "carol",
        &["ops"],
        "get",
        "",
        "pods",
        "ns",
        "n",
        Stage::ResponseComplete,
    );
    assert_eq!(level(&r, &ops_get), Level::None);
}

#[test]
fn managed_fields_setting_per_rule_overrides_the_sink() {
    let rules: Vec<AuditRule> = serde_yaml_ng::from_str("- level: Request\n  resources: [{group: '', resources: [pods]}]\n  omitManagedFields: false\n- level: Request\n").unwrap();
    let r = AuditRules::new(&rules, &[], true);
    let pod = event(
        "u",
        &[],
        "get",
        "",
        "pods",
        "ns",
        "n",
        Stage::ResponseComplete,
    );
    let svc = event(
        "u",
        &[],
        "get",
        "",
        "services",
        "ns",
        "n",
        Stage::ResponseComplete,
    );
    assert!(!r.route(&pod).unwrap().omit_managed_fields);
    assert!(r.route(&svc).unwrap().omit_managed_fields);
}

#[test]
fn resource_names_match_the_name_in_the_request_not_the_one_filled_in_later() {
    // Upstream matches `resourceNames` against attrs.GetName(), the name in the URL: empty on
    // a create. The API server fills objectRef.name in from the object for the later stages, so
    // matching on it would route RequestReceived and ResponseComplete of one create apart.
    let r = rules(
        r#"
- level: None
  resources: [{group: "", resources: [configmaps], resourceNames: [controller-leader]}]
- level: Metadata
"#,
        &[],
    );
    let at = |verb, resource, name, stage| event("u", &[], verb, "", resource, "ns", name, stage);
    for stage in [Stage::RequestReceived, Stage::ResponseComplete] {
        // RequestReceived of a create has no name yet; ResponseComplete has the object's.
        let name = if stage == Stage::RequestReceived {
            ""
        } else {
            "controller-leader"
        };
        assert_eq!(
            level(&r, &at("create", "configmaps", name, stage)),
            Level::Metadata,
            "a create is not named in its request ({stage:?})"
        );
        assert_eq!(
            level(&r, &at("update", "configmaps", "controller-leader", stage)),
            Level::None,
            "an update is ({stage:?})"
        );
    }
    // A create of a sub-resource is sent to the named object (pods/NAME/eviction).
    let r = rules(
        r#"
- level: None
  resources: [{group: "", resources: [pods/eviction], resourceNames: [keep]}]
- level: Metadata
"#,
        &[],
    );
    assert_eq!(
        level(
            &r,
            &at("create", "pods/eviction", "keep", Stage::ResponseComplete)
        ),
        Level::None
    );
}
