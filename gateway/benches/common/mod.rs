//! What the benchmarks share: starting the real `wasmgate` binary, a lean HTTPS/1.1 keep-alive
//! client, a closed-loop load generator, and process measurements from /proc.

#![allow(dead_code)] // Each bench uses a different part.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A running gateway, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub ca: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wasmgate serve` on `policy` (YAML text) with a fresh certificate and returns it once
/// it answers, with the time that took (start to first answer).
pub fn start(policy: &str) -> (Server, Duration) {
    start_with(policy, &[])
}

/// [`start`] with more `serve` arguments. The audit spool is in the server's own directory
/// unless `args` names one.
pub fn start_with(policy: &str, args: &[&str]) -> (Server, Duration) {
    launch(this_build(), policy, args, None)
}

/// [`start`] with another build of `wasmgate` (an A/B of a change, both served in one run).
pub fn start_build(binary: &Path, policy: &str) -> (Server, Duration) {
    launch(binary, policy, &[], None)
}

/// The `wasmgate` binary measured: `WASMGATE_BIN` if set (the shipped build, profile-guided:
/// `WASMGATE_BIN=$(scripts/build-dist)`), else the binary of this build.
fn this_build() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var_os("WASMGATE_BIN")
            .map_or_else(|| env!("CARGO_BIN_EXE_wasmgate").into(), Into::into)
    })
}

/// [`start`] the way the README and `scripts/run` do it: a relative `--config
/// policies/policies.yaml` (the server's directory is its working directory), with `modules`
/// (name, source) copied into `modules/` beside `policies/`, so that the policy names them
/// `../modules/NAME`.
pub fn start_relative(policy: &str, modules: &[(&str, &Path)]) -> (Server, Duration) {
    launch(this_build(), policy, &[], Some(modules))
}

fn launch(
    binary: &Path,
    policy: &str,
    args: &[&str],
    relative: Option<&[(&str, &Path)]>,
) -> (Server, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = wasmgate::server::tls::generate(&["127.0.0.1"]).unwrap();
    for (name, text) in [("tls.crt", &cert), ("tls.key", &key)] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let config = match relative {
        None => {
            std::fs::write(dir.path().join("policies.yaml"), policy).unwrap();
            dir.path().join("policies.yaml")
        }
        Some(modules) => {
            std::fs::create_dir_all(dir.path().join("policies")).unwrap();
            std::fs::create_dir_all(dir.path().join("modules")).unwrap();
            for (name, source) in modules {
                std::fs::copy(source, dir.path().join("modules").join(name)).unwrap();
            }
            std::fs::write(dir.path().join("policies/policies.yaml"), policy).unwrap();
            PathBuf::from("policies/policies.yaml")
        }
    };
    let port = free_port();
    let started = Instant::now();
    let child = Command::new(binary)
        .current_dir(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .args(if args.contains(&"--spool-dir") {
            vec![]
        } else {
            vec![
                "--spool-dir".into(),
                dir.path().join("spool").into_os_string(),
            ]
        })
        .args(args)
        // rustls warns on every handshake whose SNI is an IP address (wrk sends one): noise in
        // the benches' output, not a finding.
        .env("RUST_LOG", "warn,rustls::msgs::handshake=error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        port,
        ca,
        dir,
    };
    // Start to first answer: poll /healthz over TLS until it answers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ready = rt.block_on(async {
        loop {
            if let Ok(mut conn) = Conn::connect(&server).await
                && conn.request("GET", "/healthz", Bytes::new()).await.is_ok()
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "gateway did not start"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    (server, ready)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One keep-alive HTTPS/1.1 connection.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TLS connection to `server` (its CA trusted, no client certificate) offering `alpn`.
async fn tls_connect(
    server: &Server,
    alpn: &[u8],
) -> Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, BoxError>
{
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server.ca.as_bytes()) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await?;
    Ok(hyper_util::rt::TokioIo::new(tls))
}

/// A request with a JSON body, as the gateway is sent one.
fn request(method: &str, path: &str, body: Bytes) -> Result<http::Request<Full<Bytes>>, BoxError> {
    Ok(http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(body))?)
}

/// The body of a 200 answer.
async fn answer(response: http::Response<hyper::body::Incoming>) -> Result<Bytes, BoxError> {
    if response.status() != 200 {
        return Err(format!("status {}", response.status()).into());
    }
    Ok(response.into_body().collect().await?.to_bytes())
}

impl Conn {
    pub async fn connect(server: &Server) -> Result<Conn, BoxError> {
        let tls = tls_connect(server, b"http/1.1").await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(tls).await?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, BoxError> {
        let request = request(method, path, body)?;
        self.sender.ready().await?;
        answer(self.sender.send_request(request).await?).await
    }
}

/// One HTTPS connection over HTTP/2, as the API server's webhook client keeps one per server
/// and sends a create's concurrent reviews (its validating webhooks) on it as streams. Clones
/// share the connection.
#[derive(Clone)]
pub struct H2Conn {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2Conn {
    pub async fn connect(server: &Server) -> Result<H2Conn, BoxError> {
        let tls = tls_connect(server, b"h2").await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), tls)
                .await?;
        tokio::spawn(conn);
        Ok(H2Conn { sender })
    }

    /// POSTs `body` to `path` and returns the answer's body.
    pub async fn post(&self, path: &str, body: Bytes) -> Result<Bytes, BoxError> {
        let mut sender = self.sender.clone();
        sender.ready().await?;
        answer(sender.send_request(request("POST", path, body)?).await?).await
    }
}

/// A small deterministic generator (xorshift): every run makes the same events, shuffles and
/// resamples.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// CPU seconds (user + system) the process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub struct Run {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub cpu_ms_per_request: f64,
    pub errors: u64,
}

