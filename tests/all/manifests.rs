//! `wasmgate manifests` as an operator runs it: `deploy/` is exactly what the command prints,
//! and the ConfigMap it renders is a policy set the gateway loads and serves.

use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

use crate::harness::{compile_cache, repo};

fn manifests(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .arg("manifests")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "wasmgate manifests {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The documents of a YAML stream, as JSON.
fn documents(stream: &str) -> Vec<Value> {
    stream
        .split("\n---\n")
        .filter(|doc| {
            doc.lines()
                .any(|l| !l.starts_with('#') && !l.trim().is_empty())
        })
        .map(|doc| serde_yaml_ng::from_str(doc).unwrap())
        .collect()
}

#[test]
fn deploy_directory_is_what_the_command_prints() {
    let printed = manifests(&["--kind", "deploy"]);
    let committed = std::fs::read_to_string(repo().join("deploy/wasmgate.yaml")).unwrap();
    assert!(
        committed == printed,
        "deploy/wasmgate.yaml has drifted from `wasmgate manifests --kind deploy`; regenerate it:\n  \
         cargo run --release -- manifests --kind deploy > deploy/wasmgate.yaml"
    );
}

#[test]
fn rendered_configmap_serves_the_demo_policies() {
    let stream = manifests(&[
        "--kind",
        "config,webhooks",
        "--generate-tls",
        "--service",
        "gate/wg",
    ]);
    let docs = documents(&stream);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Secret",
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration"
        ]
    );
    // The generated CA is both the caBundle and the Secret's ca.crt.
    assert_eq!(
        docs[1]["data"]["ca.crt"],
        docs[2]["webhooks"][0]["clientConfig"]["caBundle"]
    );
    assert_eq!(
        docs[2]["webhooks"][0]["clientConfig"]["service"],
        serde_json::json!({"namespace": "gate", "name": "wg", "path": "/validate/require-labels", "port": 443})
    );

    // Lay the ConfigMap out as its volume would, and evaluate a review with it.
    let dir = tempfile::tempdir().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    for (key, data) in docs[0]["binaryData"].as_object().unwrap() {
        std::fs::write(
            dir.path().join(key),
            b64.decode(data.as_str().unwrap()).unwrap(),
        )
        .unwrap();
    }
    let policies = dir.path().join("policies.yaml");
    std::fs::write(
        &policies,
        docs[0]["data"]["policies.yaml"].as_str().unwrap(),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["check", "--config"])
        .arg(&policies)
        .arg("--request")
        .arg(repo().join("tests/fixtures/reviews/pod-create-no-team.json"))
        .env("WASMGATE_COMPILE_CACHE", compile_cache())
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{answer} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        answer["response"]["status"]["message"],
        "require-labels: missing required labels: team"
    );
}
