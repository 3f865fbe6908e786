use wasmgate_sdk::serde_json::json;

use super::*;

#[test]
fn sets_always_on_every_container_once() {
    let mut job = json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
        "containers": [{"name": "a", "imagePullPolicy": "IfNotPresent"}, {"name": "b"}],
        "initContainers": [{"name": "c", "imagePullPolicy": "Always"}],
        "ephemeralContainers": [{"name": "d"}],
    }}}});
    assert_eq!(always_pull(&mut job), Ok(true));
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
    assert_eq!(always_pull(&mut job), Ok(false), "idempotent");
}

#[test]
fn leaves_other_kinds_alone() {
    let mut config_map =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "spec": {"containers": [{}]}});
    let before = config_map.clone();
    assert_eq!(always_pull(&mut config_map), Ok(false));
    assert_eq!(config_map, before);
}

#[test]
fn a_container_that_is_not_an_object_is_an_error() {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": ["x"]}});
    assert_eq!(
        always_pull(&mut pod),
        Err("spec.containers[0] is not a JSON object".into())
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
