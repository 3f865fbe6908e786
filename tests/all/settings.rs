//! Settings checked at load (wasmgate:plugin@0.2.0 `validate-settings`): bad settings refuse
//! start-up, `wasmgate check` and a reload, with the file, the line of `settings` and the
//! plugin's own message; 0.1.0 plugins load with the check skipped; `patched` initializers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    Gateway, compile_cache, entry, module, patched, policy_file, repo, review, write_atomic,
};

/// Runs `wasmgate serve` on `policy` and expects it to refuse to start: returns the exit code,
/// stderr and how long it took.
fn serve_refuses(dir: &Path, policy: &str) -> (Option<i32>, String, Duration) {
    // Generous: a refusal takes well under a second; a gateway that starts never exits.
    serve_refuses_within(dir, policy, Duration::from_secs(30))
}

/// [`serve_refuses`], waiting up to `bound` (a Python or JavaScript component's first compile
/// takes tens of seconds on a busy machine).
fn serve_refuses_within(
    dir: &Path,
    policy: &str,
    bound: Duration,
) -> (Option<i32>, String, Duration) {
    let file = dir.join("policies.yaml");
    std::fs::write(&file, policy).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("WASMGATE_COMPILE_CACHE", compile_cache())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + bound;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wasmgate serve started (or hung) on a policy file it must refuse:\n{policy}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr, started.elapsed())
}

/// Runs `wasmgate check` on the policy file in `dir` with a Pod review.
fn check_refuses(dir: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["check", "--request"])
        .arg(repo().join("tests/fixtures/reviews/pod-create.json"))
        .arg("--config")
        .arg(dir.join("policies.yaml"))
        .env("WASMGATE_COMPILE_CACHE", compile_cache())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A first-party plugin with settings it refuses, and what it says. Each plugin has a case of
/// each mistake that applies to it: a wrong type, an unknown key (all refuse them) and a missing
/// required value (only `require-labels` and `default-storage-class` have one: the others'
/// settings all have defaults).
struct Case {
    plugin: &'static str,
    /// `policy` (validator or initializer) or `sink`.
    kind: &'static str,
    settings: &'static str,
    message: &'static str,
}

const CASES: &[Case] = &[
    // The issue's operator mistake: a string where a list belongs.
    Case {
        plugin: "require-labels",
        kind: "validator",
        settings: "{labels: team}",
        message: r#"labels: invalid type: string "team", expected a sequence"#,
    },
    Case {
        plugin: "require-labels",
        kind: "validator",
        settings: "{label: [team]}",
        message: "unknown field `label`, expected `labels`",
    },
    Case {
        plugin: "require-labels",
        kind: "validator",
        settings: "{}",
        message: "missing field `labels`",
    },
    Case {
        plugin: "deny-privileged",
        kind: "validator",
        settings: "{skip_init_containers: \"yes\"}",
        message: r#"skip_init_containers: invalid type: string "yes", expected a boolean"#,
    },
    Case {
        plugin: "deny-privileged",
        kind: "validator",
        settings: "{skipInitContainers: true}",
        message: "unknown field `skipInitContainers`",
    },
    Case {
        plugin: "always-pull-images",
        kind: "initializer",
        settings: "{imagePullPolicy: Always}",
        message: "unknown field `imagePullPolicy`, there are no fields",
    },
    Case {
        plugin: "always-pull-images",
        kind: "initializer",
        settings: "[Always]",
        message: "invalid type: sequence, expected no settings (an empty map)",
    },
    Case {
        plugin: "default-storage-class",
        kind: "initializer",
        settings: "{storageClassName: 7}",
        message: "storageClassName: invalid type: integer `7`, expected a string",
    },
    Case {
        plugin: "default-storage-class",
        kind: "initializer",
        settings: "{storageClass: standard}",
        message: "unknown field `storageClass`, expected `storageClassName`",
    },
    Case {
        plugin: "default-storage-class",
        kind: "initializer",
        settings: "{}",
        message: "missing field `storageClassName`",
    },
    Case {
        plugin: "redact-secrets",
        kind: "sink",
        settings: "{output: audit, keys: password}",
        message: r#"keys: invalid type: string "password", expected a sequence"#,
    },
    Case {
        plugin: "redact-secrets",
        kind: "sink",
        settings: "{outputs: audit}",
        message: "unknown field `outputs`",
    },
    Case {
        plugin: "exec-alert",
        kind: "sink",
        settings: "{output: [audit]}",
        message: "output: invalid type: sequence, expected a string",
    },
    Case {
        plugin: "exec-alert",
        kind: "sink",
        settings: "{output: audit, severity: high}",
        message: "unknown field `severity`",
    },
];

