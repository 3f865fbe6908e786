use wasmgate_sdk::audit_sink::{Level, ObjectReference, Stage, UserInfo};
use wasmgate_sdk::parse_settings;
use wasmgate_sdk::serde_json::json;

use super::*;

const SECRET_VALUES: &[&str] = &[
    "c3VwZXJzZWNyZXQ=",
    "supersecret",
    "hunter2",
    "s3cr3t-token",
    "topsecret",
];

fn event(resource: &str, request: Option<Value>, response: Option<Value>) -> Event {
    Event {
        level: Level::RequestResponse,
        audit_id: "a".into(),
        stage: Stage::ResponseComplete,
        request_uri: format!("/api/v1/namespaces/ns/{resource}"),
        verb: "create".into(),
        user: UserInfo {
            username: "u".into(),
            uid: String::new(),
            groups: vec![],
            extra: vec![],
        },
        impersonated_user: None,
        source_ips: vec![],
        user_agent: String::new(),
        object_ref: Some(ObjectReference {
            resource: resource.into(),
            namespace: "ns".into(),
            name: "n".into(),
            uid: String::new(),
            api_group: String::new(),
            api_version: "v1".into(),
            resource_version: String::new(),
            subresource: String::new(),
        }),
        response_code: Some(201),
        response_status: None,
        request_object: request.map(|v| v.to_string()),
        response_object: response.map(|v| v.to_string()),
        request_received_timestamp: String::new(),
        stage_timestamp: String::new(),
        annotations: vec![],
    }
}

fn line(settings: &str, event: Event) -> String {
    let settings: Settings = parse_settings(settings).unwrap();
    Redactor::new(&settings.keys).line(event).unwrap()
}

fn assert_clean(line: &str) {
    for value in SECRET_VALUES {
        assert!(!line.contains(value), "{value} leaked: {line}");
    }
}

#[test]
fn secret_data_string_data_and_last_applied_never_leave() {
    let last_applied =
        json!({"apiVersion": "v1", "kind": "Secret", "data": {"password": "c3VwZXJzZWNyZXQ="}})
            .to_string();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "annotations": {LAST_APPLIED: last_applied}},
        "data": {"password": "c3VwZXJzZWNyZXQ=", "user": "YWRtaW4="},
        "stringData": {"note": "supersecret"},
        "type": "Opaque",
    });
    let out = line("{}", event("secrets", Some(secret.clone()), Some(secret)));
    assert_clean(&out);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["requestObject"]["data"],
        json!({"password": REDACTED, "user": REDACTED}),
        "keys kept, values gone"
    );
    assert_eq!(json["responseObject"]["stringData"]["note"], REDACTED);
    assert_eq!(json["requestObject"]["type"], "Opaque", "the rest is kept");
    assert_eq!(
        json["requestObject"]["metadata"]["annotations"][LAST_APPLIED],
        REDACTED
    );
}

#[test]
fn lists_and_patches_of_secrets_are_redacted() {
    let list = json!({"kind": "SecretList", "items": [{"metadata": {"name": "a"}, "data": {"k": "aHVudGVyMg=="}, "stringData": {"k": "hunter2"}}]});
    let patch = json!([{"op": "replace", "path": "/data/k", "value": "hunter2"}]);
    let merge = json!({"stringData": {"k": "hunter2"}});
    for (req, resp) in [(None, Some(list)), (Some(patch), None), (Some(merge), None)] {
        assert_clean(&line("{}", event("secrets", req, resp)));
    }
}

#[test]
fn named_keys_are_redacted_anywhere() {
    let configmap = json!({
        "kind": "ConfigMap",
        "metadata": {"annotations": {"api-token": "s3cr3t-token"}},
        "data": {"DB_PASSWORD": "hunter2", "dbPassword": "hunter2", "mode": "fast"},
    });
    let pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "app", "env": [
        {"name": "ADMIN_PASSWORD", "value": "topsecret"},
        {"name": "LOG_LEVEL", "value": "debug"},
    ]}]}});
    let out = line(
        r#"{"keys": ["password", "token"]}"#,
        event("configmaps", Some(configmap), None),
    );
    assert_clean(&out);
    assert!(out.contains("\"mode\":\"fast\""), "{out}");
    let out = line(r#"{"keys": ["password"]}"#, event("pods", Some(pod), None));
    assert_clean(&out);
    assert!(out.contains("\"debug\""), "{out}");
}

#[test]
fn last_applied_of_other_objects_is_redacted_inside() {
    let inner =
        json!({"kind": "ConfigMap", "data": {"password": "hunter2", "mode": "fast"}}).to_string();
    let cm = json!({"kind": "ConfigMap", "metadata": {"annotations": {LAST_APPLIED: inner}}});
    let out = line(
        r#"{"keys": ["password"]}"#,
        event("configmaps", Some(cm), None),
    );
    assert_clean(&out);
    assert!(out.contains("fast"), "{out}");
}

#[test]
fn untouched_objects_keep_their_exact_text() {
    let text = r#"{"kind" : "Pod", "spec": {}}"#;
    let mut e = event("pods", None, None);
    e.request_object = Some(text.into());
    let out = line(r#"{"keys": ["password"]}"#, e);
    assert!(out.contains(text), "{out}");
}

#[test]
fn event_annotations_with_named_keys_are_redacted() {
    let mut e = event("pods", None, None);
    e.annotations = vec![
        ("example.com/token".into(), "s3cr3t-token".into()),
        ("authorization.k8s.io/decision".into(), "allow".into()),
    ];
    let out = line(r#"{"keys": ["token"]}"#, e);
    assert_clean(&out);
    assert!(out.contains("allow"));
}

#[test]
fn settings_are_checked_at_load() {
    let check = wasmgate_sdk::audit_sink::validate_settings::<RedactSecrets>;
    assert_eq!(check(""), Ok(()));
    assert_eq!(
        check(r#"{"output": "audit", "keys": ["password"]}"#),
        Ok(())
    );
    assert_eq!(
        check(r#"{"keys": "password"}"#),
        Err(r#"keys: invalid type: string "password", expected a sequence"#.into())
    );
    assert_eq!(
        check(r#"{"output": ""}"#),
        Err("output: name the output every event goes to".into())
    );
    assert!(
        check(r#"{"keys": ["token", "--"]}"#)
            .unwrap_err()
            .starts_with("keys[1]: \"--\" names no key")
    );
    assert!(
        check(r#"{"outputs": "audit"}"#)
            .unwrap_err()
            .contains("unknown field `outputs`")
    );
}
