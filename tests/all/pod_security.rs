//! The `pod-security` plugin (plugins/rust/pod-security) against upstream's own oracle: every
//! Pod of `k8s.io/pod-security-admission` `test/testdata/{baseline,restricted}/v1.N/{pass,fail}`
//! (fetched and cached by `tests/pod-security/fetch-fixtures`) is sent as a Pod CREATE review
//! to the real gateway, through the built component, at its level and version; each must get
//! the verdict its folder says, and a failing one the reason of the check it is named after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Gateway, client, module, policy_file, repo};

/// The fixtures directory, fetched on first use.
fn fixtures_dir() -> PathBuf {
    let script = repo().join("tests/pod-security/fetch-fixtures");
    let out = Command::new(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Fixture {
    level: String,
    version: String,
    pass: bool,
    name: String,
    pod: Value,
}

fn load(dir: &Path) -> Vec<Fixture> {
    let mut all = Vec::new();
    for level in ["baseline", "restricted"] {
        for version in std::fs::read_dir(dir.join(level)).unwrap() {
            let version = version.unwrap();
            let version_name = version.file_name().into_string().unwrap();
            for verdict in ["pass", "fail"] {
                let Ok(files) = std::fs::read_dir(version.path().join(verdict)) else {
                    continue;
                };
                for file in files {
                    let path = file.unwrap().path();
                    let text = std::fs::read_to_string(&path).unwrap();
                    let pod: Value = serde_yaml_ng::from_str(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    all.push(Fixture {
                        level: level.into(),
                        version: version_name.clone(),
                        pass: verdict == "pass",
                        name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                        pod,
                    });
                }
            }
        }
    }
    all
}

/// The policy entry evaluating `level` at `version` (`v1.N`).
fn policy_name(level: &str, version: &str) -> String {
    format!("{level}-{}", version.replace('.', "-"))
}

/// The reasons a fixture named after a check may fail with (a restricted check replaces the
/// baseline check it overrides).
fn reasons(fixture: &str) -> &'static [&'static str] {
    let check = fixture.trim_end_matches(|c: char| c.is_ascii_digit());
    match check {
        "allowprivilegeescalation" => &["allowPrivilegeEscalation != false"],
        "apparmorprofile" => &["forbidden AppArmor profile"],
        "capabilities_baseline" => &["non-default capabilities", "unrestricted capabilities"],
        "capabilities_restricted" => &["unrestricted capabilities"],
        "hostnamespaces" => &["host namespaces"],
        "hostpathvolumes" => &["hostPath volumes", "restricted volume types"],
        "hostports" => &["hostPort"],
        "hostprobesandhostlifecycle" => &["probe or lifecycle host"],
        "privileged" => &["privileged"],
        "procmount" | "procmount_restricted" => &["procMount"],
        "restrictedvolumes" => &["restricted volume types"],
        "runasnonroot" => &["runAsNonRoot != true"],
        "runasuser" => &["runAsUser=0"],
        "seccompprofile_baseline" | "seccompprofile_restricted" => &["seccompProfile"],
        "selinuxoptions" => &["seLinuxOptions"],
        "sysctls" => &["forbidden sysctls"],
        "windowshostprocess" => &["hostProcess"],
        _ => &[],
    }
}

fn review(uid: usize, resource: (&str, &str), sub: &str, object: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{uid:012}"),
            "kind": {"group": resource.0, "version": "v1", "kind": object["kind"]},
            "resource": {"group": resource.0, "version": "v1", "resource": resource.1},
            "subResource": sub,
            "namespace": "fixtures",
            "operation": "CREATE",
            "userInfo": {"username": "fixture-runner"},
            "object": object,
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_security_agrees_with_every_upstream_fixture() {
    let fixtures = load(&fixtures_dir());
    assert!(fixtures.len() > 4000, "only {} fixtures", fixtures.len());
    let mut policies: BTreeMap<String, (String, String)> = BTreeMap::new();
    for f in &fixtures {
        policies.insert(
            policy_name(&f.level, &f.version),
            (f.level.clone(), f.version.clone()),
        );
    }
    let plugin = module("pod-security");
    let entries: String = policies
        .iter()
        .map(|(name, (level, version))| {
            format!(
                "  - name: {name}\n    kind: validator\n    module: {plugin}\n    settings: {{level: {level}, version: {version}}}\n    rules:\n      - {{operations: [CREATE, UPDATE], apiGroups: ['', apps], apiVersions: [v1], resources: [pods, deployments]}}\n"
            )
        })
        .collect();
    let gateway = Gateway::start(&policy_file(&entries));
    let http = client(&gateway.pki.ca, None, true);
    let results = futures_util::stream::iter(fixtures.iter().enumerate())
        .map(|(i, f)| {
            let http = http.clone();
            let url = gateway.url(&format!("/validate/{}", policy_name(&f.level, &f.version)));
            let body = serde_json::to_vec(&review(i, ("", "pods"), "", &f.pod)).unwrap();
            async move {
                let answer = http
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200);
                let answer: Value = answer.json().await.unwrap();
                (f, answer["response"].clone())
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let mut wrong = Vec::new();
    let (mut passed, mut failed) = (0, 0);
    for (f, response) in &results {
        let message = response["status"]["message"].as_str().unwrap_or_default();
        let allowed = response["allowed"] == true;
        let label = format!("violates PodSecurity \"{}:{}\": ", f.level, f.version);
        let ok = if f.pass {
            allowed
        } else {
            !allowed
                && message.contains(&label)
                && reasons(&f.name).iter().any(|r| message.contains(r))
        };
        if !ok {
            wrong.push(format!(
                "{}/{}/{}/{}: allowed={allowed} {message}",
                f.level,
                f.version,
                if f.pass { "pass" } else { "fail" },
                f.name
            ));
        }
        if f.pass {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!(
        "pod-security: {} of {} upstream fixtures agree ({passed} pass, {failed} fail; {} level/version pairs)",
        results.len() - wrong.len(),
        results.len(),
        policies.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {} fixtures disagree with upstream:\n{}",
        wrong.len(),
        results.len(),
        wrong[..wrong.len().min(40)].join("\n")
    );

    // The same gateway, for what a user sees on the wire.
    let pod = &fixtures
        .iter()
        .find(|f| {
            !f.pass && f.level == "baseline" && f.version == "v1.35" && f.name == "privileged0"
        })
        .expect("the fixture baseline/v1.35/fail/privileged0")
        .pod;
    let answer = gateway
        .answer(
            "/validate/baseline-v1-35",
            &review(1, ("", "pods"), "", pod),
        )
        .await;
    assert_eq!(answer["allowed"], false);
    assert_eq!(answer["status"]["code"], 403);
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(r#"violates PodSecurity "baseline:v1.35": privileged (container"#),
        "{message}"
    );
    // A Deployment of the same pod: allowed with the upstream warning, as the built-in does.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "fixtures"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}}, "spec": pod["spec"].clone()}},
    });
    let answer = gateway
        .answer(
            "/validate/baseline-v1-35",
            &review(2, ("apps", "deployments"), "", &deployment),
        )
        .await;
    assert_eq!(answer["allowed"], true, "{answer}");
    let warnings = answer["warnings"].to_string();
    assert!(
        warnings.contains(r#"would violate PodSecurity \"baseline:v1.35\": privileged (container"#),
        "{answer}"
    );
}

/// `policies/pod-security.yaml`, the example users copy: restricted by default, baseline in
/// `legacy`, both through `wasmgate check` (the server's code path).
#[test]
fn the_example_policy_file_enforces_both_levels() {
    let dir = tempfile::tempdir().unwrap();
    // Passes baseline, fails restricted (no securityContext at all).
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "registry.invalid/a"}]}});
    let check = |namespace: &str| {
        let mut body = review(0, ("", "pods"), "", &pod);
        body["request"]["namespace"] = json!(namespace);
        let file = dir.path().join(format!("{namespace}.json"));
        std::fs::write(&file, serde_json::to_vec(&body).unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
            .args(["check", "--config"])
            .arg(repo().join("policies/pod-security.yaml"))
            .arg("--request")
            .arg(&file)
            .env("WASMGATE_COMPILE_CACHE", crate::harness::compile_cache())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = check("legacy");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check("team");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(r#"pod-security-restricted: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"#),
        "{out}"
    );
}
