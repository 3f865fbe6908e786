//! Against the bare floor (issue 14): the floor server of the project's shared bench folder
//! (bare hyper + rustls, the whole review parsed into a DOM) and the real `wasmgate` binary (on
//! the demo policies; on the same with rules nothing matches; on two validators that read
//! nothing, `tests/plugins/wat/allow-all.wat`), up side by side with the same certificate,
//! driven by an external closed-loop load generator (wrk, Debian's, fetched by
//! `scripts/bench-tools`) in interleaved rounds; then open-loop latency at
//! 25/50/75/90 % of each server's measured maximum (our own fixed-rate generator, latency from
//! the intended send time: no coordinated omission); then Kyverno's published load-test shape
//! with the Pod Security Standards policy. Prints the tables of the issue with the targets beside
//! them and writes SVG plots (docs/bench/ by default).
//!
//! `cargo bench --bench floor -- [--rounds 3] [--seconds 8] [--threads 2] [--connections 16]
//!  [--open-seconds 5] [--open-connections 32] [--stages closed,open,kyverno,trace] [--out DIR]
//!  [--against BIN] [--compact-body] [--paced-creates 20000] [--paced-gap-ms 2]`
//! (`trace`: where one request's time goes at low load, from the gateway's own histograms;
//! `paced`, not run by default: a Pod create's webhook calls as the API server's client sends
//! them, one create at a time over HTTP/2, the gateway's tail against the floor's;
//! `plugins`, not run by default: three more servers in the closed-loop rounds, each serving one
//! component twice, `counter`, require-labels and deny-privileged, to split the demo's cost.)
//! `--against BIN` serves the demo with a second `wasmgate` binary too (another build), as
//! `demo-b`, in the same interleaved rounds: an A/B of a change, each beside the same floor.
//! mkbody.py writes its review indented (10 KB, half of it whitespace); `--compact-body` sends
//! the same review compact (5.2 KB), as the API server writes JSON.
//!
//! Needs `scripts/build-plugins` and the shared bench folder (see `scripts/bench-tools shared`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use common::{
    Conn, H2Conn, Rng, Server, cpu_seconds, demo_policy, memchr, percentile, repo, rss_kib, start,
};

struct Opts {
    rounds: usize,
    seconds: f64,
    threads: usize,
    connections: usize,
    open_seconds: f64,
    open_connections: usize,
    stages: Vec<String>,
    out: PathBuf,
    against: Option<PathBuf>,
    /// Send mkbody.py's review compact, as the API server writes JSON, not indented.
    compact_body: bool,
    /// The `paced` stage: creates per server and shape, and the pause between two creates.
    paced_creates: usize,
    paced_gap: Duration,
}

fn opts() -> Opts {
    let mut o = Opts {
        rounds: 3,
        seconds: 8.0,
        threads: 2,
        connections: 16,
        open_seconds: 5.0,
        open_connections: 32,
        stages: ["closed", "open", "kyverno", "trace"]
            .map(str::to_owned)
            .to_vec(),
        out: repo().join("docs/bench"),
        against: None,
        compact_body: false,
        paced_creates: 20_000,
        paced_gap: Duration::from_millis(2),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => o.rounds = value().parse().expect("--rounds N"),
            "--seconds" => o.seconds = value().parse().expect("--seconds S"),
            "--threads" => o.threads = value().parse().expect("--threads N"),
            "--connections" => o.connections = value().parse().expect("--connections N"),
            "--open-seconds" => o.open_seconds = value().parse().expect("--open-seconds S"),
            "--open-connections" => {
                o.open_connections = value().parse().expect("--open-connections N")
            }
            "--stages" => o.stages = value().split(',').map(str::to_owned).collect(),
            "--out" => o.out = PathBuf::from(value()),
            "--against" => o.against = Some(PathBuf::from(value())),
            "--compact-body" => o.compact_body = true,
            "--paced-creates" => o.paced_creates = value().parse().expect("--paced-creates N"),
            "--paced-gap-ms" => {
                o.paced_gap = Duration::from_secs_f64(
                    value().parse::<f64>().expect("--paced-gap-ms MS") / 1000.0,
                )
            }
            _ => {} // cargo bench passes --bench
        }
    }
    o
}