/// A policy file holding one first-party plugin with `settings`.
fn file_for(dir: &Path, case: &Case) -> String {
    let head = "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\n";
    if case.kind == "sink" {
        format!(
            "{head}policies: []\nauditSinks:\n  - name: {}\n    module: {}\n    # the settings\n    settings: {}\n    rules: [{{level: Metadata}}]\n    outputs:\n      - {{name: audit, type: file, path: {}}}\n",
            case.plugin,
            module(case.plugin),
            case.settings,
            dir.join("audit.jsonl").display()
        )
    } else {
        format!(
            "{head}policies:\n  - name: {}\n    kind: {}\n    module: {}\n    timeout: 2s\n    # the settings\n    settings: {}\n    rules:\n      - {{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}}\n",
            case.plugin,
            case.kind,
            module(case.plugin),
            case.settings
        )
    }
}

#[test]
fn first_party_plugins_refuse_bad_settings_at_start_and_in_check() {
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let policy = file_for(dir.path(), case);
        let what = if case.kind == "sink" {
            "audit sink"
        } else {
            "policy"
        };
        // The line of `settings:` (after a comment line, so not the entry's).
        let line = policy
            .lines()
            .position(|l| l.trim_start().starts_with("settings:"))
            .unwrap()
            + 1;
        let expected = format!(
            "{}:{line}: {what} \"{}\": settings refused by the plugin: ",
            dir.path().join("policies.yaml").display(),
            case.plugin
        );
        let (code, stderr, took) = serve_refuses(dir.path(), &policy);
        assert_eq!(code, Some(2), "{}: {stderr}", case.plugin);
        assert!(
            stderr.contains(&expected) && stderr.contains(case.message),
            "{} {}: expected `{expected}...{}` in:\n{stderr}",
            case.plugin,
            case.settings,
            case.message
        );
        assert!(took < Duration::from_secs(10), "{took:?}");
        // `wasmgate check` refuses the same file the same way.
        let (code, stderr) = check_refuses(dir.path());
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&expected) && stderr.contains(case.message),
            "check: {stderr}"
        );
    }
}

// === every language's require-labels ===

/// The plugin-file prefix of each language's `require-labels` in plugins/dist (built by
/// scripts/build-polyglot-plugins; "" is the Rust one), as tests/conformance/run names them.
const LANGUAGES: &[(&str, &str)] = &[
    ("rust", ""),
    ("python", "python-"),
    ("javascript", "javascript-"),
    ("js-quickjs", "javascript-quickjs-"),
    ("c", "c-"),
    ("go", "go-"),
];

/// The require-labels cases of [`CASES`]: wrong type, unknown key, missing required value.
/// Every language answers with the Rust plugin's words (tests/conformance/run compares them).
fn require_labels_cases() -> Vec<&'static Case> {
    let cases: Vec<_> = CASES
        .iter()
        .filter(|c| c.plugin == "require-labels")
        .collect();
    assert_eq!(cases.len(), 3);
    cases
}

