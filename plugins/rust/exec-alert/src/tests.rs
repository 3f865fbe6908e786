use wasmgate_sdk::audit_sink::{Level, UserInfo};

use super::*;

fn event(
    user: &str,
    groups: &[&str],
    verb: &str,
    group: &str,
    resource: &str,
    sub: &str,
    stage: Stage,
    code: u16,
) -> Event {
    Event {
        level: Level::Request,
        audit_id: "a".into(),
        stage,
        request_uri: "/x".into(),
        verb: verb.into(),
        user: UserInfo {
            username: user.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| (*g).into()).collect(),
            extra: vec![],
        },
        impersonated_user: None,
        source_ips: vec!["10.0.0.1".into()],
        user_agent: String::new(),
        object_ref: Some(ObjectReference {
            resource: resource.into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: String::new(),
            api_group: group.into(),
            api_version: "v1".into(),
            resource_version: String::new(),
            subresource: sub.into(),
        }),
        response_code: Some(code),
        response_status: None,
        request_object: None,
        response_object: None,
        request_received_timestamp: String::new(),
        stage_timestamp: "2026-07-24T04:09:49.123456Z".into(),
        annotations: vec![],
    }
}

fn kind(e: &Event) -> Option<&'static str> {
    alert(e).map(|a| a.alert)
}

const HUMAN: &[&str] = &["system:masters", "system:authenticated"];

#[test]
fn exec_and_attach_alert_once_per_session() {
    let exec = |stage, code| event("alice", HUMAN, "create", "", "pods", "exec", stage, code);
    assert_eq!(kind(&exec(Stage::RequestReceived, 0)), None);
    assert_eq!(kind(&exec(Stage::ResponseStarted, 101)), Some("pod-exec"));
    assert_eq!(
        kind(&exec(Stage::ResponseComplete, 101)),
        None,
        "already alerted when it started"
    );
    let refused = exec(Stage::ResponseComplete, 403);
    let refused = alert(&refused).unwrap();
    assert_eq!(
        refused.message,
        "alice exec into pod default/web (refused: 403)"
    );
    let attach = event(
        "alice",
        HUMAN,
        "create",
        "",
        "pods",
        "attach",
        Stage::ResponseStarted,
        101,
    );
    assert_eq!(
        alert(&attach).unwrap().message,
        "alice attach to pod default/web"
    );
    assert_eq!(
        kind(&event(
            "alice",
            HUMAN,
            "get",
            "",
            "pods",
            "log",
            Stage::ResponseComplete,
            200
        )),
        None
    );
}

#[test]
fn secret_reads_by_people_alert_and_by_system_identities_do_not() {
    let read = |user, groups, verb, stage| event(user, groups, verb, "", "secrets", "", stage, 200);
    let get = read("alice", HUMAN, "get", Stage::ResponseComplete);
    let get = alert(&get).unwrap();
    assert_eq!(get.alert, "secret-read");
    assert_eq!(get.message, "alice (get) read secret default/web");
    assert_eq!(
        kind(&read(
            "bob",
            &["system:authenticated", "devs"],
            "list",
            Stage::ResponseComplete
        )),
        Some("secret-read")
    );
    assert_eq!(
        kind(&read("bob", &["devs"], "watch", Stage::ResponseStarted)),
        Some("secret-read")
    );
    assert_eq!(
        kind(&read("bob", &["devs"], "watch", Stage::ResponseComplete)),
        None
    );
    assert_eq!(
        kind(&read("bob", &["devs"], "create", Stage::ResponseComplete)),
        None
    );
    assert_eq!(
        kind(&read(
            "system:kube-controller-manager",
            &["system:authenticated"],
            "get",
            Stage::ResponseComplete
        )),
        None
    );
    assert_eq!(
        kind(&read(
            "system:serviceaccount:kube-system:x",
            &["system:serviceaccounts"],
            "list",
            Stage::ResponseComplete
        )),
        None
    );
    assert_eq!(
        kind(&read(
            "node-agent",
            &["system:nodes", "system:authenticated"],
            "get",
            Stage::ResponseComplete
        )),
        None
    );
}

#[test]
fn bindings_to_cluster_admin_are_critical() {
    let mut binding = event(
        "alice",
        HUMAN,
        "create",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "",
        Stage::ResponseComplete,
        201,
    );
    binding.request_object = Some(r#"{"kind":"ClusterRoleBinding","roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"}}"#.into());
    let a = alert(&binding).unwrap();
    assert_eq!((a.alert, a.severity), ("cluster-admin-binding", "critical"));
    assert_eq!(
        a.message,
        "alice bound cluster-admin with ClusterRoleBinding default/web (create)"
    );
    let mut view = binding.clone();
    view.request_object = Some(r#"{"roleRef":{"kind":"ClusterRole","name":"view"}}"#.into());
    assert_eq!(kind(&view), None);
    let mut metadata_only = binding.clone();
    metadata_only.request_object = None;
    assert_eq!(kind(&metadata_only), None, "needs the object");
    let mut rb = binding.clone();
    rb.object_ref.as_mut().unwrap().resource = "rolebindings".into();
    assert_eq!(kind(&rb), Some("cluster-admin-binding"));
}

#[test]
fn settings_are_checked_at_load() {
    let check = wasmgate_sdk::audit_sink::validate_settings::<ExecAlert>;
    assert_eq!(check(""), Ok(()));
    assert_eq!(check(r#"{"output": "siem"}"#), Ok(()));
    assert_eq!(
        check(r#"{"output": ["siem"]}"#),
        Err("output: invalid type: sequence, expected a string".into())
    );
    assert_eq!(
        check(r#"{"output": ""}"#),
        Err("output: name the output alert lines go to".into())
    );
    assert!(
        check(r#"{"output": "a", "severity": "high"}"#)
            .unwrap_err()
            .contains("unknown field `severity`")
    );
}
