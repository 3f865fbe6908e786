//! Hot reload: plugins, policy files and certificates change under a running gateway.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, Options, Pki, client, module, policy_file, review, write_atomic};

/// Replaces `to` with `from`'s bytes the way deployers should: write a temp file, rename.
fn replace(from: &Path, to: &Path) {
    write_atomic(to, std::fs::read(from).unwrap());
}

#[derive(Debug, Clone, PartialEq)]
enum Version {
    /// require-labels: denies the Pod without a team label.
    V1,
    /// chatty: allows with its warning.
    V2,
    /// Anything else: a failed or mixed answer.
    Bad(String),
}

fn version(status: u16, body: &Value) -> Version {
    let r = &body["response"];
    if status == 200
        && r["allowed"] == false
        && r["status"]["message"] == "current: missing required labels: team"
        && r.get("warnings").is_none()
    {
        Version::V1
    } else if status == 200
        && r["allowed"] == true
        && r["warnings"] == json!(["chatty was here"])
        && r.get("status").is_none()
    {
        Version::V2
    } else {
        Version::Bad(format!("{status} {body}"))
    }
}

fn current_policy(dir: &Path, extra: &str) -> String {
    policy_file(&format!(
        "  - name: current\n    kind: validator\n    module: {}\n    settings: {{labels: [team]}}\n{extra}    rules:\n      - {{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}}\n",
        dir.join("current.wasm").display()
    ))
}

async fn ask(gw: &Gateway, client: &reqwest::Client, body: &[u8]) -> Version {
    match client
        .post(gw.url("/validate"))
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            version(status, &body)
        }
        Err(e) => Version::Bad(format!("request failed: {e}")),
    }
}

