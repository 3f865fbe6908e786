use wasmgate_sdk::parse_settings;
use wasmgate_sdk::serde_json::{Value, json};
use wasmgate_sdk::types::{Decision, GroupVersionKind, GroupVersionResource, UserInfo};

use super::*;

fn settings(text: &str) -> Settings {
    parse_settings(text).unwrap()
}

fn request(
    group: &str,
    resource: &str,
    sub: &str,
    op: Operation,
    object: Value,
) -> AdmissionRequest {
    AdmissionRequest {
        uid: "u".into(),
        kind: GroupVersionKind {
            group: group.into(),
            version: "v1".into(),
            kind: String::new(),
        },
        resource: GroupVersionResource {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
        },
        sub_resource: sub.into(),
        request_kind: None,
        request_resource: None,
        request_sub_resource: sub.into(),
        name: "p".into(),
        namespace: "team".into(),
        operation: op,
        user_info: UserInfo {
            username: "alice".into(),
            uid: String::new(),
            groups: vec![],
            extra: vec![],
        },
        object: Some(object.to_string()),
        old_object: None,
        dry_run: false,
        options: None,
    }
}

fn pod_create(spec: Value) -> AdmissionRequest {
    request(
        "",
        "pods",
        "",
        Operation::Create,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}),
    )
}

fn denial(verdict: &Verdict) -> Option<&str> {
    match &verdict.decision {
        Decision::Allowed => None,
        Decision::Denied(d) => Some(&d.message),
    }
}

/// A spec that the restricted level allows at every version.
fn restricted_spec() -> Value {
    json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "a", "image": "x", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
    })
}

/// Runs one check version on a pod spec (metadata: `annotations`).
fn run(
    check: fn(&checks::Pod) -> checks::Outcome,
    annotations: Value,
    spec: Value,
) -> Option<(String, String)> {
    let pod = pod_of(
        "",
        "Pod",
        &json!({"metadata": {"annotations": annotations}, "spec": spec}).to_string(),
    )
    .unwrap()
    .unwrap();
    let meta = Default::default();
    let target = checks::Pod {
        meta: pod.metadata.as_ref().unwrap_or(&meta),
        spec: pod.spec.as_ref().unwrap(),
    };
    check(&target).map(|f| (f.reason, f.detail))
}

fn forbidden(reason: &str, detail: &str) -> Option<(String, String)> {
    Some((reason.into(), detail.into()))
}

// The cases below are upstream's own (`policy/check_*_test.go` of v0.36.3), with its strings.

#[test]
fn upstream_capabilities_restricted_detail() {
    let spec = json!({"containers": [
        {"name": "a", "securityContext": {"capabilities": {"add": ["FOO", "BAR"]}}},
        {"name": "b", "securityContext": {"capabilities": {"add": ["BAZ"]}}},
        {"name": "c", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}}},
        {"name": "d", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}},
    ]});
    assert_eq!(
        run(checks::capabilities_restricted_1_22, json!({}), spec),
        forbidden(
            "unrestricted capabilities",
            r#"containers "a", "b" must set securityContext.capabilities.drop=["ALL"]; containers "a", "b", "c" must not include "BAR", "BAZ", "CHOWN", "FOO" in securityContext.capabilities.add"#
        )
    );
}

#[test]
fn upstream_host_ports_detail() {
    let spec = json!({"containers": [
        {"name": "a", "ports": [{"containerPort": 1}]},
        {"name": "b", "ports": [{"hostPort": 10}, {"hostPort": 20}]},
        {"name": "c", "ports": [{"hostPort": 30}, {"hostPort": 20}]},
    ]});
    assert_eq!(
        run(checks::host_ports_1_0, json!({}), spec),
        forbidden(
            "hostPort",
            r#"containers "b", "c" use hostPorts 10, 20, 30"#
        )
    );
}

#[test]
fn upstream_se_linux_options_detail() {
    let spec = json!({
    "securityContext": {"seLinuxOptions": {"type": "foo", "user": "u", "role": "r"}},
    "containers": [
        {"name": "a", "securityContext": {"seLinuxOptions": {}}},
        {"name": "b", "securityContext": {"seLinuxOptions": {"type": "container_t"}}},
        {"name": "e", "securityContext": {"seLinuxOptions": {"type": "bar"}}},
        {"name": "f", "securityContext": {"seLinuxOptions": {"user": "bar"}}},
        {"name": "g", "securityContext": {"seLinuxOptions": {"role": "baz"}}},
    ]});
    assert_eq!(
        run(checks::se_linux_options_1_0, json!({}), spec),
        forbidden(
            "seLinuxOptions",
            r#"pod and containers "e", "f", "g" set forbidden securityContext.seLinuxOptions: types "bar", "foo"; user may not be set; role may not be set"#
        )
    );
}

