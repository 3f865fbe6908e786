//! The cost of a `cluster` lookup (issue 16): the gateway's context caches filled from a file of
//! N Ingresses across 100 namespaces (the same caches `serve` fills from its watchers), a
//! policy's view of them, and:
//! - `get` of one object, `list` of one namespace, of one namespace with a label selector, and
//!   of every namespace, timed in process (median of batches, per lookup);
//! - a whole `unique-ingress-host` call (fresh instance, `list` of every Ingress, JSON parsed
//!   in the plugin), median and p99.
//!
//! With `BENCH_KUBECONFIG` (a cluster holding the Ingresses: `tests/e2e/validate_context.py`
//! starts one and runs this), instead: `/validate` req/s of the real binary (`serve --kubeconfig`)
//! with an Ingress CREATE review at concurrency 16, on the demo policies (nothing matches an
//! Ingress: the floor) and on the demo policies plus `unique-ingress-host`, side by side.
//!
//! `cargo bench --bench context -- [--calls N] [--seconds S]` (needs `scripts/build-plugins`)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmgate::config::{Config, PluginKind};
use wasmgate::context::{ClusterState, Limits, file};
use wasmgate::runtime::{ClusterView, GroupVersionResource, PluginSpec, Runtime, RuntimeConfig};
use wasmgate::telemetry::Metrics;

use common::{arg, kind_call_cost, load, ms, repo, start_with};

const NAMESPACES: usize = 100;

fn ingress(i: usize) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": format!("ing-{i}"), "namespace": format!("ns-{}", i % NAMESPACES),
            "labels": {"app": format!("app-{}", i % 10)}, "uid": format!("uid-{i}"),
            "resourceVersion": "1", "creationTimestamp": "2026-12-03T10:00:00Z"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": format!("h{i}.example.com"),
            "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
}

/// Nanoseconds per call of `f`: the median of 15 batches of `n` calls.
fn per_call(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut batches: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[batches.len() / 2]
}

fn micros(ns: f64) -> String {
    format!("{:.2} µs", ns / 1000.0)
}

