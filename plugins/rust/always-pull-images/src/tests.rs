use wasmgate_sdk::serde_json::{Value, json};

use super::*;

/// `always_pull` on `object` written as text, its operations as JSON values.
fn pull(object: &Value, group: &str, kind: &str) -> Result<Vec<Value>, String> {
    let operations = always_pull(&object.to_string(), group, kind)?;
    Ok(operations
        .iter()
        .map(|op| wasmgate_sdk::serde_json::to_value(op).unwrap())
        .collect())
}

/// Applies `add` operations as the host would (the only operation this plugin answers).
fn apply(object: &mut Value, operations: &[Value]) {
    for op in operations {
        assert_eq!(op["op"], "add");
        let path = op["path"].as_str().unwrap();
        let (parent, key) = path.rsplit_once('/').unwrap();
        object.pointer_mut(parent).unwrap()[key] = op["value"].clone();
    }
}

#[test]
fn sets_always_on_every_container_once() {
    let mut job = json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
        "containers": [{"name": "a", "imagePullPolicy": "IfNotPresent"}, {"name": "b"}],
        "initContainers": [{"name": "c", "imagePullPolicy": "Always"}],
        "ephemeralContainers": [{"name": "d"}],
    }}}});
    let operations = pull(&job, "batch", "Job").unwrap();
    assert_eq!(
        operations,
        [
            "/spec/template/spec/containers/0/imagePullPolicy",
            "/spec/template/spec/containers/1/imagePullPolicy",
            "/spec/template/spec/ephemeralContainers/0/imagePullPolicy",
        ]
        .map(|path| json!({"op": "add", "path": path, "value": "Always"}))
    );
    apply(&mut job, &operations);
    let spec = &job["spec"]["template"]["spec"];
    for pointer in [
        "/containers/0",
        "/containers/1",
        "/initContainers/0",
        "/ephemeralContainers/0",
    ] {
        assert_eq!(
            spec.pointer(pointer).unwrap()["imagePullPolicy"],
            "Always",
            "{pointer}"
        );
    }
    assert_eq!(pull(&job, "batch", "Job"), Ok(vec![]), "idempotent");
}

#[test]
fn the_answer_is_the_operations_as_json_text() {
    let pod = json!({"spec": {"containers": [{"name": "a"}]}});
    let text =
        wasmgate_sdk::serde_json::to_string(&always_pull(&pod.to_string(), "", "Pod").unwrap());
    assert_eq!(
        text.unwrap(),
        r#"[{"op":"add","path":"/spec/containers/0/imagePullPolicy","value":"Always"}]"#
    );
}

#[test]
fn cronjob_paths_are_pointers() {
    let cronjob = json!({"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "a"}],
    }}}}}});
    assert_eq!(
        pull(&cronjob, "batch", "CronJob").unwrap()[0]["path"],
        "/spec/jobTemplate/spec/template/spec/containers/0/imagePullPolicy"
    );
}

#[test]
fn leaves_other_kinds_alone() {
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "spec": {"containers": [{}]}});
    assert_eq!(pull(&config_map, "", "ConfigMap"), Ok(vec![]));
}

#[test]
fn a_container_that_is_not_an_object_is_an_error() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": ["x"]}});
    assert_eq!(
        pull(&pod, "", "Pod"),
        Err("spec.containers[0] is not a JSON object".into())
    );
    // The first such container in visiting order, after containers that would be changed.
    let job = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "a"}], "initContainers": [{}, null],
    }}}});
    assert_eq!(
        pull(&job, "batch", "Job"),
        Err("spec.template.spec.initContainers[1] is not a JSON object".into())
    );
}

#[test]
fn an_object_that_is_not_json_is_an_error() {
    let err = always_pull(r#"{"spec": {"containers": [}"#, "", "Pod").unwrap_err();
    assert!(
        err.starts_with("the request's object is not JSON: expected value at line 1"),
        "{err}"
    );
}

#[test]
fn the_kind_comes_from_the_request() {
    // No apiVersion/kind in the object: the request's kind decides where the containers are.
    let bare = json!({"spec": {"containers": [{"name": "a"}]}});
    assert_eq!(
        pull(&bare, "", "Pod").unwrap(),
        [json!({"op": "add", "path": "/spec/containers/0/imagePullPolicy", "value": "Always"})]
    );
}

#[test]
fn settings_are_refused_at_load() {
    let check = wasmgate_sdk::initializer::validate_settings::<AlwaysPullImages>;
    assert_eq!(check(""), Ok(()));
    assert_eq!(check("{}"), Ok(()));
    let unknown = check(r#"{"policy": "IfNotPresent"}"#).unwrap_err();
    assert!(
        unknown.contains("unknown field `policy`, there are no fields"),
        "{unknown}"
    );
    assert_eq!(
        check("[1]"),
        Err("invalid type: sequence, expected no settings (an empty map)".into())
    );
}
