//! Delivery with several batches in flight (issue 17): a slow batch holds back the ones
//! behind it at the outputs (files get batches in spool order), and a kill -9 in the middle of
//! delivery re-delivers what was in flight, without a gap.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::audit::{
    ALL, Dir, event, event_list, eventually, file_output, ids, lines, metric_now, post, sink,
    sinks_file, start,
};

/// Batches of `size` events `b{b}-e{i}`, the ones in `slow` with the verb the sink is slow on.
fn batches(n: usize, size: usize, slow: impl Fn(usize) -> bool) -> Vec<Vec<Value>> {
    (0..n)
        .map(|b| {
            let verb = if slow(b) { "slow" } else { "get" };
            (0..size)
                .map(|i| event(&format!("b{b}-e{i}"), verb, "pods", "Metadata"))
                .collect()
        })
        .collect()
}

fn audit_ids(batches: &[Vec<Value>]) -> Vec<String> {
    batches
        .iter()
        .flatten()
        .map(|e| e["auditID"].as_str().unwrap().to_owned())
        .collect()
}

/// The sink: echo-sink to a file, `spin` iterations on batches with verb `slow`.
fn policy(dir: &Dir, in_flight: u32, spin: u64) -> String {
    sinks_file(&[sink(
        "ordered",
        "echo-sink",
        &format!(
            "{ALL}timeout: 60s\nmaxInFlight: {in_flight}\nsettings: {{slowVerb: slow, spin: {spin}}}\noutputs:\n{}",
            file_output("out", &dir.at("file.jsonl"))
        ),
    )])
}

fn ok_calls(gw: &crate::harness::Gateway) -> f64 {
    metric_now(
        gw,
        "wasmgate_plugin_calls_total{policy=\"ordered\",outcome=\"ok\"}",
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_batch_holds_back_the_batches_behind_it_at_the_file() {
    let dir = Dir::new();
    let spool = dir.at("spool");
    // About a second or more of spinning for the first batch; the others are quick.
    let gw = start(
        &policy(&dir, 4, 2_000_000_000),
        &["--spool-dir", spool.as_str()],
    );
    let sent = batches(6, 20, |b| b == 0);
    for batch in &sent {
        let (status, body) = post(&gw, &event_list(batch)).await;
        assert_eq!(status, 200, "{body}");
    }
    // The batches behind the slow one are done in the plugin while it still runs (they are in
    // flight at once), yet none of their lines may reach the file before its lines do.
    eventually(
        Some(&gw),
        "three plugin calls done",
        Duration::from_secs(60),
        || ok_calls(&gw) >= 3.0,
    )
    .await;
    let early = lines(&dir.path("file.jsonl"));
    let calls = ok_calls(&gw);
    eventually(
        Some(&gw),
        "every event in the file",
        Duration::from_secs(120),
        || lines(&dir.path("file.jsonl")).len() == 120,
    )
    .await;
    let got: Vec<String> = ids(&lines(&dir.path("file.jsonl")))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        got,
        audit_ids(&sent),
        "the file must hold the batches in spool order"
    );
    assert!(
        early.is_empty(),
        "{calls} plugin calls were done while the slow first batch ran ({} lines written): \
         nothing may be written before the first batch's lines",
        early.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_the_middle_of_delivery_redelivers_in_flight_batches_without_gaps() {
    let dir = Dir::new();
    let spool = dir.at("spool");
    let args = ["--spool-dir", spool.as_str(), "--fsync", "always"];
    // Every batch is slow-ish (a few tens of milliseconds), four in flight.
    let policy = policy(&dir, 4, 150_000_000);
    let gw = start(&policy, &args);
    let sent = batches(40, 25, |_| true);
    for batch in &sent {
        let (status, body) = post(&gw, &event_list(batch)).await;
        assert_eq!(status, 200, "{body}");
    }
    // Killed with some batches written and others in flight.
    eventually(
        Some(&gw),
        "some batches in the file",
        Duration::from_secs(120),
        || lines(&dir.path("file.jsonl")).len() >= 100,
    )
    .await;
    let pid = gw.pid();
    drop(gw); // SIGKILL
    let before = lines(&dir.path("file.jsonl")).len();
    eprintln!("killed {pid} with {before} of 1000 lines in the file");
    assert!(
        before < 1000,
        "everything was delivered before the kill: the test proves nothing"
    );

    let gw = start(&policy, &args);
    let want = audit_ids(&sent);
    eventually(
        Some(&gw),
        "every event in the file after the restart",
        Duration::from_secs(120),
        || {
            ids(&lines(&dir.path("file.jsonl")))
                .into_iter()
                .map(|(id, _)| id)
                .collect::<BTreeSet<_>>()
                .len()
                == want.len()
        },
    )
    .await;
    drop(gw);
    let got: Vec<String> = ids(&lines(&dir.path("file.jsonl")))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // Before the kill: a prefix of the spool, in order (whole batches, none skipped).
    assert_eq!(
        got[..before],
        want[..before],
        "written before the kill, in spool order"
    );
    // After the restart: delivery resumed at a batch boundary at or before where it stopped,
    // and went on in order to the end: no gap, and at most the batch being written again.
    let resumed = &got[before..];
    let from = want
        .iter()
        .position(|id| Some(id) == resumed.first())
        .expect("the restart delivers a known event");
    assert_eq!(from % 25, 0, "delivery resumes at a batch boundary");
    assert!(
        from <= before,
        "resumed at {from}, after {before} written: a gap"
    );
    assert_eq!(
        resumed,
        &want[from..],
        "after the restart, in order and without a gap"
    );
    let mut seen = BTreeMap::<&str, usize>::new();
    for id in &got {
        *seen.entry(id).or_default() += 1;
    }
    let duplicates = seen.values().filter(|&&n| n > 1).count();
    assert!(
        duplicates <= 25,
        "{duplicates} events delivered twice: more than the one batch being written at the kill"
    );
}