#[test]
fn upstream_seccomp_annotations_detail() {
    let annotations = json!({
        "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
        "container.seccomp.security.alpha.kubernetes.io/a": "unconfined",
        "container.seccomp.security.alpha.kubernetes.io/b": "unknown",
        "container.seccomp.security.alpha.kubernetes.io/c": "runtime/default",
    });
    let spec = json!({"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]});
    assert_eq!(
        run(checks::seccomp_profile_baseline_1_0, annotations, spec),
        forbidden(
            "seccompProfile",
            r#"forbidden annotations container.seccomp.security.alpha.kubernetes.io/a="unconfined", container.seccomp.security.alpha.kubernetes.io/b="unknown", seccomp.security.alpha.kubernetes.io/pod="unconfined""#
        )
    );
}

#[test]
fn upstream_probe_hosts_detail() {
    let spec = json!({"containers": [{"name": "a",
        "livenessProbe": {"httpGet": {"host": "localhost"}},
        "readinessProbe": {"tcpSocket": {"host": "127.0.0.1"}},
        "lifecycle": {"preStop": {"httpGet": {"host": "::1"}}, "postStart": {"httpGet": {"host": ""}}},
    }]});
    assert_eq!(
        run(checks::host_probes_and_host_lifecycle_1_34, json!({}), spec),
        forbidden(
            "probe or lifecycle host",
            r#"container "a" uses probe or lifecycle hosts "127.0.0.1", "::1", "localhost""#
        )
    );
}

#[test]
fn upstream_run_as_non_root_implicit_and_explicit() {
    let implicit = json!({"containers": [{"name": "a"}, {"name": "b"}]});
    assert_eq!(
        run(checks::run_as_non_root_1_0, json!({}), implicit),
        forbidden(
            "runAsNonRoot != true",
            r#"pod or containers "a", "b" must set securityContext.runAsNonRoot=true"#
        )
    );
    let explicit =
        json!({"securityContext": {"runAsNonRoot": false}, "containers": [{"name": "a"}]});
    assert_eq!(
        run(checks::run_as_non_root_1_0, json!({}), explicit),
        forbidden(
            "runAsNonRoot != true",
            "pod must not set securityContext.runAsNonRoot=false"
        )
    );
}

#[test]
fn upstream_app_armor_annotations_quoted_like_go() {
    let annotations = json!({
        "container.apparmor.security.beta.kubernetes.io/b": "unconfined",
        "container.apparmor.security.beta.kubernetes.io/a": "x\"y\n",
        "container.apparmor.security.beta.kubernetes.io/c": "localhost/ok",
    });
    assert_eq!(
        run(
            checks::app_armor_profile_1_0,
            annotations,
            json!({"containers": [{"name": "a"}]})
        ),
        forbidden(
            "forbidden AppArmor profiles",
            r#"annotations must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/a="x\"y\n"", "container.apparmor.security.beta.kubernetes.io/b="unconfined"""#
        )
    );
}

#[test]
fn volume_without_source_is_defaulted_to_empty_dir() {
    let spec = json!({"volumes": [{"name": "v0"}, {"name": "v1", "nfs": {}}, {"name": "v2", "hostPath": {"path": "/"}}]});
    assert_eq!(
        run(checks::restricted_volumes_1_0, json!({}), spec),
        forbidden(
            "restricted volume types",
            r#"volumes "v1", "v2" use restricted volume types "hostPath", "nfs""#
        )
    );
}

// === the version table ===

#[test]
fn version_table_follows_upstream() {
    let ids = |level, minor| -> Vec<&str> {
        registry::checks_for(level, minor)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(registry::max_minor(), 35);
    assert_eq!(
        ids(Level::Baseline, 35),
        [
            "appArmorProfile",
            "capabilities_baseline",
            "hostNamespaces",
            "hostPathVolumes",
            "hostPorts",
            "hostProbesAndHostLifecycle",
            "privileged",
            "procMount",
            "seLinuxOptions",
            "seccompProfile_baseline",
            "sysctls",
            "windowsHostProcess",
        ]
    );
    assert_eq!(
        ids(Level::Restricted, 35),
        [
            "appArmorProfile",
            "hostNamespaces",
            "hostPorts",
            "hostProbesAndHostLifecycle",
            "privileged",
            "seLinuxOptions",
            "sysctls",
            "windowsHostProcess",
            "allowPrivilegeEscalation",
            "capabilities_restricted",
            "procMount_restricted",
            "restrictedVolumes",
            "runAsNonRoot",
            "runAsUser",
            "seccompProfile_restricted",
        ]
    );
    // v1.0: no allowPrivilegeEscalation (1.8), capabilities_restricted (1.22), runAsUser
    // (1.23), seccompProfile_restricted (1.19): the baseline checks they override stay.
    assert_eq!(
        ids(Level::Restricted, 0),
        [
            "appArmorProfile",
            "capabilities_baseline",
            "hostNamespaces",
            "hostPorts",
            "privileged",
            "procMount",
            "seLinuxOptions",
            "seccompProfile_baseline",
            "sysctls",
            "windowsHostProcess",
            "restrictedVolumes",
            "runAsNonRoot",
        ]
    );
    assert_eq!(ids(Level::Baseline, 99), ids(Level::Baseline, 35));
}

// === the admission flow ===

#[test]
fn pod_denied_in_upstream_form() {
    let spec = json!({"hostNetwork": true, "containers": [{"name": "a", "securityContext": {"privileged": true}}]});
    let verdict = admit(&pod_create(spec), &settings(r#"{"level": "baseline"}"#));
    assert_eq!(
        denial(&verdict),
        Some(
            r#"violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), privileged (container "a" must not set securityContext.privileged=true)"#
        )
    );
    let Decision::Denied(d) = &verdict.decision else {
        unreachable!()
    };
    assert_eq!((d.code, d.reason.as_str()), (403, "Forbidden"));
}

#[test]
fn restricted_pod_allowed_and_pinned_version_named() {
    let verdict = admit(
        &pod_create(restricted_spec()),
        &settings(r#"{"level": "restricted", "version": "v1.30"}"#),
    );
    assert!(verdict.is_allowed());
    let bare = json!({"containers": [{"name": "a"}]});
    let verdict = admit(
        &pod_create(bare),
        &settings(r#"{"level": "restricted", "version": "v1.30"}"#),
    );
    assert!(denial(&verdict).unwrap().starts_with(
        r#"violates PodSecurity "restricted:v1.30": allowPrivilegeEscalation != false"#
    ));
}

#[test]
fn hostusers_false_relaxes_from_v1_35_only() {
    let spec = json!({"hostUsers": false, "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "a", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]});
    assert!(
        admit(
            &pod_create(spec.clone()),
            &settings(r#"{"level": "restricted"}"#)
        )
        .is_allowed()
    );
    let old = admit(
        &pod_create(spec),
        &settings(r#"{"level": "restricted", "version": "v1.34"}"#),
    );
    assert!(
        denial(&old).unwrap().contains("runAsNonRoot != true"),
        "{old:?}"
    );
    assert!(denial(&old).unwrap().contains("runAsUser=0"), "{old:?}");
}

#[test]
fn workloads_are_warned_about_not_denied() {
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": {"hostPID": true, "containers": [{"name": "a"}]}}}});
    let verdict = admit(
        &request("apps", "deployments", "", Operation::Create, deployment),
        &settings(r#"{"level": "baseline"}"#),
    );
    assert!(verdict.is_allowed());
    assert_eq!(
        verdict.remarks.warnings,
        [r#"would violate PodSecurity "baseline:latest": host namespaces (hostPID=true)"#]
    );
    let cronjob = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}}}}}});
    let verdict = admit(
        &request("batch", "cronjobs", "", Operation::Create, cronjob),
        &settings(r#"{"level": "baseline"}"#),
    );
    assert_eq!(verdict.remarks.warnings.len(), 1, "{verdict:?}");
    // A sub-resource of a workload (scale) is not evaluated.
    let scale = json!({"spec": {"replicas": 3}});
    let verdict = admit(
        &request("apps", "deployments", "scale", Operation::Update, scale),
        &settings(r#"{"level": "baseline"}"#),
    );
    assert!(verdict.is_allowed() && verdict.remarks.warnings.is_empty());
}

#[test]
fn updates_that_change_no_image_are_allowed_unchecked() {
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a": "b"}}, "spec": {"hostIPC": true, "containers": [{"name": "a", "image": "x"}]}});
    let mut old = bad.clone();
    old["metadata"]["labels"] = json!({});
    let mut update = request("", "pods", "", Operation::Update, bad.clone());
    update.old_object = Some(old.to_string());
    let s = settings(r#"{"level": "baseline"}"#);
    assert!(admit(&update, &s).is_allowed());
    // A new image is significant.
    let mut old = bad.clone();
    old["spec"]["containers"][0]["image"] = json!("y");
    update.old_object = Some(old.to_string());
    assert!(!admit(&update, &s).is_allowed());
    // An ephemeral container added through the sub-resource is evaluated.
    let mut new = bad.clone();
    new["spec"]["hostIPC"] = json!(false);
    let mut old = new.clone();
    new["spec"]["ephemeralContainers"] =
        json!([{"name": "debug", "image": "x", "securityContext": {"privileged": true}}]);
    old["spec"]["ephemeralContainers"] = json!([]);
    let mut ephemeral = request("", "pods", "ephemeralcontainers", Operation::Update, new);
    ephemeral.old_object = Some(old.to_string());
    assert_eq!(
        denial(&admit(&ephemeral, &s)),
        Some(
            r#"violates PodSecurity "baseline:latest": privileged (container "debug" must not set securityContext.privileged=true)"#
        )
    );
    // Status updates are never evaluated.
    assert!(admit(&request("", "pods", "status", Operation::Update, bad), &s).is_allowed());
}

#[test]
fn exemptions_and_privileged_allow() {
    let spec =
        json!({"hostNetwork": true, "runtimeClassName": "kata", "containers": [{"name": "a"}]});
    let deny = settings(r#"{"level": "baseline"}"#);
    assert!(!admit(&pod_create(spec.clone()), &deny).is_allowed());
    for exempt in [
        r#"{"level": "baseline", "exemptions": {"namespaces": ["team"]}}"#,
        r#"{"level": "baseline", "exemptions": {"usernames": ["alice"]}}"#,
        r#"{"level": "baseline", "exemptions": {"runtimeClasses": ["kata"]}}"#,
        r#"{"level": "privileged"}"#,
    ] {
        assert!(
            admit(&pod_create(spec.clone()), &settings(exempt)).is_allowed(),
            "{exempt}"
        );
    }
}

#[test]
fn malformed_pod_is_a_bad_request() {
    let verdict = admit(
        &pod_create(json!({"hostNetwork": "yes"})),
        &settings(r#"{"level": "baseline"}"#),
    );
    let Decision::Denied(d) = &verdict.decision else {
        panic!("{verdict:?}")
    };
    assert_eq!(d.code, 400);
    assert!(
        d.message
            .starts_with("failed to decode pod: invalid type: string \"yes\", expected a boolean"),
        "{}",
        d.message
    );
}

fn refused(text: &str) -> String {
    wasmgate_sdk::validator::validate_settings::<PodSecurity>(text).unwrap_err()
}

#[test]
fn settings_are_checked_at_load() {
    let ok = |text| wasmgate_sdk::validator::validate_settings::<PodSecurity>(text);
    assert_eq!(ok(r#"{"level": "restricted"}"#), Ok(()));
    assert_eq!(
        ok(
            r#"{"level": "baseline", "version": "v1.0", "exemptions": {"usernames": ["system:serviceaccount:a:b"], "namespaces": ["kube-system"], "runtimeClasses": ["gvisor.example.com"]}}"#
        ),
        Ok(())
    );
    assert_eq!(refused("{}"), "missing field `level`");
    assert_eq!(
        refused(r#"{"level": "strict"}"#),
        r#"level: "strict" must be one of privileged, baseline, restricted"#
    );
    for version in ["1.30", "v1.030", "v2.0", "v1.", "v1.x", "Latest"] {
        assert_eq!(
            refused(&format!(
                r#"{{"level": "baseline", "version": "{version}"}}"#
            )),
            format!(r#"version: "{version}" must be "latest" or "v1.x""#)
        );
    }
    assert!(
        refused(r#"{"level": "baseline", "exemptions": {"runtimeClassNames": []}}"#)
            .contains("unknown field `runtimeClassNames`")
    );
    assert_eq!(
        refused(r#"{"level": "baseline", "exemptions": {"namespaces": ["Kube_System"]}}"#),
        r#"exemptions.namespaces[0]: "Kube_System" is not a namespace name (a DNS label)"#
    );
    assert_eq!(
        refused(r#"{"level": "baseline", "exemptions": {"usernames": ["a", ""]}}"#),
        "exemptions.usernames[1]: must not be empty"
    );
    assert_eq!(
        refused(r#"{"level": "baseline", "exemptions": {"runtimeClasses": ["a", "a"]}}"#),
        r#"exemptions.runtimeClasses[1]: duplicate "a""#
    );
}

#[test]
fn unreadable_workload_is_allowed_with_the_reason_as_upstream() {
    let deployment = json!({"spec": {"template": {"spec": {"containers": "not a list"}}}});
    let verdict = admit(
        &request("apps", "deployments", "", Operation::Create, deployment),
        &settings(r#"{"level": "restricted"}"#),
    );
    assert!(verdict.is_allowed());
    let (key, value) = &verdict.remarks.audit_annotations[0];
    assert_eq!(key, "error");
    assert!(
        value.starts_with("failed to decode object: invalid type: string \"not a list\""),
        "{value}"
    );
}

#[test]
fn delete_and_other_resources_are_not_evaluated() {
    let s = settings(r#"{"level": "restricted"}"#);
    let bare = json!({"spec": {"containers": [{"name": "a"}]}});
    assert!(!admit(&pod_create(bare["spec"].clone()), &s).is_allowed());
    assert!(
        admit(
            &request("", "pods", "", Operation::Delete, bare.clone()),
            &s
        )
        .is_allowed()
    );
    assert!(admit(&request("", "configmaps", "", Operation::Create, bare), &s).is_allowed());
}
