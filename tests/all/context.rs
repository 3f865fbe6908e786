//! `context:` grants: policies reading cluster state through the `cluster` import, served
//! offline from a file of objects (`check --cluster`, a suite's `cluster:`) through the same
//! caches and lookups `serve` uses against the API server (tests/e2e covers that side).

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{compile_cache, entry, policy_file, repo};

/// Runs `wasmgate check` in `dir` on the pod-create review with these extra arguments.
fn check(dir: &std::path::Path, args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .arg("check")
        .args(["--config"])
        .arg(dir.join("policies.yaml"))
        .arg("--request")
        .arg(repo().join("tests/fixtures/reviews/pod-create.json"))
        .args(args)
        .env("WASMGATE_COMPILE_CACHE", compile_cache())
        .output()
        .unwrap();
    let stdout: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (
        output.status.code().unwrap(),
        stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A folder with `policies.yaml` (cluster-probe with `grants` under `context:`) and
/// `cluster.yaml` (pods web-0 and web-1 in default, db-0 in other, with managedFields).
fn setup(grants: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let extra = if grants.is_empty() {
        String::new()
    } else {
        format!("context:\n{grants}")
    };
    std::fs::write(
        dir.path().join("policies.yaml"),
        policy_file(&entry("probe", "validator", "cluster-probe", &extra)),
    )
    .unwrap();
    let pod = |ns: &str, name: &str, app: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    };
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        pod("default", "web-0", "web"), pod("default", "web-1", "web"), pod("other", "db-0", "db"),
    ]});
    std::fs::write(dir.path().join("cluster.yaml"), objects.to_string()).unwrap();
    dir
}

fn warnings(out: &Value) -> Vec<String> {
    out["response"]["warnings"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_granted_resource_is_read_from_the_cluster_file() {
    let dir = setup("  - {apiGroup: '', version: v1, resource: pods}");
    let cluster = dir.path().join("cluster.yaml").display().to_string();
    let (code, out, err) = check(dir.path(), &["--cluster", &cluster]);
    assert_eq!(code, 0, "{out}\n{err}");
    // web-0 itself; the list of its namespace holds web-0 and web-1.
    assert_eq!(warnings(&out), ["get: found", "list: 2 objects"], "{out}");
}

#[test]
fn grants_bound_what_a_lookup_answers() {
    let cluster = |dir: &tempfile::TempDir| dir.path().join("cluster.yaml").display().to_string();
    // Granted only in another namespace.
    let dir = setup("  - {apiGroup: '', version: v1, resource: pods, namespaces: [other]}");
    let (code, out, err) = check(dir.path(), &["--cluster", &cluster(&dir)]);
    assert_eq!(code, 0, "{out}\n{err}");
    let why =
        r#"policy "probe" is granted core/v1 pods only in namespaces other, not in "default""#;
    assert_eq!(
        warnings(&out),
        [
            format!("get: denied: {why}"),
            format!("list: denied: {why}")
        ],
        "{out}"
    );
    // Granted another resource: the message says what is granted.
    let dir = setup("  - {apiGroup: '', version: v1, resource: configmaps, metadataOnly: true}");
    let (code, out, err) = check(dir.path(), &["--cluster", &cluster(&dir)]);
    assert_eq!(code, 0, "{out}\n{err}");
    let why = "policy \"probe\" is not granted core/v1 pods; its `context:` grants core/v1 configmaps (metadata only)";
    assert_eq!(
        warnings(&out),
        [
            format!("get: denied: {why}"),
            format!("list: denied: {why}")
        ],
        "{out}"
    );
    // No grant at all.
    let dir = setup("");
    let (code, out, err) = check(dir.path(), &["--cluster", &cluster(&dir)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        warnings(&out)[0]
            .starts_with("get: denied: policy \"probe\" has no `context:` grant for core/v1 pods"),
        "{out}"
    );
}

#[test]
fn a_policy_file_with_context_and_no_cluster_is_refused_at_load() {
    let dir = setup("  - {apiGroup: '', version: v1, resource: pods}");
    let (code, _, err) = check(dir.path(), &[]);
    assert_eq!(code, 2, "{err}");
    let file = dir.path().join("policies.yaml");
    // The line of the grant (line 10: the list item under `context:`).
    assert!(
        err.contains(&format!(
            "{}:10: policy \"probe\": context[0]: core/v1 pods: the gateway has no cluster access",
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn bad_grants_are_refused_with_file_and_line() {
    for (grant, line, message) in [
        (
            "  - {apiGroup: '', version: v1, resource: pods/status}",
            10,
            "context[0]: resource \"pods/status\": sub-resources cannot be read, only objects",
        ),
        (
            "  - {apiGroup: '', version: v1, resource: '*'}",
            10,
            "context[0]: resource \"*\" is not a resource name",
        ),
        (
            "  - {apiGroup: Apps, version: v1, resource: deployments}",
            10,
            "context[0]: apiGroup \"Apps\" is not an API group",
        ),
        (
            "  - {apiGroup: '', version: v1, resource: pods, namespaces: [Bad]}",
            10,
            "context[0]: namespaces: \"Bad\" is not a namespace name",
        ),
        (
            "  - {apiGroup: '', version: v1, resource: pods}\n  - {apiGroup: '', version: v1, resource: pods, metadataOnly: true}",
            11,
            "context[1]: core/v1 pods (metadata only) is granted twice (context[0] already grants it)",
        ),
        (
            "  - {apiGroup: '', version: v1, resource: pods, verbs: [get]}",
            10,
            "unknown field `verbs`",
        ),
    ] {
        let dir = setup(grant);
        let (code, _, err) = check(dir.path(), &[]);
        assert_eq!(code, 2, "{grant}: {err}");
        let file = dir.path().join("policies.yaml");
        assert!(
            err.contains(&format!("{}:{line}: ", file.display())) && err.contains(message),
            "{grant}: {err}"
        );
    }
}

#[test]
fn a_bad_cluster_file_is_refused() {
    let dir = setup("  - {apiGroup: '', version: v1, resource: pods}");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "- {apiVersion: v1, metadata: {name: x}}").unwrap();
    let (code, _, err) = check(dir.path(), &["--cluster", &bad.display().to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "cluster state {}: object 0: no kind",
            bad.display()
        )),
        "{err}"
    );
}
