//! Hostile plugins: an infinite loop, a memory hog, a panic and a garbage answer are each
//! contained by their limits and handled by their failure policy, while the gateway keeps
//! answering.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Gateway, entry, policy_counter, policy_file, review};

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

// === The sandbox under hostile plugins (issue 9) ===

/// A gateway with one policy per hostile act of `tests/plugins/hostile` (all validators, all
/// `failurePolicy: Fail` unless noted), plus `fast` (a well-behaved validator).
fn hostile_acts() -> Gateway {
    let act = |name: &str, settings: &str, extra: &str| {
        entry(
            name,
            "validator",
            "hostile",
            &format!("settings: {settings}\n{extra}"),
        )
    };
    Gateway::start(&policy_file(
        &[
            act("sleep", "{act: sleep}", "timeout: 100ms"),
            act(
                "sleep-ignored",
                "{act: sleep}",
                "timeout: 100ms\nfailurePolicy: Ignore",
            ),
            act("recurse", "{act: recurse}", ""),
            act("huge", "{act: huge}", ""),
            act("warnings", "{act: warnings}", "failurePolicy: Ignore"),
            act("annotations", "{act: annotations}", ""),
            act("long-warnings", "{act: long-warnings}", ""),
            act("flood", "{act: flood, count: 1000}", ""),
            act("partial", "{act: partial}", "failurePolicy: Ignore"),
            act("code-200", "{act: code, code: 200}", ""),
            act("code-999", "{act: code, code: 999}", ""),
            entry(
                "hog-memories",
                "validator",
                "hog-memories",
                "memoryLimit: 16Mi",
            ),
            entry("fast", "validator", "burn", "settings: {millis: 0}"),
        ]
        .concat(),
    ))
}

fn failed(response: &serde_json::Value) -> String {
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 500, "{response}");
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_plugin_asleep_in_a_host_call_is_stopped_at_its_deadline() {
    let gw = hostile_acts();
    let pod = review("pod-create.json");
    // The plugin sleeps 30 s in WASI (`std::thread::sleep`); its deadline is 100 ms.
    stopped_at_its_100ms_deadline(&gw, "/validate/sleep", "sleep", &pod).await;
    let response = gw.answer("/validate/sleep-ignored", &pod).await;
    assert_eq!(response["allowed"], true);

    // 300 sleepers at once, more than the pool's 256 slots: every slot is given back at its
    // call's deadline, so all are answered within a few deadlines, and a well-behaved policy
    // is served meanwhile (with slots held for 30 s, this took minutes).
    let started = Instant::now();
    let sleepers = posts_at_once(&gw, "/validate/sleep-ignored", &pod, 300);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fast_started = Instant::now();
    assert_eq!(gw.answer("/validate/fast", &pod).await["allowed"], true);
    let fast = fast_started.elapsed();
    for sleeper in sleepers {
        let (status, body) = sleeper.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("deadline of 100ms exceeded"), "{body}");
    }
    let all = started.elapsed();
    assert!(all < Duration::from_secs(10), "300 sleepers took {all:?}");
    assert!(fast < Duration::from_secs(3), "a fast policy took {fast:?}");
    // The slots are free again: one more sleeper still gets its 100 ms, not a queue.
    let started = Instant::now();
    gw.answer("/validate/sleep", &pod).await;
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// The deadline holds inside host calls on the other paths too: an initializer, and a warm
/// instance of `instanceReuse` (a sleeping warm instance is dropped, not given back). The
/// deliver path is `audit::poison_batches_are_dead_lettered_and_hold_back_no_one` (`sleep`), the
/// settings check at load `settings::the_settings_check_runs_under_the_policy_deadline_and_memory_cap`.
#[tokio::test]
async fn a_plugin_asleep_in_a_host_call_is_stopped_on_every_path() {
    let gw = Gateway::start(&policy_file(
        &[
            entry(
                "sleep-init",
                "initializer",
                "patch-label",
                "timeout: 100ms\nsettings: {key: a, value: b, mode: sleep}",
            ),
            entry(
                "sleep-warm",
                "validator",
                "hostile",
                "timeout: 100ms\nsettings: {act: sleep}\ninstanceReuse: {maxCalls: 3, maxIdle: 1}",
            ),
        ]
        .concat(),
    ));
    let pod = review("pod-create.json");
    stopped_at_its_100ms_deadline(&gw, "/mutate/sleep-init", "sleep-init", &pod).await;
    for _call in 1..=3 {
        stopped_at_its_100ms_deadline(&gw, "/validate/sleep-warm", "sleep-warm", &pod).await;
    }
}

