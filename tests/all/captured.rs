//! The real AdmissionReviews kube-apiserver v1.36.3 sent (tests/fixtures/apiserver, written by
//! `tests/e2e/run --save-fixtures` and `tests/e2e/smoke.py --save-fixtures`), posted to a gateway
//! running the demo policies: every answer must be one the API server accepts (PROTOCOL.md 1.2:
//! apiVersion/kind and uid echoed, no patch from /validate, patch and patchType together from
//! /mutate, a patch that applies to the object it was computed for), and the verdicts are the
//! ones the e2e test saw through kubectl.

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{Gateway, module, patched, repo};

/// policies/demo.yaml with its modules resolved to the built plugins.
fn demo_policies() -> String {
    let text = std::fs::read_to_string(repo().join("policies/demo.yaml")).unwrap();
    text.lines()
        .map(|line| match line.trim_start().strip_prefix("module: ") {
            Some(path) => {
                let name = path.rsplit('/').next().unwrap().trim_end_matches(".wasm");
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}module: {}", module(name))
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every captured AdmissionReview: (file name, review).
fn captured_reviews() -> Vec<(String, Value)> {
    let root = repo().join("tests/fixtures/apiserver");
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            if name.starts_with("admission-") && !name.ends_with(".meta.json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(&root).unwrap().display().to_string();
            (
                name,
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap(),
            )
        })
        .collect()
}

/// Checks one answer against the API server's rules and returns its `response`.
async fn answer(gw: &Gateway, path: &str, file: &str, review: &Value) -> Value {
    let (status, body) = gw.post(path, review).await;
    assert_eq!(status, 200, "{file} {path}: {body}");
    assert_eq!(body["apiVersion"], review["apiVersion"], "{file} {path}");
    assert_eq!(body["kind"], "AdmissionReview", "{file} {path}");
    let response = body["response"].clone();
    assert_eq!(response["uid"], review["request"]["uid"], "{file} {path}");
    assert!(response["allowed"].is_boolean(), "{file} {path}: {body}");
    if response["allowed"] == false {
        let code = response["status"]["code"].as_u64().unwrap_or(0);
        assert!(
            code >= 400,
            "{file} {path}: a denial needs a 4xx/5xx code: {body}"
        );
        assert!(
            !response["status"]["message"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{file} {path}: a denial needs a message"
        );
    }
    if path == "/validate" {
        assert!(
            response.get("patch").is_none() && response.get("patchType").is_none(),
            "{file}: /validate answered with a patch: {body}"
        );
    } else {
        assert_eq!(
            response.get("patch").is_some(),
            response.get("patchType").is_some(),
            "{file}: patch and patchType go together: {body}"
        );
        if response.get("patch").is_some() {
            assert_eq!(response["patchType"], "JSONPatch", "{file}");
            let operation = review["request"]["operation"].as_str().unwrap();
            assert!(
                matches!(operation, "CREATE" | "UPDATE"),
                "{file}: a patch on {operation}"
            );
            // Applies to the object as the API server sent it (panics otherwise).
            let object = patched(review, &response);
            assert_ne!(
                object, review["request"]["object"],
                "{file}: an empty patch"
            );
        }
    }
    response
}

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn real_api_server_reviews_get_answers_it_accepts() {
    let gw = Gateway::start(&demo_policies());
    let reviews = captured_reviews();
    assert!(
        reviews.len() >= 10,
        "expected the captured reviews in tests/fixtures/apiserver, found {}",
        reviews.len()
    );
    let mut checked = Vec::new();
    for (file, review) in &reviews {
        let validated = answer(&gw, "/validate", file, review).await;
        let mutated = answer(&gw, "/mutate", file, review).await;
        match file.as_str() {
            "e2e/admission-validating-pod-create-no-team.json" => {
                assert_eq!(validated["allowed"], false, "{file}");
                assert_eq!(
                    message(&validated),
                    "require-labels: missing required labels: team"
                );
            }
            "e2e/admission-validating-pod-create-privileged.json" => {
                assert_eq!(validated["allowed"], false, "{file}");
                assert!(
                    message(&validated).contains("privileged containers are not allowed"),
                    "{validated}"
                );
            }
            "e2e/admission-mutating-pod-create.json" => {
                let object = patched(review, &mutated);
                let spec = &object["spec"];
                for list in ["initContainers", "containers"] {
                    for c in spec[list].as_array().unwrap() {
                        assert_eq!(c["imagePullPolicy"], "Always", "{file}: {c}");
                    }
                }
            }
            "e2e/admission-mutating-pvc-create.json"
            | "e2e/admission-mutating-pvc-dryrun-create.json" => {
                assert_eq!(
                    patched(review, &mutated)["spec"]["storageClassName"],
                    "standard",
                    "{file}"
                );
            }
            // Already mutated (by the earlier webhook call, or when the Pod was created):
            // nothing left to change.
            "e2e/admission-validating-pod-create.json"
            | "e2e/admission-v1beta1-validating-pod-create.json"
            | "e2e/admission-validating-pod-dryrun-create.json" => {
                assert_eq!(validated["allowed"], true, "{file}: {validated}");
                assert!(mutated.get("patch").is_none(), "{file}: {mutated}");
            }
            // `kubectl label pod web team-`: refused, and nothing to mutate.
            "e2e/admission-mutating-pod-update.json"
            | "e2e/admission-validating-pod-update.json" => {
                assert_eq!(validated["allowed"], false, "{file}");
                assert!(mutated.get("patch").is_none(), "{file}: {mutated}");
            }
            "e2e/admission-validating-pod-exec-connect.json"
            | "e2e/admission-validating-pod-delete.json" => {
                assert_eq!(validated["allowed"], true, "{file}");
                assert_eq!(mutated["allowed"], true, "{file}");
                assert!(mutated.get("patch").is_none(), "{file}: {mutated}");
            }
            _ => {}
        }
        checked.push(file.clone());
    }
    for expected in [
        "e2e/admission-validating-pod-create-no-team.json",
        "e2e/admission-mutating-pod-create.json",
        "e2e/admission-mutating-pvc-create.json",
        "e2e/admission-v1beta1-validating-pod-create.json",
        "e2e/admission-validating-pod-exec-connect.json",
        "e2e/admission-validating-pod-delete.json",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "fixture {expected} is missing"
        );
    }
}
