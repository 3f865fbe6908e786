//! RELIABILITY.md, "Hostile plugins": every hostile test plugin served by one gateway next to a
//! well-behaved policy. For each, the answer the API server gets, the time to answer, and the
//! well-behaved policy's p99 while that plugin is called without pause, against its p99 alone
//! and against its p99 while a second well-behaved policy (the control) is called the same way.
//! Prints the table (`cargo test --release --test all hostile_plugins_table -- --nocapture`);
//! asserts only generous bounds.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Gateway, entry, policy_file, review, write_atomic};

/// Requests of the well-behaved policy per measurement. Its p99 is then the 20th-worst of
/// them: with 300 it was the 3rd-worst, which one scheduling hiccup of the machine decides
/// (p99 alone moved 0.4-1.9 ms from row to row in one quiet run).
const SAMPLES: usize = 2000;

fn hostile(name: &str, settings: &str, extra: &str) -> String {
    entry(
        name,
        "validator",
        "hostile",
        &format!("settings: {settings}\n{extra}"),
    )
}

fn policies() -> String {
    [
        entry(
            "fast",
            "validator",
            "require-labels",
            "settings: {labels: [team]}",
        ),
        entry(
            "control",
            "validator",
            "require-labels",
            "settings: {labels: [team]}",
        ),
        hostile("sleep", "{act: sleep}", "timeout: 100ms"),
        entry("spin", "validator", "spin", "timeout: 100ms"),
        entry(
            "hog-memories",
            "validator",
            "hog-memories",
            "memoryLimit: 16Mi",
        ),
        hostile("recurse", "{act: recurse}", ""),
        hostile("huge", "{act: huge}", ""),
        hostile("warnings", "{act: warnings}", ""),
        hostile("flood", "{act: flood}", ""),
        hostile("partial", "{act: partial}", ""),
    ]
    .concat()
}

/// Rounds of [`fast_p99`] per figure; the median is kept.
const ROUNDS: usize = 3;

/// The median of [`ROUNDS`] p99s of the well-behaved policy: on a shared machine one round's
/// tail is decided by other processes' scheduling as often as by the gateway.
async fn fast_p99_median(gw: &Gateway, client: &reqwest::Client, body: &[u8]) -> Duration {
    let mut p99s = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        p99s.push(fast_p99(gw, client, body).await);
    }
    p99s.sort();
    p99s[ROUNDS / 2]
}

/// p99 of `SAMPLES` sequential calls of the well-behaved policy.
async fn fast_p99(gw: &Gateway, client: &reqwest::Client, body: &[u8]) -> Duration {
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let response = client
            .post(gw.url("/validate/fast"))
            .header("Content-Type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        samples.push(started.elapsed());
    }
    samples.sort();
    samples[SAMPLES * 99 / 100]
}

/// What the API server gets, in short: `allowed`, or the denial's code and message.
fn summary(response: &Value) -> String {
    let mut text = if response["allowed"] == true {
        "allowed".to_owned()
    } else {
        format!(
            "{} {}",
            response["status"]["code"],
            response["status"]["message"].as_str().unwrap_or_default()
        )
    };
    if text.chars().count() > 110 {
        text = text.chars().take(109).collect::<String>() + "…";
    }
    text
}

