use serde_json::{Value, json};

use super::*;
use crate::k8s;

/// What the `Value` helpers read for the same object: the reference the view must equal.
fn by_value(group: &str, kind: &str, object: &Value, field: &str) -> Option<PodContainers> {
    let (path, pointer) = pod_spec_location(group, kind)?;
    let spec = object.pointer(pointer)?;
    let containers = k8s::pod_containers(path, spec)
        .map(|c| ContainerField {
            list: c.list,
            index: c.index,
            value: c
                .value
                .as_object()
                .map(|fields| fields.get(field).and_then(Value::as_str).map(str::to_owned)),
        })
        .collect();
    Some(PodContainers {
        path,
        pointer,
        containers,
    })
}

fn same(group: &str, kind: &str, object: Value) {
    let text = object.to_string();
    let view = container_field(group, kind, &text, "imagePullPolicy").unwrap();
    assert_eq!(
        view,
        by_value(group, kind, &object, "imagePullPolicy"),
        "{text}"
    );
}

#[test]
fn reads_what_the_value_helpers_read() {
    let containers = json!([
        {"name": "a", "imagePullPolicy": "IfNotPresent", "env": [{"name": "x", "value": "y"}]},
        {"name": "b"},
        {"imagePullPolicy": 3},
        {"imagePullPolicy": {"nested": ["Always"]}},
        {"imagePullPolicy": null},
        "not an object",
        ["nor", "this"],
        null,
        {"imagePullPolicy": "Always", "imagePullPolicy": "Never"},
    ]);
    let spec = json!({
        "volumes": [{"name": "v", "emptyDir": {}}],
        "containers": containers,
        "initContainers": [{"name": "i", "imagePullPolicy": "Alw\u{61}ys"}],
        "ephemeralContainers": {"not": "a list"},
    });
    same("", "Pod", json!({"metadata": {"name": "p"}, "spec": spec}));
    same(
        "apps",
        "Deployment",
        json!({"spec": {"replicas": 2, "template": {"spec": spec}}}),
    );
    same(
        "batch",
        "CronJob",
        json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
    );
    same("", "PodTemplate", json!({"template": {"spec": spec}}));
    // Absent or of another type on the way: nothing.
    same("", "Pod", json!({"metadata": {}}));
    same("", "Pod", json!({"spec": [1, 2]}));
    same("", "Pod", json!({"spec": "x"}));
    same("apps", "Deployment", json!({"spec": {"template": null}}));
    same("", "Pod", json!([{"spec": spec}]));
    same("", "Pod", json!("a string"));
    // Other kinds: nothing read.
    same("", "ConfigMap", json!({"spec": spec}));
}

#[test]
fn a_repeated_key_counts_once_the_last() {
    // serde_json's `json!` cannot write a repeated key: the text can.
    let text = r#"{"spec": {"containers": [{"name": "a"}], "containers": [{"imagePullPolicy": "Never"}, {}]}}"#;
    let object: Value = serde_json::from_str(text).unwrap();
    let view = container_field("", "Pod", text, "imagePullPolicy").unwrap();
    assert_eq!(view, by_value("", "Pod", &object, "imagePullPolicy"));
    assert_eq!(view.unwrap().containers.len(), 2);
}

#[test]
fn escaped_keys_and_values_are_read() {
    let text = r#"{"sp\u0065c": {"containers": [{"imagePullPolicy": "Alw\u0061ys"}]}}"#;
    let view = container_field("", "Pod", text, "imagePullPolicy")
        .unwrap()
        .unwrap();
    assert_eq!(view.containers[0].value, Some(Some("Always".into())));
}

#[test]
fn text_that_is_not_json_is_an_error() {
    for text in [
        "",
        "{",
        r#"{"spec": {"containers": [}}"#,
        r#"{"a": 1} trailing"#,
        "{\"a\": tru}",
    ] {
        let err = container_field("", "Pod", text, "imagePullPolicy").unwrap_err();
        let reference = serde_json::from_str::<Value>(text).unwrap_err();
        assert_eq!(err.to_string(), reference.to_string(), "{text:?}");
    }
}

#[test]
fn paths_name_the_list_and_index() {
    let text = r#"{"spec": {"template": {"spec": {"initContainers": [{}, 1]}}}}"#;
    let view = container_field("batch", "Job", text, "imagePullPolicy")
        .unwrap()
        .unwrap();
    assert_eq!(view.pointer, "/spec/template/spec");
    let second = &view.containers[1];
    assert_eq!(second.value, None);
    assert_eq!(
        second.path(view.path),
        "spec.template.spec.initContainers[1]"
    );
}
