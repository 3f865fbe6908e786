//! The hot-reload benchmark (issue 5). Starts the real `wasmgate` binary with one validator whose
//! module file is then replaced, again and again, while closed-loop clients keep asking. Prints
//! the time from the new file landing (an atomic rename) to the first answer of the new version
//! (median and max over the swaps), and the p99 latency of the load with no swaps and during
//! swaps.
//!
//! `cargo bench --bench reload -- [--swaps N] [--concurrency C] [--seconds S]`

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use common::{Conn, Server, arg, ms, repo, start, start_relative};

fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

const V1_DENIES: &str = "missing required labels: team";
const V2_WARNS: &str = "chatty was here";

/// Closed-loop load on `/validate` from `concurrency` connections until `stop`; returns the
/// latencies and the count of answers that were neither version.
async fn clients(
    server: &Server,
    body: &Bytes,
    concurrency: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, usize) {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut conn = Conn::connect(server).await.unwrap();
        let (body, stop) = (body.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut bad) = (Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match conn.request("POST", "/validate", body.clone()).await {
                    Ok(answer)
                        if common::memchr(V1_DENIES.as_bytes(), &answer)
                            || common::memchr(V2_WARNS.as_bytes(), &answer) =>
                    {
                        latencies.push(t.elapsed())
                    }
                    _ => bad += 1,
                }
            }
            (latencies, bad)
        }));
    }
    let (mut all, mut bad) = (Vec::new(), 0);
    for task in tasks {
        let (l, b) = task.await.unwrap();
        all.extend(l);
        bad += b;
    }
    all.sort();
    (all, bad)
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted
        .get(sorted.len() * 99 / 100)
        .copied()
        .unwrap_or_default()
}

fn main() {
    let swaps = arg("--swaps", 40.0) as usize;
    let concurrency = arg("--concurrency", 8.0) as usize;
    let seconds = arg("--seconds", 3.0);
    // `--relative`: the README's form, a relative `--config` and a module named relative to the
    // policy file, in a folder beside it (the watcher must normalise both to see the swaps).
    let relative = std::env::args().any(|a| a == "--relative");
    let work = tempfile::tempdir().unwrap();
    let v1 = repo().join("plugins/dist/require-labels.wasm");
    let v2 = repo().join("tests/plugins/dist/chatty.wasm");
    let policy = |module: &str| {
        format!(
            "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: current\n    kind: validator\n    module: {module}\n    settings: {{labels: [team]}}\n    rules:\n      - {{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*']}}\n"
        )
    };
    let (server, current) = if relative {
        let (server, _) = start_relative(
            &policy("../modules/current.wasm"),
            &[("current.wasm", v1.as_path())],
        );
        let current = server.dir.path().join("modules/current.wasm");
        (server, current)
    } else {
        let current = work.path().join("current.wasm");
        replace(&v1, &current);
        (start(&policy(&current.display().to_string())).0, current)
    };
    let review =
        std::fs::read(repo().join("tests/fixtures/reviews/pod-create-no-team.json")).unwrap();
    let review: serde_json::Value = serde_json::from_slice(&review).unwrap();
    let body = Bytes::from(serde_json::to_vec(&review).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    println!("# wasmgate hot-reload benchmark");
    println!(
        "validator module swapped by rename between require-labels (v1) and chatty (v2); {concurrency} closed-loop clients on /validate"
    );
    println!(
        "{}",
        if relative {
            "config: relative (--config policies/policies.yaml, module ../modules/current.wasm)"
        } else {
            "config: absolute paths"
        }
    );

    let steady = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            flag.store(true, Ordering::Relaxed);
        });
        clients(&server, &body, concurrency, stop).await
    });

    let (swapping, to_serve) = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (stop, body) = (stop.clone(), body.clone());
            let server = &server;
            async move { clients(server, &body, concurrency, stop).await }
        };
        let swapper = async {
            let mut probe = Conn::connect(&server).await.unwrap();
            let mut to_serve = Vec::new();
            for i in 0..swaps {
                let (from, want) = if i % 2 == 0 {
                    (&v2, V2_WARNS)
                } else {
                    (&v1, V1_DENIES)
                };
                let landed = Instant::now();
                replace(from, &current);
                loop {
                    let answer = probe
                        .request("POST", "/validate", body.clone())
                        .await
                        .unwrap();
                    if common::memchr(want.as_bytes(), &answer) {
                        to_serve.push(landed.elapsed());
                        break;
                    }
                    assert!(
                        landed.elapsed() < Duration::from_secs(30),
                        "swap {i} never served"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // Let the load run on the new version for a moment between swaps.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stop.store(true, Ordering::Relaxed);
            to_serve
        };
        let (swapping, to_serve) = tokio::join!(load, swapper);
        (swapping, to_serve)
    });

    let mut sorted = to_serve.clone();
    sorted.sort();
    println!(
        "\nswaps: {swaps}; file landed -> new version answering: median {} ms, max {} ms",
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() - 1])
    );
    println!(
        "(includes the watcher's {} ms debounce)",
        wasmgate::reload::DEBOUNCE.as_millis()
    );
    println!("\n| load | answers | wrong or failed | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for (label, (latencies, bad)) in [("steady (no swaps)", &steady), ("during swaps", &swapping)] {
        println!(
            "| {label} | {} | {bad} | {} | {} |",
            latencies.len(),
            ms(latencies[latencies.len() / 2]),
            ms(p99(latencies))
        );
    }
    println!(
        "\np99 during swaps / steady p99: {:.2}x",
        p99(&swapping.0).as_secs_f64() / p99(&steady.0).as_secs_f64()
    );
}
