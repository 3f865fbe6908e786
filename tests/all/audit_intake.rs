//! The audit intake under large and odd batches: memory stays a small multiple of the body
//! whatever the items are, an event over the per-event limit is truncated as the API server's
//! truncate backend does, a batch over the body limit is read and split (never 413), and a full
//! spool answers 503 before the body is read.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Gateway, Options, module};

struct Audited {
    gw: Gateway,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

/// A gateway whose one sink (`echo-sink`, every event at RequestResponse) writes to a file, or
/// to `http` when given.
fn audited(args: &[&str], http: Option<u16>) -> Audited {
    audited_by("echo-sink", "{}", args, http)
}

/// The same with another sink plugin and its settings.
fn audited_by(plugin: &str, settings: &str, args: &[&str], http: Option<u16>) -> Audited {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let output = match http {
        Some(port) => format!("{{name: out, type: http, url: \"http://127.0.0.1:{port}/\"}}"),
        None => format!(
            "{{name: out, type: file, path: {:?}}}",
            out.display().to_string()
        ),
    };
    let policy = format!(
        "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\nauditSinks:\n  - name: echo\n    module: {}\n    settings: {settings}\n    rules:\n      - level: RequestResponse\n    outputs:\n      - {output}\n",
        module(plugin),
    );
    let gw = Gateway::start_with(
        &policy,
        Options {
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        },
    );
    Audited { gw, out, _dir: dir }
}

fn event(id: &str) -> Value {
    json!({
        "level": "RequestResponse", "auditID": id, "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/default/configmaps", "verb": "create",
        "user": {"username": "alice", "groups": ["system:authenticated"]},
        "objectRef": {"resource": "configmaps", "namespace": "default", "name": id, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": id}, "data": {"k": "v"}},
        "requestReceivedTimestamp": "2026-01-01T00:00:00.000000Z", "stageTimestamp": "2026-01-01T00:00:00.001000Z"
    })
}

fn list(items: Vec<Value>) -> Value {
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
}

async fn post_bytes(gw: &Gateway, body: Vec<u8>) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = gw
        .client()
        .post(gw.url("/audit"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        started.elapsed(),
    )
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn delivered(a: &Audited, n: usize) -> Vec<Value> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let got = lines(&a.out);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < end,
            "{} of {n} events delivered\n{}",
            got.len(),
            a.gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A field of a process's `/proc/PID/status` in kB (`VmRSS`, `VmHWM`), in MiB.
fn status_mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        / 1024
}

/// What one body costs the gateway: its resident memory (MiB) when the body is sent, and the
/// peak it reaches while taking it. The peak (`VmHWM`) is reset to the resident memory first
/// (`clear_refs` 5), so a body is not charged with the memory an earlier one left in the
/// allocator's heap of another thread (the decoder runs on a blocking thread, which may be
/// another each time).
async fn cost_of(gw: &Gateway, pid: u32, body: Vec<u8>) -> (u64, u64, u16, Value, Duration) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let resident = status_mib(pid, "VmRSS");
    let (status, answer, took) = post_bytes(gw, body).await;
    (resident, status_mib(pid, "VmHWM"), status, answer, took)
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_a_small_multiple_of_the_body_whatever_the_items() {
    let a = audited(&[], None);
    let pid = a.gw.pid();
    let before = status_mib(pid, "VmHWM");
    // The body of the report: 32 MiB of `1,` items.
    let mut numbers = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":["#.to_vec();
    while numbers.len() < 32 << 20 {
        numbers.extend_from_slice(b"1,");
    }
    numbers.extend_from_slice(b"1]}");
    let size_mib = (numbers.len() >> 20) as u64;
    let (numbers_at, numbers_peak, status, body, took) = cost_of(&a.gw, pid, numbers).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("at most 1000000 items"),
        "{body}"
    );
    // 32 MiB of malformed objects under the item cap: each decoded and skipped.
    let mut objects = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":["#.to_vec();
    let item = br#"{"level":"Metadata","auditID":"x","stage":"Bogus","pad":"0123456789abcdef0123456789abcdef"},"#;
    let mut n = 0;
    while objects.len() < 32 << 20 {
        objects.extend_from_slice(item);
        n += 1;
    }
    objects.extend_from_slice(b"1]}");
    let (objects_at, objects_peak, status, body, took_objects) = cost_of(&a.gw, pid, objects).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["malformed"], n + 1, "{body}");
    // 32 MiB of real events: spooled in parts, and delivered.
    let events: Vec<Value> = (0..60_000).map(|i| event(&format!("e{i}"))).collect();
    let real = serde_json::to_vec(&list(events)).unwrap();
    let real_mib = real.len() >> 20;
    let (real_at, real_peak, status, body, took_real) = cost_of(&a.gw, pid, real).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spooled"], 60_000, "{body}");
    let after = status_mib(pid, "VmRSS");
    println!(
        "RSS at start {before} MiB; `1,` items ({size_mib} MiB, 400 at the item cap in {took:.2?}): from {numbers_at} to a peak of {numbers_peak} MiB; \
         {n} malformed objects (32 MiB, 200 in {took_objects:.2?}): from {objects_at} to {objects_peak} MiB; \
         60,000 real events ({real_mib} MiB, 200 in {took_real:.2?}): from {real_at} to {real_peak} MiB; {after} MiB after"
    );
    // Before streaming, the first body alone drove the gateway to 7.7 GiB.
    assert!(
        numbers_peak < numbers_at + 4 * size_mib,
        "the `1,` items cost {} MiB",
        numbers_peak - numbers_at
    );
    assert!(
        objects_peak < objects_at + 4 * 32,
        "malformed items cost {} MiB",
        objects_peak - objects_at
    );
    assert!(
        real_peak < real_at + 4 * 32 + 64,
        "a real batch cost {} MiB",
        real_peak - real_at
    );
    // What the three left behind (the allocator's heaps of the threads that decoded them) is
    // bounded too: at most about one body's cost per blocking thread that decoded one.
    assert!(
        after < before + 3 * 4 * 32,
        "{after} MiB resident after the three bodies, {before} MiB at start"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_event_is_truncated_and_its_batch_kept() {
    // redact-secrets writes whole events (a ConfigMap has nothing it redacts).
    let a = audited_by(
        "redact-secrets",
        "{output: out}",
        &["--audit-max-event-bytes", "65536"],
        None,
    );
    let mut big = event("big");
    big["requestObject"]["data"]["k"] = json!("x".repeat(200 << 10));
    big["responseObject"] = json!({"kind": "ConfigMap", "data": {"k": "y".repeat(100 << 10)}});
    let mut huge_metadata = event("huge-metadata");
    huge_metadata["annotations"] = json!({"note": "z".repeat(100 << 10)});
    let batch = list(vec![event("before"), big, huge_metadata, event("after")]);
    let (status, body, _) = post_bytes(&a.gw, serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"received": 4, "spooled": 3, "duplicates": 0, "malformed": 0, "truncated": 1, "oversized": 1})
    );
    let got = delivered(&a, 3).await;
    let ids: Vec<_> = got.iter().map(|e| e["auditID"].as_str().unwrap()).collect();
    assert_eq!(ids, ["before", "big", "after"]);
    let cut = &got[1];
    assert_eq!(
        cut["annotations"]["audit.k8s.io/truncated"], "true",
        "{cut}"
    );
    assert!(cut.get("requestObject").is_none() && cut.get("responseObject").is_none());
    assert_eq!(cut["objectRef"]["name"], "big");
    assert_eq!(got[0]["requestObject"]["data"]["k"], "v");
    // The API server re-sends the batch: the truncated event is recognised as a duplicate.
    let (status, body, _) = post_bytes(&a.gw, serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["duplicates"], 3, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_over_the_body_limit_is_read_and_split_not_refused() {
    let a = audited(&["--audit-max-body-bytes", "65536"], None);
    let events: Vec<Value> = (0..2000).map(|i| event(&format!("s{i}"))).collect();
    let body = serde_json::to_vec(&list(events)).unwrap();
    let size = body.len();
    assert!(size > 10 * 65536);
    let (status, report, took) = post_bytes(&a.gw, body).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["spooled"], 2000, "{report}");
    let got = delivered(&a, 2000).await;
    let ids: Vec<String> = got
        .iter()
        .map(|e| e["auditID"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..2000).map(|i| format!("s{i}")).collect();
    assert_eq!(ids, want, "events lost, doubled or reordered by the split");
    println!(
        "a {} KiB batch with --audit-max-body-bytes 64 KiB: 200 in {took:.2?}, 2000 events delivered in order",
        size >> 10
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_answers_503_before_the_body_is_read() {
    // The sink's destination is down: nothing drains, the spool fills.
    let a = audited(&["--spool-max-bytes", "64Ki"], Some(free_port()));
    let mut n = 0;
    loop {
        let batch = list((0..5).map(|i| event(&format!("f{n}-{i}"))).collect());
        let (status, body, _) = post_bytes(&a.gw, serde_json::to_vec(&batch).unwrap()).await;
        if status != 200 {
            assert_eq!(status, 503, "{body}");
            break;
        }
        n += 1;
        assert!(n < 500, "the spool never filled up");
    }
    // Headers of a 1 MiB batch, and then not one byte of it: answered at once, not after the
    // body would have been read (nor at the minimum-rate cut-off, 408).
    let config = {
        let mut roots = rustls::RootCertStore::empty();
        for cert in <rustls_pki_types::CertificateDer<'_> as rustls_pki_types::pem::PemObject>::pem_slice_iter(
            a.gw.pki.ca.as_bytes(),
        ) {
            roots.add(cert.unwrap()).unwrap();
        }
        std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    };
    let tcp = tokio::net::TcpStream::connect(a.gw.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let started = Instant::now();
    tls.write_all(
        b"POST /audit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("the audit spool is full"), "{answer}");
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    println!("full spool: 503 {took:.2?} after the headers, with none of the body sent");
}