/// The well-behaved policy's p99 ([`fast_p99_median`]) while `policy` is called without pause,
/// one call at a time, by another client.
async fn p99_meanwhile(
    gw: &Gateway,
    client: &reqwest::Client,
    body: &[u8],
    policy: &str,
) -> Duration {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (client, url, body, stop) = (
            gw.client(),
            gw.url(&format!("/validate/{policy}")),
            body.to_vec(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let meanwhile = fast_p99_median(gw, client, body).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    meanwhile
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[tokio::test]
async fn hostile_plugins_table() {
    let gw = Gateway::start(&policy_file(&policies()));
    let client = gw.client();
    let pod = review("pod-create.json");
    let body = serde_json::to_vec(&pod).unwrap();
    // Warm up, then the well-behaved policy alone.
    fast_p99(&gw, &client, &body).await;
    let alone = fast_p99_median(&gw, &client, &body).await;
    println!(
        "\nwell-behaved policy (require-labels) alone: p99 {}",
        ms(alone)
    );
    println!(
        "\n| hostile plugin | test plugin | answer the API server gets | time to answer | well-behaved p99 alone, just before | p99 with the control called without pause | p99 with the hostile one called without pause | vs alone | vs control |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");

    let rows = [
        (
            "sleeps 30 s in a host call (timeout 100ms)",
            "hostile {act: sleep}",
            "sleep",
        ),
        ("spins forever (timeout 100ms)", "spin", "spin"),
        (
            "memory hog across 5 memories (memoryLimit 16Mi)",
            "hog-memories",
            "hog-memories",
        ),
        ("deep recursion", "hostile {act: recurse}", "recurse"),
        (
            "huge output: a 16 MiB denial message",
            "hostile {act: huge}",
            "huge",
        ),
        ("200,000 warnings", "hostile {act: warnings}", "warnings"),
        (
            "log flood: 1,000 lines a call, forged lines",
            "hostile {act: flood}",
            "flood",
        ),
        (
            "trap after partial output",
            "hostile {act: partial}",
            "partial",
        ),
    ];
    let mut worst = 0f64;
    let mut worst_control = 0f64;
    for (what, plugin, policy) in rows {
        let started = Instant::now();
        let response = gw.answer(&format!("/validate/{policy}"), &pod).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{policy}: {took:?}");
        if policy != "flood" {
            assert!(
                response["allowed"] == false && response["status"]["code"] == 500,
                "{policy}: {response}"
            );
        }
        // Alone again, just before: the machine's load drifts during the run.
        let alone = fast_p99_median(&gw, &client, &body).await;
        // The control: a second well-behaved policy called without pause, as the hostile one
        // is next. What it costs is what any second busy client costs on this machine.
        let control = p99_meanwhile(&gw, &client, &body, "control").await;
        // The hostile policy is called without pause, one call at a time, while the
        // well-behaved one is measured.
        let meanwhile = p99_meanwhile(&gw, &client, &body, policy).await;
        let ratio = meanwhile.as_secs_f64() / alone.as_secs_f64();
        let to_control = meanwhile.as_secs_f64() / control.as_secs_f64();
        worst = worst.max(ratio);
        worst_control = worst_control.max(to_control);
        println!(
            "| {what} | `{plugin}` | {} | {} | {} | {} | {} | {ratio:.2}x | {to_control:.2}x |",
            summary(&response).replace('|', "\\|"),
            ms(took),
            ms(alone),
            ms(control),
            ms(meanwhile)
        );
        // Generous: the target is 2x; a stalled gateway would be 100x or more.
        assert!(
            meanwhile < alone * 20 + Duration::from_millis(200),
            "{policy}: well-behaved p99 {meanwhile:?} vs {alone:?} alone"
        );
    }

    // A start function that traps: the module is refused at reload (and at start-up), the
    // last good snapshot keeps serving.
    let path = gw.path("policies.yaml");
    // Written aside and renamed into place: one change, one rejection.
    write_atomic(
        &path,
        policy_file(&(policies() + &entry("start-trap", "validator", "start-trap", ""))),
    );
    let alone = fast_p99_median(&gw, &client, &body).await;
    let started = Instant::now();
    let measuring = fast_p99(&gw, &client, &body);
    let (meanwhile, error) = tokio::join!(measuring, async {
        loop {
            let ready = gw.readyz().await;
            if ready["reload"]["failed"] == 1 {
                break (
                    started.elapsed(),
                    ready["reload"]["lastError"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{ready}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (took, error) = error;
    assert!(
        error.contains(
            "module fails to instantiate under its limits: trapped: wasm trap: wasm `unreachable`"
        ),
        "{error}"
    );
    let ratio = meanwhile.as_secs_f64() / alone.as_secs_f64();
    worst = worst.max(ratio);
    println!(
        "| trap in a start function | `start-trap` | refused at reload (and start-up): `module fails to instantiate under its limits: trapped: wasm trap: wasm \\`unreachable\\` instruction executed`; the last good snapshot keeps serving | {} (reload rejected) | {} | — | {} | {ratio:.2}x | — |",
        ms(took),
        ms(alone),
        ms(meanwhile)
    );
    println!(
        "\nworst well-behaved p99 ratio: {worst:.2}x vs alone (target 2x), {worst_control:.2}x vs the control"
    );
}

/// CPU time (user + system) the process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which ends with the last ')'): utime and stime are the
    // 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// What a log flood costs the gateway: its CPU time per call of the `hostile` plugin's flood
/// act with 0, 100, 1,000 and 10,000 lines a call (each `log` line also printed to stdout, up
/// to 100), sequential calls. A measurement, not a check:
/// `cargo test --release --test all log_flood_cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement (RELIABILITY.md, the log flood)"]
async fn log_flood_cost() {
    let counts = [0, 100, 1000, 10_000];
    let gw = Gateway::start(&policy_file(
        &counts
            .iter()
            .map(|n| {
                hostile(
                    &format!("flood-{n}"),
                    &format!("{{act: flood, count: {n}}}"),
                    "",
                )
            })
            .collect::<String>(),
    ));
    let pod = review("pod-create.json");
    let body = serde_json::to_vec(&pod).unwrap();
    let client = gw.client();
    println!("\n| lines a call | gateway CPU per call | wall time per call |");
    println!("|---:|---:|---:|");
    for n in counts {
        let url = gw.url(&format!("/validate/flood-{n}"));
        let calls = if n >= 10_000 { 100 } else { 400 };
        let (mut cpu, mut wall) = (Duration::ZERO, Instant::now());
        // 20 calls to warm up, then the measured ones.
        for call in 0..20 + calls {
            if call == 20 {
                (cpu, wall) = (cpu_time(gw.pid()), Instant::now());
            }
            let response = client
                .post(&url)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        let per = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3 / calls as f64);
        println!(
            "| {n} | {} | {} |",
            per(cpu_time(gw.pid()) - cpu),
            per(wall.elapsed())
        );
    }
}
