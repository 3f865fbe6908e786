//! The admission benchmark (issue 2). Starts the real `wasmgate` binary twice, once on the demo
//! policies and once on a policy file in which nothing matches (our own floor: TLS, HTTP, parse,
//! answer), drives each over TLS keep-alive HTTP/1.1 connections with a realistic Pod CREATE
//! review, and prints req/s, latency percentiles and server CPU per request for `/validate` and
//! `/mutate` at several concurrencies; then the per-call cost of one plugin (fresh instance +
//! call), the time from start to first answer, and idle RSS.
//!
//! `cargo bench --bench admission -- [--seconds N] [--concurrency 1,16,64]`
//! `BENCH_PLUGIN=... [BENCH_SETTINGS=...] [BENCH_INITIALIZER=1] [BENCH_REVIEW=review.json] cargo
//! bench --bench admission -- --plugin-only [--cold]`: only the per-call cost of that plugin (with
//! `--cold`, the server's path measured with the caches evicted before each call).
//! The load generator runs in this process and shares the machine's cores with the server.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;

use common::{demo_policy, load, ms, repo, rss_kib, start};

struct Args {
    plugin_only: bool,
    cold: bool,
    seconds: f64,
    concurrency: Vec<usize>,
}

fn args() -> Args {
    let mut args = Args {
        plugin_only: false,
        cold: false,
        seconds: 4.0,
        concurrency: vec![1, 16, 64],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--plugin-only" => args.plugin_only = true,
            "--cold" => args.cold = true,
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

/// Fresh instance + call of one plugin, in process, without HTTP: the runtime's own cost.
fn plugin_call_cost(review: &serde_json::Value, cold: bool) -> (Duration, Duration) {
    // BENCH_PLUGIN=path/to/validator.wasm measures another validator (its settings:
    // BENCH_SETTINGS); with BENCH_INITIALIZER=1 it is an initializer, and only its direct call
    // is measured.
    let plugin_path = std::env::var_os("BENCH_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("plugins/dist/require-labels.wasm"));
    let settings =
        std::env::var("BENCH_SETTINGS").unwrap_or_else(|_| r#"{"labels":["team"]}"#.to_owned());
    if std::env::var_os("BENCH_INITIALIZER").is_some() {
        let kind = wasmgate::config::PluginKind::Initializer;
        let plugin = common::load_plugin(&plugin_path, kind, &settings, false, None).plugin;
        println!(
            "\nplugin: {} initializing the review above",
            plugin_path.display()
        );
        return common::kind_call_cost(&plugin, kind, review, 20_000).unwrap();
    }
    let plugin = common::load_validator(&plugin_path, &settings, false, None).plugin;
    println!(
        "\nplugin: {} validating the review above",
        plugin_path.display()
    );
    let direct = common::call_cost(&plugin, review, 20_000);
    let request =
        wasmgate::wire::AdmissionReview::decode(&serde_json::to_vec(review).unwrap()).unwrap();
    let wit = std::sync::Arc::new(wasmgate::admission::wit_request(&request.request));
    // The same call as the server makes it: from a task of a multi-threaded runtime, through
    // the pool-slot semaphore.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // --cold: each call after 1 ms idle and 16 MiB of other memory touched, as a call at one
    // review at a time through the API server finds the caches (the API server's own work runs
    // between two reviews).
    let n = if cold { 3000 } else { 20_000 };
    let mut pooled = rt.block_on(async {
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut junk = vec![0u8; 16 << 20];
            for i in 0..n {
                if cold {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    for (j, b) in junk.iter_mut().enumerate().step_by(64) {
                        *b = b.wrapping_add(j as u8);
                    }
                    std::hint::black_box(&junk);
                }
                let t = Instant::now();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                let verdict = plugin
                    .validate(&wit, deadline, Duration::from_secs(1))
                    .await
                    .unwrap();
                if i >= 1000 {
                    samples.push(t.elapsed());
                }
                std::hint::black_box(verdict);
            }
            samples
        })
        .await
        .unwrap()
    });
    pooled.sort();
    println!(
        "the same call through the server's path (a task on the multi-threaded runtime){}: p50 {:.1} µs, p99 {:.1} µs",
        if cold {
            ", cold (1 ms idle and 16 MiB touched before each)"
        } else {
            ""
        },
        pooled[pooled.len() / 2].as_secs_f64() * 1e6,
        pooled[pooled.len() * 99 / 100].as_secs_f64() * 1e6
    );
    direct
}

fn main() {
    let args = args();
    let review: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::env::var("BENCH_REVIEW")
                .map(PathBuf::from)
                .unwrap_or_else(|_| repo().join("tests/fixtures/reviews/pod-create.json")),
        )
        .unwrap(),
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

    let (median, p99) = plugin_call_cost(&review, args.cold);
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
        let (server, ready) = start(&demo_policy(floor));
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
