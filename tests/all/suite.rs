//! `wasmgate test`: test suites for policy authors, run by the real binary as an author (and a
//! CI job) runs them: the table, the exit status, file:line errors and JUnit XML.

use std::path::{Path, PathBuf};
use std::process::Command;

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::harness::{compile_cache, module, repo};

/// The first-party suites, as scripts/test runs them: `plugins/rust/*/tests.yaml`.
fn first_party() -> Vec<String> {
    let mut suites: Vec<String> = std::fs::read_dir(repo().join("plugins/rust"))
        .unwrap()
        .map(|e| e.unwrap().path().join("tests.yaml"))
        .filter(|p| p.exists())
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    suites.sort();
    suites
}

const REQUIRE_LABELS: &str = "plugins/rust/require-labels/tests.yaml";
const ALWAYS_PULL_IMAGES: &str = "plugins/rust/always-pull-images/tests.yaml";

/// Runs `wasmgate test ARGS` in the repository: (exit code, stdout, stderr).
fn wasmgate_test(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .arg("test")
        .args(args)
        .current_dir(repo())
        .env("WASMGATE_COMPILE_CACHE", compile_cache())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A suite `tests.yaml` and its `policy.yaml` (one require-labels validator wanting `team`) in
/// a fresh directory.
fn suite_dir(cases: &str, settings: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: require-labels\n    kind: validator\n    module: {}\n    settings: {settings}\n    rules:\n      - {{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}}\n",
            module("require-labels")
        ),
    )
    .unwrap();
    let suite = dir.path().join("tests.yaml");
    std::fs::write(
        &suite,
        format!("apiVersion: wasmgate.io/v1alpha1\nkind: TestSuite\nmetadata:\n  name: mine\npolicy: policy.yaml\ncases:\n{cases}"),
    )
    .unwrap();
    (dir, suite)
}

const POD_WITHOUT_TEAM: &str = "    request:\n      object: {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: shop}}\n";

#[test]
fn the_first_party_suites_pass_with_a_table() {
    let suites = first_party();
    // Every first-party plugin has one, the audit sinks included.
    for plugin in [
        "always-pull-images",
        "default-storage-class",
        "deny-privileged",
        "exec-alert",
        "pod-security",
        "redact-secrets",
        "require-labels",
        "unique-ingress-host",
        "namespace-labels",
    ] {
        assert!(
            suites.contains(&format!("plugins/rust/{plugin}/tests.yaml")),
            "{suites:?}"
        );
    }
    let args: Vec<&str> = suites.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = wasmgate_test(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let header = stdout.lines().next().unwrap();
    for column in ["RESULT", "SUITE", "CASE", "EXPECTED", "GOT", "TIME"] {
        assert!(header.contains(column), "{header}");
    }
    // One row per case, each passing, with its suite, expectation, answer and time.
    let row = stdout
        .lines()
        .find(|l| l.contains("a pod without team is denied"))
        .unwrap_or_else(|| panic!("no row for the case:\n{stdout}"));
    assert!(row.starts_with("ok "), "{row}");
    assert!(row.contains("require-labels"), "{row}");
    assert!(
        row.contains(r#"denied 403 containing "missing required labels: team""#),
        "{row}"
    );
    assert!(
        row.contains("denied 403: require-labels: missing required labels: team"),
        "{row}"
    );
    assert!(row.trim_end().ends_with(" ms"), "{row}");
    let cases: usize = suites
        .iter()
        .map(|s| {
            let text = std::fs::read_to_string(repo().join(s)).unwrap();
            let suite: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
            suite["cases"].as_array().unwrap().len()
        })
        .sum();
    let rows = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(rows, cases, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{} suites, {cases} cases: {cases} passed, 0 failed, 0 errors",
            suites.len()
        )),
        "{stdout}"
    );
}

