use serde_json::json;

use super::*;

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"team": "a", "odd": 1}},
        "spec": {"template": {"spec": {
            "initContainers": [{"name": "setup"}],
            "containers": [{"name": "nginx"}, {"name": "sidecar"}],
        }}},
    })
}

fn paths<'a>(items: impl Iterator<Item = Container<'a>>) -> Vec<String> {
    items.map(|c| format!("{} {}", c.path, c.name())).collect()
}

#[test]
fn labels_and_annotations() {
    let mut object = deployment();
    assert_eq!(label(&object, "team"), Some("a"));
    assert_eq!(label(&object, "odd"), None);
    assert_eq!(label(&object, "owner"), None);
    assert_eq!(annotation(&object, "x"), None);

    assert_eq!(set_label(&mut object, "team", "a"), Ok(false));
    assert_eq!(set_label(&mut object, "team", "b"), Ok(true));
    assert_eq!(set_annotation(&mut object, "x", "y"), Ok(true));
    assert_eq!(label(&object, "team"), Some("b"));
    assert_eq!(annotation(&object, "x"), Some("y"));
}

#[test]
fn set_label_creates_metadata() {
    let mut object = json!({"kind": "ConfigMap"});
    assert_eq!(set_label(&mut object, "k", "v"), Ok(true));
    assert_eq!(
        object,
        json!({"kind": "ConfigMap", "metadata": {"labels": {"k": "v"}}})
    );

    let mut object = json!({"metadata": {"labels": null}});
    assert_eq!(set_label(&mut object, "k", "v"), Ok(true));
    assert_eq!(label(&object, "k"), Some("v"));
}

#[test]
fn set_label_refuses_non_objects() {
    let mut object = json!("text");
    assert!(set_label(&mut object, "k", "v").is_err());
    let mut object = json!({"metadata": []});
    assert_eq!(
        set_label(&mut object, "k", "v"),
        Err("metadata is not a JSON object".into())
    );
    let mut object = json!({"metadata": {"annotations": 3}});
    assert_eq!(
        set_annotation(&mut object, "k", "v"),
        Err("metadata.annotations is not a JSON object".into())
    );
}

#[test]
fn group_of_api_version() {
    assert_eq!(group(&json!({"apiVersion": "v1"})), "");
    assert_eq!(group(&json!({"apiVersion": "apps/v1"})), "apps");
    assert_eq!(group(&json!({})), "");
}

#[test]
fn pod_spec_of_each_kind() {
    let cases = [
        ("v1", "Pod", Some("spec")),
        ("v1", "PodTemplate", Some("template.spec")),
        ("v1", "ReplicationController", Some("spec.template.spec")),
        ("apps/v1", "Deployment", Some("spec.template.spec")),
        ("apps/v1", "StatefulSet", Some("spec.template.spec")),
        ("apps/v1", "DaemonSet", Some("spec.template.spec")),
        ("apps/v1", "ReplicaSet", Some("spec.template.spec")),
        ("batch/v1", "Job", Some("spec.template.spec")),
        (
            "batch/v1",
            "CronJob",
            Some("spec.jobTemplate.spec.template.spec"),
        ),
        ("v1", "ConfigMap", None),
        ("example.com/v1", "Deployment", None),
    ];
    for (api_version, kind, expected) in cases {
        assert_eq!(
            pod_spec_location(group(&json!({"apiVersion": api_version})), kind).map(|l| l.0),
            expected,
            "{api_version} {kind}"
        );
    }
}

#[test]
fn containers_in_fixed_order_with_paths() {
    let object = json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "ephemeralContainers": [{"name": "debug"}],
            "initContainers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "main"}],
        }}}}},
    });
    let p = "spec.jobTemplate.spec.template.spec";
    let expected = [
        format!("{p}.containers[0] main"),
        format!("{p}.initContainers[0] a"),
        format!("{p}.initContainers[1] b"),
        format!("{p}.ephemeralContainers[0] debug"),
    ];
    assert_eq!(paths(containers(&object)), expected);

    let mut object = object;
    let seen: Vec<_> = containers_mut(&mut object)
        .map(|c| format!("{} {}", c.path, c.name()))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn containers_mut_edits_in_place() {
    let mut object = deployment();
    for mut container in containers_mut(&mut object) {
        let index = container.index;
        container
            .fields_mut()
            .unwrap()
            .insert("i".into(), index.into());
    }
    assert_eq!(
        object.pointer("/spec/template/spec/containers/1/i"),
        Some(&json!(1))
    );
    assert_eq!(
        object.pointer("/spec/template/spec/initContainers/0/i"),
        Some(&json!(0))
    );
}

#[test]
fn containers_of_other_kinds_or_broken_specs_are_empty() {
    assert_eq!(containers(&json!({"kind": "ConfigMap"})).count(), 0);
    assert_eq!(containers(&json!({"kind": "Pod"})).count(), 0);
    assert_eq!(
        containers(&json!({"kind": "Pod", "spec": {"containers": {"a": 1}}})).count(),
        0
    );
    assert_eq!(containers(&json!([1, 2])).count(), 0);
    let mut odd = json!({"kind": "Pod", "spec": "nope"});
    assert_eq!(containers_mut(&mut odd).count(), 0);
}