/// Asks `path` for `pod` and checks the answer is `policy`'s failure at its 100 ms deadline,
/// given within 3 s (not after the 30 s its plugin sleeps).
async fn stopped_at_its_100ms_deadline(
    gw: &Gateway,
    path: &str,
    policy: &str,
    pod: &serde_json::Value,
) {
    let started = Instant::now();
    let response = gw.answer(path, pod).await;
    let took = started.elapsed();
    assert_eq!(
        failed(&response),
        format!("policy \"{policy}\" failed: plugin deadline of 100ms exceeded")
    );
    assert!(
        took < Duration::from_secs(3),
        "{path} answered after {took:?}"
    );
}

#[tokio::test]
async fn deep_recursion_is_a_contained_stack_overflow() {
    let gw = hostile_acts();
    let pod = review("pod-create.json");
    let message = failed(&gw.answer("/validate/recurse", &pod).await);
    assert!(
        message.starts_with(
            "policy \"recurse\" failed: plugin trapped: stack overflow: the plugin used more than its 512 KiB of call stack"
        ),
        "{message}"
    );
    assert_eq!(gw.answer("/validate/fast", &pod).await["allowed"], true);
}

#[tokio::test]
async fn the_memory_cap_holds_across_all_memories_of_a_component() {
    let gw = hostile_acts();
    let pod = review("pod-create.json");
    // Four extra memories of 10 MiB each under a 16 MiB cap: the second grow is refused.
    // (Counted per memory, each grow fits and the plugin ends at `unreachable` instead.)
    assert_eq!(
        failed(&gw.answer("/validate/hog-memories", &pod).await),
        "policy \"hog-memories\" failed: plugin memory limit of 16777216 bytes exceeded"
    );
    assert_eq!(gw.answer("/validate/fast", &pod).await["allowed"], true);
}

#[tokio::test]
async fn plugin_output_is_bounded_before_it_is_used() {
    let gw = hostile_acts();
    let pod = review("pod-create.json");
    let message = failed(&gw.answer("/validate/huge", &pod).await);
    assert_eq!(
        message,
        format!(
            "policy \"huge\" failed: plugin invalid output: a denial of {} bytes; at most 32768 are accepted",
            (16 << 20) + "Forbidden".len()
        )
    );
    let started = Instant::now();
    let response = gw.answer("/validate/warnings", &pod).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["warnings"],
        json!([
            "policy \"warnings\" failed and was ignored (failurePolicy Ignore): plugin invalid output: 200000 warnings; at most 100 are accepted"
        ])
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        failed(&gw.answer("/validate/annotations", &pod).await),
        "policy \"annotations\" failed: plugin invalid output: 100000 audit annotations; at most 100 are accepted"
    );
}

#[tokio::test]
async fn warnings_are_cut_to_what_the_api_server_keeps() {
    let gw = hostile_acts();
    let response = gw
        .answer("/validate/long-warnings", &review("pod-create.json"))
        .await;
    assert_eq!(response["allowed"], true);
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    // 40 warnings of 300 characters: 12,000 in all, over the API server's 4096. Each is cut to
    // 256 characters, in order, while they fit, and the last says how many were left out.
    let total: usize = warnings.iter().map(|w| w.chars().count()).sum();
    assert!(total <= 4096, "{total}");
    let (last, kept) = warnings.split_last().unwrap();
    assert!(kept.len() >= 10, "{warnings:?}");
    for (n, warning) in kept.iter().enumerate() {
        assert!(warning.starts_with(&format!("{n:03} www")), "{warning}");
        assert_eq!(warning.chars().count(), 256);
        assert!(warning.ends_with('…'));
    }
    assert_eq!(
        *last,
        format!(
            "{} more warnings omitted (the API server shows at most 4096 characters of warnings)",
            40 - kept.len()
        )
    );
}

#[tokio::test]
async fn denial_codes_reach_the_api_server_only_in_400_to_599() {
    let gw = hostile_acts();
    let pod = review("pod-create.json");
    for (policy, code) in [("code-200", 400), ("code-999", 403)] {
        let response = gw.answer(&format!("/validate/{policy}"), &pod).await;
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], code, "{response}");
        assert_eq!(response["status"]["reason"], "Custom");
    }
}

