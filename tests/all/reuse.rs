//! `instanceReuse`: warm instances only when a policy opts in, retired after `maxCalls`.

use serde_json::json;

use crate::harness::{Gateway, entry, policy_counter, policy_file, review};

#[tokio::test]
async fn fresh_instances_by_default_and_warm_ones_on_opt_in() {
    let gw = Gateway::start(&policy_file(
        &[
            entry("fresh", "validator", "counter", ""),
            entry(
                "warm",
                "validator",
                "counter",
                "instanceReuse: {maxCalls: 3, maxIdle: 1}",
            ),
        ]
        .concat(),
    ));
    let pod = review("pod-create.json");
    // Without reuse no call sees another's state: every call is the instance's first, also
    // when its instance was made ahead of it, after the previous call answered (requests a
    // moment apart, as the API server's are, find one ready).
    for _ in 0..5 {
        assert_eq!(
            gw.answer("/validate/fresh", &pod).await["warnings"],
            json!(["call 1"])
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = gw.get_text("/metrics").await;
    let prepared = |policy| {
        policy_counter(
            &metrics,
            "wasmgate_plugin_prepared_instance_calls_total",
            policy,
        )
    };
    assert!(
        (1..=4).contains(&prepared("fresh")),
        "calls after the first run in instances made ahead of them: {} of 5",
        prepared("fresh")
    );
    // With reuse the instance's globals survive between requests, until it is retired.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(gw.answer("/validate/warm", &pod).await["warnings"][0].clone());
    }
    assert_eq!(
        seen,
        vec![
            json!("call 1"),
            json!("call 2"),
            json!("call 3"),
            json!("call 1")
        ]
    );
    // A policy that reuses its instances keeps none made ahead.
    let metrics = gw.get_text("/metrics").await;
    assert_eq!(
        policy_counter(
            &metrics,
            "wasmgate_plugin_prepared_instance_calls_total",
            "warm"
        ),
        0
    );
}

/// However many policies there are, at most `PREPARED_SLOTS` instances are kept made ahead (each
/// holds a pool slot and up to its policy's memory limit, which `manifests` sizes the Pod for).
#[tokio::test]
async fn instances_made_ahead_are_capped_across_policies() {
    let cap = wasmgate::runtime::PREPARED_SLOTS as u64;
    let names: Vec<String> = (0..cap + 6).map(|i| format!("p{i}")).collect();
    let entries: Vec<String> = names
        .iter()
        .map(|name| entry(name, "validator", "counter", ""))
        .collect();
    let gw = Gateway::start(&policy_file(&entries.concat()));
    let pod = review("pod-create.json");
    // Each policy's first call is followed by the making of its next instance; its second
    // call, well after, runs in that instance if one was made.
    for _ in 0..2 {
        for name in &names {
            gw.answer(&format!("/validate/{name}"), &pod).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let metrics = gw.get_text("/metrics").await;
    let prepared: u64 = names
        .iter()
        .map(|name| {
            policy_counter(
                &metrics,
                "wasmgate_plugin_prepared_instance_calls_total",
                name,
            )
        })
        .sum();
    assert!(
        (1..=cap).contains(&prepared),
        "{prepared} of {} second calls ran in an instance made ahead; at most {cap} may be kept",
        names.len()
    );
}
