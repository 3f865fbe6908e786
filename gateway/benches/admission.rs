//! The admission benchmark (issue 2). Starts the real `wasmgate` binary twice, once on the demo
//! policies and once on a policy file in which nothing matches (our own floor: TLS, HTTP, parse,
//! answer), drives each over TLS keep-alive HTTP/1.1 connections with a realistic Pod CREATE
//! review, and prints req/s, latency percentiles and server CPU per request for `/validate` and
//! `/mutate` at several concurrencies; then the per-call cost of one plugin (fresh instance +
//! call), the time from start to first answer, and idle RSS.
//!
//! `cargo bench --bench admission -- [--seconds N] [--concurrency 1,16,64]`
//! The load generator runs in this process and shares the machine's cores with the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

struct Args {
    plugin_only: bool,
    seconds: f64,
    concurrency: Vec<usize>,
}

fn args() -> Args {
    let mut args = Args {
        plugin_only: false,
        seconds: 4.0,
        concurrency: vec![1, 16, 64],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--plugin-only" => args.plugin_only = true,
            "--seconds" => {
                args.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N")
            }
            "--concurrency" => {
                args.concurrency = it
                    .next()
                    .expect("--concurrency 1,16")
                    .split(',')
                    .map(|c| c.parse().expect("a number"))
                    .collect()
            }
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

struct Server {
    child: Child,
    port: u16,
    ca: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policy_text(floor: bool) -> String {
    let text = std::fs::read_to_string(repo().join("policies/demo.yaml")).unwrap();
    let text = text.replace(
        "../plugins/dist/",
        &format!("{}/plugins/dist/", repo().display()),
    );
    if floor {
        // Same plugins, loaded and compiled, but no rule can match a Pod: parse + answer only.
        text.replace(
            "apiGroups: [\"\", apps, batch]",
            "apiGroups: [nothing.example]",
        )
        .replace("apiGroups: [\"\"]", "apiGroups: [nothing.example]")
    } else {
        text
    }
}

fn start(floor: bool) -> (Server, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = wasmgate::server::tls::generate(&["127.0.0.1"]).unwrap();
    for (name, text) in [
        ("tls.crt", &cert),
        ("tls.key", &key),
        ("policies.yaml", &policy_text(floor)),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let port = free_port();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(dir.path().join("policies.yaml"))
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        port,
        ca,
        _dir: dir,
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn connect(server: &Server) -> Result<Conn, Box<dyn std::error::Error + Send + Sync>> {
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
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
            .await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        if response.status() != 200 {
            return Err(format!("status {}", response.status()).into());
        }
        Ok(response.into_body().collect().await?.to_bytes())
    }
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
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

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    cpu_ms_per_request: f64,
    errors: u64,
}

fn load(
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
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
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

fn memchr(needle: &[u8], haystack: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Fresh instance + call of one plugin, in process, without HTTP: the runtime's own cost.
fn plugin_call_cost(review: &serde_json::Value) -> (Duration, Duration) {
    // BENCH_PLUGIN=path/to/validator.wasm measures another validator (its settings: BENCH_SETTINGS).
    let plugin_path = std::env::var_os("BENCH_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("plugins/dist/require-labels.wasm"));
    let settings =
        std::env::var("BENCH_SETTINGS").unwrap_or_else(|_| r#"{"labels":["team"]}"#.to_owned());
    let runtime =
        wasmgate::runtime::Runtime::new(&wasmgate::runtime::RuntimeConfig { cache_dir: None })
            .unwrap();
    let plugin = runtime
        .load(wasmgate::runtime::PluginSpec {
            name: "require-labels".into(),
            kind: wasmgate::runtime::World::Validator,
            bytes: Arc::new(std::fs::read(&plugin_path).unwrap()),
            settings,
            memory_limit: 64 << 20,
        })
        .unwrap();
    let request: wasmgate::wire::AdmissionReview =
        wasmgate::wire::AdmissionReview::decode(&serde_json::to_vec(review).unwrap()).unwrap();
    let wit = wasmgate::admission::wit_request(&request.request);
    println!(
        "\nplugin: {} validating the review above",
        plugin_path.display()
    );
    let mut samples = Vec::new();
    for i in 0..20_000 {
        let t = Instant::now();
        let verdict = plugin
            .validate_blocking(&wit, Duration::from_secs(1))
            .unwrap();
        if i >= 1000 {
            samples.push(t.elapsed());
        }
        std::hint::black_box(verdict);
    }
    samples.sort();
    let direct = (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    );
    // The same call through the async path the server uses (slot semaphore + blocking pool).
    let plugin = Arc::new(plugin);
    let wit = Arc::new(wit);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut pooled = rt.block_on(async {
        let mut samples = Vec::new();
        for i in 0..20_000 {
            let wit = wit.clone();
            let t = Instant::now();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            let verdict = plugin
                .run(deadline, Duration::from_secs(1), move |p, budget| {
                    p.validate_blocking(&wit, budget)
                })
                .await
                .unwrap();
            if i >= 1000 {
                samples.push(t.elapsed());
            }
            std::hint::black_box(verdict);
        }
        samples
    });
    pooled.sort();
    println!(
        "the same call through the server's path (slot + blocking pool, from async): p50 {:.1} µs, p99 {:.1} µs",
        pooled[pooled.len() / 2].as_secs_f64() * 1e6,
        pooled[pooled.len() * 99 / 100].as_secs_f64() * 1e6
    );
    direct
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args = args();
    let review: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/fixtures/reviews/pod-create.json")).unwrap(),
    )
    .unwrap();
    let body = Bytes::from(serde_json::to_vec(&review).unwrap());
    println!("# wasmgate admission benchmark");
    println!(
        "review: Pod CREATE, {} bytes; {} s per run; load generator in-process (1 thread); {} cores",
        body.len(),
        args.seconds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let (median, p99) = plugin_call_cost(&review);
    println!(
        "one plugin call (fresh instance + call, in process, no HTTP): p50 {:.1} µs, p99 {:.1} µs",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );

    if args.plugin_only {
        return;
    }
    let mut rows = Vec::new();
    let mut startup = Vec::new();
    for floor in [true, false] {
        let label = if floor {
            "floor (nothing matches)"
        } else {
            "demo policies"
        };
        let (server, ready) = start(floor);
        std::thread::sleep(Duration::from_millis(500));
        startup.push((label, ready, rss_kib(server.child.id())));
        for (path, check) in [
            ("/validate", "\"allowed\":true"),
            ("/mutate", "\"allowed\":true"),
        ] {
            for &c in &args.concurrency {
                let run = load(&server, path, &body, c, args.seconds, check);
                rows.push((label, path, c, run));
            }
        }
    }
    println!(
        "\n| policies | endpoint | conc | req/s | p50 ms | p99 ms | p99.9 ms | server CPU ms/req | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, path, c, r) in &rows {
        println!(
            "| {label} | {path} | {c} | {:.0} | {} | {} | {} | {:.3} | {} |",
            r.rps,
            ms(r.p50),
            ms(r.p99),
            ms(r.p999),
            r.cpu_ms_per_request,
            r.errors
        );
    }
    println!("\n| endpoint | conc | demo req/s as % of floor | demo p99 / floor p99 |");
    println!("|---|---:|---:|---:|");
    for (_, path, c, demo) in rows.iter().filter(|r| r.0 == "demo policies") {
        if let Some((_, _, _, floor)) = rows
            .iter()
            .find(|r| r.0 != "demo policies" && r.1 == *path && r.2 == *c)
        {
            println!(
                "| {path} | {c} | {:.0} % | {:.2}x |",
                demo.rps / floor.rps * 100.0,
                demo.p99.as_secs_f64() / floor.p99.as_secs_f64()
            );
        }
    }
    println!();
    for (label, ready, rss) in startup {
        println!(
            "{label}: start to first answer {} ms (compiled plugins cached), idle RSS {:.1} MiB",
            ready.as_millis(),
            rss as f64 / 1024.0
        );
    }
}
