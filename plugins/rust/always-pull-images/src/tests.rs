use wasmgate_sdk::serde_json::json;

use super::*;

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
    let operations = always_pull(&job, "batch", "Job").unwrap();
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
    assert_eq!(always_pull(&job, "batch", "Job"), Ok(vec![]), "idempotent");
}

#[test]
fn cronjob_paths_are_pointers() {
    let cronjob = json!({"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "a"}],
    }}}}}});
    assert_eq!(
        always_pull(&cronjob, "batch", "CronJob").unwrap()[0]["path"],
        "/spec/jobTemplate/spec/template/spec/containers/0/imagePullPolicy"
    );
}

#[test]
fn leaves_other_kinds_alone() {
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "spec": {"containers": [{}]}});
    assert_eq!(always_pull(&config_map, "", "ConfigMap"), Ok(vec![]));
}

#[test]
fn a_container_that_is_not_an_object_is_an_error() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": ["x"]}});
    assert_eq!(
        always_pull(&pod, "", "Pod"),
        Err("spec.containers[0] is not a JSON object".into())
    );
}

#[test]
fn the_kind_comes_from_the_request() {
    // No apiVersion/kind in the object: the request's kind decides where the containers are.
    let bare = json!({"spec": {"containers": [{"name": "a"}]}});
    assert_eq!(
        always_pull(&bare, "", "Pod").unwrap(),
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
