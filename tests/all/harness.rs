//! Starting a gateway process and talking to it.

// The log buffer is filled by a plain reader thread and read in short critical sections that
// never span an await, which is what the workspace-wide Mutex ban is about.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A built component: `tests/plugins/dist/<name>.wasm` or `plugins/dist/<name>.wasm`.
pub fn module(name: &str) -> String {
    for dir in ["tests/plugins/dist", "plugins/dist"] {
        let path = repo().join(dir).join(format!("{name}.wasm"));
        if path.exists() {
            return path.display().to_string();
        }
    }
    panic!(
        "plugin {name} is not built: run scripts/build-plugins, and scripts/build-polyglot-plugins for another language's (the README's test command does both)"
    );
}

/// A review fixture from `tests/fixtures/reviews`.
pub fn review(name: &str) -> Value {
    let path = repo().join("tests/fixtures/reviews").join(name);
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Replaces `to` with `text` in one step, as editors and kubelet's ConfigMap projection do:
/// a temp file beside it, renamed over it. The watcher sees one change, never a half-file.
pub fn write_atomic(to: &Path, text: impl AsRef<[u8]>) {
    let mut name = to.file_name().unwrap().to_owned();
    name.push(".tmp");
    let tmp = to.with_file_name(name);
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// A policy file with these entries (YAML list items).
pub fn policy_file(entries: &str) -> String {
    format!("apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n{entries}")
}

/// One policy entry for pods (any operation) with extra YAML lines.
pub fn entry(name: &str, kind: &str, plugin: &str, extra: &str) -> String {
    let mut s = format!(
        "  - name: {name}\n    kind: {kind}\n    module: {}\n    rules:\n      - {{operations: ['*'], apiGroups: ['', apps, batch], apiVersions: ['*'], resources: ['*']}}\n",
        module(plugin)
    );
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A CA and what it signed, as PEM.
pub struct Pki {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new(names: &[&str]) -> Pki {
        let (ca, cert, key) = wasmgate::server::tls::generate(names).unwrap();
        Pki { ca, cert, key }
    }
}

/// Options for [`Gateway::start`].
#[derive(Default)]
pub struct Options {
    pub client_ca: Option<String>,
    pub extra_args: Vec<String>,
    /// Run from this directory with `--config` as given (relative, as users type it) instead of
    /// the absolute path of the `policies.yaml` the harness writes.
    pub config_in: Option<(PathBuf, String)>,
}

/// A running `wasmgate serve`, killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub pki: Pki,
    dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    pub fn start(policy: &str) -> Gateway {
        Self::start_with(policy, Options::default())
    }

    pub fn start_with(policy: &str, options: Options) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&["localhost", "127.0.0.1"]);
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let config = match &options.config_in {
            Some((_, config)) => config.clone(),
            None => write("policies.yaml", policy),
        };
        write("ca.crt", &pki.ca);
        let cert = write("tls.crt", &pki.cert);
        let key = write("tls.key", &pki.key);
        let mut args = vec![
            "serve".to_owned(),
            "--log-json".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            config,
            "--tls-cert".into(),
            cert,
            "--tls-key".into(),
            key,
        ];
        if let Some(ca) = &options.client_ca {
            args.push("--client-ca".into());
            args.push(write("client-ca.crt", ca));
        }
        // Each gateway its own audit spool (one process per spool directory), unless the test
        // keeps one across restarts.
        if !options.extra_args.iter().any(|a| a == "--spool-dir") {
            args.push("--spool-dir".into());
            args.push(dir.path().join("spool").display().to_string());
        }
        args.extend(options.extra_args);
        let mut command = Command::new(env!("CARGO_BIN_EXE_wasmgate"));
        if let Some((cwd, _)) = &options.config_in {
            command.current_dir(cwd);
        }
        let mut child = command
            .args(&args)
            .env("RUST_LOG", "info")
            .env("WASMGATE_COMPILE_CACHE", compile_cache())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(json) = serde_json::from_str::<Value>(&line)
                    && json["fields"]["message"] == "wasmgate is serving"
                {
                    let listen = json["fields"]["listen"].as_str().unwrap_or_default();
                    let _ = tx.send(listen.to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "gateway did not start:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Gateway {
            child,
            addr,
            pki,
            dir,
            logs,
        }
    }

    /// A file in the gateway's directory: `policies.yaml`, `tls.crt`, `tls.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// A client that trusts this gateway's CA, offering h2 and http/1.1.
    pub fn client(&self) -> reqwest::Client {
        client(&self.pki.ca, None, true)
    }

    /// POSTs a review and returns the HTTP status and the parsed body.
    pub async fn post(&self, path: &str, review: &Value) -> (u16, Value) {
        let response = self
            .client()
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(review).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())),
        )
    }

    /// POSTs a review that must be answered 200 and returns its `response`.
    pub async fn answer(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self.post(path, review).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["apiVersion"], review["apiVersion"],
            "answered in another version: {body}"
        );
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(
            body["response"]["uid"], review["request"]["uid"],
            "uid not echoed"
        );
        body["response"].clone()
    }

    /// `GET path` (e.g. `/metrics`), as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.client()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET /readyz`, parsed.
    pub async fn readyz(&self) -> Value {
        serde_json::from_str(&self.get_text("/readyz").await).unwrap()
    }

    /// Polls `/readyz` until `done` holds of it (within 10 s, else fails naming `what`), and
    /// returns that `/readyz`. Wait on a state, never on one step of it: a change may reach the
    /// watcher as more than one event.
    pub async fn wait_ready(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_ready_within(Duration::from_secs(10), what, done)
            .await
    }

    /// [`Gateway::wait_ready`] with another limit.
    pub async fn wait_ready_within(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = std::time::Instant::now();
        loop {
            let ready = self.readyz().await;
            if done(&ready) {
                return ready;
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?}: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/readyz` shows a rejected reload (at least `failures` counted) whose error
    /// contains `expected`, and returns that error. Within 30 s: a reload of plugins in slow
    /// languages on a loaded machine.
    pub async fn rejected(&self, failures: u64, expected: &str) -> String {
        let what = format!("a reload rejected with {expected:?}");
        let ready = self
            .wait_ready_within(Duration::from_secs(30), &what, |ready| {
                ready["reload"]["failed"].as_u64() >= Some(failures)
                    && ready["reload"]["lastError"]
                        .as_str()
                        .is_some_and(|e| e.contains(expected))
            })
            .await;
        ready["reload"]["lastError"].as_str().unwrap().to_owned()
    }

    /// Runs `wasmgate status` against this gateway: its exit code and stdout.
    pub fn status(&self) -> (Option<i32>, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
            .args(["status", "--url", &self.url(""), "--cacert"])
            .arg(self.path("ca.crt"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The compile cache shared by the test gateways, so that each one does not recompile.
pub fn compile_cache() -> PathBuf {
    std::env::var_os("WASMGATE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wasmgate-test-cache"))
        .join("compiled")
}

/// A client trusting `ca_pem`, optionally presenting `(cert_pem, key_pem)`.
pub fn client(ca_pem: &str, identity: Option<(&str, &str)>, h2: bool) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            builder
                .with_client_auth_cert(
                    chain,
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap()
        }
    };
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Applies a response's base64 JSONPatch to the review's object.
pub fn patched(review: &Value, response: &Value) -> Value {
    let mut object = review["request"]["object"].clone();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    json_patch::patch(&mut object, &patch)
        .expect("the patch applies to the object the API server sent");
    object
}

/// A policy's counter in the `/metrics` text, by metric and policy (0 when absent).
pub fn policy_counter(metrics: &str, name: &str, policy: &str) -> u64 {
    let prefix = format!("{name}{{policy=\"{policy}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}
