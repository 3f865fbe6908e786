use wasmgate_sdk::Value;
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

/// The redactor this plugin had before the streaming pass (a whole `Value` of every object):
/// the reference the streaming pass must agree with, value for value.
mod dom {
    use super::*;

    pub fn redact(r: &Redactor, value: &mut Value, secret: bool) -> bool {
        let mut changed = false;
        match value {
            Value::Object(map) => {
                let secret = secret || map.get("kind").and_then(Value::as_str) == Some("Secret");
                let named_sensitive = map
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|name| r.sensitive(name));
                for (key, child) in map.iter_mut() {
                    let whole = (secret && (key == "data" || key == "stringData"))
                        || r.sensitive(key)
                        || (named_sensitive && (key == "value" || key == "valueFrom"))
                        || (secret && key == "value");
                    if whole {
                        changed |= redact_all(child);
                    } else if key == LAST_APPLIED {
                        changed |= last_applied(r, child, secret);
                    } else {
                        changed |= redact(r, child, secret);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    changed |= redact(r, item, secret);
                }
            }
            _ => {}
        }
        changed
    }

    fn last_applied(r: &Redactor, value: &mut Value, secret: bool) -> bool {
        let Value::String(text) = value else {
            return redact_all(value);
        };
        if secret {
            return redact_all(value);
        }
        match serde_json::from_str::<Value>(text) {
            Ok(mut inner) => {
                if redact(r, &mut inner, false) {
                    *value = Value::String(inner.to_string());
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        }
    }

    fn redact_all(value: &mut Value) -> bool {
        match value {
            Value::Object(map) => {
                for child in map.values_mut() {
                    *child = Value::String(REDACTED.into());
                }
                true
            }
            Value::Null => false,
            other => {
                *other = Value::String(REDACTED.into());
                true
            }
        }
    }
}

/// The streaming pass's output, parsed (the last-applied annotation's inner JSON too), against
/// the DOM redactor's: the same values redacted, whatever the order of members and the spacing.
fn assert_same_as_dom(keys: &[&str], object: &str, secret: bool) {
    let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    let r = Redactor::new(&keys);
    let streamed = r.object(object, secret).unwrap();
    let mut streamed: Value = serde_json::from_str(&streamed).unwrap();
    let mut reference: Value = serde_json::from_str(object).unwrap();
    dom::redact(&r, &mut reference, secret);
    // Inner last-applied texts may differ in spacing and order: compare them parsed.
    fn parse_inner(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if k == LAST_APPLIED
                        && let Value::String(text) = child
                        && let Ok(inner) = serde_json::from_str::<Value>(text)
                    {
                        *child = inner;
                    }
                    parse_inner(child);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(parse_inner),
            _ => {}
        }
    }
    parse_inner(&mut streamed);
    parse_inner(&mut reference);
    assert_eq!(
        streamed, reference,
        "keys {keys:?}, secret {secret}, object {object}"
    );
}

#[test]
fn the_streaming_pass_redacts_what_the_dom_redactor_did() {
    let inner_cm =
        json!({"kind": "ConfigMap", "data": {"password": "hunter2", "mode": "fast"}}).to_string();
    let inner_secret = json!({"kind": "Secret", "data": {"k": "aGk="}}).to_string();
    let objects = [
        // kind and name after the members they change: walked again.
        r#"{"data": {"a": "b", "n": null}, "metadata": {"x": {"data": 1}}, "kind": "Secret"}"#.to_owned(),
        r#"{"value": "topsecret", "valueFrom": {"secretKeyRef": {"key": "k"}}, "name": "DB_PASSWORD"}"#.to_owned(),
        r#"{"env": [{"value": "topsecret", "name": "API_TOKEN"}, {"name": "LOG", "value": "x"}]}"#.to_owned(),
        // Spacing, escapes in keys and values, empty maps and lists, numbers, literals.
        r#" { "kind" : "Sec\u0072et" , "data" : { } , "stringData" : {"k" : "v"} , "x" : [ ] } "#.to_owned(),
        r#"{"db\u005fPASSWORD": "hunter2", "n": -1.5e3, "t": true, "f": false, "z": null, "password": null}"#.to_owned(),
        r#"{"password": {"a": [1, 2], "b": {"c": "d"}}, "apiToken": [1, "x"], "tokenTTL": 30}"#.to_owned(),
        r#"[{"op": "replace", "path": "/data/k", "value": "hunter2"}, {"op": "add", "value": {"a": "b"}}]"#.to_owned(),
        r#"{"kind": "SecretList", "items": [{"metadata": {"name": "a"}, "data": {"k": "x"}}, {"kind": "Secret", "data": {"k": "y"}}]}"#.to_owned(),
        r#"{"kind": {"nested": "Secret"}, "name": ["DB_PASSWORD"], "value": "kept"}"#.to_owned(),
        r#"{"name": "ünïcode_PASSWORD", "value": "x", "Ünïcode-Token": "y", "é": "\"quoted\" \\ \n"}"#.to_owned(),
        // The last-applied annotation: another object's (redacted inside, or kept: not JSON),
        // a Secret's, and not a string.
        json!({"kind": "ConfigMap", "metadata": {"annotations": {LAST_APPLIED: inner_cm}}}).to_string(),
        json!({"kind": "ConfigMap", "metadata": {"annotations": {LAST_APPLIED: "{not json"}}}).to_string(),
        json!({"metadata": {"annotations": {LAST_APPLIED: inner_cm}}, "kind": "Secret"}).to_string(),
        json!({"metadata": {"annotations": {LAST_APPLIED: inner_secret}}}).to_string(),
        json!({"metadata": {"annotations": {LAST_APPLIED: {"a": 1}}}}).to_string(),
        json!({"metadata": {"annotations": {LAST_APPLIED: null}}}).to_string(),
        json!({"kind": "Pod", "spec": {"containers": [{"name": "app", "env": [
            {"name": "ADMIN_PASSWORD", "value": "topsecret"},
            {"name": "LOG_LEVEL", "value": "debug"},
        ]}], "imagePullSecrets": [{"name": "regcred"}], "automountServiceAccountToken": false}})
        .to_string(),
        r#""just a string""#.to_owned(),
        "42".to_owned(),
    ];
    for object in &objects {
        for keys in [&["password", "token", "secret"][..], &["passwd"], &["x"]] {
            for secret in [false, true] {
                assert_same_as_dom(keys, object, secret);
            }
        }
    }
}

#[test]
fn objects_that_are_not_json_fail_with_serde_json_s_message() {
    let r = Redactor::new(&["password".to_owned()]);
    for text in [
        "{\"a\": ",
        "{\"a\" 1}",
        "[1, 2",
        "{\"password\": \"x\"} trailing",
        "\"unterminated",
        "",
    ] {
        let err = r.object(text, false).unwrap_err();
        assert!(err.starts_with("object is not JSON: "), "{text:?}: {err}");
    }
}