async fn wait_for(gw: &Gateway, body: &[u8], want: Version) -> Duration {
    let client = gw.client();
    let started = Instant::now();
    loop {
        if ask(gw, &client, body).await == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{want:?} never answered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Clients asking the gateway over and over until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<Version>>>,
}

impl Load {
    fn start(gw: &Arc<Gateway>, body: &[u8], clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let (gw, stop, body) = (gw.clone(), stop.clone(), body.to_vec());
                tokio::spawn(async move {
                    let client = gw.client();
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        seen.push(ask(&gw, &client, &body).await);
                    }
                    seen
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops the clients and returns every answer, failing if one was neither wholly the old
    /// nor wholly the new version.
    async fn stop(self) -> Vec<Version> {
        self.stop.store(true, Ordering::Relaxed);
        let mut answers = Vec::new();
        for c in self.clients {
            answers.extend(c.await.unwrap());
        }
        let bad: Vec<_> = answers
            .iter()
            .filter(|v| matches!(v, Version::Bad(_)))
            .collect();
        assert!(
            bad.is_empty(),
            "{} of {} answers were neither wholly v1 nor wholly v2: {:?}",
            bad.len(),
            answers.len(),
            &bad[..bad.len().min(5)]
        );
        answers
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_a_validator_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (module("require-labels"), module("chatty"));
    let current = dir.path().join("current.wasm");
    replace(Path::new(&v1), &current);
    let gw = Arc::new(Gateway::start(&current_policy(dir.path(), "")));
    let body = serde_json::to_vec(&review("pod-create-no-team.json")).unwrap();
    assert_eq!(ask(&gw, &gw.client(), &body).await, Version::V1);

    let load = Load::start(&gw, &body, 4);

    let swaps = 10;
    for i in 0..swaps {
        let (from, want) = if i % 2 == 0 {
            (&v2, Version::V2)
        } else {
            (&v1, Version::V1)
        };
        replace(Path::new(from), &current);
        wait_for(&gw, &body, want).await;
    }
    let answers = load.stop().await;
    assert!(
        answers.contains(&Version::V1) && answers.contains(&Version::V2),
        "the load saw both versions"
    );
    // After the last swap (to v1), only v1 answers.
    let client = gw.client();
    for _ in 0..20 {
        assert_eq!(ask(&gw, &client, &body).await, Version::V1);
    }
    let ready = gw.readyz().await;
    assert_eq!(ready["reload"]["succeeded"], swaps, "{ready}");
    assert_eq!(ready["generation"], swaps + 1);
}

#[tokio::test]
async fn broken_changes_are_rejected_and_fixes_recover() {
    let dir = tempfile::tempdir().unwrap();
    let current = dir.path().join("current.wasm");
    replace(Path::new(&module("require-labels")), &current);
    let gw = Gateway::start(&current_policy(dir.path(), ""));
    let policy = gw.path("policies.yaml");
    let body = serde_json::to_vec(&review("pod-create-no-team.json")).unwrap();
    let client = gw.client();

    // A module that is not a component: rejected, the last good snapshot still answers.
    write_atomic(&current, "garbage");
    gw.rejected(1, "module does not compile as a WebAssembly component")
        .await;
    assert_eq!(ask(&gw, &client, &body).await, Version::V1);
    // Fixing it (with another plugin) recovers and clears the error.
    replace(Path::new(&module("chatty")), &current);
    wait_for(&gw, &body, Version::V2).await;
    assert!(gw.readyz().await["reload"]["lastError"].is_null());

    // ... and `wasmgate status` shows it too: exit 1 while the last reload is rejected.
    write_atomic(&current, "garbage again");
    let error = gw
        .rejected(2, "module does not compile as a WebAssembly component")
        .await;
    let (code, out) = gw.status();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("reloads       3 attempted, 1 succeeded, 2 failed"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "last reload   REJECTED (the previous snapshot keeps serving): {error}"
        )),
        "{out}"
    );
    replace(Path::new(&module("chatty")), &current);
    wait_for(&gw, &body, Version::V2).await;

    // A policy file with a syntax error: the error names the file and the line.
    write_atomic(
        &policy,
        "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies: [\n",
    );
    let error = gw.rejected(3, &format!("{}:", policy.display())).await;
    assert!(
        error.starts_with(&format!("{}:", policy.display())),
        "{error}"
    );
    assert_eq!(ask(&gw, &client, &body).await, Version::V2);

    // A pin mismatch.
    write_atomic(
        &policy,
        current_policy(dir.path(), &format!("    sha256: {}\n", "0".repeat(64))),
    );
    gw.rejected(4, "but the policy pins 0000").await;
    assert_eq!(ask(&gw, &client, &body).await, Version::V2);

    // Fixing the file recovers; SIGHUP with nothing changed is harmless. Two files cannot
    // change in one step, so each step is a good state of its own: the watcher may take them as
    // one reload or two, and neither is a rejection.
    write_atomic(&policy, current_policy(dir.path(), ""));
    wait_for(&gw, &body, Version::V2).await;
    replace(Path::new(&module("require-labels")), &current);
    wait_for(&gw, &body, Version::V1).await;
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ask(&gw, &client, &body).await, Version::V1);
    let ready = gw.readyz().await;
    assert!(ready["reload"]["lastError"].is_null(), "{ready}");
    assert_eq!(ready["reload"]["failed"], 4);
    let metrics = gw.get_text("/metrics").await;
    assert!(
        metrics.contains("wasmgate_reloads_total{result=\"failed\"} 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn certificates_rotate_for_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("current.wasm"),
        std::fs::read(module("require-labels")).unwrap(),
    )
    .unwrap();
    let gw = Gateway::start(&current_policy(dir.path(), ""));
    let old_ca = gw.pki.ca.clone();
    let established = client(&old_ca, None, false);
    assert_eq!(
        established
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let new = Pki::new(&["localhost", "127.0.0.1"]);
    write_atomic(&gw.path("tls.key"), &new.key);
    write_atomic(&gw.path("tls.crt"), &new.cert);
    let started = Instant::now();
    loop {
        if client(&new.ca, None, false)
            .get(gw.url("/healthz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The established keep-alive connection still works (a new one would fail: it trusts only
    // the old CA) and a new client that trusts only the old CA is refused.
    assert_eq!(
        established
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        client(&old_ca, None, false)
            .get(gw.url("/healthz"))
            .send()
            .await
            .is_err()
    );
}

/// Starts a gateway the way the README runs it: from a working directory, with a relative
/// `--config policies/p.yaml` whose module lives outside the policy file's folder
/// (`../modules/current.wasm`).
fn start_relative(work: &Path) -> Gateway {
    std::fs::create_dir_all(work.join("policies")).unwrap();
    std::fs::create_dir_all(work.join("modules")).unwrap();
    replace(
        Path::new(&module("require-labels")),
        &work.join("modules/current.wasm"),
    );
    write_atomic(
        &work.join("policies/p.yaml"),
        policy_file(
            "  - name: current\n    kind: validator\n    module: ../modules/current.wasm\n    settings: {labels: [team]}\n    rules:\n      - {operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}\n",
        ),
    );
    Gateway::start_with(
        "",
        Options {
            config_in: Some((work.to_owned(), "policies/p.yaml".into())),
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn a_relative_config_sees_a_module_renamed_into_place() {
    let work = tempfile::tempdir().unwrap();
    let gw = start_relative(work.path());
    let body = serde_json::to_vec(&review("pod-create-no-team.json")).unwrap();
    assert_eq!(ask(&gw, &gw.client(), &body).await, Version::V1);
    // The watcher, not the 30 s re-scan, must see it: wait_for gives up after 10 s.
    replace(
        Path::new(&module("chatty")),
        &work.path().join("modules/current.wasm"),
    );
    let took = wait_for(&gw, &body, Version::V2).await;
    println!("relative --config, module renamed into place: served after {took:?}");
    // And the policy file itself, through its relative path.
    let policy = work.path().join("policies/p.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    write_atomic(&policy, text.replace("name: current", "name: renamed"));
    gw.wait_ready("the renamed policy serving", |ready| {
        ready["policies"] == json!(["renamed"])
    })
    .await;
}

#[tokio::test]
async fn going_back_to_the_serving_content_clears_the_rejection() {
    let work = tempfile::tempdir().unwrap();
    let gw = start_relative(work.path());
    let policy = work.path().join("policies/p.yaml");
    let serving = std::fs::read_to_string(&policy).unwrap();
    write_atomic(
        &policy,
        "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies: [\n",
    );
    let broken = std::fs::read(&policy).unwrap();
    gw.rejected(1, "p.yaml:").await;
    // The same broken bytes again (a second event for one change) are not a second rejection.
    write_atomic(&policy, &broken);
    let started = Instant::now();
    while !gw
        .logs()
        .iter()
        .any(|l| l.contains("the same rejection again, not counted"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the rewrite was not seen: {:?}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = gw.readyz().await;
    assert_eq!(ready["reload"]["failed"], 1, "{ready}");
    assert_eq!(ready["reload"]["attempts"], 1, "{ready}");
    // Restore exactly what is serving: the rejection is gone, without a new snapshot.
    write_atomic(&policy, &serving);
    let ready = gw
        .wait_ready(
            "the rejection cleared by restoring the serving file",
            |ready| ready["reload"]["lastError"].is_null(),
        )
        .await;
    assert_eq!(ready["reload"]["failed"], 1, "{ready}");
    assert_eq!(ready["reload"]["succeeded"], 1, "{ready}");
    assert_eq!(ready["generation"], 1, "no new snapshot was built: {ready}");
    let (code, out) = gw.status();
    assert_eq!(code, Some(0), "{out}");
}

/// A module written in place (truncate, write, close) with the writer stalled halfway: the
/// half-file is a rejected reload while the old module keeps answering, the finished file
/// serves, and the rejection is gone. No request ever sees the half-file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_written_in_place_is_rejected_half_written_then_serves_whole() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let current = dir.path().join("current.wasm");
    replace(Path::new(&module("require-labels")), &current);
    let gw = Arc::new(Gateway::start(&current_policy(dir.path(), "")));
    let body = serde_json::to_vec(&review("pod-create-no-team.json")).unwrap();
    assert_eq!(ask(&gw, &gw.client(), &body).await, Version::V1);
    let load = Load::start(&gw, &body, 2);

    let chatty = std::fs::read(module("chatty")).unwrap();
    let (first, rest) = chatty.split_at(chatty.len() / 2);
    let mut file = std::fs::File::create(&current).unwrap();
    file.write_all(first).unwrap();
    file.flush().unwrap();
    // The writer stalls: the gateway reads the half-file and must reject it.
    gw.rejected(1, "module does not compile as a WebAssembly component")
        .await;
    assert_eq!(ask(&gw, &gw.client(), &body).await, Version::V1);
    file.write_all(rest).unwrap();
    drop(file);
    wait_for(&gw, &body, Version::V2).await;
    let ready = gw
        .wait_ready("the whole file serving, the rejection gone", |ready| {
            ready["reload"]["lastError"].is_null()
        })
        .await;
    assert_eq!(ready["generation"], 2, "{ready}");

    load.stop().await;
}

/// `module:` naming something that is not a small regular file: `/dev/zero` (reading it never
/// ends), a FIFO (reading blocks until someone writes), a sparse file one byte over the cap.
/// At start the gateway exits at once with the file, line and reason; at reload the change is
/// rejected the same way and the last good snapshot keeps answering. Before, the first two hung
/// the loader for good and the third was read whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_module_that_is_a_device_a_fifo_or_too_large_is_refused_at_start_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.wasm");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(wasmgate::config::MAX_MODULE_BYTES + 1)
        .unwrap();
    let cases = [
        (
            Path::new("/dev/zero"),
            "it is a character device, not a regular file",
        ),
        (
            fifo.as_path(),
            "it is a FIFO (named pipe), not a regular file",
        ),
        (huge.as_path(), "more than the 134217728 a module may have"),
    ];
    let named = |module: &Path| {
        policy_file(&format!(
            "  - name: current\n    kind: validator\n    module: {}\n    settings: {{labels: [team]}}\n    rules:\n      - {{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}}\n",
            module.display()
        ))
    };

    // At start.
    for (module, why) in cases {
        let policies = dir.path().join("policies.yaml");
        std::fs::write(&policies, named(module)).unwrap();
        let started = Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wasmgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&policies)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                child.kill().unwrap();
                panic!("module: {} hung the loader at start", module.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success());
        let expected = format!(
            "policies.yaml:6: policy \"current\": cannot read module {}: ",
            module.display()
        );
        assert!(
            stderr.contains(&expected) && stderr.contains(why),
            "{stderr}"
        );
    }

    // At reload.
    let current = dir.path().join("current.wasm");
    replace(Path::new(&module("require-labels")), &current);
    let gw = Gateway::start(&current_policy(dir.path(), ""));
    let policy = gw.path("policies.yaml");
    let body = serde_json::to_vec(&review("pod-create-no-team.json")).unwrap();
    let client = gw.client();
    for (failures, (module, why)) in (1..).zip(cases) {
        write_atomic(&policy, named(module));
        let error = gw.rejected(failures, &module.display().to_string()).await;
        assert!(
            error.contains(&format!(
                "policies.yaml:6: policy \"current\": cannot read module {}: ",
                module.display()
            )) && error.contains(why),
            "{error}"
        );
        assert_eq!(ask(&gw, &client, &body).await, Version::V1);
    }
}
