//! Admission behaviour over HTTPS: the demo plugins' verdicts and patches, parallel validators,
//! serial initializers, monitor mode, remarks.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, entry, patched, policy_file, repo, review};

fn demo() -> Gateway {
    let text = std::fs::read_to_string(repo().join("policies/demo.yaml")).unwrap();
    // The demo file names modules relative to itself; make them absolute for the temp copy.
    let text = text.replace(
        "../plugins/dist/",
        &format!("{}/plugins/dist/", repo().display()),
    );
    Gateway::start(&text)
}

#[tokio::test]
async fn demo_validators_allow_and_deny() {
    let gw = demo();
    let ok = gw.answer("/validate", &review("pod-create.json")).await;
    assert_eq!(ok["allowed"], true, "{ok}");
    assert!(
        ok.get("patch").is_none() && ok.get("patchType").is_none(),
        "a validating answer never carries a patch: {ok}"
    );

    let no_team = gw
        .answer("/validate", &review("pod-create-no-team.json"))
        .await;
    assert_eq!(no_team["allowed"], false);
    assert_eq!(
        no_team["status"],
        json!({"code": 403, "reason": "Forbidden", "status": "Failure", "message": "require-labels: missing required labels: team"})
    );

    let privileged = gw
        .answer("/validate", &review("pod-create-privileged.json"))
        .await;
    assert_eq!(
        privileged["status"]["message"],
        "deny-privileged: privileged containers are not allowed: spec.containers[1] \"metrics\""
    );

    let deployment = gw
        .answer("/validate", &review("deployment-create-privileged.json"))
        .await;
    assert_eq!(
        deployment["status"]["message"],
        "deny-privileged: privileged containers are not allowed: spec.template.spec.containers[1] \"metrics\""
    );

    // Both deny: both messages, in file order.
    let mut both = review("pod-create-privileged.json");
    both["request"]["object"]["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("team");
    let both = gw.answer("/validate", &both).await;
    assert_eq!(
        both["status"]["message"],
        "require-labels: missing required labels: team; deny-privileged: privileged containers are not allowed: spec.containers[1] \"metrics\""
    );

    // One policy at a time.
    let only = gw
        .answer(
            "/validate/deny-privileged",
            &review("pod-create-no-team.json"),
        )
        .await;
    assert_eq!(
        only["allowed"], true,
        "require-labels must not run on /validate/deny-privileged"
    );

    // DELETE has no object: allowed, and the validators are not confused by the null.
    let delete = gw.answer("/validate", &review("pod-delete.json")).await;
    assert_eq!(delete["allowed"], true);

    // kube-system is excluded in the demo.
    let mut system = review("pod-create-no-team.json");
    system["request"]["namespace"] = json!("kube-system");
    assert_eq!(gw.answer("/validate", &system).await["allowed"], true);
}

#[tokio::test]
async fn demo_initializers_patch() {
    let gw = demo();
    let pod = review("pod-create.json");
    let response = gw.answer("/mutate", &pod).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let object = patched(&pod, &response);
    for list in ["containers", "initContainers"] {
        for container in object["spec"][list].as_array().unwrap() {
            assert_eq!(
                container["imagePullPolicy"], "Always",
                "{list}: {container}"
            );
        }
    }
    // Nothing else changed.
    let mut expected = pod["request"]["object"].clone();
    for list in ["containers", "initContainers"] {
        for container in expected["spec"][list].as_array_mut().unwrap() {
            container["imagePullPolicy"] = json!("Always");
        }
    }
    assert_eq!(object, expected);

    let cronjob = review("cronjob-create.json");
    let object = patched(&cronjob, &gw.answer("/mutate", &cronjob).await);
    assert_eq!(
        object["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );

    let pvc = review("pvc-create.json");
    let object = patched(&pvc, &gw.answer("/mutate", &pvc).await);
    assert_eq!(object["spec"]["storageClassName"], "standard");

    // Nothing to change: no patch at all (never an empty one).
    let with_class = gw
        .answer("/mutate", &review("pvc-create-with-class.json"))
        .await;
    assert_eq!(
        with_class,
        json!({"uid": "2b3c6d1e-6a7f-4e7b-9c1d-000000000009", "allowed": true})
    );
    let delete = gw.answer("/mutate", &review("pod-delete.json")).await;
    assert_eq!(
        delete,
        json!({"uid": "2b3c6d1e-6a7f-4e7b-9c1d-00000000000a", "allowed": true})
    );
}

#[tokio::test]
async fn v1beta1_is_answered_in_v1beta1() {
    let gw = demo();
    let request = review("pod-create.v1beta1.json");
    let response = gw.answer("/mutate", &request).await;
    assert!(response["patch"].is_string());
    let mut denied = review("pod-create.v1beta1.json");
    denied["request"]["object"]["metadata"]["labels"] = json!({});
    assert_eq!(gw.answer("/validate", &denied).await["allowed"], false);
}

#[tokio::test]
async fn validators_run_in_parallel() {
    let policies = policy_file(
        &[
            entry("burn-a", "validator", "burn", "settings: {millis: 200}"),
            entry("burn-b", "validator", "burn", "settings: {millis: 200}"),
        ]
        .concat(),
    );
    let gw = Gateway::start(&policies);
    let pod = review("pod-create.json");
    // Warm-up, so that the first instantiation's page faults do not count.
    gw.answer("/validate/burn-a", &pod).await;

    let started = Instant::now();
    assert_eq!(gw.answer("/validate/burn-a", &pod).await["allowed"], true);
    let one = started.elapsed();
    assert!(
        one >= Duration::from_millis(200),
        "burn must burn 200 ms, took {one:?}"
    );

    let started = Instant::now();
    assert_eq!(gw.answer("/validate", &pod).await["allowed"], true);
    let both = started.elapsed();
    // Serial would be 400 ms or more; parallel is one burn plus overhead.
    assert!(
        both < Duration::from_millis(390),
        "two 200 ms validators took {both:?}: they did not run in parallel"
    );
}

#[tokio::test]
async fn initializers_run_in_file_order_on_the_previous_output() {
    let add = entry(
        "add",
        "initializer",
        "add-label",
        "settings: {key: stage, value: one}",
    );
    let copy = entry(
        "copy",
        "initializer",
        "copy-label",
        "settings: {from: stage, to: copied-stage}",
    );
    let pod = review("pod-create.json");

    let gw = Gateway::start(&policy_file(&format!("{add}{copy}")));
    let response = gw.answer("/mutate", &pod).await;
    assert_eq!(response["allowed"], true, "{response}");
    let object = patched(&pod, &response);
    assert_eq!(object["metadata"]["labels"]["stage"], "one");
    assert_eq!(
        object["metadata"]["annotations"]["copied-stage"], "one",
        "copy-label did not see add-label's change"
    );
    drop(gw);

    // The other order: copy-label runs first and cannot see the label; its deny stops the chain.
    let gw = Gateway::start(&policy_file(&format!("{copy}{add}")));
    let response = gw.answer("/mutate", &pod).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "copy: label stage is missing"
    );
    assert!(response.get("patch").is_none());
}

#[tokio::test]
async fn monitor_mode_warns_instead_of_denying() {
    let policies = policy_file(
        &[
            entry(
                "would-deny",
                "validator",
                "burn",
                "settings: {millis: 0, deny: not on my watch}\nmode: monitor",
            ),
            entry(
                "monitored-add",
                "initializer",
                "add-label",
                "settings: {key: x, value: y}\nmode: monitor",
            ),
        ]
        .concat(),
    );
    let gw = Gateway::start(&policies);
    let response = gw.answer("/validate", &review("pod-create.json")).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["warnings"],
        json!(["policy \"would-deny\" (monitor mode) would deny: not on my watch"])
    );
    // A monitored initializer's changes are not applied.
    let response = gw.answer("/mutate", &review("pod-create.json")).await;
    assert_eq!(
        response,
        json!({"uid": "2b3c6d1e-6a7f-4e7b-9c1d-000000000001", "allowed": true})
    );
}

#[tokio::test]
async fn plugin_output_reaches_the_log_and_remarks_the_response() {
    let gw = Gateway::start(&policy_file(&entry(
        "chatty",
        "validator",
        "chatty",
        "settings: {greeting: hello}",
    )));
    let response = gw.answer("/validate", &review("pod-create.json")).await;
    assert_eq!(response["warnings"], json!(["chatty was here"]));
    assert_eq!(
        response["auditAnnotations"],
        json!({"chatty.chatty": "yes"})
    );
    // Give the log reader a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs: Vec<Value> = gw
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let find = |stream: &str, text: &str| {
        logs.iter().any(|l| {
            l["fields"]["plugin"] == "chatty"
                && l["fields"]["stream"] == stream
                && l["fields"]["message"].as_str().unwrap_or("").contains(text)
        })
    };
    assert!(
        find(
            "stdout",
            "chatty: stdout line for 2b3c6d1e-6a7f-4e7b-9c1d-000000000001"
        ),
        "{logs:#?}"
    );
    assert!(find("stderr", "chatty: stderr line for"), "{logs:#?}");
    assert!(
        logs.iter().any(|l| l["fields"]["plugin"] == "chatty"
            && l["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(r#"{"greeting":"hello"}"#)),
        "host log call with settings missing: {logs:#?}"
    );

    let metrics = gw.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"wasmgate_plugin_calls_total{policy="chatty",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"wasmgate_admission_requests_total{endpoint="validate",result="allowed"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_object_nested_past_serde_jsons_limit_is_served_not_refused() {
    // JSON nested 300 levels deep (serde_json's limit is 128 when it parses; the API server's
    // decoder allows 10,000): the review decodes, and a policy that reads only the labels
    // decides on them.
    let gw = Gateway::start(&policy_file(&entry(
        "labels",
        "validator",
        "require-labels",
        "settings: {labels: [team]}",
    )));
    let mut deep = json!([]);
    for _ in 1..300 {
        deep = json!([deep]);
    }
    let mut pod = review("pod-create.json");
    pod["request"]["object"]["spec"]["deep"] = deep;
    assert_eq!(gw.answer("/validate", &pod).await["allowed"], true);
    let labels = pod["request"]["object"]["metadata"]["labels"]
        .as_object_mut()
        .unwrap();
    assert!(labels.remove("team").is_some());
    assert_eq!(gw.answer("/validate", &pod).await["allowed"], false);
}
