//! `wasmgate new`: a plugin author's first step, then the build and `check` the command prints,
//! on a copy of the plugins folder (the repository's is never touched).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{compile_cache, repo};

/// Copies a folder tree (files and folders).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `wasmgate <args>` run in `dir`.
fn wasmgate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(args)
        .current_dir(dir)
        .env("WASMGATE_COMPILE_CACHE", compile_cache())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Where `scripts/build-plugins` builds guests, so that the SDK's dependencies are warm.
fn guest_target() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASMGATE_GUEST_TARGET") {
        return dir.into();
    }
    let cache = std::env::var_os("WASMGATE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/wasmgate")
        });
    cache.join("guest-target")
}

#[test]
fn new_rust_validator_builds_and_checks_as_its_template_says() {
    // A copy of plugins/rust, with the contract where the SDK looks for it (../../../wit).
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    copy_dir(&repo().join("plugins/rust"), &root.join("plugins/rust"));
    std::os::unix::fs::symlink(repo().join("wit"), root.join("wit")).unwrap();

    let out = wasmgate(root, &["new", "rust", "my-check", "--kind", "validator"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("scripts/build-plugins"), "{stdout}");
    assert!(
        stdout.contains("cargo test --manifest-path plugins/rust/Cargo.toml -p my-check"),
        "{stdout}"
    );
    let crate_dir = root.join("plugins/rust/my-check");
    assert!(crate_dir.join("src/tests.rs").is_file(), "its test suite");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"my-check\""), "{manifest}");
    let workspace = std::fs::read_to_string(root.join("plugins/rust/Cargo.toml")).unwrap();
    assert!(workspace.contains("    \"my-check\",\n]"), "{workspace}");
    let lock = std::fs::read_to_string(root.join("plugins/rust/Cargo.lock")).unwrap();
    assert!(
        lock.contains("name = \"my-check\""),
        "added to the lock file"
    );

    // Built as scripts/build-plugins builds it; `--locked` fails unless the lock has the crate.
    let build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--quiet", "--locked", "--offline", "--release"])
        .args([
            "--target",
            "wasm32-wasip2",
            "-p",
            "my-check",
            "--manifest-path",
        ])
        .arg(root.join("plugins/rust/Cargo.toml"))
        .env("CARGO_TARGET_DIR", guest_target())
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
    let component = guest_target().join("wasm32-wasip2/release/my_check.wasm");
    let policies = root.join("policies.yaml");
    std::fs::write(
        &policies,
        format!(
            "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: my-check\n    kind: validator\n    module: {}\n    rules:\n      - {{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}}\n    settings: {{labels: [team]}}\n",
            component.display()
        ),
    )
    .unwrap();
    let check = |fixture: &str| {
        let request = repo().join("tests/fixtures/reviews").join(fixture);
        let (config, request) = (policies.to_str().unwrap(), request.to_str().unwrap());
        wasmgate(
            root,
            &[
                "check",
                "--config",
                config,
                "--explain",
                "--request",
                request,
            ],
        )
    };
    let denied = check("pod-create-no-team.json");
    let answer: serde_json::Value = serde_json::from_slice(&denied.stdout).unwrap();
    assert_eq!(denied.status.code(), Some(1), "{answer}");
    assert_eq!(
        answer["response"]["status"]["message"],
        "my-check: missing required labels: team"
    );
    assert!(
        text(&denied.stderr).contains("my-check: matched, ran"),
        "{}",
        text(&denied.stderr)
    );
    let allowed = check("pod-create.json");
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed.stdout));

    // Its test suite came along, retargeted: it runs the new plugin and passes.
    assert!(
        stdout.contains("wasmgate test plugins/rust/my-check/tests.yaml"),
        "{stdout}"
    );
    std::os::unix::fs::symlink(repo().join("tests"), root.join("tests")).unwrap();
    std::fs::create_dir_all(root.join("plugins/dist")).unwrap();
    std::fs::copy(&component, root.join("plugins/dist/my-check.wasm")).unwrap();
    let suite = wasmgate(root, &["test", "plugins/rust/my-check/tests.yaml"]);
    let table = text(&suite.stdout);
    assert_eq!(
        suite.status.code(),
        Some(0),
        "{table}{}",
        text(&suite.stderr)
    );
    assert!(
        table.contains("denied 403: my-check: missing required labels: team"),
        "{table}"
    );
}

#[test]
fn new_python_plugin_gets_the_templates_suite_retargeted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    copy_dir(
        &repo().join("plugins/python/template"),
        &root.join("plugins/python/template"),
    );
    let out = wasmgate(root, &["new", "python", "my-py", "--kind", "validator"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("wasmgate test plugins/python/my-py/tests.yaml"),
        "{stdout}"
    );
    let dir = root.join("plugins/python/my-py");
    let policy = std::fs::read_to_string(dir.join("policy.yaml")).unwrap();
    assert!(
        policy.contains("module: ../../dist/python-my-py.wasm"),
        "{policy}"
    );
    let suite = std::fs::read_to_string(dir.join("tests.yaml")).unwrap();
    assert!(!suite.contains("template/tests.yaml"), "{suite}");
    assert!(suite.contains("name: python-my-py"), "{suite}");
}

#[test]
fn new_refuses_what_it_cannot_make_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let rust = root.join("plugins/rust");
    copy_dir(&repo().join("plugins/rust"), &rust);
    copy_dir(
        &repo().join("plugins/python/template"),
        &root.join("plugins/python/template"),
    );
    let workspace = std::fs::read_to_string(rust.join("Cargo.toml")).unwrap();
    let lock = std::fs::read_to_string(rust.join("Cargo.lock")).unwrap();
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let (rust_before, python_before) = (listing(&rust), listing(&root.join("plugins/python")));

    let refused = |args: &[&str], why: &str| {
        let out = wasmgate(root, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    };
    refused(
        &["new", "cobol", "x", "--kind", "validator"],
        "invalid value 'cobol'",
    );
    refused(
        &["new", "rust", "x", "--kind", "mutator"],
        "invalid value 'mutator'",
    );
    refused(
        &["new", "rust", "require-labels", "--kind", "validator"],
        "plugins/rust/require-labels already exists",
    );
    refused(
        &["new", "rust", "wasmgate-sdk", "--kind", "validator"],
        "a package named wasmgate-sdk",
    );
    refused(
        &["new", "rust", "My_Check", "--kind", "validator"],
        "\"My_Check\" is not a plugin name: the name must be a DNS label",
    );
    refused(
        &["new", "python", "../evil", "--kind", "validator"],
        "\"../evil\" is not a plugin name",
    );
    refused(
        &["new", "python", "my-sink", "--kind", "audit-sink"],
        "no python template for an audit-sink",
    );
    refused(
        &["new", "go", "my-check", "--kind", "validator"],
        "no go template for a validator",
    );

    assert_eq!(listing(&rust), rust_before);
    assert_eq!(listing(&root.join("plugins/python")), python_before);
    assert_eq!(
        std::fs::read_to_string(rust.join("Cargo.toml")).unwrap(),
        workspace
    );
    assert_eq!(
        std::fs::read_to_string(rust.join("Cargo.lock")).unwrap(),
        lock
    );

    // What a template exists for is made, in the language's folder, with its commands.
    let out = wasmgate(root, &["new", "python", "my-py", "--kind", "validator"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(root.join("plugins/python/my-py/app.py").is_file());
    assert!(
        stdout.contains("scripts/build-polyglot-plugins --no-templates python"),
        "{stdout}"
    );
    assert!(
        stdout.contains("plugins/dist/python-my-py.wasm"),
        "{stdout}"
    );
}
