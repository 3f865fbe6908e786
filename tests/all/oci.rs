//! Plugins from OCI registries (issue 13): a real CNCF distribution registry on loopback with TLS
//! (a CA made here) and htpasswd basic auth, the real `oras` and `cosign` CLIs, all built by
//! `tests/oci/build-tools` (cached by version under $WASMGATE_CACHE/oci-tools) and started and
//! stopped by each test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Gateway, Options, Pki, module, policy_file, review, write_atomic};

/// The bin dir of registry, oras and cosign: built by the script if missing (never skipped).
fn tools() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(crate::harness::repo().join("tests/oci/build-tools"))
            .stderr(Stdio::inherit())
            .output()
            .expect("tests/oci/build-tools runs");
        assert!(out.status.success(), "tests/oci/build-tools failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A distribution registry on 127.0.0.1 with TLS and basic auth, stopped on drop.
struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    host: String,
    /// Plain HTTP instead of TLS.
    plain: bool,
}

const USER: &str = "wasmgate";
const PASSWORD: &str = "s3cret-for-tests";

impl Registry {
    fn start() -> Registry {
        Self::start_as(false)
    }

    /// Plain HTTP (basic auth still), for `--insecure-registry`.
    fn start_plain() -> Registry {
        Self::start_as(true)
    }