pub fn load(
    server: &Server,
    path: &str,
    body: &Bytes,
    concurrency: usize,
    seconds: f64,
    check: &'static str,
) -> Run {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..concurrency {
            conns.push(Conn::connect(server).await.expect("connect"));
        }
        // Warm-up: a few requests per connection.
        for conn in &mut conns {
            for _ in 0..5 {
                conn.request("POST", path, body.clone())
                    .await
                    .expect("warm-up request");
            }
        }
        let cpu_before = cpu_seconds(server.child.id());
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(seconds);
        let mut tasks = Vec::new();
        for mut conn in conns {
            let (path, body) = (path.to_owned(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                while Instant::now() < end {
                    let t = Instant::now();
                    match conn.request("POST", &path, body.clone()).await {
                        Ok(answer) if memchr(check.as_bytes(), &answer) => {
                            latencies.push(t.elapsed())
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            }));
        }
        let mut latencies = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (l, e) = task.await.unwrap();
            latencies.extend(l);
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(server.child.id()) - cpu_before;
        latencies.sort();
        let pct = |p: f64| percentile(&latencies, p);
        Run {
            rps: latencies.len() as f64 / elapsed,
            p50: pct(0.50),
            p99: pct(0.99),
            p999: pct(0.999),
            cpu_ms_per_request: cpu * 1000.0 / latencies.len().max(1) as f64,
            errors,
        }
    })
}

