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
    assert_eq!(
        kind(&exec(Stage::ResponseStarted, 403)),
        None,
        "refused: alerted when it completes"
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
    let mut bootstrap = binding.clone();
    bootstrap.user.username = "system:apiserver".into();
    bootstrap.user.groups = vec!["system:authenticated".into()];
    assert_eq!(kind(&bootstrap), None, "the API server's start-up binding");
}

#[test]
fn one_kubectl_exec_is_one_alert() {
    // What the API server sent for one refused `kubectl exec` (no kubelet):
    // tests/fixtures/apiserver/e2e/audit-eventlist-secret-create-and-pod-exec.json. kubectl
    // tries WebSocket (get), then SPDY (create); each has ResponseStarted and ResponseComplete.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../tests/fixtures/apiserver/e2e/audit-eventlist-secret-create-and-pod-exec.json"
    ))
    .unwrap();
    let list: Value = serde_json::from_str(&text).unwrap();
    let batch: Vec<Event> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["objectRef"]["subresource"] == "exec")
        .map(|e| {
            let mut ev = event(
                e["user"]["username"].as_str().unwrap(),
                &[],
                e["verb"].as_str().unwrap(),
                "",
                "pods",
                "exec",
                match e["stage"].as_str().unwrap() {
                    "RequestReceived" => Stage::RequestReceived,
                    "ResponseStarted" => Stage::ResponseStarted,
                    _ => Stage::ResponseComplete,
                },
                e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            );
            ev.request_uri = e["requestURI"].as_str().unwrap().into();
            ev.user_agent = e["userAgent"].as_str().unwrap().into();
            ev
        })
        .collect();
    assert_eq!(batch.len(), 6, "two attempts of three stages");
    let once = alerts(&batch);
    assert_eq!(once.len(), 1, "{once:?}");
    assert_eq!((once[0].alert, once[0].verb), ("pod-exec", "create"));
    // The two attempts may arrive in two batches: still one alert.
    let (websocket, spdy) = batch.split_at(3);
    assert_eq!(alerts(websocket).len(), 0);
    assert_eq!(alerts(spdy).len(), 1);
    // Another client doing the same in one batch: one alert too.
    let other: Vec<Event> = batch
        .iter()
        .cloned()
        .map(|mut e| {
            e.user_agent = "curl/8".into();
            e
        })
        .collect();
    assert_eq!(alerts(&other).len(), 1);
    // Two separate sessions that were let through are two alerts.
    let started = |uri: &str| {
        let mut e = event(
            "alice",
            HUMAN,
            "get",
            "",
            "pods",
            "exec",
            Stage::ResponseStarted,
            101,
        );
        e.request_uri = uri.into();
        e
    };
    assert_eq!(alerts(&[started("/a"), started("/a")]).len(), 2);
}
