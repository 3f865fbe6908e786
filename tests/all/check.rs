//! `wasmgate check`: offline evaluation, as a plugin author uses it.

use std::process::Command;

use serde_json::Value;

use crate::harness::{compile_cache, entry, policy_file, repo};

fn check(args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .arg("check")
        .args(args)
        .current_dir(repo())
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

#[test]
fn check_evaluates_like_the_server() {
    let (code, out, _) = check(&["--request", "tests/fixtures/reviews/pod-create.json"]);
    assert_eq!(code, 0);
    assert_eq!(out["response"]["allowed"], true);

    let (code, out, _) = check(&[
        "--request",
        "tests/fixtures/reviews/pod-create-no-team.json",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        out["response"]["status"]["message"],
        "require-labels: missing required labels: team"
    );

    let (code, out, _) = check(&[
        "--request",
        "tests/fixtures/reviews/pod-create-no-team.json",
        "--policy",
        "deny-privileged",
    ]);
    assert_eq!(code, 0, "{out}");

    let (code, out, _) = check(&[
        "--mutate",
        "--request",
        "tests/fixtures/reviews/pvc-create.json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out["response"]["patchType"], "JSONPatch");
}

#[test]
fn check_on_the_upstream_fixtures() {
    // kubernetes/api's round-trip fixtures decode field by field, and carry the fuzzer value
    // "operationValue": an operation this build does not know, decoded as it came (forward
    // compatibility, docs/kubernetes-semantics.md); no demo rule lists `*`, so none matches.
    for name in [
        "HEAD.v1.AdmissionReview.json",
        "v1.36.0.v1beta1.AdmissionReview.json",
    ] {
        let path = format!("tests/fixtures/admission-review/{name}");
        let (code, out, stderr) = check(&["--request", &path]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(out["response"]["allowed"], true, "{out}");
        // With a real operation, every other field decodes and the answer is in the same version.
        let dir = tempfile::tempdir().unwrap();
        let fixed = std::fs::read_to_string(repo().join(&path))
            .unwrap()
            .replace("operationValue", "UPDATE");
        let fixed_path = dir.path().join(name);
        std::fs::write(&fixed_path, fixed).unwrap();
        let (code, out, stderr) = check(&["--request", fixed_path.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(out["response"]["uid"], "uidValue");
        assert_eq!(
            out["apiVersion"],
            if name.contains("v1beta1") {
                "admission.k8s.io/v1beta1"
            } else {
                "admission.k8s.io/v1"
            }
        );
    }
}

#[test]
fn start_up_refuses_bad_policy_files_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yaml");
    let request = "tests/fixtures/reviews/pod-create.json";
    let run = |text: &str| {
        std::fs::write(&file, text).unwrap();
        check(&["--config", file.to_str().unwrap(), "--request", request])
    };

    // An initializer declared as a validator.
    let (code, _, stderr) = run(&policy_file(&entry("wrong", "validator", "add-label", "")));
    assert_eq!(code, 2);
    let expected = format!("{}:4: policy \"wrong\": ", file.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("module is not a validator"), "{stderr}");

    // Not a component at all.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm junk").unwrap();
    let (code, _, stderr) = run(&policy_file(&entry("junk", "validator", "burn", ""))
        .replace(&crate::harness::module("burn"), junk.to_str().unwrap()));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("module does not compile as a WebAssembly component"),
        "{stderr}"
    );

    // A YAML syntax error.
    let (code, _, stderr) = run("apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies: [\n");
    assert_eq!(code, 2);
    assert!(stderr.contains(&format!("{}:", file.display())), "{stderr}");

    // A C-compiled-style module whose initial memory is larger than its cap is refused at load.
    let (code, _, stderr) = run(&policy_file(&entry(
        "tiny",
        "validator",
        "hog",
        "memoryLimit: 1Mi",
    )));
    assert!(
        code == 0 || stderr.contains("fails to instantiate under its limits"),
        "{stderr}"
    );
}

#[test]
fn check_explains_which_policies_matched_and_why_others_were_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yaml");
    let module = crate::harness::module("require-labels");
    let policy = |name: &str, resources: &str, extra: &str| {
        format!(
            "  - name: {name}\n    kind: validator\n    module: {module}\n    settings: {{labels: [team]}}\n    rules:\n      - {{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [{resources}]}}\n{extra}"
        )
    };
    let text = policy_file(
        &[
            policy("require-team", "pod", ""),
            policy("as-kind", "Pod", ""),
            policy("elsewhere", "pods", "    namespaces: [other]\n"),
            policy(
                "selected",
                "pods",
                "    objectSelector: {matchLabels: {app: db}}\n",
            ),
            policy("updates", "pods", "").replace("[CREATE]", "[UPDATE]"),
            policy("runs", "pods", ""),
        ]
        .concat(),
    );
    std::fs::write(&file, text).unwrap();
    let request = "tests/fixtures/reviews/pod-create-no-team.json";
    let config = file.to_str().unwrap();

    // The issue's case: a singular resource never matches, and check says so.
    let (code, out, stderr) = check(&[
        "--config",
        config,
        "--request",
        request,
        "--policy",
        "require-team",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out["response"]["allowed"], true);
    assert!(
        stderr.contains("wasmgate check: 0 of 1 validators matched and ran (--explain says why"),
        "{stderr}"
    );

    let (code, _, stderr) = check(&["--config", config, "--request", request, "--explain"]);
    assert_eq!(code, 1, "runs denies: {stderr}");
    for line in [
        r#"require-team: skipped: no rule matches: rules[0].resources ["pod"] has no "pods""#,
        r#"require-team: warning: rules[0].resources "pod" can never match a built-in resource: the resource is "pods""#,
        r#"as-kind: warning: rules[0].resources "Pod" can never match: resources are lowercase plurals, not kinds (did you mean "pods"?)"#,
        r#"elsewhere: skipped: namespaces does not have "default""#,
        "selected: skipped: objectSelector matches neither the new nor the old object's labels",
        r#"updates: skipped: no rule matches: rules[0].operations ["UPDATE"] has no CREATE"#,
        "runs: matched, ran",
        "wasmgate check: 1 of 6 validators matched and ran",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
}