#[tokio::test]
async fn a_trap_after_partial_output_leaks_none_of_it() {
    let gw = hostile_acts();
    let response = gw
        .answer("/validate/partial", &review("pod-create.json"))
        .await;
    assert_eq!(response["allowed"], true);
    let warnings = response["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{response}");
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.starts_with(
            "policy \"partial\" failed and was ignored (failurePolicy Ignore): plugin trapped: "
        ) && warning.contains("partial: trapped after building an answer"),
        "{warning}"
    );
    assert!(response["auditAnnotations"].is_null(), "{response}");
}

#[tokio::test]
async fn a_plugin_cannot_flood_or_forge_the_log() {
    let gw = hostile_acts();
    let pod = review("pod-create.json");
    // 20 calls of 1000 `log` lines and 1000 stdout lines each, every one with a line break, a
    // forged second line and a terminal escape.
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(gw.answer("/validate/flood", &pod).await["allowed"], true);
    }
    // The next call in a later second reports what was dropped.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    gw.answer("/validate/flood", &pod).await;
    let seconds = started.elapsed().as_secs() + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines: Vec<serde_json::Value> = gw
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["fields"]["plugin"] == "flood")
        .collect();
    let message = |l: &serde_json::Value| l["fields"]["message"].as_str().unwrap_or("").to_owned();
    let written: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| !message(l).contains("were dropped"))
        .collect();
    // At most 100 lines a second for the policy, however many calls make them; what was
    // dropped is said.
    assert!(!written.is_empty());
    assert!(
        written.len() as u64 <= 100 * (seconds + 1),
        "{} plugin lines in {seconds} s",
        written.len()
    );
    assert!(
        lines.iter().any(|l| message(l).contains("were dropped")),
        "no line says what was dropped"
    );
    // No raw line break or escape reaches the log: one plugin line is one log line.
    for line in &written {
        let text = message(line);
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text:?}");
    }
    let logged: Vec<String> = written
        .iter()
        .filter(|l| l["fields"]["stream"].is_null())
        .map(|l| message(l))
        .collect();
    assert!(!logged.is_empty());
    for text in logged {
        assert!(
            text.starts_with("flood ") && text.contains("\\nlevel=ERROR forged line \\u{1b}[31m"),
            "{text:?}"
        );
    }
}

#[test]
fn a_start_function_that_traps_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yaml");
    std::fs::write(
        &file,
        policy_file(&entry("start-trap", "validator", "start-trap", "")),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["check", "--config", file.to_str().unwrap(), "--request"])
        .arg(crate::harness::repo().join("tests/fixtures/reviews/pod-create.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:4: policy \"start-trap\": {}: module fails to instantiate under its limits: trapped: wasm trap: wasm `unreachable` instruction executed",
            file.display(),
            crate::harness::module("start-trap")
        )),
        "{stderr}"
    );
}

#[test]
fn the_compile_cache_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yaml");
    std::fs::write(
        &file,
        policy_file(&entry("fast", "validator", "burn", "settings: {millis: 0}")),
    )
    .unwrap();
    let check = |cache: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wasmgate"))
            .args(["check", "--config", file.to_str().unwrap(), "--cache-dir"])
            .arg(cache)
            .arg("--request")
            .arg(crate::harness::repo().join("tests/fixtures/reviews/pod-create.json"))
            .output()
            .unwrap()
    };
    use std::os::unix::fs::PermissionsExt;
    // A new cache directory is created private.
    let fresh = dir.path().join("new/compiled");
    let output = check(&fresh);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // One that others can write to is refused, with the reason.
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = check(&fresh);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "compile cache {}: its mode 0777 lets others write to it; it must be a private directory",
            fresh.display()
        )),
        "{stderr}"
    );
    // So is a symbolic link to it.
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&fresh, &link).unwrap();
    let output = check(&link);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("it is a symbolic link"), "{stderr}");
}

