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
