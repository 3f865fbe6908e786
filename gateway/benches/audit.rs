//! The audit benchmark (issue 3). Starts the real `wasmgate` binary with one sink,
//! `redact-secrets`, writing to a file output, and drives `/audit` over TLS keep-alive
//! HTTP/1.1 connections with batches of 400 realistic events of 1-3 KB (pods with their specs,
//! Secrets with data, ConfigMaps with credentials, RBAC bindings, reads at Metadata), every
//! event unique. Prints:
//!
//! - events/s acknowledged (each 200 only after the batch is in the spool and synced), with the
//!   sink delivering at the same time on the same cores;
//! - events/s delivered through `redact-secrets` to the file (from the first POST to the last
//!   line written);
//! - the latency of one batch: under that load, and alone on an idle gateway;
//! - the gateway's CPU per 1,000 events.
//!
//! `cargo bench --bench audit -- [--batches N] [--concurrency C] [--fsync batch|always|never]
//! [--kafka HOST:PORT]`: with `--kafka`, the sink's output is the topic `audit-bench` (which must
//! exist) on that broker instead of the file, and "delivered" counts the lines the broker
//! acknowledged (the gateway's `wasmgate_audit_sink_output_lines_total`).
//! The load generator runs in this process and shares the machine's cores with the server.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use common::{Conn, Rng, cpu_seconds, ms, percentile, repo, rss_kib, start_with};

/// Events per batch: the API server's default `--audit-webhook-batch-max-size`.
const BATCH: usize = 400;

