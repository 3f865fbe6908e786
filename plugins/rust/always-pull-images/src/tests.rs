use wasmgate_sdk::serde_json::json;

use super::*;

#[test]
fn sets_always_on_every_container_once() {
    let mut job = json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
        "containers": [{"name": "a", "imagePullPolicy": "IfNotPresent"}, {"name": "b"}],
        "initContainers": [{"name": "c", "imagePullPolicy": "Always"}],
        "ephemeralContainers": [{"name": "d"}],
    }}}});
    assert_eq!(always_pull(&mut job, "batch", "Job"), Ok(true));
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
    assert_eq!(
        always_pull(&mut job, "batch", "Job"),
        Ok(false),
        "idempotent"
    );
}

#[test]
fn leaves_other_kinds_alone() {
    let mut config_map =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "spec": {"containers": [{}]}});
    let before = config_map.clone();
    assert_eq!(always_pull(&mut config_map, "", "ConfigMap"), Ok(false));
    assert_eq!(config_map, before);
}

#[test]
fn a_container_that_is_not_an_object_is_an_error() {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": ["x"]}});
    assert_eq!(
        always_pull(&mut pod, "", "Pod"),
        Err("spec.containers[0] is not a JSON object".into())
    );
}

#[test]
fn the_kind_comes_from_the_request() {
    // No apiVersion/kind in the object: the request's kind decides where the containers are.
    let mut bare = json!({"spec": {"containers": [{"name": "a"}]}});
    assert_eq!(always_pull(&mut bare, "", "Pod"), Ok(true));
    assert_eq!(bare["spec"]["containers"][0]["imagePullPolicy"], "Always");
}