#[test]
fn a_failing_case_exits_1_naming_expected_and_got() {
    let cases = format!(
        "  - name: passes\n{POD_WITHOUT_TEAM}    expect:\n      allowed: false\n      message: {{contains: team}}\n  - name: wrong verdict\n{POD_WITHOUT_TEAM}    expect:\n      allowed: true\n  - name: wrong message\n{POD_WITHOUT_TEAM}    expect:\n      allowed: false\n      code: 403\n      message: {{matches: '^owner'}}\n"
    );
    let (_dir, suite) = suite_dir(&cases, "{labels: [team]}");
    let (code, stdout, stderr) = wasmgate_test(&[suite.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{stdout}"))
            .to_owned()
    };
    assert!(row("passes").starts_with("ok "), "{stdout}");
    let wrong = row("wrong verdict");
    assert!(wrong.starts_with("FAIL "), "{wrong}");
    assert!(wrong.contains("allowed"), "{wrong}");
    assert!(
        wrong.contains("denied 403: require-labels: missing required labels: team"),
        "{wrong}"
    );
    // The details name the case's file:line and every difference.
    let at = format!("FAIL {}:13: case \"wrong verdict\"", suite.display());
    assert!(stdout.contains(&at), "{at} not in\n{stdout}");
    assert!(
        stdout.contains(
            r#"  expected allowed, got denied: "require-labels: missing required labels: team""#
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"  message: expected a message matching /^owner/, got "require-labels: missing required labels: team""#),
        "{stdout}"
    );
    // Beside each failure, which policies ran, as `wasmgate check --explain` says it.
    assert!(
        stdout.contains("  1 of 1 validators matched and ran:\n    require-labels: matched, ran\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 cases: 1 passed, 2 failed, 0 errors"),
        "{stdout}"
    );
}

#[test]
fn a_patch_that_differs_fails() {
    let dir = tempfile::tempdir().unwrap();
    let policy =
        std::fs::read_to_string(repo().join("plugins/rust/always-pull-images/policy.yaml"))
            .unwrap()
            .replace(
                "../../dist/always-pull-images.wasm",
                &module("always-pull-images"),
            );
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let suite = dir.path().join("tests.yaml");
    std::fs::write(
        &suite,
        "apiVersion: wasmgate.io/v1alpha1\nkind: TestSuite\npolicy: policy.yaml\ncases:\n  - name: expects no patch\n    request:\n      object: {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: [{name: a, image: a}]}}\n    expect:\n      allowed: true\n      patch: []\n  - name: expects another object\n    request:\n      object: {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: [{name: a, image: a}]}}\n    expect:\n      allowed: true\n      patchedObject: {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: [{name: a, image: a, imagePullPolicy: Never}]}}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = wasmgate_test(&[suite.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(r#"  patch: expected [], got [{"op":"add","path":"/spec/containers/0/imagePullPolicy","value":"Always"}]"#),
        "{stdout}"
    );
    assert!(stdout.contains("  patchedObject: expected "), "{stdout}");
    assert!(stdout.contains(r#""imagePullPolicy":"Always""#), "{stdout}");
    assert!(stdout.contains("2 cases: 0 passed, 2 failed"), "{stdout}");
}

/// A suite of audit-sink cases against exec-alert (granted the output `alerts`).
fn sink_suite_dir(cases: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\nauditSinks:\n  - name: exec-alert\n    module: {}\n    settings: {{output: alerts}}\n    rules:\n      - level: Request\n        resources: [{{group: '', resources: [pods/exec]}}]\n    outputs:\n      - {{name: alerts, type: file, path: alerts.jsonl}}\n",
            module("exec-alert")
        ),
    )
    .unwrap();
    let suite = dir.path().join("tests.yaml");
    std::fs::write(
        &suite,
        format!("apiVersion: wasmgate.io/v1alpha1\nkind: TestSuite\nmetadata:\n  name: sinks\npolicy: policy.yaml\ncases:\n{cases}"),
    )
    .unwrap();
    (dir, suite)
}

const EXEC_EVENTS: &str = "    sink: exec-alert\n    events:\n      - {apiVersion: audit.k8s.io/v1, kind: Event, level: Request, auditID: a-1, stage: ResponseStarted, verb: create, requestURI: /api/v1/namespaces/default/pods/web/exec, user: {username: alice}, objectRef: {resource: pods, subresource: exec, namespace: default, name: web, apiVersion: v1}, responseStatus: {code: 101}}\n      - {apiVersion: audit.k8s.io/v1, kind: Event, level: Request, auditID: a-2, stage: ResponseComplete, verb: get, requestURI: /api/v1/namespaces/default/pods/web, user: {username: alice}, objectRef: {resource: pods, namespace: default, name: web, apiVersion: v1}, responseStatus: {code: 200}}\n";

#[test]
fn audit_sink_cases_check_the_lines_per_output() {
    let (_dir, suite) = sink_suite_dir(&format!(
        "  - name: the exec alerts, the get does not\n{EXEC_EVENTS}    expect:\n      lines:\n        alerts:\n          - contains: 'alice exec into pod default/web'\n  - name: expects nothing\n{EXEC_EVENTS}    expect:\n      lines: {{}}\n  - name: expects another line\n{EXEC_EVENTS}    expect:\n      lines:\n        alerts:\n          - matches: '^bob'\n"
    ));
    let (code, stdout, stderr) = wasmgate_test(&[suite.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
            .to_owned()
    };
    let passed = row("the exec alerts, the get does not");
    assert!(passed.starts_with("ok "), "{passed}");
    assert!(
        passed.contains("1 line to alerts  1 line to alerts"),
        "{passed}"
    );
    let nothing = row("expects nothing");
    assert!(nothing.starts_with("FAIL"), "{nothing}");
    assert!(nothing.contains("no lines"), "{nothing}");
    assert!(
        stdout.contains("output alerts: expected 0 line(s), got 1"),
        "{stdout}"
    );
    assert!(row("expects another line").starts_with("FAIL"), "{stdout}");
    assert!(
        stdout.contains("output alerts, line 1: expected a line matching /^bob/, got {"),
        "{stdout}"
    );
    assert!(stdout.contains(r#""alert":"pod-exec""#), "{stdout}");
}

#[test]
fn a_bad_audit_sink_case_exits_2() {
    // An admission answer in a sink case: refused with the line of the key.
    let (_dir, suite) = sink_suite_dir(&format!(
        "  - name: mixed\n{EXEC_EVENTS}    expect:\n      allowed: true\n      lines: {{}}\n"
    ));
    let (code, stdout, stderr) = wasmgate_test(&[suite.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("tests.yaml:13: case \"mixed\": allowed is an admission answer"),
        "{all}"
    );
    // A sink the policy file does not have: the case cannot run.
    let (_dir, suite) = sink_suite_dir(&format!(
        "  - name: unknown\n{}    expect:\n      lines: {{}}\n",
        EXEC_EVENTS.replace("sink: exec-alert", "sink: nosuch")
    ));
    let (code, stdout, stderr) = wasmgate_test(&[suite.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("has no audit sink named \"nosuch\""),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn a_bad_suite_exits_2_with_file_and_line() {
    let cases = format!(
        "  - name: misspelt\n{POD_WITHOUT_TEAM}    expect:\n      allowed: false\n      mesage: {{contains: team}}\n"
    );
    let (_dir, suite) = suite_dir(&cases, "{labels: [team]}");
    let (code, stdout, stderr) = wasmgate_test(&[suite.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    let at = format!(
        "ERROR {}:12: cases[0].expect: unknown field `mesage`",
        suite.display()
    );
    assert!(stdout.contains(&at), "{at} not in\n{stdout}");

    // A case that cannot be sent: an UPDATE without the old object.
    let cases = "  - name: half an update\n    request:\n      operation: UPDATE\n      object: {apiVersion: v1, kind: Pod}\n    expect: {allowed: true}\n";
    let (_dir, suite) = suite_dir(cases, "{labels: [team]}");
    let (code, stdout, _) = wasmgate_test(&[suite.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{}:8: case \"half an update\": an UPDATE request needs an oldObject",
            suite.display()
        )),
        "{stdout}"
    );

    // A policy the policy file does not have: the case cannot run, and a good suite given
    // with it still runs.
    let cases = format!(
        "  - name: nobody\n    policy: require-label\n{POD_WITHOUT_TEAM}    expect: {{allowed: true}}\n"
    );
    let (_dir, suite) = suite_dir(&cases, "{labels: [team]}");
    let good = REQUIRE_LABELS;
    let (code, stdout, _) = wasmgate_test(&[suite.to_str().unwrap(), good]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stdout.contains(&format!("ERROR {}:7: case \"nobody\": ", suite.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("has no policy named \"require-label\""),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok ") && l.contains("a pod without team is denied")),
        "{stdout}"
    );
}

#[test]
fn bad_settings_exit_2_with_the_plugins_message() {
    let cases = format!("  - name: any\n{POD_WITHOUT_TEAM}    expect: {{allowed: false}}\n");
    let (_dir, suite) = suite_dir(&cases, "{labels: team}");
    let (code, stdout, stderr) = wasmgate_test(&[suite.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    let policy = suite.with_file_name("policy.yaml");
    // The loader's own message: the policy file, the line of `settings`, the plugin's words.
    let at = format!(
        "ERROR {}: {}:7: policy \"require-labels\": ",
        suite.display(),
        policy.display()
    );
    assert!(stdout.contains(&at), "{at} not in\n{stdout}");
    assert!(
        stdout.contains(r#"labels: invalid type: string "team", expected a sequence"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 suite, 0 cases: 0 passed, 0 failed, 1 error"),
        "{stdout}"
    );
}

#[test]
fn junit_output_parses_and_counts_failures() {
    let cases = format!(
        "  - name: passes\n{POD_WITHOUT_TEAM}    expect: {{allowed: false}}\n  - name: fails <&>\n{POD_WITHOUT_TEAM}    expect: {{allowed: true}}\n"
    );
    let (dir, suite) = suite_dir(&cases, "{labels: [team]}");
    let junit = dir.path().join("junit.xml");
    let (code, stdout, _) = wasmgate_test(&[
        suite.to_str().unwrap(),
        ALWAYS_PULL_IMAGES,
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}");
    let report = parse_junit(&junit);
    assert_eq!(report.suites.len(), 2);
    let totals = &report.totals;
    assert_eq!(totals["failures"], "1");
    assert_eq!(totals["errors"], "0");
    let first_party_cases = report.suites[1].1;
    assert_eq!(totals["tests"], (2 + first_party_cases).to_string());
    let (attrs, cases) = &report.suites[0];
    assert_eq!(attrs["name"], "mine");
    assert_eq!(attrs["tests"], "2");
    assert_eq!(attrs["failures"], "1");
    assert_eq!(*cases, 2);
    assert_eq!(
        report.failures,
        vec![(
            "fails <&>".to_owned(),
            "expected allowed, got denied 403: require-labels: missing required labels: team"
                .to_owned()
        )]
    );

    // A suite that cannot load is an error, not a pass.
    std::fs::write(
        &suite,
        "apiVersion: wasmgate.io/v1alpha1\nkind: TestSuite\n",
    )
    .unwrap();
    let (code, _, _) =
        wasmgate_test(&[suite.to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    assert_eq!(code, 2);
    let report = parse_junit(&junit);
    assert_eq!(report.totals["errors"], "1");
    assert_eq!(report.totals["tests"], "1");
}

type Attrs = std::collections::HashMap<String, String>;

struct Junit {
    totals: Attrs,
    /// Each testsuite's attributes and how many testcase elements it holds.
    suites: Vec<(Attrs, usize)>,
    /// (testcase name, failure message) of each failure.
    failures: Vec<(String, String)>,
}

/// Reads a JUnit file with a real XML parser: a malformed document fails here.
fn parse_junit(path: &Path) -> Junit {
    let xml = std::fs::read_to_string(path).unwrap();
    let mut reader = Reader::from_str(&xml);
    let mut report = Junit {
        totals: Attrs::new(),
        suites: Vec::new(),
        failures: Vec::new(),
    };
    let mut case = String::new();
    let attrs = |e: &quick_xml::events::BytesStart<'_>| -> Attrs {
        e.attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().unwrap().into_owned(),
                )
            })
            .collect()
    };
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                b"testsuites" => report.totals = attrs(&e),
                b"testsuite" => report.suites.push((attrs(&e), 0)),
                b"testcase" => {
                    report.suites.last_mut().unwrap().1 += 1;
                    case = attrs(&e)["name"].clone();
                }
                b"failure" => report
                    .failures
                    .push((case.clone(), attrs(&e)["message"].clone())),
                _ => {}
            },
            _ => {}
        }
    }
    assert!(!report.totals.is_empty(), "no testsuites element:\n{xml}");
    report
}

#[test]
fn the_readme_example_is_a_suite_that_runs() {
    // The README shows require-labels' suite whole; the first test above runs it.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let suite = std::fs::read_to_string(repo().join(REQUIRE_LABELS)).unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{suite}```")),
        "README.md's example differs from {REQUIRE_LABELS}: copy the file into it"
    );
}