/// `/validate` req/s of `serve --kubeconfig KUBECONFIG` on the demo policies, without and with
/// `unique-ingress-host`, driven with `review` (an Ingress CREATE with a free host).
fn validate_rps(kubeconfig: &str, review: &Value) {
    let seconds = arg("seconds", 4.0);
    let demo = std::fs::read_to_string(repo().join("policies/demo.yaml"))
        .unwrap()
        .replace(
            "../plugins/dist/",
            &format!("{}/plugins/dist/", repo().display()),
        );
    // The policy goes first in `policies:` (the demo file goes on with `auditSinks:`).
    let with_unique = demo.replacen(
        "\npolicies:\n",
        &format!(
            "\npolicies:\n  - name: unique-ingress-host\n    kind: validator\n    module: {}\n    rules: [{{operations: [CREATE, UPDATE], apiGroups: [networking.k8s.io], apiVersions: [v1], resources: [ingresses]}}]\n    context: [{{apiGroup: networking.k8s.io, version: v1, resource: ingresses}}]\n",
            repo().join("plugins/dist/unique-ingress-host.wasm").display()
        ),
        1,
    );
    assert_ne!(
        with_unique, demo,
        "policies/demo.yaml has no `policies:` line"
    );
    let body = bytes::Bytes::from(review.to_string());
    println!(
        "\n| policies (serve --kubeconfig) | /validate conc | req/s | p50 ms | p99 ms | server CPU ms/req | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rps = Vec::new();
    for (label, policy) in [
        ("demo (no Ingress policy: floor)", demo.clone()),
        ("demo + unique-ingress-host", with_unique),
    ] {
        let (server, _) = start_with(&policy, &["--kubeconfig", kubeconfig]);
        // Until the Ingress cache has synced a lookup is `not-ready` (the policy fails).
        std::thread::sleep(Duration::from_secs(3));
        let run = load(&server, "/validate", &body, 16, seconds, "\"allowed\":true");
        println!(
            "| {label} | 16 | {:.0} | {} | {} | {:.3} | {} |",
            run.rps,
            ms(run.p50),
            ms(run.p99),
            run.cpu_ms_per_request,
            run.errors
        );
        rps.push(run.rps);
    }
    println!(
        "\nunique-ingress-host: {:.0} % of the floor's req/s",
        rps[1] / rps[0] * 100.0
    );
}

fn main() {
    let calls = arg("calls", 200.0) as usize;
    let dir = tempfile::tempdir().unwrap();
    let module = repo().join("plugins/dist/unique-ingress-host.wasm");
    let policy = dir.path().join("policies.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: unique-ingress-host\n    kind: validator\n    module: {}\n    rules: [{{operations: [CREATE], apiGroups: [networking.k8s.io], apiVersions: [v1], resources: [ingresses]}}]\n    context: [{{apiGroup: networking.k8s.io, version: v1, resource: ingresses}}]\n",
            module.display()
        ),
    )
    .unwrap();
    let config = Config::load(&policy).unwrap();
    let runtime = Runtime::new(&RuntimeConfig { cache_dir: None }).unwrap();
    let gvr = GroupVersionResource {
        group: "networking.k8s.io".into(),
        version: "v1".into(),
        resource: "ingresses".into(),
    };
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "b1", "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
            "name": "new", "namespace": "ns-new", "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "new", "namespace": "ns-new"},
                "spec": {"rules": [{"host": "free.example.com"}]}}}});
    if let Ok(kubeconfig) = std::env::var("BENCH_KUBECONFIG") {
        validate_rps(&kubeconfig, &review);
        return;
    }
    println!(
        "| Ingresses cached | get | list one namespace | list one namespace, selector | list all | unique-ingress-host call p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in [100usize, 1_000, 10_000] {
        let objects = file::group((0..n).map(ingress).collect()).unwrap();
        let cluster =
            ClusterState::from_objects(objects, Limits::default(), Arc::new(Metrics::new()));
        cluster.prepare(&config).unwrap();
        let view = cluster
            .view("unique-ingress-host", &config.entries[0].entry.context)
            .unwrap();
        let get = per_call(10_000, |i| {
            let name = format!("ing-{}", i % n);
            let ns = format!("ns-{}", i % n % NAMESPACES);
            std::hint::black_box(view.get(&gvr, &ns, &name).unwrap().unwrap());
        });
        let list_ns = per_call(1_000, |i| {
            let ns = format!("ns-{}", i % NAMESPACES);
            std::hint::black_box(view.list(&gvr, &ns, "").unwrap());
        });
        let list_sel = per_call(1_000, |i| {
            let ns = format!("ns-{}", i % NAMESPACES);
            std::hint::black_box(view.list(&gvr, &ns, "app in (app-3, app-4)").unwrap());
        });
        let list_all = per_call(if n > 1_000 { 20 } else { 200 }, |_| {
            std::hint::black_box(view.list(&gvr, "", "").unwrap());
        });
        let plugin = Arc::new(
            runtime
                .load(PluginSpec {
                    name: "unique-ingress-host".into(),
                    kind: wasmgate::runtime::World::Validator,
                    bytes: Arc::new(std::fs::read(&module).unwrap()),
                    settings: "{}".into(),
                    memory_limit: 64 << 20,
                    timeout: Duration::from_secs(5),
                    reuse: None,
                    cluster: Some(view.clone() as Arc<dyn ClusterView>),
                })
                .unwrap(),
        );
        let per_n = if n >= 10_000 { calls / 10 } else { calls }.max(20);
        let (p50, p99) = kind_call_cost(&plugin, PluginKind::Validator, &review, per_n).unwrap();
        println!(
            "| {n} | {} | {} | {} | {} | {:.3} ms | {:.3} ms |",
            micros(get),
            micros(list_ns),
            micros(list_sel),
            micros(list_all),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}