    fn start_as(plain: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&["localhost", "127.0.0.1"]);
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ca.crt"), &pki.ca).unwrap();
        std::fs::write(p("tls.crt"), &pki.cert).unwrap();
        std::fs::write(p("tls.key"), &pki.key).unwrap();
        let hash = bcrypt::hash(PASSWORD, 4).unwrap();
        std::fs::write(p("htpasswd"), format!("{USER}:{hash}\n")).unwrap();
        let mut registry = Registry {
            child: None,
            host: String::new(),
            dir,
            plain,
        };
        let auth = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{USER}:{PASSWORD}"),
        );
        registry.run(free_port());
        std::fs::create_dir_all(registry.path("docker")).unwrap();
        std::fs::write(
            registry.path("docker/config.json"),
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host),
        )
        .unwrap();
        registry
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&mut self, port: u16) {
        self.host = format!("127.0.0.1:{port}");
        let p = |n: &str| self.path(n).display().to_string();
        let tls = if self.plain {
            String::new()
        } else {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                p("tls.crt"),
                p("tls.key")
            )
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n{tls}auth:\n  htpasswd:\n    realm: wasmgate-tests\n    path: {}\n",
            p("data"),
            self.host,
            p("htpasswd")
        );
        std::fs::write(self.path("config.yml"), config).unwrap();
        let mut child = Command::new(tools().join("registry"))
            .args(["serve", &p("config.yml")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(&self.host).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "registry exited ({status}): {}",
                    std::fs::read_to_string(self.path("registry.log")).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "registry did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The flags that give wasmgate access: credentials and CA (or plain HTTP).
    fn access(&self) -> Vec<String> {
        let mut args = vec![
            "--registry-auth".into(),
            self.path("docker/config.json").display().to_string(),
        ];
        if self.plain {
            args.extend(["--insecure-registry".into(), self.host.clone()]);
        } else {
            args.extend([
                "--registry-ca".into(),
                self.path("ca.crt").display().to_string(),
            ]);
        }
        args
    }

    fn oci(&self, repo: &str) -> String {
        format!("oci://{}/{repo}", self.host)
    }

    /// `wasmgate push FILE oci://HOST/REPO` (a tag in `repo`): the digest printed.
    fn push(&self, file: &str, repo: &str) -> String {
        let out = wasmgate(&[&["push", file, &self.oci(repo)][..], &self.access_refs()].concat());
        assert!(
            out.status.success(),
            "push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let digest = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{digest}"
        );
        digest
    }

    fn access_refs(&self) -> Vec<&'static str> {
        // Leaked once per call: a handful of short strings per test.
        self.access()
            .into_iter()
            .map(|s| &*Box::leak(s.into_boxed_str()))
            .collect()
    }

    /// Runs a Go tool (oras, cosign) with the registry's CA and credentials.
    fn tool(&self, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let out = Command::new(tools().join(name))
            .args(args)
            .env("SSL_CERT_FILE", self.path("ca.crt"))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("HOME", self.dir.path())
            .envs(envs.iter().copied())
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The registry's stored copy of blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.path("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wasmgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(args)
        .output()
        .unwrap()
}

/// A policy named `name` running `module` (a path or oci:// reference) with `extra` lines.
fn oci_policy(name: &str, module: &str, extra: &str) -> String {
    let mut s = format!(
        "  - name: {name}\n    kind: validator\n    module: {module}\n    settings: {{labels: [team]}}\n    rules:\n      - {{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}}\n"
    );
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    policy_file(&s)
}

fn start(registry: &Registry, policy: &str, cache: &Path, more: &[&str]) -> Gateway {
    let mut extra_args = registry.access();
    extra_args.extend(["--module-cache".into(), cache.display().to_string()]);
    extra_args.extend(more.iter().map(|s| s.to_string()));
    Gateway::start_with(
        policy,
        Options {
            extra_args,
            ..Options::default()
        },
    )
}

/// `wasmgate serve` that must fail at start: its stderr.
fn start_fails(policy: &str, args: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yaml");
    std::fs::write(&file, policy).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--state-dir")
        .arg(dir.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(status.code(), Some(2), "{stderr}");
            return stderr;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "wasmgate serve did not fail within 60 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn denies_without_team(answer: &Value) -> bool {
    answer["allowed"] == false
        && answer["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing required labels: team"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_plugin_serves_by_digest_and_again_from_the_cache_with_the_registry_down() {
    let mut registry = Registry::start();
    let digest = registry.push(&module("require-labels"), "policies/require-labels:v1");
    let reference = format!("{}@{digest}", registry.oci("policies/require-labels"));
    let policy = oci_policy("labels", &reference, "");
    let cache = tempfile::tempdir().unwrap();
    let pod = review("pod-create-no-team.json");
    {
        let gw = start(&registry, &policy, cache.path(), &[]);
        assert!(denies_without_team(&gw.answer("/validate", &pod).await));
        let ready = gw.readyz().await;
        assert_eq!(
            ready["plugins"][0]["oci"]["digest"],
            digest.as_str(),
            "{ready}"
        );
        assert_eq!(ready["plugins"][0]["oci"]["reference"], reference.as_str());
    }
    // The registry is gone: the cache serves, verified by digest.
    registry.stop();
    {
        let gw = start(&registry, &policy, cache.path(), &[]);
        assert!(denies_without_team(&gw.answer("/validate", &pod).await));
    }
    // A corrupted cache entry is not served: pulled again, and with the registry down that fails.
    let layer = std::fs::read_dir(cache.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::write(&layer, b"\0asm corrupted").unwrap();
    let with_cache = |dir: &Path| {
        let mut args = registry.access();
        args.extend(["--module-cache".into(), dir.display().to_string()]);
        args
    };
    let err = start_fails(&policy, &with_cache(cache.path()));
    assert!(err.contains("policy \"labels\""), "{err}");
    assert!(err.contains(&reference), "{err}");
    assert!(err.contains("cannot reach the registry"), "{err}");
    // Nothing cached and no registry: start-up fails naming the reason.
    let empty = tempfile::tempdir().unwrap();
    let err = start_fails(&policy, &with_cache(empty.path()));
    assert!(err.contains("cannot reach the registry"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_access_needs_the_credentials_and_the_ca() {
    let registry = Registry::start();
    let digest = registry.push(&module("require-labels"), "p/labels:v1");
    let reference = format!("{}@{digest}", registry.oci("p/labels"));
    let policy = oci_policy("labels", &reference, "");
    let cache = tempfile::tempdir().unwrap();
    let cache_args = [
        "--module-cache".to_owned(),
        cache.path().display().to_string(),
    ];
    // No CA: the registry's certificate is not trusted.
    let mut args = vec![
        "--registry-auth".to_owned(),
        registry.path("docker/config.json").display().to_string(),
    ];
    args.extend(cache_args.clone());
    let err = start_fails(&policy, &args);
    assert!(
        err.contains(&reference) && err.contains("certificate"),
        "{err}"
    );
    // No credentials: refused by the registry.
    let mut args = vec![
        "--registry-ca".to_owned(),
        registry.path("ca.crt").display().to_string(),
    ];
    args.extend(cache_args.clone());
    let err = start_fails(&policy, &args);
    assert!(
        err.contains(&reference) && err.contains("credentials"),
        "{err}"
    );
    // Plain HTTP to a TLS registry named insecure: no answer it can use, no panic.
    let mut args = registry.access();
    args.extend(cache_args.clone());
    args.extend(["--insecure-registry".to_owned(), registry.host.clone()]);
    let err = start_fails(&policy, &args);
    assert!(err.contains(&reference), "{err}");
}

/// Plain HTTP only for a registry named with --insecure-registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_for_a_registry_named_insecure() {
    let registry = Registry::start_plain();
    let digest = registry.push(&module("require-labels"), "p/labels:v1");
    let reference = format!("{}@{digest}", registry.oci("p/labels"));
    let policy = oci_policy("labels", &reference, "");
    let cache = tempfile::tempdir().unwrap();
    let gw = start(&registry, &policy, cache.path(), &[]);
    assert!(denies_without_team(
        &gw.answer("/validate", &review("pod-create-no-team.json"))
            .await
    ));
    drop(gw);
    // Not named insecure: HTTPS only, so the plain registry cannot be used.
    let empty = tempfile::tempdir().unwrap();
    let args = vec![
        "--registry-auth".to_owned(),
        registry.path("docker/config.json").display().to_string(),
        "--module-cache".into(),
        empty.path().display().to_string(),
    ];
    let err = start_fails(&policy, &args);
    assert!(
        err.contains(&reference) && err.contains("policy \"labels\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_are_bounded_in_size_and_time() {
    let registry = Registry::start();
    let file = module("require-labels");
    let size = std::fs::metadata(&file).unwrap().len();
    let digest = registry.push(&file, "p/labels:v1");
    let policy = oci_policy(
        "labels",
        &format!("{}@{digest}", registry.oci("p/labels")),
        "",
    );
    let cache = tempfile::tempdir().unwrap();
    let mut args = registry.access();
    args.extend([
        "--module-cache".into(),
        cache.path().display().to_string(),
        "--pull-max-bytes".into(),
        (size - 1).to_string(),
    ]);
    let err = start_fails(&policy, &args);
    assert!(
        err.contains(&format!(
            "its Wasm layer has {size} bytes, more than the {}",
            size - 1
        )),
        "{err}"
    );
    // A "registry" that accepts connections and never answers: the pull gives up in time.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = silent.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in silent.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let policy = oci_policy("labels", &format!("oci://{host}/p/labels@{digest}"), "");
    let mut args = registry.access();
    args.extend([
        "--module-cache".into(),
        cache.path().display().to_string(),
        "--pull-timeout".into(),
        "1s".into(),
    ]);
    let started = Instant::now();
    let err = start_fails(&policy, &args);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("did not finish within 1s"), "{err}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_resolve_at_load_and_a_moved_tag_is_refused_when_pinned() {
    let registry = Registry::start();
    let v1 = registry.push(&module("require-labels"), "p/labels:stable");
    let tagged = format!("{}:stable", registry.oci("p/labels"));
    let cache = tempfile::tempdir().unwrap();
    {
        let gw = start(
            &registry,
            &oci_policy("labels", &tagged, ""),
            cache.path(),
            &[],
        );
        let ready = gw.readyz().await;
        assert_eq!(ready["plugins"][0]["oci"]["digest"], v1.as_str(), "{ready}");
        assert!(
            gw.logs()
                .iter()
                .any(|l| l.contains("tag resolved") && l.contains(&v1)),
            "the resolution is logged"
        );
    }
    // The tag moves to other content: a reference pinning the old digest is refused.
    let v2 = registry.push(&module("chatty"), "p/labels:stable");
    assert_ne!(v1, v2);
    let pinned = format!("{tagged}@{v1}");
    let mut args = registry.access();
    args.extend(["--module-cache".into(), cache.path().display().to_string()]);
    let err = start_fails(&oci_policy("labels", &pinned, ""), &args);
    assert!(err.contains("policy \"labels\""), "{err}");
    assert!(err.contains(&pinned), "{err}");
    assert!(
        err.contains(&format!(
            "tag \"stable\" now resolves to {v2}, but the reference pins {v1}"
        )),
        "{err}"
    );
    // A `sha256:` pin on the module's bytes must match what the digest names.
    let wrong = "ab".repeat(32);
    let err = start_fails(
        &oci_policy(
            "labels",
            &format!("{tagged}@{v2}"),
            &format!("sha256: {wrong}"),
        ),
        &args,
    );
    assert!(
        err.contains(&format!("but the policy pins {wrong}")),
        "{err}"
    );
}

/// Pulls through `oras` what wasmgate pushed, and serves what `oras` pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_interoperates_both_ways() {
    let registry = Registry::start();
    let file = module("require-labels");
    let digest = registry.push(&file, "interop/by-wasmgate:v1");
    let target = format!("{}/interop/by-wasmgate@{digest}", registry.host);
    registry.tool("oras", &["pull", &target, "-o", "pulled"], &[]);
    let pulled = std::fs::read_dir(registry.path("pulled"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&file).unwrap()
    );

    // oras pushes the CNCF layout: the Wasm config media type and one application/wasm layer.
    std::fs::copy(&file, registry.path("policy.wasm")).unwrap();
    std::fs::write(registry.path("config.json"), "{}").unwrap();
    let out = registry.tool(
        "oras",
        &[
            "push",
            &format!("{}/interop/by-oras:v1", registry.host),
            "--config",
            "config.json:application/vnd.wasm.config.v0+json",
            "policy.wasm:application/wasm",
            "--format",
            "go-template={{.digest}}",
        ],
        &[],
    );
    let oras_digest = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(oras_digest.starts_with("sha256:"), "{oras_digest}");
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("{}@{oras_digest}", registry.oci("interop/by-oras"));
    let gw = start(
        &registry,
        &oci_policy("labels", &reference, ""),
        cache.path(),
        &[],
    );
    assert!(denies_without_team(
        &gw.answer("/validate", &review("pod-create-no-team.json"))
            .await
    ));
    // And `wasmgate pull` reads it back, printing the digest.
    let out_file = cache.path().join("out.wasm");
    let out = wasmgate(
        &[
            &["pull", &reference, "-o", out_file.to_str().unwrap()][..],
            &registry.access_refs(),
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), oras_digest);
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        std::fs::read(&file).unwrap()
    );
}

/// cosign generate-key-pair and sign --key against the loopback registry; wasmgate verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_signatures_are_verified_and_every_failure_is_named() {
    let registry = Registry::start();
    let password = [("COSIGN_PASSWORD", "test-password")];
    for who in ["trusted", "stranger"] {
        std::fs::create_dir_all(registry.path(who)).unwrap();
        registry.tool(
            "cosign",
            &[
                "generate-key-pair",
                "--output-key-prefix",
                &format!("{who}/cosign"),
            ],
            &password,
        );
    }
    let sign = |repo: &str, digest: &str, who: &str| {
        registry.tool(
            "cosign",
            &[
                "sign",
                "--yes",
                "--tlog-upload=false",
                "--key",
                &format!("{who}/cosign.key"),
                &format!("{}/{repo}@{digest}", registry.host),
            ],
            &password,
        );
    };
    let signed = registry.push(&module("require-labels"), "sig/signed:v1");
    sign("sig/signed", &signed, "trusted");
    let unsigned = registry.push(&module("require-labels"), "sig/unsigned:v1");
    let by_stranger = registry.push(&module("require-labels"), "sig/stranger:v1");
    sign("sig/stranger", &by_stranger, "stranger");
    let tampered = registry.push(&module("chatty"), "sig/tampered:v1");
    sign("sig/tampered", &tampered, "trusted");

    let keys = format!(
        "verification:\n  cosignKeys: [{}]",
        registry.path("trusted/cosign.pub").display()
    );
    let cache = tempfile::tempdir().unwrap();
    let with_keys = |reference: &str| oci_policy("signed", reference, &keys);
    let signed_ref = format!("{}@{signed}", registry.oci("sig/signed"));
    {
        let gw = start(&registry, &with_keys(&signed_ref), cache.path(), &[]);
        assert!(denies_without_team(
            &gw.answer("/validate", &review("pod-create-no-team.json"))
                .await
        ));
        let ready = gw.readyz().await;
        assert!(
            ready["plugins"][0]["oci"]["signedBy"]
                .as_str()
                .unwrap()
                .ends_with("trusted/cosign.pub"),
            "{ready}"
        );
    }
    let mut args = registry.access();
    args.extend(["--module-cache".into(), cache.path().display().to_string()]);
    let refusals = [
        (
            format!("{}@{unsigned}", registry.oci("sig/unsigned")),
            "it is not signed: there is no cosign signature (tag sha256-",
        ),
        (
            format!("{}@{by_stranger}", registry.oci("sig/stranger")),
            "none of its 1 cosign signature(s) is by a trusted key",
        ),
        (
            format!("{}@sha256:{}", registry.oci("sig/signed"), "0".repeat(64)),
            "not found in the registry",
        ),
    ];
    for (reference, why) in &refusals {
        let err = start_fails(&with_keys(reference), &args);
        assert!(err.contains("policy \"signed\""), "{err}");
        assert!(err.contains(reference.as_str()), "{err}");
        assert!(err.contains(why), "{reference}: {err}");
    }
    // A signed module whose layer was altered in the registry's storage.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(registry.blob_file(&tampered)).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let mut bytes = std::fs::read(registry.blob_file(layer)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(registry.blob_file(layer), bytes).unwrap();
    let reference = format!("{}@{tampered}", registry.oci("sig/tampered"));
    let err = start_fails(&with_keys(&reference), &args);
    assert!(err.contains(&reference), "{err}");
    assert!(err.contains(&format!("blob {layer}")), "{err}");
    assert!(
        err.contains("tampered or corrupt") || err.contains("Invalid digest"),
        "{err}"
    );
    // A file-wide `verification:` holds the same, from the cache with the registry gone (the
    // signature is cached with the module and checked again at every load).
    let file_wide = policy_file(&format!(
        "  - name: signed\n    kind: validator\n    module: {signed_ref}\n    settings: {{labels: [team]}}\n    rules:\n      - {{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}}\n"
    )) + &format!("{keys}\n");
    let mut registry = registry;
    registry.stop();
    let gw = start(&registry, &file_wide, cache.path(), &[]);
    assert!(gw.readyz().await["plugins"][0]["oci"]["signedBy"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_to_a_new_digest_fails_no_request_and_a_missing_one_keeps_serving() {
    let registry = Registry::start();
    let v1 = registry.push(&module("require-labels"), "reload/p:v1");
    let v2 = registry.push(&module("chatty"), "reload/p:v2");
    let at = |d: &str| format!("{}@{d}", registry.oci("reload/p"));
    let cache = tempfile::tempdir().unwrap();
    let gw = std::sync::Arc::new(start(
        &registry,
        &oci_policy("p", &at(&v1), ""),
        cache.path(),
        &[],
    ));
    let body = serde_json::to_vec(&review("pod-create-no-team.json")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (gw, stop, body) = (gw.clone(), stop.clone(), body.clone());
            tokio::spawn(async move {
                let client = gw.client();
                let (mut v1s, mut v2s, mut bad) = (0, 0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = client
                        .post(gw.url("/validate"))
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            if denies_without_team(&v["response"]) {
                                v1s += 1;
                            } else if v["response"]["allowed"] == true
                                && v["response"]["warnings"][0] == "chatty was here"
                            {
                                v2s += 1;
                            } else {
                                bad.push(v.to_string());
                            }
                        }
                        Ok(r) => bad.push(format!("status {}", r.status())),
                        Err(e) => bad.push(e.to_string()),
                    }
                }
                (v1s, v2s, bad)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_atomic(&gw.path("policies.yaml"), oci_policy("p", &at(&v2), ""));
    gw.wait_ready("the new digest serves", |r| {
        r["plugins"][0]["oci"]["digest"] == v2.as_str()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut v1s, mut v2s) = (0, 0);
    for c in clients {
        let (a, b, bad) = c.await.unwrap();
        assert!(
            bad.is_empty(),
            "failed or mixed answers during the swap: {bad:?}"
        );
        v1s += a;
        v2s += b;
    }
    assert!(v1s > 0 && v2s > 0, "{v1s} v1 and {v2s} v2 answers");

    // A digest that does not exist: rejected, the last good snapshot keeps serving.
    let missing = at(&format!("sha256:{}", "1".repeat(64)));
    write_atomic(&gw.path("policies.yaml"), oci_policy("p", &missing, ""));
    let error = gw.rejected(1, "not found in the registry").await;
    assert!(
        error.contains(&missing) && error.contains("policy \"p\""),
        "{error}"
    );
    let answer = gw
        .answer("/validate", &review("pod-create-no-team.json"))
        .await;
    assert_eq!(answer["warnings"][0], "chatty was here", "{answer}");
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

/// `wasmgate manifests` with `oci://` modules: no plugin bytes in the ConfigMap, the reference
/// pinned to its digest, the cosign key and registry CA carried, the credentials Secret mounted;
/// and the rendered policy file, with the mounted files, serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_pull_oci_modules_instead_of_embedding_them() {
    let registry = Registry::start();
    let password = [("COSIGN_PASSWORD", "pw")];
    registry.tool("cosign", &["generate-key-pair"], &password);
    let digest = registry.push(&module("require-labels"), "m/labels:v1");
    registry.tool(
        "cosign",
        &[
            "sign",
            "--yes",
            "--tlog-upload=false",
            "--key",
            "cosign.key",
            &format!("{}/m/labels@{digest}", registry.host),
        ],
        &password,
    );
    let tagged = format!("{}:v1", registry.oci("m/labels"));
    let policy = registry.path("policies.yaml");
    std::fs::write(
        &policy,
        oci_policy(
            "labels",
            &tagged,
            "verification:\n  cosignKeys: [cosign.pub]",
        ),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut args = vec![
        "manifests",
        "--config",
        policy.to_str().unwrap(),
        "--kind",
        "config,deploy",
        "--generate-tls",
        "--registry-secret",
        "regcred",
        "--module-cache",
        cache.path().to_str().unwrap(),
    ];
    args.extend(registry.access_refs());
    let out = wasmgate(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(&String::from_utf8(out.stdout).unwrap());
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "wasmgate-policies")
        .unwrap();
    assert!(
        cm["binaryData"].as_object().is_none_or(|b| b.is_empty()),
        "no plugin bytes: {}",
        cm["binaryData"]
    );
    let rendered = cm["data"]["policies.yaml"].as_str().unwrap();
    assert!(
        rendered.contains(&format!("module: {tagged}@{digest}")),
        "{rendered}"
    );
    assert!(rendered.contains("cosign-1.pub"), "{rendered}");
    assert_eq!(
        cm["data"]["cosign-1.pub"].as_str().unwrap(),
        std::fs::read_to_string(registry.path("cosign.pub")).unwrap()
    );
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    let container_args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "--registry-auth=/etc/wasmgate/registry/.dockerconfigjson",
        "--registry-ca=/etc/wasmgate/policies/registry-ca.crt",
        "--module-cache=/var/cache/wasmgate/modules",
    ] {
        assert!(container_args.contains(&want), "{want}: {container_args:?}");
    }
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "regcred"),
        "{}",
        pod["volumes"]
    );
    // The Pod's view: the ConfigMap's keys as files, the Secret's .dockerconfigjson.
    let mounted = tempfile::tempdir().unwrap();
    for (key, value) in cm["data"].as_object().unwrap() {
        std::fs::write(mounted.path().join(key), value.as_str().unwrap()).unwrap();
    }
    std::fs::copy(
        registry.path("docker/config.json"),
        mounted.path().join(".dockerconfigjson"),
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(
        "",
        Options {
            extra_args: vec![
                "--registry-auth".into(),
                mounted
                    .path()
                    .join(".dockerconfigjson")
                    .display()
                    .to_string(),
                "--registry-ca".into(),
                mounted.path().join("registry-ca.crt").display().to_string(),
                "--module-cache".into(),
                fresh.path().display().to_string(),
            ],
            config_in: Some((mounted.path().to_owned(), "policies.yaml".into())),
            ..Options::default()
        },
    );
    assert!(denies_without_team(
        &gw.answer("/validate", &review("pod-create-no-team.json"))
            .await
    ));
    let ready = gw.readyz().await;
    assert_eq!(
        ready["plugins"][0]["oci"]["digest"],
        digest.as_str(),
        "{ready}"
    );
    assert!(
        ready["plugins"][0]["oci"]["signedBy"]
            .as_str()
            .unwrap()
            .ends_with("cosign-1.pub")
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The 18 MB Python component (scripts/build-polyglot-plugins) deployed by digest; prints the
/// cold pull and the warm start figures BENCHMARKS.md quotes (printed, never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_plugin_is_deployed_by_digest() {
    let mut registry = Registry::start();
    let file = module("python-require-labels");
    let size = std::fs::metadata(&file).unwrap().len();
    let digest = registry.push(&file, "polyglot/python-require-labels:v1");
    let reference = format!(
        "{}@{digest}",
        registry.oci("polyglot/python-require-labels")
    );

    // Cold pulls: an empty cache each time, through TLS and basic auth.
    let mut cold = Vec::new();
    for _ in 0..3 {
        let empty = tempfile::tempdir().unwrap();
        let out = empty.path().join("p.wasm");
        let started = Instant::now();
        let pulled = wasmgate(
            &[
                &[
                    "pull",
                    &reference,
                    "-o",
                    out.to_str().unwrap(),
                    "--module-cache",
                    empty.path().to_str().unwrap(),
                ][..],
                &registry.access_refs(),
            ]
            .concat(),
        );
        cold.push(started.elapsed());
        assert!(
            pulled.status.success(),
            "{}",
            String::from_utf8_lossy(&pulled.stderr)
        );
        assert_eq!(std::fs::metadata(&out).unwrap().len(), size);
    }
    let pod = review("pod-create-no-team.json");
    let cache = tempfile::tempdir().unwrap();
    {
        let gw = start(
            &registry,
            &oci_policy("python", &reference, ""),
            cache.path(),
            &[],
        );
        assert!(denies_without_team(&gw.answer("/validate", &pod).await));
        assert_eq!(
            gw.readyz().await["plugins"][0]["oci"]["digest"],
            digest.as_str()
        );
    }
    // Start to first answer with the module cached (registry stopped) vs the same file on disk,
    // compiled plugins cached in both.
    registry.stop();
    let mut warm_oci = Vec::new();
    let mut from_file = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let gw = start(
            &registry,
            &oci_policy("python", &reference, ""),
            cache.path(),
            &[],
        );
        assert!(denies_without_team(&gw.answer("/validate", &pod).await));
        warm_oci.push(started.elapsed());
        drop(gw);
        let started = Instant::now();
        let gw = start(
            &registry,
            &oci_policy("python", &file, ""),
            cache.path(),
            &[],
        );
        assert!(denies_without_team(&gw.answer("/validate", &pod).await));
        from_file.push(started.elapsed());
    }
    // The same with the Rust require-labels (the start-up target's plugin size).
    let rust_file = module("require-labels");
    let mut registry = Registry::start();
    let rust_digest = registry.push(&rust_file, "rust/require-labels:v1");
    let rust_ref = format!("{}@{rust_digest}", registry.oci("rust/require-labels"));
    drop(start(
        &registry,
        &oci_policy("rust", &rust_ref, ""),
        cache.path(),
        &[],
    ));
    registry.stop();
    let (mut rust_oci, mut rust_file_times) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for (module, times) in [
            (&rust_ref, &mut rust_oci),
            (&rust_file, &mut rust_file_times),
        ] {
            let started = Instant::now();
            let gw = start(
                &registry,
                &oci_policy("rust", module, ""),
                cache.path(),
                &[],
            );
            assert!(denies_without_team(&gw.answer("/validate", &pod).await));
            times.push(started.elapsed());
        }
    }
    println!(
        "OCI figures (Rust require-labels): start to first answer, cached oci:// median {:?} of {rust_oci:?}, file median {:?} of {rust_file_times:?}",
        median(rust_oci.clone()),
        median(rust_file_times.clone())
    );
    println!(
        "OCI figures: {size}-byte component; cold pull (wasmgate pull, empty cache, TLS + basic auth, loopback) median {:?} of {cold:?}; start to first answer: cached oci:// module median {:?} of {warm_oci:?}, same module as a file median {:?} of {from_file:?}",
        median(cold.clone()),
        median(warm_oci.clone()),
        median(from_file.clone())
    );
}
