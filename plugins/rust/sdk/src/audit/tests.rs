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
