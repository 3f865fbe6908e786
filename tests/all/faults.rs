//! The audit spool under faults, each test a row of RELIABILITY.md's "Faults" table: a full
//! disk, kill -9 during intake, a sink's cursor lost, an output down for an hour's worth of
//! events; and the SIGTERM drain, bounded dead letters, and outputs kept out of the spool.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::audit::{
    ALL, Dir, Receiver, event, event_list, eventually, file_output, free_port, ids, lines, metric,
    post, sink, sinks_file, start,
};
use crate::harness::{Gateway, module};

/// A tmpfs of `bytes` mounted on a fresh directory, unmounted when dropped. Needs root (the
/// tests run as root here and in CI).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed (needs root)");
        Tmpfs(dir)
    }

    fn at(&self, name: &str) -> String {
        self.0.path().join(name).display().to_string()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// `n` events named `{prefix}-{i}`.
fn batch(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| event(&format!("{prefix}-{i}"), "get", "pods", "Metadata"))
        .collect()
}

fn audit_ids(events: &[Value]) -> impl Iterator<Item = String> + '_ {
    events
        .iter()
        .map(|e| e["auditID"].as_str().unwrap().to_owned())
}

/// An HTTP output named `out` to `127.0.0.1:port`.
fn http_output(port: u16, batch_lines: u32) -> String {
    format!(
        "  - {{name: out, type: http, url: \"http://127.0.0.1:{port}/\", batchLines: {batch_lines}}}\n"
    )
}

