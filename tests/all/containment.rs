//! Hostile plugins: an infinite loop, a memory hog, a panic and a garbage answer are each
//! contained by their limits and handled by their failure policy, while the gateway keeps
//! answering.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Gateway, entry, policy_file, review};

fn hostile() -> Gateway {
    Gateway::start(&policy_file(
        &[
            entry("spin", "validator", "spin", "timeout: 100ms"),
            entry(
                "spin-ignored",
                "validator",
                "spin",
                "timeout: 100ms\nfailurePolicy: Ignore",
            ),
            entry("spin-long", "validator", "spin", "timeout: 3s"),
            entry("hog", "validator", "hog", "memoryLimit: 16Mi"),
            entry("panic", "validator", "panic", "failurePolicy: Ignore"),
            entry("fast", "validator", "burn", "settings: {millis: 0}"),
            entry("bad-output", "initializer", "bad-output", ""),
        ]
        .concat(),
    ))
}

#[tokio::test]
async fn an_infinite_loop_hits_its_deadline() {
    let gw = hostile();
    let pod = review("pod-create.json");
    let started = Instant::now();
    let response = gw.answer("/validate/spin", &pod).await;
    let took = started.elapsed();
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 500);
    assert_eq!(response["status"]["reason"], "InternalError");
    assert_eq!(
        response["status"]["message"],
        "policy \"spin\" failed: plugin deadline of 100ms exceeded"
    );
    assert!(
        took < Duration::from_secs(2),
        "the 100 ms deadline was not enforced: {took:?}"
    );

    let response = gw.answer("/validate/spin-ignored", &pod).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["warnings"],
        json!([
            "policy \"spin-ignored\" failed and was ignored (failurePolicy Ignore): plugin deadline of 100ms exceeded"
        ])
    );
}

#[tokio::test]
async fn a_memory_hog_hits_its_cap() {
    let gw = hostile();
    let response = gw.answer("/validate/hog", &review("pod-create.json")).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "policy \"hog\" failed: plugin memory limit of 16777216 bytes exceeded"
    );
}

#[tokio::test]
async fn a_panic_and_a_garbage_answer_are_plugin_failures() {
    let gw = hostile();
    let pod = review("pod-create.json");
    let response = gw.answer("/validate/panic", &pod).await;
    assert_eq!(response["allowed"], true);
    let warning = response["warnings"][0].as_str().unwrap();
    assert!(
        warning.starts_with(
            "policy \"panic\" failed and was ignored (failurePolicy Ignore): plugin trapped: "
        ),
        "{warning}"
    );
    assert!(
        warning.contains("panic plugin called for"),
        "the panic message is part of the cause: {warning}"
    );

    let response = gw.answer("/mutate", &pod).await;
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"].as_str().unwrap().starts_with(
            "policy \"bad-output\" failed: plugin invalid output: the replaced object is not JSON"
        ),
        "{response}"
    );
}

#[tokio::test]
async fn the_gateway_keeps_answering_while_a_plugin_spins() {
    let gw = hostile();
    let pod = review("pod-create.json");
    let spinning = {
        let client = gw.client();
        let url = gw.url("/validate/spin-long");
        let body = serde_json::to_vec(&pod).unwrap();
        tokio::spawn(async move {
            client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(gw.answer("/validate/fast", &pod).await["allowed"], true);
    // The spinning call holds its core for 3 s; the fast one must not wait for it.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a spinning plugin stalled another request"
    );
    assert_eq!(spinning.await.unwrap().unwrap().status(), 200);
    // And after every kind of failure, the same instance pool still serves.
    for _ in 0..3 {
        gw.answer("/validate/hog", &pod).await;
        gw.answer("/validate/panic", &pod).await;
        assert_eq!(gw.answer("/validate/fast", &pod).await["allowed"], true);
    }
}