struct Args {
    batches: usize,
    concurrency: usize,
    fsync: String,
    idle_batches: usize,
    kafka: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        batches: 250,
        concurrency: 4,
        fsync: "batch".into(),
        idle_batches: 40,
        kafka: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--batches" => args.batches = value().parse().expect("--batches N"),
            "--concurrency" => args.concurrency = value().parse().expect("--concurrency C"),
            "--fsync" => args.fsync = value(),
            "--idle-batches" => args.idle_batches = value().parse().expect("--idle-batches N"),
            "--kafka" => args.kafka = Some(value()),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

/// A random version 4 UUID from `rng` (the same every run for one seed).
fn uuid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// One realistic event, 1-3 KB of JSON: the shapes a cluster's audit log is made of.
fn event(rng: &mut Rng, n: u64) -> Value {
    let id = uuid(rng);
    let ns = ["default", "payments", "kube-system", "web", "batch"][rng.below(5) as usize];
    let user = [
        ("alice@example.com", json!(["devs", "system:authenticated"])),
        (
            "system:serviceaccount:kube-system:replicaset-controller",
            json!(["system:serviceaccounts", "system:authenticated"]),
        ),
        (
            "system:kube-controller-manager",
            json!(["system:authenticated"]),
        ),
    ][rng.below(3) as usize]
        .clone();
    let name = format!("app-{n}-{:x}", rng.next() & 0xffff);
    let labels = json!({"app": name, "team": "platform", "tier": "backend", "version": format!("v{}", rng.below(40))});
    let ip = format!(
        "10.{}.{}.{}",
        rng.below(255),
        rng.below(255),
        rng.below(255)
    );
    let base = |verb: &str, resource: &str, level: &str, code: u16| {
        json!({
            "level": level, "auditID": id, "stage": "ResponseComplete",
            "requestURI": format!("/api/v1/namespaces/{ns}/{resource}/{name}"), "verb": verb,
            "user": {"username": user.0, "groups": user.1},
            "sourceIPs": [ip],
            "userAgent": "kubectl/v1.36.0 (linux/amd64) kubernetes/8f2d4ba",
            "objectRef": {"resource": resource, "namespace": ns, "name": name, "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": code},
            "requestReceivedTimestamp": "2026-07-24T04:09:49.123456Z",
            "stageTimestamp": "2026-07-24T04:09:49.127891Z",
            "annotations": {"authorization.k8s.io/decision": "allow",
                "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding \"platform-devs\" of ClusterRole \"edit\" to Group \"devs\""},
        })
    };
    match rng.below(10) {
        // Pod creates with their spec, request and response: the bulk of the bytes.
        0..=3 => {
            let containers = 1 + rng.below(3);
            let spec: Vec<Value> = (0..containers)
                .map(|c| json!({
                    "name": format!("c{c}"), "image": format!("registry.example.com/platform/{name}:{}", rng.below(999)),
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_PASSWORD", "value": format!("pw-{}", rng.next())}],
                    "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                }))
                .collect();
            let pod = json!({"kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"containers": spec, "restartPolicy": "Always", "serviceAccountName": "default"}});
            let mut e = base("create", "pods", "RequestResponse", 201);
            e["requestObject"] = pod.clone();
            e["responseObject"] = pod;
            e
        }
        // Secret creates with data.
        4 => {
            let secret = json!({"kind": "Secret", "apiVersion": "v1", "type": "Opaque",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "data": {"username": "YWRtaW4=", "password": format!("{:x}{:x}", rng.next(), rng.next()),
                    "token": format!("{:x}{:x}{:x}", rng.next(), rng.next(), rng.next())}});
            let mut e = base("create", "secrets", "RequestResponse", 201);
            e["requestObject"] = secret.clone();
            e["responseObject"] = secret;
            e
        }
        // ConfigMap updates with a credential among the keys.
        5 | 6 => {
            let cm = json!({"kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": name, "namespace": ns, "labels": labels, "resourceVersion": format!("{}", rng.below(1 << 30))},
                "data": {"app.properties": "mode=fast\nretries=3\ntimeout=30s\n".repeat(1 + rng.below(8) as usize),
                    "DB_PASSWORD": format!("{:x}", rng.next())}});
            let mut e = base("update", "configmaps", "Request", 200);
            e["requestObject"] = cm;
            e
        }
        // Reads at Metadata, with a padded object reference and user agent: small events.
        _ => {
            let mut e = base(
                ["get", "list", "watch"][rng.below(3) as usize],
                "deployments",
                "Metadata",
                200,
            );
            e["objectRef"]["apiGroup"] = json!("apps");
            e["userAgent"] = json!(format!(
                "{} {}",
                "Mozilla/5.0 (X11; Linux x86_64) kubectl-plugin",
                "x".repeat(700 + rng.below(500) as usize)
            ));
            e
        }
    }
}

/// `count` batches of [`BATCH`] events each, serialized, and how many bytes each event took.
fn batches(count: usize, seed: u64) -> (Vec<Bytes>, Vec<usize>) {
    let mut rng = Rng(seed);
    let mut sizes = Vec::new();
    let mut out = Vec::with_capacity(count);
    for b in 0..count {
        let items: Vec<Value> = (0..BATCH)
            .map(|i| event(&mut rng, (b * BATCH + i) as u64))
            .collect();
        sizes.extend(items.iter().map(|e| serde_json::to_vec(e).unwrap().len()));
        let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items});
        out.push(Bytes::from(serde_json::to_vec(&list).unwrap()));
    }
    (out, sizes)
}

fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn main() {
    let args = args();
    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join("audit.jsonl");
    let destination = match &args.kafka {
        None => format!(
            "{{name: audit, type: file, path: {:?}, maxSize: 8Gi}}",
            output.display()
        ),
        Some(bootstrap) => format!(
            "{{name: audit, type: kafka, bootstrapServers: [{bootstrap:?}], topic: audit-bench}}"
        ),
    };
    let policy = format!(
        "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\nauditSinks:\n  - name: redact-secrets\n    module: {}/plugins/dist/redact-secrets.wasm\n    settings: {{output: audit, keys: [password, token, secret]}}\n    rules:\n      - level: RequestResponse\n    outputs:\n      - {destination}\n",
        repo().display(),
    );
    let (server, startup) = start_with(
        &policy,
        &["--fsync", &args.fsync, "--spool-max-bytes", "8Gi"],
    );
    let pid = server.child.id();
    // Lines delivered so far: in the file, or acknowledged by the broker.
    let kafka = args.kafka.is_some();
    let lines_in = |path: &std::path::Path| -> usize {
        if !kafka {
            return lines_in(path);
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let text = rt.block_on(async {
                        let mut conn = Conn::connect(&server).await.expect("connect");
                        conn.request("GET", "/metrics", Bytes::new())
                            .await
                            .expect("metrics")
                    });
                    String::from_utf8_lossy(&text)
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("wasmgate_audit_sink_output_lines_total{sink=\"redact-secrets\",output=\"audit\"} ")
                        })
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(0.0) as usize
                })
                .join()
                .unwrap()
        })
    };

    eprintln!(
        "generating {} batches of {BATCH} events...",
        args.batches + args.idle_batches
    );
    let (load_batches, sizes) = batches(args.batches, 0x5eed_0001);
    let (alone_wall, alone_cpu) = plugin_alone(&load_batches[0], 30);
    let (idle_batches, _) = batches(args.idle_batches, 0x5eed_0002);
    let total = args.batches * BATCH;
    let body_bytes: usize = load_batches.iter().map(|b| b.len()).sum();
    let mut sorted_sizes = sizes.clone();
    sorted_sizes.sort();
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    // 1. Acknowledged under load, with delivery running alongside.
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let (mut latencies, acked_at) = rt.block_on(async {
        let queue = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let bodies = std::sync::Arc::new(load_batches);
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let mut conn = Conn::connect(&server).await.expect("connect");
            let (queue, bodies) = (queue.clone(), bodies.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = queue.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let t = Instant::now();
                    let answer = conn
                        .request("POST", "/audit?timeout=30s", body.clone())
                        .await
                        .expect("every batch is acknowledged");
                    latencies.push(t.elapsed());
                    assert!(
                        common::memchr(b"\"spooled\":400", &answer),
                        "{}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        (all, started.elapsed())
    });
    latencies.sort();
    let acked_cpu = cpu_seconds(pid) - cpu_before;
    let delivered_during = lines_in(&output);

    // 2. Delivered: until the file output has every event.
    while lines_in(&output) < total {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "delivery stalled at {} of {total}",
            lines_in(&output)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let delivered_at = started.elapsed();
    let total_cpu = cpu_seconds(pid) - cpu_before;
    let file_bytes = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);

    // 3. One batch alone on an idle gateway (delivery of each included in the background).
    let mut idle = rt.block_on(async {
        let mut conn = Conn::connect(&server).await.expect("connect");
        let mut latencies = Vec::new();
        for body in &idle_batches {
            let target = lines_in(&output) + BATCH;
            let t = Instant::now();
            conn.request("POST", "/audit?timeout=30s", body.clone())
                .await
                .expect("acknowledged");
            latencies.push(t.elapsed());
            // Let the sink catch up, so that each batch meets an idle gateway.
            let wait = Instant::now();
            while lines_in(&output) < target && wait.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        latencies
    });
    idle.sort();
    let rss = rss_kib(pid);
    // The sink's own share: fresh instance + deliver() per call, from the gateway's metrics.
    let metrics = rt.block_on(async {
        let mut conn = Conn::connect(&server).await.expect("connect");
        conn.request("GET", "/metrics", Bytes::new())
            .await
            .expect("metrics")
    });
    let metrics = String::from_utf8_lossy(&metrics);
    let series = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let calls = series("wasmgate_plugin_call_duration_seconds_count{policy=\"redact-secrets\"}");
    let call_seconds =
        series("wasmgate_plugin_call_duration_seconds_sum{policy=\"redact-secrets\"}");
    let slow_starts = series("wasmgate_plugin_slow_lane_starts_total{policy=\"redact-secrets\"}");

    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "audit benchmark: redact-secrets -> {} output, fsync {}, {} connections",
        if kafka { "kafka" } else { "file" },
        args.fsync,
        args.concurrency
    );
    println!(
        "  machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!(
        "  events: {total} in {} batches of {BATCH}; event JSON {} B mean, {} B p5, {} B p95; {:.1} MiB of bodies",
        args.batches,
        mean as usize,
        sorted_sizes[sorted_sizes.len() / 20],
        sorted_sizes[sorted_sizes.len() * 19 / 20],
        body_bytes as f64 / (1 << 20) as f64
    );
    println!("  startup to first answer: {} ms", ms(startup));
    println!(
        "  acknowledged: {:.0} events/s ({:.1} batches/s) over {:.2} s; {} of {total} already delivered by then",
        total as f64 / secs(acked_at),
        args.batches as f64 / secs(acked_at),
        secs(acked_at),
        delivered_during
    );
    println!(
        "  batch latency under load: p50 {} ms, p99 {} ms, max {} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    println!(
        "  delivered through redact-secrets to the output: {:.0} events/s (all {total} {:.2} s after the first POST; {:.1} MiB written)",
        total as f64 / secs(delivered_at),
        secs(delivered_at),
        file_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  sink plugin: {:.0} calls, {:.2} ms per call of up to {BATCH} events (fresh instance + deliver), {:.1} µs per event",
        calls,
        call_seconds * 1000.0 / calls.max(1.0),
        call_seconds * 1e6 / (total + idle.len() * BATCH) as f64
    );
    println!(
        "  slow lane: {slow_starts:.0} of {calls:.0} sink calls started there (nice 19) because the call before ran past its allowance (wasmgate_plugin_slow_lane_starts_total)"
    );
    println!(
        "  redact-secrets alone (in process, fresh instance + deliver of {BATCH} events): {} ms wall, {} ms CPU per batch, {:.1} µs CPU per event",
        ms(alone_wall),
        ms(alone_cpu),
        alone_cpu.as_secs_f64() * 1e6 / BATCH as f64
    );
    println!(
        "  batch latency alone on an idle gateway: p50 {} ms, p99 {} ms ({} batches)",
        ms(percentile(&idle, 0.5)),
        ms(percentile(&idle, 0.99)),
        idle.len()
    );
    println!(
        "  gateway CPU: {:.1} ms per 1,000 events acknowledged and delivered ({:.2} s in all; {:.2} s while acknowledging); RSS {} MiB",
        total_cpu * 1e6 / total as f64,
        total_cpu,
        acked_cpu,
        rss / 1024
    );
}

/// redact-secrets alone, in process: `deliver` of one batch in a fresh instance, as the sink
/// task calls it (without HTTP, spool or output). Returns (wall, CPU) per batch: the CPU figure
/// is the process's, so it is not inflated by other processes on the machine.
fn plugin_alone(batch: &Bytes, calls: usize) -> (Duration, Duration) {
    use wasmgate::runtime::{PluginSpec, Runtime, RuntimeConfig, World};
    let runtime = Runtime::new(&RuntimeConfig { cache_dir: None }).unwrap();
    let plugin = std::sync::Arc::new(
        runtime
            .load(PluginSpec {
                name: "redact-secrets".into(),
                kind: World::AuditSink,
                bytes: std::sync::Arc::new(
                    std::fs::read(repo().join("plugins/dist/redact-secrets.wasm")).unwrap(),
                ),
                settings: r#"{"output":"audit","keys":["password","token","secret"]}"#.into(),
                memory_limit: 64 << 20,
                timeout: Duration::from_secs(5),
                reuse: None,
                cluster: None,
            })
            .unwrap(),
    );
    let events: std::sync::Arc<[_]> = wasmgate::wire::audit::decode_event_list(batch)
        .unwrap()
        .into_iter()
        .map(|item| wasmgate::audit::route::to_wit(&item.event.unwrap()))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deliver = |events: &std::sync::Arc<[wasmgate::runtime::AuditEvent]>| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        rt.block_on(plugin.deliver(events, deadline, Duration::from_secs(10)))
            .unwrap()
    };
    for _ in 0..3 {
        deliver(&events);
    }
    let cpu = cpu_seconds(std::process::id());
    let started = Instant::now();
    for _ in 0..calls {
        let lines = deliver(&events);
        assert_eq!(lines.len(), events.len());
    }
    let wall = started.elapsed() / calls as u32;
    let cpu = Duration::from_secs_f64((cpu_seconds(std::process::id()) - cpu) / calls as f64);
    (wall, cpu)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default()
}