fn sigterm(gw: &Gateway) {
    let status = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Lines the receiver accepted (200), counted without parsing them.
async fn received_lines(receiver: &Receiver) -> usize {
    receiver
        .requests
        .lock()
        .await
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body.lines().count())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_answers_503_loses_nothing_and_recovers_by_itself() {
    // The spool's volume is smaller than --spool-max-bytes: the disk fills first.
    let fs = Tmpfs::mount(512 << 10);
    let port = free_port();
    let policy = sinks_file(&[sink(
        "forward",
        "echo-sink",
        &format!("{ALL}outputs:\n{}", http_output(port, 500)),
    )]);
    let spool = fs.at("spool");
    let gw = start(
        &policy,
        &["--spool-dir", &spool, "--spool-max-bytes", "64Mi"],
    );
    // The output is down, so nothing is reclaimed: batches of 20 until the disk is full.
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    let mut b = 0;
    while refused < 3 {
        let events = batch(&format!("b{b}"), 20);
        let (status, body) = post(&gw, &event_list(&events)).await;
        match status {
            200 => acknowledged.extend(audit_ids(&events)),
            503 => {
                assert!(
                    body["message"]
                        .as_str()
                        .unwrap()
                        .contains("No space left on device"),
                    "{body}"
                );
                refused += 1;
            }
            _ => panic!("{status} {body}"),
        }
        b += 1;
        assert!(b < 1000, "the disk never filled");
    }
    assert!(acknowledged.len() > 200, "{}", acknowledged.len());
    assert!(metric(&gw, "wasmgate_audit_requests_total{result=\"error\"}").await >= 3.0);
    eprintln!(
        "disk full after {} acknowledged events; 503 for {refused} batches",
        acknowledged.len()
    );

    // The output comes back: the sink delivers, the spool reclaims its segment by itself, and
    // intake takes batches again, with no one freeing space by hand.
    let receiver = Receiver::start(port, None, 0).await;
    let back = Instant::now();
    let late = batch("late", 20);
    let end = Instant::now() + Duration::from_secs(60);
    let recovered_after = loop {
        let (status, body) = post(&gw, &event_list(&late)).await;
        if status == 200 {
            break Instant::now();
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < end,
            "intake never recovered:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    acknowledged.extend(audit_ids(&late));
    eventually(
        Some(&gw),
        "every acknowledged event delivered",
        Duration::from_secs(60),
        || receiver.ids() == acknowledged,
    )
    .await;
    eprintln!(
        "intake recovered {:?} after the output came back; {} events delivered, none lost",
        recovered_after - back,
        acknowledged.len()
    );
    let logs = gw.logs().join("\n");
    assert!(!logs.contains("skipping the unreadable rest"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_intake_loses_no_acknowledged_event() {
    let dir = Dir::new();
    let port = free_port();
    // A slow destination (20 ms per POST of 50 lines), so that a backlog is spooled at the kill.
    let receiver = Receiver::start_slow(port, None, 0, Duration::from_millis(20)).await;
    let policy = sinks_file(&[sink(
        "forward",
        "echo-sink",
        &format!("{ALL}outputs:\n{}", http_output(port, 50)),
    )]);
    let spool = dir.at("spool");
    let args = ["--spool-dir", spool.as_str()];
    let gw = Arc::new(start(&policy, &args));
    // 8 clients post batches of 50 without pause; the gateway is killed while they do.
    let acknowledged = Arc::new(tokio::sync::Mutex::new(BTreeSet::new()));
    let sent = Arc::new(tokio::sync::Mutex::new(BTreeSet::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (gw, acknowledged, sent, killed) = (
            gw.clone(),
            acknowledged.clone(),
            sent.clone(),
            killed.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = gw.client();
            let url = gw.url("/audit?timeout=30s");
            for b in 0.. {
                if killed.load(Ordering::SeqCst) {
                    return;
                }
                let events = batch(&format!("c{c}-b{b}"), 50);
                sent.lock().await.extend(audit_ids(&events));
                let answer = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(&event_list(&events)).unwrap())
                    .send()
                    .await;
                match answer {
                    Ok(response) if response.status() == 200 => {
                        acknowledged.lock().await.extend(audit_ids(&events));
                    }
                    _ => return,
                }
            }
        }));
    }
    // Killed once a backlog the slow destination drains in seconds is acknowledged (a fixed
    // wait let a fast intake spool over 100,000 events, 40 s of draining at 2,500 lines/s).
    let started = std::time::Instant::now();
    while acknowledged.lock().await.len() < 5_000 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = gw.pid();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    killed.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    drop(gw);
    let acknowledged = acknowledged.lock().await.clone();
    let sent = sent.lock().await.clone();
    assert!(acknowledged.len() >= 400, "{}", acknowledged.len());
    let before = received_lines(&receiver).await;
    assert!(before < acknowledged.len(), "no backlog at the kill");

    let gw = start(&policy, &args);
    let delivered = || receiver.ids();
    eventually(
        Some(&gw),
        "every acknowledged event delivered after the restart",
        Duration::from_secs(60),
        || delivered().is_superset(&acknowledged),
    )
    .await;
    // What was in flight may have made it into the spool unanswered; nothing else appears.
    assert!(delivered().is_subset(&sent));
    let logs = gw.logs().join("\n");
    assert!(logs.contains("\"corrupt_records\":0"), "{logs}");
    eprintln!(
        "killed {pid} during intake: {} acknowledged, {} delivered before the kill, {} in flight \
         and not acknowledged, all acknowledged delivered after the restart",
        acknowledged.len(),
        before,
        sent.len() - acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_cursor_delivers_the_backlog_again_and_says_so() {
    let dir = Dir::new();
    let port = free_port();
    // A small spool, so that segments are small and the sink that keeps up reclaims them as it
    // goes, unless the spool knows the other one still needs them.
    let policy = sinks_file(&[
        sink(
            "keeps-up",
            "echo-sink",
            &format!(
                "{ALL}outputs:\n{}",
                file_output("out", &dir.at("file.jsonl"))
            ),
        ),
        sink(
            "behind",
            "echo-sink",
            &format!("{ALL}outputs:\n{}", http_output(port, 100)),
        ),
    ]);
    let spool = dir.at("spool");
    let args = ["--spool-dir", spool.as_str(), "--spool-max-bytes", "2Mi"];
    let gw = start(&policy, &args);
    let mut acknowledged = BTreeSet::new();
    for b in 0..20 {
        let events = batch(&format!("b{b}"), 50);
        let (status, body) = post(&gw, &event_list(&events)).await;
        assert_eq!(status, 200, "{body}");
        acknowledged.extend(audit_ids(&events));
    }
    eventually(
        Some(&gw),
        "the first sink done",
        Duration::from_secs(30),
        || lines(&dir.path("file.jsonl")).len() == acknowledged.len(),
    )
    .await;
    eventually(
        Some(&gw),
        "the first sink's cursor saved at the end",
        Duration::from_secs(10),
        || {
            crate::audit::metric_now(&gw, "wasmgate_audit_sink_lag_events{sink=\"keeps-up\"}")
                == Some(0.0)
        },
    )
    .await;
    drop(gw); // kill -9, with the second sink's output down all along
    // Its cursor is lost: zeros, as a power loss may leave a file that was never synced.
    let cursor = dir.path("spool/cursors/behind.json");
    let len = std::fs::metadata(&cursor).unwrap().len() as usize;
    std::fs::write(&cursor, vec![0u8; len]).unwrap();

    let receiver = Receiver::start(port, None, 0).await;
    let gw = start(&policy, &args);
    eventually(
        Some(&gw),
        "the backlog of the sink whose cursor was lost delivered",
        Duration::from_secs(60),
        || receiver.ids() == acknowledged,
    )
    .await;
    assert_eq!(
        metric(
            &gw,
            "wasmgate_audit_sink_cursor_errors_total{sink=\"behind\"}"
        )
        .await,
        1.0
    );
    let ready = gw.readyz().await;
    let error = ready["auditSinkErrors"]["behind"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("cursor unreadable") && error.contains("oldest retained event"),
        "{ready}"
    );
    assert!(
        ready["auditSinkErrors"].get("keeps-up").is_none(),
        "{ready}"
    );
    let logs = gw.logs().join("\n");
    assert!(
        logs.contains(
            "cannot read the audit cursor, delivering again from the oldest retained event"
        ),
        "{logs}"
    );
    // The other sink lost nothing and saw nothing twice.
    assert_eq!(
        lines(&dir.path("file.jsonl")).len(),
        acknowledged.len(),
        "keeps-up delivered again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_down_for_an_hours_worth_of_events_gets_all_of_them() {
    // A busy API server at 50 events/s for an hour: 180,000 events, posted as the API server
    // does (batches of 400) while the output is down.
    const EVENTS: usize = 180_000;
    const BATCH: usize = 400;
    let port = free_port();
    let gw = start(
        &sinks_file(&[sink(
            "forward",
            "echo-sink",
            &format!("{ALL}outputs:\n{}", http_output(port, 2000)),
        )]),
        &[],
    );
    let started = Instant::now();
    let mut bytes = 0;
    for b in 0..EVENTS / BATCH {
        let body = event_list(&batch(&format!("h{b}"), BATCH));
        bytes += serde_json::to_vec(&body).unwrap().len();
        let (status, answer) = post(&gw, &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["spooled"], BATCH, "{answer}");
    }
    let intake = started.elapsed();
    let spooled = metric(&gw, "wasmgate_audit_spool_bytes").await;
    assert!(
        metric(&gw, "wasmgate_audit_sink_lag_events{sink=\"forward\"}").await > 0.0,
        "the output is down: nothing delivered"
    );
    // The output comes back.
    let receiver = Receiver::start(port, None, 0).await;
    let back = Instant::now();
    let end = back + Duration::from_secs(300);
    while received_lines(&receiver).await < EVENTS {
        assert!(
            Instant::now() < end,
            "not delivered within 5 minutes:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let delivery = back.elapsed();
    let expected: BTreeSet<String> = (0..EVENTS / BATCH)
        .flat_map(|b| (0..BATCH).map(move |i| format!("h{b}-{i}")))
        .collect();
    assert_eq!(receiver.ids(), expected);
    assert_eq!(
        metric(
            &gw,
            "wasmgate_audit_sink_events_delivered_total{sink=\"forward\"}"
        )
        .await,
        EVENTS as f64
    );
    eprintln!(
        "{EVENTS} events ({} MiB of EventLists, {} MiB spooled) acknowledged in {:.1} s while the \
         output was down; all delivered {:.1} s after it came back ({:.0} events/s)",
        bytes >> 20,
        spooled as u64 >> 20,
        intake.as_secs_f64(),
        delivery.as_secs_f64(),
        EVENTS as f64 / delivery.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_the_sinks_with_audit_refused_then_the_rest_resumes_after_restart() {
    let dir = Dir::new();
    let port = free_port();
    let policy = sinks_file(&[sink(
        "forward",
        "echo-sink",
        &format!("{ALL}outputs:\n{}", http_output(port, 10)),
    )]);
    let spool = dir.at("spool");
    let args = ["--spool-dir", spool.as_str(), "--audit-drain-timeout", "3s"];
    // Each POST of 10 lines takes 100 ms: 1,000 events take 10 s to deliver.
    let receiver = Receiver::start_slow(port, None, 0, Duration::from_millis(100)).await;
    let mut gw = start(&policy, &args);
    let mut acknowledged = BTreeSet::new();
    for b in 0..10 {
        let events = batch(&format!("b{b}"), 100);
        let (status, body) = post(&gw, &event_list(&events)).await;
        assert_eq!(status, 200, "{body}");
        acknowledged.extend(audit_ids(&events));
    }
    let term = Instant::now();
    sigterm(&gw);
    // During the drain: /audit refuses (the API server sends to another replica), readiness
    // is off, and admission-side endpoints still answer.
    let during = batch("during", 5);
    let mut refused = false;
    for _ in 0..20 {
        let (status, body) = post(&gw, &event_list(&during)).await;
        assert_ne!(status, 200, "accepted during the drain: {body}");
        if status == 503 {
            assert!(
                body["message"].as_str().unwrap().contains("shutting down"),
                "{body}"
            );
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "/audit did not answer 503 during the drain");
    let ready = gw.client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    // The sinks stop at the drain timeout, not when the backlog is done, and the process
    // exits cleanly.
    let status = tokio::task::block_in_place(|| gw.wait(Duration::from_secs(15)))
        .expect("still running 15 s after SIGTERM");
    let exited = term.elapsed();
    assert!(status.success(), "{status:?}\n{}", gw.logs().join("\n"));
    assert!(
        exited < Duration::from_secs(10),
        "took {exited:?}: the drain timeout of 3 s did not hold"
    );
    let (delivered_during, total_before) = {
        let requests = receiver.requests.lock().await;
        let during: usize = requests
            .iter()
            .filter(|r| r.status == 200 && r.at > term)
            .map(|r| r.body.lines().count())
            .sum();
        let all: usize = requests
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.body.lines().count())
            .sum();
        (during, all)
    };
    assert!(delivered_during > 0, "no delivery during the drain");
    assert!(
        total_before < acknowledged.len(),
        "the backlog was meant to outlast the drain"
    );
    let logs = gw.logs().join("\n");
    assert!(logs.contains("audit sinks stopped"), "{logs}");
    drop(gw);

    // The restart resumes from the spool: every acknowledged event exactly once after dedup.
    let gw = start(&policy, &args);
    eventually(
        Some(&gw),
        "the rest delivered after the restart",
        Duration::from_secs(60),
        || receiver.ids() == acknowledged,
    )
    .await;
    let total: usize = {
        let requests = receiver.requests.lock().await;
        requests
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.body.lines().count())
            .sum()
    };
    eprintln!(
        "SIGTERM with {} events spooled: {delivered_during} delivered during the 3 s drain, exit after {exited:?}, \
         {} delivered after the restart, {} delivered twice",
        acknowledged.len(),
        total - total_before,
        total - acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_stop_at_their_budget_counted_and_logged() {
    let dir = Dir::new();
    let policy = sinks_file(&[sink(
        "poison",
        "poison-sink",
        &format!(
            "settings: {{poison: bad, mode: error}}\n{ALL}outputs:\n{}maxAttempts: 1\n",
            file_output("out", &dir.at("out.jsonl"))
        ),
    )]);
    let spool = dir.at("spool");
    let gw = start(
        &policy,
        &[
            "--spool-dir",
            &spool,
            "--spool-max-bytes",
            "1Mi",
            "--dead-letter-max-bytes",
            "4Ki",
        ],
    );
    // Each poison batch (one event) makes a dead letter of about 700 bytes.
    for i in 0..12 {
        let poison = event("bad", "get", &format!("pods-{i}"), "Metadata");
        let (status, body) = post(&gw, &event_list(&[poison])).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = post(
        &gw,
        &event_list(&[event("good", "get", "pods", "Metadata")]),
    )
    .await;
    assert_eq!(status, 200);
    eventually(
        Some(&gw),
        "the good event past the poison",
        Duration::from_secs(30),
        || ids(&lines(&dir.path("out.jsonl"))).len() == 1,
    )
    .await;
    let file = dir.path("spool/dead-letter/poison.jsonl");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size <= 4096, "{size}");
    let written = lines(&file).len() as f64;
    let dropped = metric(
        &gw,
        "wasmgate_audit_sink_events_dead_letter_dropped_total{sink=\"poison\"}",
    )
    .await;
    assert!(written >= 4.0 && dropped >= 1.0, "{written} {dropped}");
    assert_eq!(
        written + dropped,
        12.0,
        "every poison event written or counted"
    );
    assert_eq!(
        metric(
            &gw,
            "wasmgate_audit_sink_events_dead_lettered_total{sink=\"poison\"}"
        )
        .await,
        written
    );
    let logs = gw.logs().join("\n");
    assert!(logs.contains("the dead-letter budget is full"), "{logs}");
    eventually(
        Some(&gw),
        "the dead-letter bytes in the metrics",
        Duration::from_secs(5),
        || crate::audit::metric_now(&gw, "wasmgate_audit_dead_letter_bytes") == Some(size as f64),
    )
    .await;
}

#[test]
fn an_output_inside_the_spool_directory_is_refused_at_load() {
    let dir = Dir::new();
    let policy = sinks_file(&[sink(
        "inside",
        "echo-sink",
        &format!(
            "{ALL}outputs:\n{}",
            file_output("out", &dir.at("state/spool/../spool/out/audit.jsonl"))
        ),
    )]);
    std::fs::write(dir.path("policies.yaml"), &policy).unwrap();
    let _ = module("echo-sink");
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path("policies.yaml"))
        .arg("--state-dir")
        .arg(dir.path("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = policy
        .lines()
        .position(|l| l.contains("- name: inside"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "policies.yaml:{line}: audit sink \"inside\": output \"out\" writes to"
        )) && stderr.contains("inside the audit spool directory"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_puts_an_output_inside_the_spool_is_rejected() {
    let dir = Dir::new();
    let spool = dir.at("spool");
    let policy = |path: &str| {
        sinks_file(&[sink(
            "s",
            "echo-sink",
            &format!("{ALL}outputs:\n{}", file_output("out", path)),
        )])
    };
    let gw = start(&policy(&dir.at("out.jsonl")), &["--spool-dir", &spool]);
    // Written aside and renamed into place, as editors and ConfigMaps do.
    let tmp = gw.path("policies.yaml.tmp");
    std::fs::write(&tmp, policy(&format!("{spool}/dead-letter/out.jsonl"))).unwrap();
    std::fs::rename(&tmp, gw.path("policies.yaml")).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let ready = gw.readyz().await;
        if ready["reload"]["failed"] == 1 {
            break ready;
        }
        assert!(Instant::now() < end, "the reload was not rejected: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = ready["reload"]["lastError"].as_str().unwrap();
    assert!(
        error.contains("policies.yaml:")
            && error.contains("output \"out\" writes to")
            && error.contains("inside the audit spool directory"),
        "{error}"
    );
    // The last good configuration still takes and delivers events.
    let (status, _) = post(&gw, &event_list(&batch("after", 3))).await;
    assert_eq!(status, 200);
    eventually(
        Some(&gw),
        "delivery to the old output",
        Duration::from_secs(30),
        || lines(&dir.path("out.jsonl")).len() == 3,
    )
    .await;
}

/// Out of file descriptors (EMFILE): the gateway's open-file soft limit is lowered (prlimit) to
/// what it holds, so that the spool cannot open its next segment. Batches sent on a connection
/// opened before get 503 (nothing is acknowledged that was not written), and once the limit is
/// back intake answers 200 again by itself, and every acknowledged event is delivered once.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_file_descriptors_answers_503_and_recovers_when_they_return() {
    let dir = Dir::new();
    let out = dir.path("out.jsonl");
    let policy = sinks_file(&[sink(
        "file",
        "echo-sink",
        &format!(
            "{ALL}outputs:\n{}",
            file_output("out", &out.display().to_string())
        ),
    )]);
    // Small segments (a 256 KiB spool has 32 KiB ones): a roll every few batches.
    let gw = start(&policy, &["--spool-max-bytes", "256Ki"]);
    let pid = gw.pid().to_string();
    let client = gw.client();
    let send = |events: Vec<Value>| {
        let request = client
            .post(gw.url("/audit?timeout=30s"))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&event_list(&events)).unwrap());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let mut acknowledged = BTreeSet::new();
    let first = batch("first", 20);
    assert_eq!(send(first.clone()).await.0, 200);
    acknowledged.extend(audit_ids(&first));
    let prlimit = |limit: &str| {
        let status = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={limit}")])
            .status()
            .unwrap();
        assert!(status.success(), "prlimit --nofile={limit}");
    };
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let (soft, hard) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[3].to_owned(), f[4].to_owned())
        })
        .unwrap();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    prlimit(&format!("{open}:{hard}"));
    let mut refused = 0;
    let mut b = 0;
    let mut message = String::new();
    while refused < 3 {
        let events = batch(&format!("b{b}"), 20);
        let (status, body) = send(events.clone()).await;
        match status {
            200 => acknowledged.extend(audit_ids(&events)),
            503 => {
                message = body["message"].as_str().unwrap_or_default().to_owned();
                assert!(message.contains("Too many open files"), "{body}");
                refused += 1;
            }
            _ => panic!("{status} {body}"),
        }
        b += 1;
        assert!(b < 200, "the spool never needed a descriptor");
    }
    prlimit(&format!("{soft}:{hard}"));
    let back = Instant::now();
    let late = batch("late", 20);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = send(late.clone()).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < end, "intake never recovered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = back.elapsed();
    acknowledged.extend(audit_ids(&late));
    eventually(
        Some(&gw),
        "every acknowledged event delivered",
        Duration::from_secs(60),
        || {
            let delivered: Vec<String> = lines(&out)
                .iter()
                .map(|l| l["auditID"].as_str().unwrap_or_default().to_owned())
                .collect();
            delivered.len() == acknowledged.len()
                && delivered.iter().cloned().collect::<BTreeSet<_>>() == acknowledged
        },
    )
    .await;
    println!(
        "EMFILE: open-file limit lowered to the {open} held: 503 for {refused} batches ({message}); \
         200 again {recovered:.2?} after it came back; all {} acknowledged events delivered once",
        acknowledged.len()
    );
}
