//! What a plugin costs in each language (issue 6): the same `require-labels` validator built from
//! Rust, Python, JavaScript (StarlingMonkey and QuickJS), C and Go. For each: component size,
//! compile time (compile + type check + one trial instantiation, no cache), the per-call cost
//! with a fresh instance (in process), and `/validate` throughput and p99 of the real gateway
//! with that plugin as its only policy, over TLS keep-alive.
//!
//! `cargo bench --bench languages -- [--seconds S] [--concurrency C]`
//! Build the components first: `scripts/build-plugins && scripts/build-polyglot-plugins`.

mod common;

use std::time::Duration;

use bytes::Bytes;

use common::{call_cost, load, load_validator, ms, repo, start};

const LANGUAGES: [(&str, &str); 6] = [
    ("Rust", ""),
    ("C", "c-"),
    ("Go", "go-"),
    ("JavaScript (QuickJS)", "javascript-quickjs-"),
    ("JavaScript (StarlingMonkey)", "javascript-"),
    ("Python", "python-"),
];

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = arg("--seconds", 3.0);
    let concurrency = arg("--concurrency", 16.0) as usize;
    let review: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/fixtures/reviews/pod-create.json")).unwrap(),
    )
    .unwrap();
    let body = Bytes::from(serde_json::to_vec(&review).unwrap());
    let settings = r#"{"labels":["team"]}"#;
    println!(
        "# wasmgate per-language plugin cost: require-labels on a {}-byte Pod CREATE review",
        body.len()
    );
    println!(
        "\n| language | component | compile (no cache) | call p50 | call p99 | call p50, instanceReuse | /validate req/s (c={concurrency}) | p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (language, prefix) in LANGUAGES {
        let path = repo().join(format!("plugins/dist/{prefix}require-labels.wasm"));
        if !path.exists() {
            println!(
                "| {language} | not built ({}) | | | | | | |",
                path.display()
            );
            continue;
        }
        let size = std::fs::metadata(&path).unwrap().len();
        let loaded = load_validator(&path, settings, false, None);
        // Heavy runtimes cost milliseconds a call: fewer samples keep the run short.
        let calls = if loaded.compile > Duration::from_secs(1) {
            1_000
        } else {
            10_000
        };
        let (p50, p99) = call_cost(&loaded.plugin, &review, calls);
        let compile = loaded.compile;
        drop(loaded);
        // The same with `instanceReuse` (warm instances, isolation between requests given up).
        let reuse = Some(wasmgate::runtime::Reuse {
            max_calls: 1_000_000,
            max_idle: 1,
        });
        let (warm_p50, _) = call_cost(
            &load_validator(&path, settings, true, reuse).plugin,
            &review,
            calls,
        );
        let policy = format!(
            "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: require-labels\n    kind: validator\n    module: {}\n    settings: {settings}\n    rules:\n      - {{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}}\n",
            path.display()
        );
        let (server, _) = start(&policy);
        let run = load(
            &server,
            "/validate",
            &body,
            concurrency,
            seconds,
            "\"allowed\":true",
        );
        println!(
            "| {language} | {:.1} KB | {:.2} s | {:.0} µs | {:.0} µs | {:.1} µs | {:.0} | {} |",
            size as f64 / 1024.0,
            compile.as_secs_f64(),
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            warm_p50.as_secs_f64() * 1e6,
            run.rps,
            ms(run.p99)
        );
    }
}
