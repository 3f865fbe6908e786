use super::*;
use crate::audit_sink::{Level, Stage};

fn event() -> Event {
    Event {
        level: Level::RequestResponse,
        audit_id: "id-1".into(),
        stage: Stage::ResponseComplete,
        request_uri: "/api/v1/namespaces/ns/secrets".into(),
        verb: "create".into(),
        user: UserInfo {
            username: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into()],
            extra: vec![],
        },
        impersonated_user: None,
        source_ips: vec!["10.0.0.1".into()],
        user_agent: String::new(),
        object_ref: Some(ObjectReference {
            resource: "secrets".into(),
            namespace: "ns".into(),
            name: "s".into(),
            uid: String::new(),
            api_group: String::new(),
            api_version: "v1".into(),
            resource_version: String::new(),
            subresource: String::new(),
        }),
        response_code: Some(201),
        response_status: Some(r#"{"metadata":{},"code":201}"#.into()),
        request_object: Some(r#"{"kind":"Secret","data":{"k" : "dg=="}}"#.into()),
        response_object: None,
        request_received_timestamp: "2026-07-24T04:09:49.123456Z".into(),
        stage_timestamp: "2026-07-24T04:09:49.223456Z".into(),
        annotations: vec![("authorization.k8s.io/decision".into(), "allow".into())],
    }
}

#[test]
fn an_event_becomes_a_v1_event_line() {
    let line = event().to_json().unwrap();
    assert!(!line.contains('\n'));
    assert!(
        line.contains(r#""requestObject":{"kind":"Secret","data":{"k" : "dg=="}}"#),
        "object kept as it arrived: {line}"
    );
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["kind"], "Event");
    assert_eq!(json["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(json["level"], "RequestResponse");
    assert_eq!(json["auditID"], "id-1");
    assert_eq!(
        json["objectRef"],
        serde_json::json!({"resource": "secrets", "namespace": "ns", "name": "s", "apiVersion": "v1"})
    );
    assert_eq!(
        json["user"],
        serde_json::json!({"username": "alice", "groups": ["dev"]})
    );
    assert_eq!(json["responseStatus"]["code"], 201);
    assert!(json.get("responseObject").is_none());
    assert_eq!(
        json["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
}

#[test]
fn objects_can_be_replaced_or_dropped() {
    let line = event()
        .to_json_with(Some(r#"{"kind":"Secret"}"#), None)
        .unwrap();
    assert!(!line.contains("dg=="), "{line}");
    assert!(
        event()
            .to_json_with(Some("{not json"), None)
            .unwrap_err()
            .starts_with("requestObject is not JSON")
    );
}

#[test]
fn every_member_is_written_once_in_order_and_replacements_are_trimmed() {
    let mut e = event();
    e.impersonated_user = Some(UserInfo {
        username: "bob \"the\" admin\n".into(),
        uid: "u-2".into(),
        groups: vec![],
        extra: vec![("scopes".into(), vec!["a".into(), "b".into()])],
    });
    e.user_agent = "kubectl/v1.36".into();
    e.response_object = Some(r#"{"kind":"Secret","data":{"k":"dg=="}}"#.into());
    e.annotations = vec![];
    let line = e
        .to_json_with(Some(" \n{\"kind\":\"Secret\"}\t"), Some("[1, 2]"))
        .unwrap();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains(r#","requestObject":{"kind":"Secret"},"responseObject":[1, 2],"#));
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 17, "{line}");
    // In the order of `audit.k8s.io/v1` (each member's first appearance is its own).
    let at = |key: &str| line.find(&format!("\"{key}\":")).unwrap();
    let order = [
        "kind",
        "apiVersion",
        "level",
        "auditID",
        "stage",
        "requestURI",
        "verb",
        "user",
        "impersonatedUser",
        "sourceIPs",
        "userAgent",
        "objectRef",
        "responseStatus",
        "requestObject",
        "responseObject",
        "requestReceivedTimestamp",
        "stageTimestamp",
    ];
    assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{line}");
    assert_eq!(json["impersonatedUser"]["username"], "bob \"the\" admin\n");
    assert_eq!(json["impersonatedUser"]["extra"]["scopes"][1], "b");
    // Without any object either.
    let bare: serde_json::Value =
        serde_json::from_str(&e.to_json_with(None, None).unwrap()).unwrap();
    assert!(bare.get("requestObject").is_none());
    assert_eq!(bare["stageTimestamp"], "2026-07-24T04:09:49.223456Z");
}
