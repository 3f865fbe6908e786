use wasmgate_sdk::parse_settings;
use wasmgate_sdk::serde_json::json;
use wasmgate_sdk::types::Decision;

use super::*;

fn message(settings: &str, object: Value) -> Option<String> {
    match check(
        &parse_settings(settings).unwrap(),
        &wasmgate_sdk::serde_json::from_value(object).unwrap(),
    )
    .decision
    {
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
fn settings_are_checked_at_load() {
    let check = wasmgate_sdk::validator::validate_settings::<DenyPrivileged>;
    assert_eq!(check(""), Ok(()));
    assert_eq!(check(r#"{"skip_init_containers": true}"#), Ok(()));
    assert_eq!(
        check(r#"{"skip_init_containers": "yes"}"#),
        Err(r#"skip_init_containers: invalid type: string "yes", expected a boolean"#.into())
    );
    let unknown = check(r#"{"skipInitContainers": true}"#).unwrap_err();
    assert!(
        unknown.contains("unknown field `skipInitContainers`"),
        "{unknown}"
    );
}