pub fn memchr(needle: &[u8], haystack: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// A plugin compiled in process, and how long compiling and checking it took.
pub struct Loaded {
    pub plugin: Arc<wasmgate::runtime::Plugin>,
    pub compile: Duration,
}

/// Compiles `path` as a validator with `settings` (JSON), without the on-disk cache unless
/// `cached`.
pub fn load_validator(
    path: &Path,
    settings: &str,
    cached: bool,
    reuse: Option<wasmgate::runtime::Reuse>,
) -> Loaded {
    load_plugin(
        path,
        wasmgate::config::PluginKind::Validator,
        settings,
        cached,
        reuse,
    )
}

/// [`load_validator`] for a plugin of any admission `kind`.
pub fn load_plugin(
    path: &Path,
    kind: wasmgate::config::PluginKind,
    settings: &str,
    cached: bool,
    reuse: Option<wasmgate::runtime::Reuse>,
) -> Loaded {
    let cache_dir = cached.then(|| std::env::temp_dir().join("wasmgate-bench-cache"));
    let runtime =
        wasmgate::runtime::Runtime::new(&wasmgate::runtime::RuntimeConfig { cache_dir }).unwrap();
    let started = Instant::now();
    let plugin = runtime
        .load(wasmgate::runtime::PluginSpec {
            name: "bench".into(),
            kind: kind.into(),
            bytes: Arc::new(std::fs::read(path).unwrap()),
            settings: settings.to_owned(),
            memory_limit: 64 << 20,
            timeout: Duration::from_secs(2),
            reuse,
            cluster: None,
        })
        .unwrap();
    Loaded {
        plugin: Arc::new(plugin),
        compile: started.elapsed(),
    }
}

/// p50 and p99 of `calls` calls of the validator `plugin` on `review`, in process, after a
/// warm-up of a twentieth as many.
pub fn call_cost(
    plugin: &Arc<wasmgate::runtime::Plugin>,
    review: &serde_json::Value,
    calls: usize,
) -> (Duration, Duration) {
    try_call_cost(plugin, review, calls).unwrap()
}

/// [`call_cost`], or the first call's failure.
pub fn try_call_cost(
    plugin: &Arc<wasmgate::runtime::Plugin>,
    review: &serde_json::Value,
    calls: usize,
) -> Result<(Duration, Duration), wasmgate::runtime::PluginFailure> {
    kind_call_cost(
        plugin,
        wasmgate::config::PluginKind::Validator,
        review,
        calls,
    )
}

/// [`try_call_cost`] of a plugin loaded as `kind`: its `validate` or its `initialize`.
pub fn kind_call_cost(
    plugin: &Arc<wasmgate::runtime::Plugin>,
    kind: wasmgate::config::PluginKind,
    review: &serde_json::Value,
    calls: usize,
) -> Result<(Duration, Duration), wasmgate::runtime::PluginFailure> {
    let request =
        wasmgate::wire::AdmissionReview::decode(&serde_json::to_vec(review).unwrap()).unwrap();
    let wit = Arc::new(wasmgate::admission::wit_request(&request.request));
    let warm_up = calls / 20;
    let mut samples = Vec::with_capacity(calls);
    // Calls are async (they yield to tokio at each epoch tick); one current-thread runtime
    // drives them one after another, as one server task would.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..calls + warm_up {
            let t = Instant::now();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let timeout = Duration::from_secs(5);
            match kind {
                wasmgate::config::PluginKind::Initializer => {
                    std::hint::black_box(plugin.initialize(&wit, deadline, timeout).await?);
                }
                _ => {
                    std::hint::black_box(plugin.validate(&wit, deadline, timeout).await?);
                }
            }
            if i >= warm_up {
                samples.push(t.elapsed());
            }
        }
        Ok::<(), wasmgate::runtime::PluginFailure>(())
    })?;
    samples.sort();
    Ok((
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    ))
}

/// The number after `--name` on the command line, or `default`.
pub fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0..=1) of `sorted` latencies; zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// `policies/demo.yaml` with absolute module paths; with `nothing_matches` the same plugins are
/// loaded and compiled but no rule matches a Pod (parse + match + answer only: our floor).
pub fn demo_policy(nothing_matches: bool) -> String {
    let text = std::fs::read_to_string(repo().join("policies/demo.yaml")).unwrap();
    let text = text.replace(
        "../plugins/dist/",
        &format!("{}/plugins/dist/", repo().display()),
    );
    if nothing_matches {
        text.replace(
            "apiGroups: [\"\", apps, batch]",
            "apiGroups: [nothing.example]",
        )
        .replace("apiGroups: [\"\"]", "apiGroups: [nothing.example]")
    } else {
        text
    }
}