/// Runs `scripts/bench-tools WHAT` and returns the path it prints.
fn bench_tool(what: &str) -> PathBuf {
    let out = Command::new(repo().join("scripts/bench-tools"))
        .arg(what)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/bench-tools");
    if !out.status.success() {
        eprintln!("scripts/bench-tools {what} failed (its message is above)");
        std::process::exit(1);
    }
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Starts the floor on a free port with `certs`' certificate and key; ready once it answers.
fn start_floor(floor: &Path, certs: &Server, body: &Bytes) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let child = Command::new(floor)
        .arg(format!("127.0.0.1:{port}"))
        .arg(certs.dir.path().join("tls.crt"))
        .arg(certs.dir.path().join("tls.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the floor");
    let server = Server {
        child,
        port,
        ca: certs.ca.clone(),
        dir,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let started = Instant::now();
        loop {
            if let Ok(mut conn) = Conn::connect(&server).await
                && conn
                    .request("POST", "/validate", body.clone())
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "floor did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    server
}

/// One closed-loop wrk run, as `post.lua` reports it, with the server's CPU per request.
#[derive(Clone, Default)]
struct Closed {
    rps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    errors: u64,
    cpu_ms: f64,
}

struct Wrk {
    bin: PathBuf,
    lua: PathBuf,
    body: PathBuf,
}

impl Wrk {
    fn run(&self, server: &Server, path: &str, o: &Opts, seconds: f64) -> Closed {
        let cpu = cpu_seconds(server.child.id());
        let out = Command::new(&self.bin)
            .env("BODY", &self.body)
            .arg(format!("-t{}", o.threads))
            .arg(format!("-c{}", o.connections))
            .arg(format!("-d{}s", seconds.round().max(1.0)))
            .arg("-s")
            .arg(&self.lua)
            .arg(format!("https://127.0.0.1:{}{path}", server.port))
            .stderr(Stdio::inherit())
            .output()
            .expect("run wrk");
        let cpu = cpu_seconds(server.child.id()) - cpu;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RESULT "))
            .unwrap_or_else(|| panic!("wrk printed no RESULT line:\n{text}"));
        let field = |name: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {line}"))
        };
        let requests = field("req");
        Closed {
            rps: field("rps"),
            p50: field("p50_ms"),
            p90: field("p90_ms"),
            p99: field("p99_ms"),
            p999: field("p999_ms"),
            max: field("max_ms"),
            errors: (field("errs_conn")
                + field("errs_rd")
                + field("errs_status")
                + field("errs_timeout")) as u64,
            cpu_ms: cpu * 1000.0 / requests.max(1.0),
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    if xs.is_empty() {
        return f64::NAN;
    }
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// One server and endpoint under test.
struct Case<'a> {
    name: &'static str,
    server: &'a Server,
    path: &'static str,
    /// (min req/s ratio to the floor, max p99 ratio to the floor's), if the issue sets one.
    target: Option<(f64, f64)>,
}

/// Issue 14's targets for the demo's `/validate` and `/mutate` ([`Case::target`]), for this
/// build and for `--against`'s.
const VALIDATE_TARGET: (f64, f64) = (0.9, 1.5);
const MUTATE_TARGET: (f64, f64) = (0.6, 2.0);

/// One open-loop point: offered and achieved rate, latency from the intended send time.
struct Open {
    offered: f64,
    achieved: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    errors: u64,
    /// CPU this process (the generator) spent per request, µs.
    generator_us: f64,
}

/// A fixed arrival rate without coordinated omission (as wrk2 does it): request i is due at
/// `start + i / rate` whatever happened before; its latency runs from that instant to its answer,
/// so a stall delays (and counts against) every request due during it. A dispatcher thread
/// (thread sleeps: tokio's timer has 1 ms granularity) hands due instants to `connections`
/// keep-alive connections; a request that finds them all busy waits, and that wait is counted.
fn open_loop(
    server: &Server,
    path: &str,
    body: &Bytes,
    rate: f64,
    seconds: f64,
    connections: usize,
) -> Open {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..connections {
            let mut conn = Conn::connect(server).await.expect("connect");
            conn.request("POST", path, body.clone())
                .await
                .expect("warm-up request");
            conns.push(conn);
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut workers = Vec::new();
        for mut conn in conns {
            let (rx, path, body) = (rx.clone(), path.to_owned(), body.clone());
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                loop {
                    let due = rx.lock().await.recv().await;
                    let Some(due) = due else { break };
                    match conn.request("POST", &path, body.clone()).await {
                        Ok(answer) if memchr(b"\"allowed\":true", &answer) => {
                            latencies.push(due.elapsed())
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            }));
        }
        let own_cpu = cpu_seconds(std::process::id());
        let total = (rate * seconds) as u64;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now() + Duration::from_millis(20);
        let dispatcher = std::thread::spawn(move || {
            for i in 0..total {
                let due = start + interval * i as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tx.send(due).is_err() {
                    break;
                }
            }
        });
        let mut latencies = Vec::new();
        let mut errors = 0;
        for w in workers {
            let (l, e) = w.await.unwrap();
            latencies.extend(l);
            errors += e;
        }
        dispatcher.join().unwrap();
        let elapsed = start.elapsed().as_secs_f64();
        latencies.sort();
        let pct = |p: f64| percentile(&latencies, p);
        Open {
            offered: rate,
            achieved: latencies.len() as f64 / elapsed,
            p50: pct(0.50),
            p99: pct(0.99),
            p999: pct(0.999),
            errors,
            generator_us: (cpu_seconds(std::process::id()) - own_cpu) * 1e6
                / latencies.len().max(1) as f64,
        }
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Kyverno's shape: `clients` keep-alive connections (connected before the clock starts), each
/// sending its share of `total` reviews one after another; average and maximum latency.
/// Returns (avg ms, max ms, p99 ms, denied by the checks, failed on the plugin deadline, errors).
fn shape(
    server: &Server,
    body: &Bytes,
    clients: usize,
    total: usize,
) -> (f64, f64, f64, u64, u64, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(Conn::connect(server).await.expect("connect"));
        }
        let mut tasks = Vec::new();
        for (i, mut conn) in conns.into_iter().enumerate() {
            let n = total / clients + usize::from(i < total % clients);
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(n);
                let (mut denied, mut late, mut errors) = (0u64, 0u64, 0u64);
                for _ in 0..n {
                    let t = Instant::now();
                    match conn.request("POST", "/validate", body.clone()).await {
                        Ok(answer) => {
                            out.push(t.elapsed());
                            if memchr(b"deadline", &answer) {
                                late += 1;
                            } else if memchr(b"\"allowed\":false", &answer) {
                                denied += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (out, denied, late, errors)
            }));
        }
        let mut all = Vec::new();
        let (mut denied, mut late, mut errors) = (0, 0, 0);
        for t in tasks {
            let (l, d, dl, e) = t.await.unwrap();
            all.extend(l);
            denied += d;
            late += dl;
            errors += e;
        }
        all.sort();
        let avg = all.iter().map(|d| ms(*d)).sum::<f64>() / all.len().max(1) as f64;
        let max = all.last().map(|d| ms(*d)).unwrap_or(0.0);
        let p99 = all.get(all.len() * 99 / 100).map(|d| ms(*d)).unwrap_or(0.0);
        (avg, max, p99, denied, late, errors)
    })
}

/// `(sum, count)` of the histogram `name` (one label set whose labels contain `label`) in the
/// gateway's /metrics.
fn histogram(metrics: &str, name: &str, label: &str) -> (f64, f64) {
    (
        samples(metrics, &format!("{name}_sum"), label),
        samples(metrics, &format!("{name}_count"), label),
    )
}

/// The sum of a counter's samples (every label set) in a gateway's /metrics.
fn counter(metrics: &str, name: &str) -> f64 {
    samples(metrics, name, "")
}

/// The sum of the samples of the series `name` whose lines contain `label`, in /metrics text.
fn samples(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(name)
                && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(server: &Server) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = Conn::connect(server).await.expect("connect");
        let body = conn
            .request("GET", "/metrics", Bytes::new())
            .await
            .expect("GET /metrics");
        String::from_utf8_lossy(&body).into_owned()
    })
}

/// Where the time of one request goes at low load (issue 19): one client, one request at a time.
/// The client's round trip, the gateway's handler time (its admission_request_duration histogram:
/// body in hand to verdict, i.e. parse, match, hand-offs, plugin calls, merge), and each plugin
/// call (fresh instance + call, plugin_call_duration), as means over the run; what is left is
/// TLS, HTTP framing, body read, response serialisation and write, and the client.
fn trace(cases: &[Case], body: &Bytes, seconds: f64, policies: &[&str]) {
    println!(
        "\none request at a time ({seconds} s each, one keep-alive HTTP/1.1 connection): means, µs\n"
    );
    println!(
        "| server | round trip p50 | round trip mean | in the handler | in plugin calls: mean per call (calls per review), by policy | outside the handler (TLS, HTTP, body, write, client) | server CPU per request |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|");
    for case in cases {
        let before = (case.name != "floor").then(|| scrape(case.server));
        let run = common::load(case.server, case.path, body, 1, seconds, "\"allowed\":true");
        let mean_rtt = 1e6 / run.rps.max(1e-9);
        let (handler, calls) = match before {
            None => ("".to_owned(), "".to_owned()),
            Some(before) => {
                let after = scrape(case.server);
                let endpoint = format!("endpoint=\"{}\"", &case.path[1..]);
                let name = "wasmgate_admission_request_duration_seconds";
                let (s0, c0) = histogram(&before, name, &endpoint);
                let (s1, c1) = histogram(&after, name, &endpoint);
                let reviews = (c1 - c0).max(1.0);
                let handler = (s1 - s0) / reviews * 1e6;
                let mut calls = Vec::new();
                for policy in policies {
                    let label = format!("policy=\"{policy}\"");
                    let name = "wasmgate_plugin_call_duration_seconds";
                    let (s0, c0) = histogram(&before, name, &label);
                    let (s1, c1) = histogram(&after, name, &label);
                    if c1 > c0 {
                        calls.push(format!(
                            "{policy} {:.0} ({:.2}/req)",
                            (s1 - s0) / (c1 - c0) * 1e6,
                            (c1 - c0) / reviews
                        ));
                    }
                }
                (format!("{handler:.0}"), calls.join(", "))
            }
        };
        let outside = handler
            .parse::<f64>()
            .map(|h| format!("{:.0}", mean_rtt - h))
            .unwrap_or_else(|_| format!("{mean_rtt:.0} (all of it)"));
        println!(
            "| {} | {:.0} | {mean_rtt:.0} | {handler} | {calls} | {outside} | {:.0} |",
            case.name,
            run.p50.as_secs_f64() * 1e6,
            run.cpu_ms_per_request * 1000.0
        );
    }
}

/// The webhook shapes of a Pod create as the API server calls them (issue 19's modes): steps
/// one after another, the paths of a step at the same time (validating webhooks run in
/// parallel). The floor answers any path.
const PACED_SHAPES: [(&str, &[&[&str]]); 3] = [
    ("1 V (rl)", &[&["/validate/require-labels"]]),
    (
        "1 M + 2 V (demo)",
        &[
            &["/mutate/always-pull-images"],
            &["/validate/require-labels", "/validate/deny-privileged"],
        ],
    ),
    (
        "1 M + 1 V (demo --aggregate)",
        &[&["/mutate"], &["/validate"]],
    ),
];

/// The API server's webhook client without the API server (issue 19's tail, which the API
/// server's own noise hides): one HTTP/2 connection per server, one create at a time, each
/// create the webhook calls of a shape (a step's calls as concurrent streams), `gap` between
/// two creates so that the servers go idle between reviews as they do behind an API server.
/// The floor and the gateway take turns in blocks in a shuffled order, so that a busy moment of
/// the machine falls on both; ratios come with a 95 % interval from a bootstrap over the blocks.
fn paced(servers: &[(&str, &Server)], body: &Bytes, creates: usize, gap: Duration) {
    const BLOCKS: usize = 100;
    let per_block = (creates / BLOCKS).max(1);
    println!(
        "\npaced: one create at a time over HTTP/2 as the API server's webhook client sends it, {} per server and shape in {BLOCKS} shuffled blocks, {:.1} ms between creates; review {} bytes (compact)",
        per_block * BLOCKS,
        gap.as_secs_f64() * 1e3,
        body.len()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // samples[block][shape][server] = round trips of one create
    let mut samples = Vec::with_capacity(BLOCKS);
    let connected = rt.block_on(async {
        let mut conns = Vec::new();
        for (_, server) in servers {
            conns.push(H2Conn::connect(server).await.expect("an HTTP/2 connection"));
        }
        conns
    });
    let conns = &connected;
    let create = |conn: &H2Conn, steps: &'static [&'static [&'static str]]| {
        let conn = conn.clone();
        let body = body.clone();
        async move {
            let started = Instant::now();
            for step in steps {
                let calls = step.iter().map(|path| conn.post(path, body.clone()));
                for answer in futures_util::future::join_all(calls).await {
                    let answer = answer.expect("a review answered");
                    assert!(
                        memchr(b"\"allowed\":true", &answer),
                        "a review was not allowed: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
            started.elapsed()
        }
    };
    // Warm-up: every path of every server, and the pools' first instances.
    rt.block_on(async {
        for (_, steps) in PACED_SHAPES {
            for conn in conns {
                for _ in 0..200 {
                    create(conn, steps).await;
                    tokio::time::sleep(gap).await;
                }
            }
        }
    });
    let before: Vec<String> = servers[1..].iter().map(|(_, s)| scrape(s)).collect();
    rt.block_on(async {
        let mut order: Vec<(usize, usize)> = (0..PACED_SHAPES.len())
            .flat_map(|shape| (0..servers.len()).map(move |server| (shape, server)))
            .collect();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for block in 0..BLOCKS {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let mut this_block = vec![vec![Vec::new(); servers.len()]; PACED_SHAPES.len()];
            for &(shape, server) in &order {
                for _ in 0..per_block {
                    let us = create(&conns[server], PACED_SHAPES[shape].1).await;
                    this_block[shape][server].push(us);
                    tokio::time::sleep(gap).await;
                }
            }
            samples.push(this_block);
            if (block + 1) % (BLOCKS / 4) == 0 {
                println!("block {}/{BLOCKS} done (load {})", block + 1, uptime());
            }
        }
    });
    // What the gateways counted while measuring: a call that did not find its instance made
    // ahead instantiated on the answer's path; one that started on the slow lane waited for an
    // idle CPU.
    for ((name, server), before) in servers[1..].iter().zip(&before) {
        let after = scrape(server);
        let delta = |metric: &str| counter(&after, metric) - counter(before, metric);
        println!(
            "{name}: {:.0} reviews, {:.0} plugin calls, {:.0} found their instance made ahead, {:.0} started on the slow lane",
            delta("wasmgate_admission_requests_total"),
            delta("wasmgate_plugin_calls_total"),
            delta("wasmgate_plugin_prepared_instance_calls_total"),
            delta("wasmgate_plugin_slow_lane_starts_total"),
        );
    }
    // A quantile, µs.
    let quantile = |xs: &mut Vec<Duration>, q: f64| {
        xs.sort_unstable();
        percentile(xs, q).as_secs_f64() * 1e6
    };
    println!(
        "\n| shape | server | p50 µs | p90 µs | p99 µs | p99.9 µs | ratio p50 [95 %] | ratio p99 [95 %] | p99 difference µs [95 %] | ratio p99.9 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (shape, (name, _)) in PACED_SHAPES.iter().enumerate() {
        let all = |server: usize, pick: &[usize]| -> Vec<Duration> {
            pick.iter()
                .flat_map(|&b| samples[b][shape][server].iter().copied())
                .collect()
        };
        // p50, p90, p99 and p99.9 of a server over every block.
        let quantiles = |server: usize| -> Vec<f64> {
            let mut xs = all(server, &(0..BLOCKS).collect::<Vec<_>>());
            [0.5, 0.9, 0.99, 0.999]
                .iter()
                .map(|&q| quantile(&mut xs, q))
                .collect()
        };
        let floor_q = quantiles(0);
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | | | | |",
            servers[0].0, floor_q[0], floor_q[1], floor_q[2], floor_q[3]
        );
        for (server, (label, _)) in servers.iter().enumerate().skip(1) {
            // The bootstrap: the same resampled blocks for the floor and the gateway.
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let (mut ratio50, mut ratio99, mut diff99) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..300 {
                let pick: Vec<usize> = (0..BLOCKS)
                    .map(|_| rng.below(BLOCKS as u64) as usize)
                    .collect();
                let (mut f, mut g) = (all(0, &pick), all(server, &pick));
                let (f50, g50) = (quantile(&mut f, 0.5), quantile(&mut g, 0.5));
                let (f99, g99) = (quantile(&mut f, 0.99), quantile(&mut g, 0.99));
                ratio50.push(g50 / f50);
                ratio99.push(g99 / f99);
                diff99.push(g99 - f99);
            }
            let interval = |xs: &mut Vec<f64>| {
                xs.sort_by(|a, b| a.total_cmp(b));
                (xs[7], xs[292])
            };
            let (r50, r99, d99) = (
                interval(&mut ratio50),
                interval(&mut ratio99),
                interval(&mut diff99),
            );
            let v = quantiles(server);
            println!(
                "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x [{:.2}, {:.2}] | {:.2}x [{:.2}, {:.2}] | {:+.0} [{:+.0}, {:+.0}] | {:.2}x |",
                label,
                v[0],
                v[1],
                v[2],
                v[3],
                v[0] / floor_q[0],
                r50.0,
                r50.1,
                v[2] / floor_q[2],
                r99.0,
                r99.1,
                v[2] - floor_q[2],
                d99.0,
                d99.1,
                v[3] / floor_q[3]
            );
        }
    }
}

/// Peak resident set (VmHWM) of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Latency percentiles against offered load, one colour per server, p50 solid and p99 dashed.
fn plot_open(path: &Path, title: &str, series: &[(&str, Vec<&Open>)]) {
    use plotters::prelude::*;
    let max_x = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.offered))
        .fold(1.0, f64::max)
        * 1.05;
    let max_y = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| ms(p.p99)))
        .fold(0.1, f64::max)
        * 1.5;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..max_x, (0.05..max_y).log_scale())
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("offered load, req/s (open loop)")
        .y_desc("latency, ms (log)")
        .draw()
        .unwrap();
    let colours = [BLUE, RED, GREEN, MAGENTA, CYAN];
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let line = |f: fn(&Open) -> Duration| -> Vec<(f64, f64)> {
            pts.iter()
                .map(|p| (p.offered, ms(f(p)).max(0.05)))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(line(|p| p.p50), colour.stroke_width(2)))
            .unwrap()
            .label(format!("{name} p50"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart
            .draw_series(DashedLineSeries::new(
                line(|p| p.p99),
                6,
                4,
                colour.stroke_width(1),
            ))
            .unwrap()
            .label(format!("{name} p99 (dashed)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart
            .draw_series(
                line(|p| p.p99)
                    .into_iter()
                    .map(|xy| Circle::new(xy, 3, colour)),
            )
            .unwrap();
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .unwrap();
    root.present().unwrap();
}

/// The policies of [`allow_all_policy`], named again in the `trace` stage's table.
const ALLOW_ALL: [&str; 2] = ["allow-all-a", "allow-all-b"];

/// Two validators on Pods, as the demo's, each `allow-all` (tests/plugins/wat/allow-all.wat): a
/// component of one core module that reads nothing. Beside the demo's `/validate` it splits what
/// a call costs the host (a fresh store and instance, the request lowered in, the verdict lifted,
/// the slot's reset) from what the plugins' own components cost.
fn allow_all_policy() -> String {
    twice("tests/plugins/dist/allow-all.wasm", "", ALLOW_ALL)
}

/// The `plugins` stage's servers: each serves one component as two validators on Pods, as the
/// demo's two, so that the demo's cost splits into the host's path (`allow-all`), a Rust SDK
/// component's own cost when it reads nothing (`counter`, tests/plugins), and each demo
/// validator's reading of the object. (name, module under the repository, settings YAML.)
const ONE_PLUGIN_TWICE: [(&str, &str, &str); 3] = [
    (
        "wasmgate, 2 x counter (Rust SDK, reads nothing), /validate",
        "tests/plugins/dist/counter.wasm",
        "",
    ),
    (
        "wasmgate, 2 x require-labels, /validate",
        "plugins/dist/require-labels.wasm",
        "    settings:\n      labels: [team]\n",
    ),
    (
        "wasmgate, 2 x deny-privileged, /validate",
        "plugins/dist/deny-privileged.wasm",
        "",
    ),
];

/// A policy file with two validators on Pods (CREATE, UPDATE), `names`, both serving `module`
/// (relative to the repository) with `settings` (YAML lines, or empty).
fn twice(module: &str, settings: &str, names: [&str; 2]) -> String {
    let module = repo().join(module);
    assert!(
        module.exists(),
        "{} is missing: run scripts/build-plugins",
        module.display()
    );
    let policy = |name: &str| {
        format!(
            "  - name: {name}\n    kind: validator\n    module: {}\n{settings}    rules:\n      - operations: [CREATE, UPDATE]\n        apiGroups: [\"\"]\n        apiVersions: [v1]\n        resources: [pods]\n    failurePolicy: Fail\n    timeout: 1s\n",
            module.display()
        )
    };
    format!(
        "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\nmetadata:\n  name: twice\npolicies:\n{}{}",
        policy(names[0]),
        policy(names[1])
    )
}

fn main() {
    let o = opts();
    let shared = bench_tool("shared");
    let wrk_bin = bench_tool("wrk");
    let floor_bin = bench_tool("floor");
    // The body: mkbody.py's Pod CREATE review, written into a scratch folder.
    let scratch = tempfile::tempdir().unwrap();
    let status = Command::new("python3")
        .arg(shared.join("mkbody.py"))
        .current_dir(scratch.path())
        .stdout(Stdio::null())
        .status()
        .expect("python3 mkbody.py");
    assert!(status.success(), "mkbody.py failed");
    let indented = scratch.path().join("admreview_allow.json");
    // The same members in the same order, without the indentation (Python's json keeps the
    // order; serde_json's Value would sort the keys): as the API server writes a review.
    let compact = scratch.path().join("admreview_allow_compact.json");
    let status = Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys; d = json.load(open(sys.argv[1])); \
             open(sys.argv[2], 'w').write(json.dumps(d, separators=(',', ':')))",
        )
        .arg(&indented)
        .arg(&compact)
        .status()
        .expect("python3");
    assert!(status.success(), "compacting the body failed");
    let body_path = if o.compact_body {
        compact.clone()
    } else {
        indented
    };
    let body = Bytes::from(std::fs::read(&body_path).unwrap());
    let wrk = Wrk {
        bin: wrk_bin,
        lua: shared.join("post.lua"),
        body: body_path,
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("# wasmgate against the bare floor (issues 14, 19)");
    println!(
        "command: cargo bench --bench floor -- --rounds {} --seconds {} --threads {} --connections {} --open-seconds {} --open-connections {} --stages {}{}{}",
        o.rounds,
        o.seconds,
        o.threads,
        o.connections,
        o.open_seconds,
        o.open_connections,
        o.stages.join(","),
        o.against
            .as_ref()
            .map(|b| format!(" --against {}", b.display()))
            .unwrap_or_default(),
        if o.compact_body {
            " --compact-body"
        } else {
            ""
        }
    );
    println!(
        "machine: {cores} cores; load average at start {}; body {} bytes (mkbody.py{}); floor {}",
        uptime(),
        body.len(),
        if o.compact_body {
            ", compact"
        } else {
            ", indented"
        },
        floor_bin.display()
    );

    let (demo, _) = start(&demo_policy(false));
    let (nothing, _) = start(&demo_policy(true));
    let (bare, _) = start(&allow_all_policy());
    let floor = start_floor(&floor_bin, &demo, &body);
    let demo_b = o.against.as_ref().map(|bin| {
        println!("demo-b: {}", bin.display());
        common::start_build(bin, &demo_policy(false)).0
    });
    // The `plugins` stage: more servers, measured in the same closed-loop rounds.
    let plugin_stage = o.stages.iter().any(|s| s == "plugins");
    let singles: Vec<(&str, Server)> = if plugin_stage {
        ONE_PLUGIN_TWICE
            .iter()
            .map(|(name, module, settings)| (*name, start(&twice(module, settings, ["a", "b"])).0))
            .collect()
    } else {
        Vec::new()
    };
    std::fs::create_dir_all(&o.out).unwrap();

    let mut cases = vec![
        Case {
            name: "floor",
            server: &floor,
            path: "/validate",
            target: None,
        },
        Case {
            name: "wasmgate demo /validate (2 validators)",
            server: &demo,
            path: "/validate",
            target: Some(VALIDATE_TARGET),
        },
        Case {
            name: "wasmgate demo /mutate (1 initializer)",
            server: &demo,
            path: "/mutate",
            target: Some(MUTATE_TARGET),
        },
        Case {
            name: "wasmgate, nothing matches, /validate",
            server: &nothing,
            path: "/validate",
            target: None,
        },
        Case {
            name: "wasmgate, 2 validators that read nothing, /validate",
            server: &bare,
            path: "/validate",
            target: None,
        },
    ];
    if let Some(b) = &demo_b {
        cases.push(Case {
            name: "demo-b (--against) /validate",
            server: b,
            path: "/validate",
            target: Some(VALIDATE_TARGET),
        });
        cases.push(Case {
            name: "demo-b (--against) /mutate",
            server: b,
            path: "/mutate",
            target: Some(MUTATE_TARGET),
        });
    }
    cases.extend(singles.iter().map(|(name, server)| Case {
        name,
        server,
        path: "/validate",
        target: None,
    }));

    // --- closed loop (wrk), interleaved rounds
    let mut maxima: Vec<f64> = vec![0.0; cases.len()];
    let closed = o.stages.iter().any(|s| s == "closed") || plugin_stage;
    if closed || o.stages.iter().any(|s| s == "open") {
        for case in &cases {
            wrk.run(case.server, case.path, &o, 1.0); // warm-up
        }
        let rounds = if closed { o.rounds } else { 1 };
        let mut runs: Vec<Vec<Closed>> = vec![Vec::new(); cases.len()];
        for round in 0..rounds {
            for (i, case) in cases.iter().enumerate() {
                let r = wrk.run(case.server, case.path, &o, o.seconds);
                println!(
                    "round {} {:40} {:>9.0} req/s p50 {:.2} p99 {:.2} ms, {:.3} ms CPU/req, errors {} (load {})",
                    round + 1,
                    case.name,
                    r.rps,
                    r.p50,
                    r.p99,
                    r.cpu_ms,
                    r.errors,
                    uptime()
                );
                runs[i].push(r);
            }
        }
        let med = |i: usize, f: fn(&Closed) -> f64| median(runs[i].iter().map(f).collect());
        // Ratios per round (each wasmgate run beside the floor run of its round), then medians.
        let ratio = |i: usize, f: fn(&Closed) -> f64| {
            median(
                runs[i]
                    .iter()
                    .zip(&runs[0])
                    .map(|(r, fl)| f(r) / f(fl))
                    .collect(),
            )
        };
        println!(
            "\nwrk -t{} -c{} -d{}s, TLS keep-alive, {} interleaved rounds, medians (ratios: median of the per-round ratios)\n",
            o.threads, o.connections, o.seconds, rounds
        );
        println!(
            "| server | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU ms/req | errors | req/s ratio to floor | p99 ratio to floor | target | met | floor CPU/req ÷ its CPU/req |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|");
        for (i, case) in cases.iter().enumerate() {
            maxima[i] = med(i, |r| r.rps);
            let (rr, pr) = (ratio(i, |r| r.rps), ratio(i, |r| r.p99));
            let (target, met) = match case.target {
                Some((min_rps, max_p99)) => (
                    format!(">= {min_rps}x, p99 <= {max_p99}x"),
                    if rr >= min_rps && pr <= max_p99 {
                        "yes"
                    } else {
                        "no"
                    },
                ),
                None => ("".into(), ""),
            };
            println!(
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {:.2}x | {:.2}x | {target} | {met} | {:.2}x |",
                case.name,
                maxima[i],
                med(i, |r| r.p50),
                med(i, |r| r.p90),
                med(i, |r| r.p99),
                med(i, |r| r.p999),
                med(i, |r| r.max),
                med(i, |r| r.cpu_ms),
                runs[i].iter().map(|r| r.errors).sum::<u64>(),
                rr,
                pr,
                1.0 / ratio(i, |r| r.cpu_ms)
            );
        }
        println!(
            "(load average after: {}). The last column, server CPU per request relative to the floor's, moves much less with the machine's load than req/s: it is what the req/s ratio tends to on a quiet machine where the server, not the load generator, is what saturates.",
            uptime()
        );
    }

    // --- open loop at fractions of each server's measured maximum
    if o.stages.iter().any(|s| s == "open") {
        let fractions = [0.25, 0.5, 0.75, 0.9];
        let open_cases = [0usize, 1, 2];
        let mut points: Vec<Vec<Open>> = (0..cases.len()).map(|_| Vec::new()).collect();
        for &f in &fractions {
            for &i in &open_cases {
                let case = &cases[i];
                let p = open_loop(
                    case.server,
                    case.path,
                    &body,
                    maxima[i] * f,
                    o.open_seconds,
                    o.open_connections,
                );
                println!(
                    "open {:>3.0} % {:40} offered {:>7.0} achieved {:>7.0} req/s p50 {:.2} p99 {:.2} p99.9 {:.2} ms errors {} generator {:.0} µs CPU/req (load {})",
                    f * 100.0,
                    case.name,
                    p.offered,
                    p.achieved,
                    ms(p.p50),
                    ms(p.p99),
                    ms(p.p999),
                    p.errors,
                    p.generator_us,
                    uptime()
                );
                points[i].push(p);
            }
        }
        println!(
            "\nopen loop: our fixed-rate generator (in this process, 2 threads, {} keep-alive connections), {} s per point, latency from each request's intended send time\n",
            o.open_connections, o.open_seconds
        );
        println!(
            "| server | % of its max | offered req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | errors | generator CPU µs/req | kept up |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for &i in &open_cases {
            for (f, p) in fractions.iter().zip(&points[i]) {
                println!(
                    "| {} | {:.0} % | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {} |",
                    cases[i].name,
                    f * 100.0,
                    p.offered,
                    p.achieved,
                    ms(p.p50),
                    ms(p.p99),
                    ms(p.p999),
                    p.errors,
                    p.generator_us,
                    if p.achieved >= 0.97 * p.offered {
                        "yes"
                    } else {
                        "no: saturated (server or generator: they share the cores)"
                    }
                );
            }
        }
        let series: Vec<(&str, Vec<&Open>)> = open_cases
            .iter()
            .map(|&i| (cases[i].name, points[i].iter().collect()))
            .collect();
        let svg = o.out.join("floor-open-loop.svg");
        plot_open(
            &svg,
            "Open-loop latency against offered load (floor and wasmgate)",
            &series,
        );
        println!("\nplot: {}", svg.display());
    }
    if o.stages.iter().any(|s| s == "trace") {
        trace(
            &cases,
            &body,
            o.seconds,
            &[
                "always-pull-images",
                "require-labels",
                "deny-privileged",
                ALLOW_ALL[0],
                ALLOW_ALL[1],
            ],
        );
    }
    if o.stages.iter().any(|s| s == "paced") {
        let compact = Bytes::from(std::fs::read(&compact).unwrap());
        let mut servers = vec![("floor", &floor), ("wasmgate demo", &demo)];
        if let Some(b) = &demo_b {
            servers.push(("demo-b (--against)", b));
        }
        paced(&servers, &compact, o.paced_creates, o.paced_gap);
    }
    drop(floor);
    drop(demo);
    drop(nothing);
    drop(bare);

    // --- Kyverno's shape with the Pod Security Standards policy
    if o.stages.iter().any(|s| s == "kyverno") {
        let policy = std::fs::read_to_string(repo().join("policies/pod-security.yaml"))
            .unwrap()
            .replace(
                "../plugins/dist/",
                &format!("{}/plugins/dist/", repo().display()),
            );
        let kyverno = [
            (100, 1_000, "42.7 ms", "141 ms", "114 Mi"),
            (200, 5_000, "80.7 ms", "409 ms", "215 Mi"),
            (500, 10_000, "204 ms", "1.5 s", "471 Mi"),
        ];
        let mut rows = Vec::new();
        for (clients, total, k_avg, k_max, k_mem) in kyverno {
            // A fresh gateway per shape, so that its peak RSS is this shape's.
            let (server, _) = start(&policy);
            let idle = rss_kib(server.child.id());
            let (avg, max, p99, denied, late, errors) = shape(&server, &body, clients, total);
            let peak = peak_rss_kib(server.child.id());
            println!(
                "kyverno shape {clients}/{total}: avg {avg:.2} ms, p99 {p99:.2} ms, max {max:.2} ms, peak RSS {:.1} MiB (idle {:.1}), denied by the checks {denied}, failed on the 1 s plugin deadline {late}, errors {errors} (load {})",
                peak as f64 / 1024.0,
                idle as f64 / 1024.0,
                uptime()
            );
            rows.push((
                clients, total, avg, max, p99, peak, k_avg, k_max, k_mem, late, errors,
            ));
        }
        println!(
            "\nKyverno's shape: Pod Security Standards (policies/pod-security.yaml, `restricted` for this namespace: the review is denied by it), one gateway, N keep-alive TLS clients connected first, each sending its share one after another. Kyverno's figures are its published ones on its own hardware (one replica, 17 PSS checks): not this machine.\n"
        );
        println!(
            "| clients / requests | wasmgate avg | wasmgate max | wasmgate p99 | wasmgate peak RSS | over the 1 s plugin deadline | errors | Kyverno avg | Kyverno max | Kyverno memory |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (c, t, avg, max, p99, peak, ka, km, kmem, late, errors) in rows {
            println!(
                "| {c} / {t} | {avg:.2} ms | {max:.2} ms | {p99:.2} ms | {:.1} MiB | {late} | {errors} | {ka} | {km} | {kmem} |",
                peak as f64 / 1024.0
            );
        }
    }
    println!("\nload average at the end: {}", uptime());
}