/// A policy file with one `require-labels` entry per language, named `<language>-require-labels`,
/// with `settings` for `bad_language` and `{labels: [team]}` for the others.
fn languages_file(bad: Option<(&str, &str)>) -> String {
    let mut text = String::from("apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n");
    for (language, prefix) in LANGUAGES {
        let settings = match bad {
            Some((l, settings)) if l == *language => settings,
            _ => "{labels: [team]}",
        };
        text.push_str(&format!(
            "  - name: {language}-require-labels\n    kind: validator\n    module: {}\n    timeout: 10s\n    settings: {settings}\n    rules:\n      - {{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}}\n",
            module(&format!("{prefix}require-labels"))
        ));
    }
    text
}

/// Compiles every language's require-labels into the shared compile cache (`wasmgate check`,
/// no time bound), so that the tests' own bounds measure loading, not a cold compile.
fn warm_language_components(dir: &Path) {
    let file = dir.join("warm.yaml");
    std::fs::write(&file, languages_file(None)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["check", "--request"])
        .arg(repo().join("tests/fixtures/reviews/pod-create-no-team.json"))
        .arg("--config")
        .arg(&file)
        .env("WASMGATE_COMPILE_CACHE", compile_cache())
        .output()
        .unwrap();
    // Exit 1: denied (the Pod has no `team`); anything else means a language did not load.
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_language_s_require_labels_refuses_bad_settings_at_start() {
    let dir = tempfile::tempdir().unwrap();
    warm_language_components(dir.path());
    for (language, prefix) in LANGUAGES {
        for case in require_labels_cases() {
            let name = format!("{language}-require-labels");
            let policy = format!(
                "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: {name}\n    kind: validator\n    module: {}\n    # the settings\n    settings: {}\n    rules:\n      - {{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}}\n",
                module(&format!("{prefix}require-labels")),
                case.settings
            );
            let line = policy
                .lines()
                .position(|l| l.trim_start().starts_with("settings:"))
                .unwrap()
                + 1;
            let expected = format!(
                "{}:{line}: policy \"{name}\": settings refused by the plugin: ",
                dir.path().join("policies.yaml").display(),
            );
            let (code, stderr, _) =
                serve_refuses_within(dir.path(), &policy, Duration::from_secs(120));
            assert_eq!(code, Some(2), "{name} {}: {stderr}", case.settings);
            assert!(
                stderr.contains(&expected) && stderr.contains(case.message),
                "{name} {}: expected `{expected}...{}` in:\n{stderr}",
                case.settings,
                case.message
            );
        }
    }
}

#[test]
fn the_settings_check_runs_under_the_policy_deadline_and_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    // A check that never returns is stopped by the policy's timeout, as is one that sleeps
    // 30 s in a host call (WASI), where no epoch tick reaches it ...
    for (name, plugin, settings) in [
        ("spin", "spin", "{atLoad: true}"),
        ("sleep", "hostile", "{act: sleep-at-load}"),
    ] {
        let (code, stderr, took) = serve_refuses(
            dir.path(),
            &policy_file(&entry(
                name,
                "validator",
                plugin,
                &format!("timeout: 200ms\nsettings: {settings}"),
            )),
        );
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "policy \"{name}\": the plugin's settings check failed: deadline of 200ms exceeded"
            )),
            "{stderr}"
        );
        assert!(took < Duration::from_secs(10), "{name}: {took:?}");
    }
    // ... and one that allocates without end by its memory limit.
    let (code, stderr, _) = serve_refuses(
        dir.path(),
        &policy_file(&entry(
            "hog",
            "validator",
            "hog",
            "memoryLimit: 16Mi\nsettings: {atLoad: true}",
        )),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "policy \"hog\": the plugin's settings check failed: memory limit of 16777216 bytes exceeded"
        ),
        "{stderr}"
    );
}