/// One policy's calls hold at most `POLICY_SLOTS` (64) of the pool's 256 slots; more queue
/// behind them, under their own deadline. 300 requests to a policy whose plugin sleeps to its
/// 5 s deadline would otherwise take every slot for 5 s, and a well-behaved policy's request
/// would wait that long for one.
#[tokio::test(flavor = "multi_thread")]
async fn one_policy_cannot_take_every_pool_slot() {
    let gw = Gateway::start(&policy_file(
        &[
            entry(
                "sleep",
                "validator",
                "hostile",
                "settings: {act: sleep}\ntimeout: 5s\nfailurePolicy: Ignore",
            ),
            entry("fast", "validator", "burn", "settings: {millis: 0}"),
        ]
        .concat(),
    ));
    let pod = review("pod-create.json");
    let started = Instant::now();
    let sleepers = posts_at_once(&gw, "/validate/sleep?timeout=12s", &pod, 300);
    // Let them all arrive and take what they can.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let fast_started = Instant::now();
    assert_eq!(gw.answer("/validate/fast", &pod).await["allowed"], true);
    let fast = fast_started.elapsed();
    for sleeper in sleepers {
        let (status, body) = sleeper.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"allowed\":true"), "{body}");
    }
    let all = started.elapsed();
    println!(
        "300 requests to a policy sleeping to its 5 s deadline: a well-behaved policy answered in {fast:.2?} meanwhile; all 300 answered in {all:.1?}"
    );
    assert!(
        fast < Duration::from_millis(2500),
        "a well-behaved policy waited {fast:?} for a pool slot"
    );
    assert!(all < Duration::from_secs(20), "300 sleepers took {all:?}");
}

/// `count` posts of `review` to `path` at once, each answered with its status and body.
fn posts_at_once(
    gw: &Gateway,
    path: &str,
    review: &serde_json::Value,
    count: usize,
) -> Vec<tokio::task::JoinHandle<(u16, String)>> {
    (0..count)
        .map(|_| {
            let client = gw.client();
            let url = gw.url(path);
            let body = serde_json::to_vec(review).unwrap();
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            })
        })
        .collect()
}

/// Demotion: a policy whose call misbehaves (a trap, the memory cap across memories, an invalid
/// output, more log lines than a call may write) starts its next call on the slow lane, the
/// nice-19 threads, whatever that call does; the first call of each starts where requests are
/// served. Seen through `wasmgate_plugin_slow_lane_starts_total`, which counts calls that start
/// on the lane: without demotion it stays 0 for all of them.
#[tokio::test]
async fn a_misbehaving_policy_starts_its_next_calls_on_the_slow_lane() {
    let act = |name: &str, settings: &str, extra: &str| {
        entry(
            name,
            "validator",
            "hostile",
            &format!("settings: {settings}\n{extra}"),
        )
    };
    let gw = Gateway::start(&policy_file(
        &[
            act("partial", "{act: partial}", "failurePolicy: Ignore"),
            act("huge", "{act: huge}", ""),
            act("flood", "{act: flood, count: 1000}", ""),
            entry(
                "hog-memories",
                "validator",
                "hog-memories",
                "memoryLimit: 16Mi",
            ),
            entry("fast", "validator", "burn", "settings: {millis: 0}"),
        ]
        .concat(),
    ));
    let pod = review("pod-create.json");
    for policy in ["partial", "huge", "flood", "hog-memories", "fast"] {
        for _ in 0..3 {
            gw.answer(&format!("/validate/{policy}"), &pod).await;
        }
    }
    let metrics = gw.get_text("/metrics").await;
    let starts =
        |policy| policy_counter(&metrics, "wasmgate_plugin_slow_lane_starts_total", policy);
    for policy in ["partial", "huge", "flood", "hog-memories"] {
        assert_eq!(starts(policy), 2, "{policy}:\n{metrics}");
    }
    // A well-behaved call runs far under the lane's 5 ms, also when the OS preempts it for
    // longer: what counts is the CPU time of its polls (`lane::Timed`).
    assert_eq!(starts("fast"), 0, "{metrics}");
    // Each flood call writes 1,000 `log` lines and 100 stdout lines, of which at most 64 are
    // logged; every other one is counted.
    let dropped = policy_counter(&metrics, "wasmgate_plugin_log_lines_dropped_total", "flood");
    assert!(dropped >= 3 * (1100 - 64), "{dropped}\n{metrics}");
    assert_eq!(
        policy_counter(&metrics, "wasmgate_plugin_log_lines_dropped_total", "fast"),
        0
    );
}
