use wasmgate_sdk::parse_settings;
use wasmgate_sdk::serde_json::json;
use wasmgate_sdk::types::Decision;

use super::*;

fn message(settings: &str, object: Value) -> Option<String> {
    let workload: Workload = wasmgate_sdk::serde_json::from_value(object).unwrap();
    message_as(settings, &workload, workload.own_kind())
}

fn message_as(settings: &str, workload: &Workload, kind: (&str, &str)) -> Option<String> {
    match check(&parse_settings(settings).unwrap(), workload, kind).decision {
        Decision::Allowed => None,
        Decision::Denied(denial) => {
            assert_eq!((denial.code, denial.reason.as_str()), (403, "Forbidden"));
            Some(denial.message)
        }
    }
}

fn privileged(name: &str) -> Value {
    json!({"name": name, "securityContext": {"privileged": true}})
}

fn pod_spec() -> Value {
    json!({
        "containers": [privileged("nginx"), {"name": "ok", "securityContext": {"privileged": false}}],
        "initContainers": [{"name": "fine"}, privileged("setup")],
        "ephemeralContainers": [privileged("debug")],
    })
}

#[test]
fn lists_every_offender_of_a_pod_in_order() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": pod_spec()});
    assert_eq!(
        message("{}", pod).as_deref(),
        Some(
            "privileged containers are not allowed: spec.containers[0] \"nginx\", \
             spec.initContainers[1] \"setup\", spec.ephemeralContainers[0] \"debug\""
        )
    );
}

#[test]
fn finds_pod_templates_of_workloads() {
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "spec": {"template": {"spec": {"containers": [privileged("nginx")]}}}});
    assert_eq!(
        message("{}", deployment).as_deref(),
        Some("privileged containers are not allowed: spec.template.spec.containers[0] \"nginx\"")
    );
    let cron_job = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"initContainers": [privileged("x")]}}}}}});
    assert_eq!(
        message("{}", cron_job).as_deref(),
        Some(
            "privileged containers are not allowed: \
             spec.jobTemplate.spec.template.spec.initContainers[0] \"x\""
        )
    );
}

#[test]
fn skips_what_the_settings_exempt() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": pod_spec()});
    let settings = r#"{"skip_init_containers": true, "skip_ephemeral_containers": true}"#;
    assert_eq!(
        message(settings, pod).as_deref(),
        Some("privileged containers are not allowed: spec.containers[0] \"nginx\"")
    );
}

#[test]
fn allows_unprivileged_and_other_kinds() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "spec": {"containers": [{"name": "a"}, {"name": "b", "securityContext": {"privileged": "true"}}]}});
    assert_eq!(message("{}", pod), None);
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "spec": pod_spec()});
    assert_eq!(message("{}", config_map), None);
}

#[test]
fn unknown_settings_are_an_error() {
    assert!(parse_settings::<Settings>(r#"{"skipInitContainers": true}"#).is_err());
}

#[test]
fn the_kind_comes_from_the_request_not_the_object() {
    // A review whose object lacks apiVersion/kind: the request says it is a Deployment.
    let bare: Workload = wasmgate_sdk::serde_json::from_value(
        json!({"spec": {"template": {"spec": {"containers": [privileged("nginx")]}}}}),
    )
    .unwrap();
    assert_eq!(
        message_as("{}", &bare, ("apps", "Deployment")).as_deref(),
        Some("privileged containers are not allowed: spec.template.spec.containers[0] \"nginx\"")
    );
    // An object that calls itself a ConfigMap, admitted as a Pod (pods/ephemeralcontainers).
    let disguised: Workload = wasmgate_sdk::serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "spec": {"ephemeralContainers": [privileged("debugger")]}}),
    )
    .unwrap();
    assert_eq!(
        message_as("{}", &disguised, ("", "Pod")).as_deref(),
        Some("privileged containers are not allowed: spec.ephemeralContainers[0] \"debugger\"")
    );
}