#[test]
fn a_settings_refusal_is_cut_to_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr, _) = serve_refuses(
        dir.path(),
        &policy_file(&entry(
            "refuse",
            "initializer",
            "patch-label",
            "settings: {key: team, refuse: 100000}",
        )),
    );
    assert_eq!(code, Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("settings refused by the plugin: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    let message = line
        .split("settings refused by the plugin: ")
        .nth(1)
        .unwrap();
    // MAX_SETTINGS_MESSAGE (4096) bytes of the plugin's 100,000, then `...`.
    assert_eq!(message, format!("{}...", "x".repeat(4096)));
}

// === hot reload ===

/// Every first-party plugin with good settings, on one gateway.
fn good_file(dir: &Path, override_plugin: Option<&Case>) -> String {
    let settings = |plugin: &str, good: &str| match override_plugin {
        Some(case) if case.plugin == plugin => case.settings.to_owned(),
        _ => good.to_owned(),
    };
    let policy = |name: &str, kind: &str, good: &str| {
        format!(
            "  - name: {name}\n    kind: {kind}\n    module: {}\n    settings: {}\n    rules:\n      - {{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}}\n",
            module(name),
            settings(name, good)
        )
    };
    let sink = |name: &str, good: &str| {
        format!(
            "  - name: {name}\n    module: {}\n    settings: {}\n    rules: [{{level: Metadata}}]\n    outputs:\n      - {{name: audit, type: file, path: {}}}\n",
            module(name),
            settings(name, good),
            dir.join(format!("{name}.jsonl")).display()
        )
    };
    format!(
        "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n{}{}{}{}auditSinks:\n{}{}",
        policy("always-pull-images", "initializer", "{}"),
        policy(
            "default-storage-class",
            "initializer",
            "{storageClassName: standard}"
        ),
        policy("require-labels", "validator", "{labels: [team]}"),
        policy(
            "deny-privileged",
            "validator",
            "{skip_init_containers: false}"
        ),
        sink("redact-secrets", "{output: audit, keys: [password]}"),
        sink("exec-alert", "{output: audit}"),
    )
}

/// What the good settings answer: require-labels denies a Pod without `team`, and
/// default-storage-class gives a class-less claim `standard`. Anything else is a failure.
async fn answer_is_good(
    gw: &Gateway,
    client: &reqwest::Client,
    validate: bool,
) -> Result<(), String> {
    let (path, body) = if validate {
        ("/validate", review("pod-create-no-team.json"))
    } else {
        ("/mutate", review("pvc-create.json"))
    };
    let response = client
        .post(gw.url(path))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.map_err(|e| e.to_string())?;
    let r = &answer["response"];
    let good = if validate {
        status == 200
            && r["allowed"] == false
            && r["status"]["message"] == "require-labels: missing required labels: team"
    } else {
        status == 200
            && r["allowed"] == true
            && patched(&body, r)["spec"]["storageClassName"] == "standard"
    };
    if good {
        Ok(())
    } else {
        Err(format!("{path}: {status} {answer}"))
    }
}

/// What a client under load asks.
enum Ask {
    /// [`answer_is_good`]: the validator or the initializer of [`good_file`].
    FirstParty { validate: bool },
    /// [`language_answer_is_good`] for this language.
    Language(&'static str),
}

/// Four clients asking the gateway until stopped, each answer checked against the good
/// settings; `ask(client, round)` says what.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(gw: &Arc<Gateway>, ask: fn(usize, usize) -> Ask) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..4)
            .map(|i| {
                let (gw, stop) = (gw.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = gw.client();
                    let (mut answered, mut failed) = (0u64, Vec::new());
                    let mut round = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let good = match ask(i, round) {
                            Ask::FirstParty { validate } => {
                                answer_is_good(&gw, &client, validate).await
                            }
                            Ask::Language(language) => {
                                language_answer_is_good(&gw, &client, language).await
                            }
                        };
                        round += 1;
                        match good {
                            Ok(()) => answered += 1,
                            Err(e) => failed.push(e),
                        }
                    }
                    (answered, failed)
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops the clients; fails if any answer was not the good settings' or none came.
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut answered, mut failed) = (0, Vec::new());
        for c in self.clients {
            let (a, f) = c.await.unwrap();
            answered += a;
            failed.extend(f);
        }
        assert!(
            failed.is_empty(),
            "{} of {} requests failed or were answered by other settings: {:?}",
            failed.len(),
            answered + failed.len() as u64,
            &failed[..failed.len().min(3)]
        );
        assert!(answered > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_by_hot_reload_are_rejected_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Arc::new(Gateway::start(&good_file(dir.path(), None)));
    let policy = gw.path("policies.yaml");
    let ready = gw.readyz().await;
    for plugin in ready["plugins"].as_array().unwrap() {
        assert_eq!(plugin["settings"], "checked", "{ready}");
        assert_eq!(plugin["contract"], "wasmgate:plugin@0.2.0", "{ready}");
    }
    assert_eq!(ready["plugins"].as_array().unwrap().len(), 6, "{ready}");

    let load = Load::start(&gw, |client, _| Ask::FirstParty {
        validate: client % 2 == 0,
    });

    // One plugin at a time (and the first case of each), each change rejected in turn.
    let mut seen = Vec::new();
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| {
            let first = !seen.contains(&c.plugin);
            seen.push(c.plugin);
            first
        })
        .collect();
    assert_eq!(cases.len(), 6);
    for (i, case) in cases.iter().enumerate() {
        write_atomic(&policy, good_file(dir.path(), Some(case)));
        let error = gw.rejected(i as u64 + 1, case.message).await;
        assert!(
            error.starts_with(&format!("{}:", policy.display()))
                && error.contains(&format!(
                    "\"{}\": settings refused by the plugin: ",
                    case.plugin
                ))
                && error.contains(case.message),
            "{error}"
        );
        // The line is that of the plugin's `settings:`.
        let line: usize = error[policy.display().to_string().len() + 1..]
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let text = std::fs::read_to_string(&policy).unwrap();
        assert_eq!(
            text.lines().nth(line - 1).unwrap().trim(),
            format!("settings: {}", case.settings),
            "{error}"
        );
        // `wasmgate status` shows the rejection (exit 1) and what serves.
        let (code, out) = gw.status();
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains(&format!(
                "last reload   REJECTED (the previous snapshot keeps serving): {error}"
            )),
            "{out}"
        );
        assert!(
            out.contains("plugin        require-labels (validator, wasmgate:plugin@0.2.0): settings checked at load"),
            "{out}"
        );
    }
    load.stop().await;
    let ready = gw.readyz().await;
    assert_eq!(ready["generation"], 1, "{ready}");
    let metrics = gw.get_text("/metrics").await;
    assert!(
        metrics.contains("wasmgate_reloads_total{result=\"failed\"} 6"),
        "{metrics}"
    );
    // Fixing the file recovers.
    write_atomic(
        &policy,
        good_file(dir.path(), None).replace("[team]", "[team, app]"),
    );
    gw.wait_ready("the fixed file serving", |ready| {
        ready["generation"] == 2 && ready["reload"]["lastError"].is_null()
    })
    .await;
}

/// One language's require-labels, asked by name: it must deny a Pod without `team` with its
/// message. Anything else is a failure.
async fn language_answer_is_good(
    gw: &Gateway,
    client: &reqwest::Client,
    language: &str,
) -> Result<(), String> {
    let path = format!("/validate/{language}-require-labels");
    let response = client
        .post(gw.url(&path))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&review("pod-create-no-team.json")).unwrap())
        .send()
        .await
        .map_err(|e| format!("{path}: request failed: {e}"))?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.map_err(|e| e.to_string())?;
    let r = &answer["response"];
    if status == 200
        && r["allowed"] == false
        && r["status"]["message"]
            == format!("{language}-require-labels: missing required labels: team")
    {
        Ok(())
    } else {
        Err(format!("{path}: {status} {answer}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_s_bad_settings_by_hot_reload_are_rejected_under_load() {
    let dir = tempfile::tempdir().unwrap();
    warm_language_components(dir.path());
    let gw = Arc::new(Gateway::start(&languages_file(None)));
    let policy = gw.path("policies.yaml");
    let ready = gw.readyz().await;
    assert_eq!(
        ready["plugins"].as_array().unwrap().len(),
        LANGUAGES.len(),
        "{ready}"
    );
    for plugin in ready["plugins"].as_array().unwrap() {
        assert_eq!(plugin["settings"], "checked", "{ready}");
    }

    // Clients ask every language in turn, all through the reloads.
    let load = Load::start(&gw, |client, round| {
        Ask::Language(LANGUAGES[(client + round) % LANGUAGES.len()].0)
    });

    // Each language in turn gets one of the three mistakes; each reload is rejected.
    let cases = require_labels_cases();
    for (i, (language, _)) in LANGUAGES.iter().enumerate() {
        let case = cases[i % cases.len()];
        write_atomic(&policy, languages_file(Some((language, case.settings))));
        let error = gw
            .rejected(
                i as u64 + 1,
                &format!("policy \"{language}-require-labels\": settings refused"),
            )
            .await;
        assert!(
            error.starts_with(&format!("{}:", policy.display()))
                && error.contains(&format!(
                    "policy \"{language}-require-labels\": settings refused by the plugin: "
                ))
                && error.contains(case.message),
            "{error}"
        );
        let line: usize = error[policy.display().to_string().len() + 1..]
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let text = std::fs::read_to_string(&policy).unwrap();
        assert_eq!(
            text.lines().nth(line - 1).unwrap().trim(),
            format!("settings: {}", case.settings),
            "{error}"
        );
    }
    load.stop().await;
    // The first snapshot served throughout, with the old settings.
    assert_eq!(gw.readyz().await["generation"], 1);
}

// === wasmgate:plugin@0.1.0 ===

#[tokio::test]
async fn a_0_1_0_plugin_serves_with_its_settings_check_skipped() {
    let gw = Gateway::start(&policy_file(
        &[
            entry(
                "legacy",
                "validator",
                "legacy-labels",
                "settings: {labels: [team]}",
            ),
            entry(
                "current",
                "validator",
                "require-labels",
                "settings: {labels: [app]}",
            ),
        ]
        .concat(),
    ));
    let ready = gw.readyz().await;
    assert_eq!(
        ready["plugins"],
        json!([
            {"name": "legacy", "kind": "validator", "contract": "wasmgate:plugin@0.1.0", "settings": "skipped"},
            {"name": "current", "kind": "validator", "contract": "wasmgate:plugin@0.2.0", "settings": "checked"},
        ]),
        "{ready}"
    );
    // It gets the request in its own version's types and its answer counts.
    let pod = review("pod-create-no-team.json");
    let response = gw.answer("/validate/legacy", &pod).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(
        response["status"]["message"], "legacy: missing labels: team",
        "{response}"
    );
    assert_eq!(
        response["warnings"],
        json!(["legacy plugin, operation CREATE"])
    );
    let response = gw
        .answer("/validate/legacy", &review("pod-create.json"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");

    let (code, out) = gw.status();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("plugin        legacy (validator, wasmgate:plugin@0.1.0): settings NOT checked (wasmgate:plugin@0.1.0 has no validate-settings"),
        "{out}"
    );

    // Without the check, bad settings load, and fail each call instead, as 0.1.0 always did.
    let gw = Gateway::start(&policy_file(&entry(
        "legacy",
        "validator",
        "legacy-labels",
        "settings: {labels: team}",
    )));
    let response = gw.answer("/validate", &pod).await;
    assert_eq!(response["status"]["code"], 500, "{response}");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("policy \"legacy\" failed: plugin returned an error: invalid settings: "),
        "{response}"
    );
}

// === patched initializers ===

#[tokio::test]
async fn a_patched_initializer_yields_the_right_json_patch() {
    let bad = |mode: &str| {
        entry(
            &format!("bad-{mode}"),
            "initializer",
            "patch-label",
            &format!("settings: {{key: team, mode: {mode}}}"),
        )
    };
    let gw = Gateway::start(&policy_file(
        &[
            entry(
                "patch",
                "initializer",
                "patch-label",
                "settings: {key: example.com/team, value: blue}",
            ),
            // Runs second, on the patched object: it sees the label.
            entry(
                "copy",
                "initializer",
                "copy-label",
                "settings: {from: example.com/team, to: example.com/copied}",
            ),
            bad("missing-path"),
            bad("kind"),
            bad("not-json"),
            bad("not-a-list"),
            bad("huge"),
            bad("unmovable"),
        ]
        .concat(),
    ));
    let pod = review("pod-create.json");
    let response = gw.answer("/mutate/patch", &pod).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["patchType"], "JSONPatch");
    let object = patched(&pod, &response);
    let mut expected = pod["request"]["object"].clone();
    expected["metadata"]["labels"]["example.com/team"] = json!("blue");
    assert_eq!(object, expected);

    // Chained: the patch is applied to the host's copy, and the next initializer sees it.
    let chain = Gateway::start(&policy_file(
        &[
            entry(
                "patch",
                "initializer",
                "patch-label",
                "settings: {key: example.com/team, value: blue}",
            ),
            entry(
                "copy",
                "initializer",
                "copy-label",
                "settings: {from: example.com/team, to: example.com/copied}",
            ),
        ]
        .concat(),
    ));
    let response = chain.answer("/mutate", &pod).await;
    let object = patched(&pod, &response);
    expected["metadata"]["annotations"]["example.com/copied"] = json!("blue");
    assert_eq!(object, expected, "{response}");

    // Bad patches are invalid outputs, handled by failurePolicy (Fail: 500).
    for (mode, message) in [
        ("missing-path", "invalid output: the patch does not apply: "),
        (
            "kind",
            "invalid output: an initializer may not change the object's apiVersion or kind",
        ),
        (
            "not-json",
            "invalid output: the patch is not an RFC 6902 JSON Patch: ",
        ),
        (
            "not-a-list",
            "invalid output: the patch is not an RFC 6902 JSON Patch: ",
        ),
        // Bounded like a replaced object, before the host parses it.
        ("huge", "invalid output: the patch is 52429"),
        // All or none without an undo that could fail (json_patch's panicked here).
        (
            "unmovable",
            "invalid output: the patch does not apply: operation '/1' failed at path '/no-such-field': path is invalid",
        ),
    ] {
        let response = gw.answer(&format!("/mutate/bad-{mode}"), &pod).await;
        assert_eq!(response["allowed"], false, "{response}");
        assert_eq!(response["status"]["code"], 500, "{response}");
        assert!(
            response["status"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("policy \"bad-{mode}\" failed: plugin {message}")),
            "{mode}: {response}"
        );
        assert!(response.get("patch").is_none(), "{response}");
    }
    // On DELETE nothing may change: the plugin answers `unchanged` (it has no object), so the
    // request is allowed without a patch.
    let delete = review("pod-delete.json");
    let response = gw.answer("/mutate/patch", &delete).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
}

// === the cluster import ===

#[tokio::test]
async fn cluster_lookups_without_a_grant_are_denied() {
    let gw = Gateway::start(&policy_file(&entry(
        "probe",
        "validator",
        "cluster-probe",
        "",
    )));
    let response = gw.answer("/validate", &review("pod-create.json")).await;
    assert_eq!(response["allowed"], true, "{response}");
    let why = "policy \"probe\" has no `context:` grant for core/v1 pods: it has no `context:` in the policy file, so nothing is granted";
    assert_eq!(
        response["warnings"],
        json!([
            format!("get: denied: {why}"),
            format!("list: denied: {why}")
        ]),
        "{response}"
    );
}
