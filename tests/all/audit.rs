//! The audit webhook over HTTPS: the fixtures through every sink, level stripping, redaction,
//! malformed events, re-sent batches, kill -9 after a 200, HTTP outputs that are down, a full
//! spool, poison batches, and the kubeconfig for the API server.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::harness::{Gateway, Options, Pki, module, repo};

// === fixtures and policy files ===

/// Every event of `tests/fixtures/audit-events`, one per line there.
pub(crate) fn fixtures() -> Vec<Value> {
    let dir = repo().join("tests/fixtures/audit-events");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// The fixture event of file `name`.
fn fixture(name: &str) -> Value {
    let path = repo().join("tests/fixtures/audit-events").join(name);
    serde_json::from_str(std::fs::read_to_string(path).unwrap().trim()).unwrap()
}

/// An EventList as the API server's webhook backend sends it: items without type metadata.
pub(crate) fn event_list(items: &[Value]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            if let Some(map) = item.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            item
        })
        .collect();
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
}

/// A small realistic event with its own auditID.
pub(crate) fn event(id: &str, verb: &str, resource: &str, level: &str) -> Value {
    json!({
        "level": level, "auditID": id, "stage": "ResponseComplete",
        "requestURI": format!("/api/v1/namespaces/default/{resource}"), "verb": verb,
        "user": {"username": "alice", "groups": ["devs", "system:authenticated"]},
        "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.36.0",
        "objectRef": {"resource": resource, "namespace": "default", "name": "x", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-07-24T04:09:49.123456Z",
        "stageTimestamp": "2026-07-24T04:09:49.223456Z",
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
    })
}

/// Secret values that must never reach an output, and the events that carry them.
const SECRET_VALUES: &[&str] = &[
    "aHVudGVyMi1kYg==",
    "hunter2-db",
    "c3RyaW5nLWRhdGEtdmFsdWU=",
    "string-data-value",
    "cm-password-value",
    "env-token-value",
];

fn secret_events() -> Vec<Value> {
    let secret = json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": "db", "namespace": "default", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration":
                json!({"apiVersion": "v1", "kind": "Secret", "data": {"password": "aHVudGVyMi1kYg=="}}).to_string(),
        }},
        "data": {"password": "aHVudGVyMi1kYg==", "note": "c3RyaW5nLWRhdGEtdmFsdWU="},
        "type": "Opaque",
    });
    let mut create = event("secret-create", "create", "secrets", "RequestResponse");
    create["requestObject"] = secret.clone();
    create["requestObject"]["stringData"] = json!({"extra": "string-data-value"});
    create["responseObject"] = secret.clone();
    create["responseStatus"]["code"] = json!(201);
    let mut patch = event("secret-patch", "patch", "secrets", "RequestResponse");
    patch["requestObject"] =
        json!([{"op": "replace", "path": "/data/password", "value": "aHVudGVyMi1kYg=="}]);
    patch["responseObject"] = secret.clone();
    let mut list = event("secret-list", "list", "secrets", "RequestResponse");
    list["objectRef"]["name"] = json!(null);
    list["responseObject"] =
        json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": [secret]});
    let mut configmap = event(
        "configmap-create",
        "create",
        "configmaps",
        "RequestResponse",
    );
    configmap["requestObject"] = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "app"},
        "data": {"DB_PASSWORD": "cm-password-value", "mode": "fast"}});
    let mut pod = event("pod-create", "create", "pods", "RequestResponse");
    pod["requestObject"] = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "nginx", "env": [{"name": "API_TOKEN", "value": "env-token-value"}]}]}});
    vec![create, patch, list, configmap, pod]
}

/// A directory for a test's outputs and spool.
pub(crate) struct Dir(pub(crate) tempfile::TempDir);

impl Dir {
    pub(crate) fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    pub(crate) fn at(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A policy file with these audit sink entries.
pub(crate) fn sinks_file(entries: &[String]) -> String {
    format!(
        "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\nauditSinks:\n{}",
        entries.concat()
    )
}

/// One audit sink entry: `plugin`'s module, then YAML lines (rules, outputs, settings...).
pub(crate) fn sink(name: &str, plugin: &str, yaml: &str) -> String {
    let mut s = format!("  - name: {name}\n    module: {}\n", module(plugin));
    for line in yaml.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// Rules that keep everything as it was recorded.
pub(crate) const ALL: &str = "rules:\n  - level: RequestResponse\n";

/// A file output named `name` at `path`.
pub(crate) fn file_output(name: &str, path: &str) -> String {
    format!("  - {{name: {name}, type: file, path: {path:?}}}\n")
}

/// Starts a gateway on `policy` with `args`.
pub(crate) fn start(policy: &str, args: &[&str]) -> Gateway {
    Gateway::start_with(
        policy,
        Options {
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            ..Options::default()
        },
    )
}

// === reading what came out ===

/// The JSON lines of a file (none when it does not exist yet).
pub(crate) fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// `(auditID, stage)` of each line.
pub(crate) fn ids(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["auditID"].as_str().unwrap_or_default().to_owned(),
                l["stage"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until `done` holds, failing with `what` and the gateway's log after `limit`.
pub(crate) async fn eventually(
    gw: Option<&Gateway>,
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() > end {
            let logs = gw.map(|g| g.logs().join("\n")).unwrap_or_default();
            panic!("timed out waiting for {what}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the metric line that starts with `series` (name and labels), 0 when absent.
pub(crate) async fn metric(gw: &Gateway, series: &str) -> f64 {
    let text = gw
        .client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// POSTs an EventList to `/audit`.
pub(crate) async fn post(gw: &Gateway, list: &Value) -> (u16, Value) {
    gw.post("/audit?timeout=30s", list).await
}

// === tests ===

#[tokio::test(flavor = "multi_thread")]
async fn the_fixtures_reach_every_sink() {
    let dir = Dir::new();
    let gw = start(
        &sinks_file(&[
            sink(
                "redact",
                "redact-secrets",
                &format!(
                    "settings: {{output: audit}}\n{ALL}outputs:\n{}",
                    file_output("audit", &dir.at("redact.jsonl"))
                ),
            ),
            sink(
                "alerts",
                "exec-alert",
                &format!(
                    "{ALL}outputs:\n{}",
                    file_output("alerts", &dir.at("alerts.jsonl"))
                ),
            ),
            sink(
                "echo",
                "echo-sink",
                &format!(
                    "{ALL}outputs:\n{}",
                    file_output("out", &dir.at("echo.jsonl"))
                ),
            ),
        ]),
        &[],
    );
    let mut events = fixtures();
    let mut read = event("secret-read", "get", "secrets", "Metadata");
    read["objectRef"]["name"] = json!("db");
    events.push(read);
    let total = events.len();
    assert!(total >= 37);
    // Half as v1, half as v1beta1, as the two API versions of the webhook backend.
    let (first, second) = events.split_at(total / 2);
    let (status, body) = post(&gw, &event_list(first)).await;
    assert_eq!(
        (status, body["spooled"].as_u64()),
        (200, Some(first.len() as u64)),
        "{body}"
    );
    let mut beta = event_list(second);
    beta["apiVersion"] = json!("audit.k8s.io/v1beta1");
    let (status, body) = post(&gw, &beta).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"received": second.len(), "spooled": second.len(), "duplicates": 0, "malformed": 0})
    );

    eventually(Some(&gw), "every sink", Duration::from_secs(20), || {
        lines(&dir.path("echo.jsonl")).len() == total
            && lines(&dir.path("redact.jsonl")).len() == total
            && lines(&dir.path("alerts.jsonl")).len() == 4
    })
    .await;
    let expected: BTreeSet<_> = events
        .iter()
        .map(|e| {
            (
                e["auditID"].as_str().unwrap().to_owned(),
                e["stage"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let echoed: BTreeSet<_> = ids(&lines(&dir.path("echo.jsonl"))).into_iter().collect();
    assert_eq!(echoed, expected);

    // redact-secrets writes audit.k8s.io/v1 events, objects included at RequestResponse.
    let redacted = lines(&dir.path("redact.jsonl"));
    for line in &redacted {
        assert_eq!(
            (line["kind"].as_str(), line["apiVersion"].as_str()),
            (Some("Event"), Some("audit.k8s.io/v1"))
        );
    }
    let binding = redacted
        .iter()
        .find(|l| l["auditID"] == "c97244c7-4aec-4714-946a-8204d00ecdca")
        .unwrap();
    assert_eq!(binding["requestObject"]["roleRef"]["name"], "cluster-admin");
    assert_eq!(binding["level"], "RequestResponse");

    let alerts: BTreeMap<String, Value> = lines(&dir.path("alerts.jsonl"))
        .into_iter()
        .map(|a| (a["alert"].as_str().unwrap().to_owned(), a))
        .collect();
    assert_eq!(
        alerts.keys().collect::<Vec<_>>(),
        [
            "cluster-admin-binding",
            "pod-attach",
            "pod-exec",
            "secret-read"
        ]
    );
    assert_eq!(
        alerts["pod-exec"]["auditID"],
        fixture("exec_pod.json")["auditID"]
    );
    assert_eq!(
        alerts["pod-exec"]["message"],
        "minikube-user exec into pod default/nginx-deployment-7998647bdf-phvq7"
    );
    assert_eq!(
        alerts["secret-read"]["message"],
        "alice (get) read secret default/db"
    );
    assert_eq!(alerts["cluster-admin-binding"]["severity"], "critical");

    for sink in ["redact", "alerts", "echo"] {
        let delivered = metric(
            &gw,
            &format!("wasmgate_audit_sink_events_delivered_total{{sink=\"{sink}\"}}"),
        )
        .await;
        assert_eq!(delivered as usize, total, "{sink}");
        assert_eq!(
            metric(
                &gw,
                &format!("wasmgate_audit_sink_lag_events{{sink=\"{sink}\"}}")
            )
            .await,
            0.0
        );
    }
    assert_eq!(
        metric(&gw, "wasmgate_audit_events_received_total").await as usize,
        total
    );
    assert_eq!(
        metric(&gw, "wasmgate_audit_requests_total{result=\"accepted\"}").await,
        2.0
    );
    assert!(metric(&gw, "wasmgate_audit_spool_bytes").await > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sink_sees_events_at_the_level_its_rules_give() {
    let dir = Dir::new();
    let rules = r#"rules:
  - level: None
    resources: [{group: "", resources: [namespaces]}]
  - level: Metadata
    resources: [{group: "", resources: [pods]}]
  - level: Request
    resources: [{group: rbac.authorization.k8s.io}]
  - level: RequestResponse
omitStages: [ResponseStarted]
"#;
    let gw = start(
        &sinks_file(&[
            sink(
                "leveled",
                "echo-sink",
                &format!(
                    "{rules}outputs:\n{}",
                    file_output("out", &dir.at("leveled.jsonl"))
                ),
            ),
            sink(
                "full",
                "echo-sink",
                &format!(
                    "{ALL}outputs:\n{}",
                    file_output("out", &dir.at("full.jsonl"))
                ),
            ),
        ]),
        &[],
    );
    // The mutating webhook's patch is a Request-level annotation (the API server records it
    // only at Request or more); the rest are Metadata.
    const PATCH: &str = "patch.webhook.admission.k8s.io/round_0_index_0";
    let pod_id = fixture("create_nginx_pod_privileged.json")["auditID"].clone();
    let mut events = fixtures();
    for event in events.iter_mut().filter(|e| e["auditID"] == pod_id) {
        let annotations = event["annotations"].as_object_mut().unwrap();
        annotations.insert(PATCH.into(), json!(r#"{"patch":[{"op":"add"}]}"#));
        annotations.insert("example.com/metadata-level".into(), json!("kept"));
    }
    let (status, body) = post(&gw, &event_list(&events)).await;
    assert_eq!(status, 200, "{body}");
    let namespaces = events
        .iter()
        .filter(|e| e["objectRef"]["resource"] == "namespaces")
        .count();
    let started = events
        .iter()
        .filter(|e| e["stage"] == "ResponseStarted")
        .count();
    assert!(namespaces > 0 && started == 2, "{namespaces} {started}");
    let expected = events.len() - namespaces - started;
    eventually(Some(&gw), "both sinks", Duration::from_secs(20), || {
        lines(&dir.path("leveled.jsonl")).len() == expected
            && lines(&dir.path("full.jsonl")).len() == events.len()
    })
    .await;
    let by_id: BTreeMap<String, Value> = lines(&dir.path("leveled.jsonl"))
        .into_iter()
        .map(|l| (l["auditID"].as_str().unwrap().to_owned(), l))
        .collect();
    let seen = |file: &str| {
        by_id
            .get(fixture(file)["auditID"].as_str().unwrap())
            .cloned()
    };
    let shape = |l: Value| {
        (
            l["level"].clone(),
            l["hasRequestObject"].clone(),
            l["hasResponseObject"].clone(),
        )
    };
    // Pods at Metadata: no objects, though the event carried both, and no Request-level
    // annotation (a sink given Secrets at Metadata must not receive a patch's contents).
    let pod = seen("create_nginx_pod_privileged.json").unwrap();
    let keys = |l: &Value| {
        l["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(!keys(&pod).contains(&PATCH.to_owned()), "{pod}");
    assert!(
        keys(&pod).contains(&"example.com/metadata-level".to_owned()),
        "{pod}"
    );
    assert_eq!(shape(pod), (json!("Metadata"), json!(false), json!(false)));
    // RBAC at Request: the request object only.
    assert_eq!(
        shape(seen("attach_cluster_admin_role.json").unwrap()),
        (json!("Request"), json!(true), json!(false))
    );
    // Everything else as recorded: never above what the API server recorded.
    assert_eq!(
        shape(seen("create_configmap.json").unwrap()),
        (json!("RequestResponse"), json!(true), json!(true))
    );
    assert_eq!(
        shape(seen("create_deployment.json").unwrap()),
        (json!("Request"), json!(true), json!(false))
    );
    assert!(
        seen("anonymous_creates_namespace_foo.json").is_none(),
        "namespaces are None"
    );
    assert!(
        seen("exec_pod.json").is_none(),
        "ResponseStarted is omitted"
    );
    // The other sink is not affected by these rules.
    let full: BTreeMap<String, Value> = lines(&dir.path("full.jsonl"))
        .into_iter()
        .map(|l| (l["auditID"].as_str().unwrap().to_owned(), l))
        .collect();
    let pod = &full[fixture("create_nginx_pod_privileged.json")["auditID"]
        .as_str()
        .unwrap()];
    assert_eq!(
        (
            pod["hasRequestObject"].clone(),
            pod["hasResponseObject"].clone()
        ),
        (json!(true), json!(true))
    );
    assert!(
        keys(pod).contains(&PATCH.to_owned()),
        "at RequestResponse the patch stays: {pod}"
    );
    assert_eq!(
        metric(
            &gw,
            "wasmgate_audit_sink_events_filtered_total{sink=\"leveled\"}"
        )
        .await as usize,
        namespaces + started
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_value_reaches_any_output() {
    let dir = Dir::new();
    let out = dir.path("out");
    let gw = start(
        &sinks_file(&[sink(
            "redact",
            "redact-secrets",
            &format!(
                "settings: {{output: audit, keys: [password, token]}}\n{ALL}outputs:\n{}",
                file_output("audit", &out.join("audit.jsonl").display().to_string())
            ),
        )]),
        &[],
    );
    let mut events = secret_events();
    events.extend(fixtures());
    let (status, _) = post(&gw, &event_list(&events)).await;
    assert_eq!(status, 200);
    eventually(
        Some(&gw),
        "the redacted events",
        Duration::from_secs(20),
        || lines(&out.join("audit.jsonl")).len() == events.len(),
    )
    .await;
    // grep every file under the output directory.
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for value in SECRET_VALUES {
            assert!(
                !text.contains(value),
                "{value} leaked into {}",
                path.display()
            );
        }
    }
    let by_id: BTreeMap<String, Value> = lines(&out.join("audit.jsonl"))
        .into_iter()
        .map(|l| (l["auditID"].as_str().unwrap().to_owned(), l))
        .collect();
    let create = &by_id["secret-create"];
    assert_eq!(
        create["requestObject"]["data"],
        json!({"password": "[REDACTED]", "note": "[REDACTED]"})
    );
    assert_eq!(
        create["responseObject"]["type"], "Opaque",
        "what is not secret is kept"
    );
    assert_eq!(
        by_id["configmap-create"]["requestObject"]["data"]["mode"],
        "fast"
    );
    assert_eq!(
        by_id["pod-create"]["requestObject"]["spec"]["containers"][0]["image"],
        "nginx"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_event_does_not_lose_the_rest_of_its_batch() {
    let dir = Dir::new();
    let gw = start(
        &sinks_file(&[sink(
            "echo",
            "echo-sink",
            &format!(
                "{ALL}outputs:\n{}",
                file_output("out", &dir.at("echo.jsonl"))
            ),
        )]),
        &[],
    );
    let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [
        event("good-1", "get", "pods", "Metadata"),
        42,
        {"level": "Metadata", "auditID": "bad-stage", "stage": "Whenever"},
        event("good-2", "get", "pods", "Metadata"),
    ]});
    let (status, body) = post(&gw, &list).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"received": 4, "spooled": 2, "duplicates": 0, "malformed": 2})
    );
    eventually(
        Some(&gw),
        "the good events",
        Duration::from_secs(10),
        || lines(&dir.path("echo.jsonl")).len() == 2,
    )
    .await;
    let got: Vec<_> = ids(&lines(&dir.path("echo.jsonl")))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, ["good-1", "good-2"]);
    assert_eq!(
        metric(&gw, "wasmgate_audit_events_malformed_total").await,
        2.0
    );
    let logs = gw.logs();
    let skipped: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("malformed audit event skipped"))
        .collect();
    assert_eq!(skipped.len(), 2, "{logs:#?}");
    assert!(
        skipped[0].contains("\"item\":1"),
        "the position is logged: {}",
        skipped[0]
    );
    assert!(
        skipped[1].contains("\"item\":2") && skipped[1].contains("Whenever"),
        "{}",
        skipped[1]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_that_are_not_event_lists_are_refused() {
    let dir = Dir::new();
    let gw = start(
        &sinks_file(&[sink(
            "echo",
            "echo-sink",
            &format!(
                "{ALL}outputs:\n{}",
                file_output("out", &dir.at("echo.jsonl"))
            ),
        )]),
        &[],
    );
    let (status, body) = post(
        &gw,
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["reason"], "BadRequest");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("expected kind EventList"),
        "{body}"
    );
    let response = gw
        .client()
        .post(gw.url("/audit"))
        .header("Content-Type", "application/json")
        .body("{\"kind\":\"EventList\",")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = gw
        .client()
        .post(gw.url("/audit"))
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = gw.client().get(gw.url("/audit")).send().await.unwrap();
    assert_eq!(
        (
            response.status().as_u16(),
            response.headers()["allow"].to_str().unwrap()
        ),
        (405, "POST")
    );
    assert_eq!(
        metric(&gw, "wasmgate_audit_requests_total{result=\"bad_request\"}").await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_endpoint_is_off_without_sinks() {
    let gw = Gateway::start(&crate::harness::policy_file(""));
    let (status, body) = post(&gw, &event_list(&[event("a", "get", "pods", "Metadata")])).await;
    assert_eq!(status, 404);
    assert_eq!(
        body["message"],
        "the audit webhook is disabled: the policy file has no auditSinks"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_batch_posted_twice_is_delivered_once() {
    let dir = Dir::new();
    let gw = start(
        &sinks_file(&[sink(
            "echo",
            "echo-sink",
            &format!(
                "{ALL}outputs:\n{}",
                file_output("out", &dir.at("echo.jsonl"))
            ),
        )]),
        &[],
    );
    let list = event_list(&fixtures());
    let n = fixtures().len();
    let (_, first) = post(&gw, &list).await;
    assert_eq!(first["spooled"].as_u64(), Some(n as u64));
    let (status, again) = post(&gw, &list).await;
    assert_eq!(status, 200, "a re-sent batch is acknowledged");
    assert_eq!(
        (again["spooled"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(n as u64))
    );
    eventually(Some(&gw), "delivery", Duration::from_secs(10), || {
        lines(&dir.path("echo.jsonl")).len() >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Each event once. Two of the fixtures are different events with the same auditID and
    // stage (another user's request): both are kept, as a client-chosen Audit-ID must not make
    // the gateway drop a request's events; only the re-sent copies are dropped.
    let count = |ids: Vec<(String, String)>| {
        let mut counts = BTreeMap::new();
        for id in ids {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    };
    let sent = count(
        fixtures()
            .iter()
            .map(|e| {
                (
                    e["auditID"].as_str().unwrap().to_owned(),
                    e["stage"].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
    );
    assert!(
        sent.values().any(|&c| c == 2),
        "the fixtures reuse an auditID"
    );
    assert_eq!(count(ids(&lines(&dir.path("echo.jsonl")))), sent);
    assert_eq!(
        metric(&gw, "wasmgate_audit_events_deduplicated_total").await as usize,
        n
    );
}

/// Reserves a local port: bound, noted, closed. Nothing listens there until the test says so.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_right_after_200_loses_no_acknowledged_event() {
    let dir = Dir::new();
    let port = free_port();
    let policy = sinks_file(&[
        sink(
            "to-file",
            "echo-sink",
            &format!(
                "{ALL}outputs:\n{}",
                file_output("out", &dir.at("file.jsonl"))
            ),
        ),
        sink(
            "to-http",
            "echo-sink",
            &format!(
                "{ALL}outputs:\n  - {{name: out, type: http, url: \"http://127.0.0.1:{port}/ingest\", batchLines: 100}}\n"
            ),
        ),
    ]);
    let spool = dir.at("spool");
    let args = ["--spool-dir", spool.as_str(), "--fsync", "always"];
    let gw = start(&policy, &args);
    // 40 batches of 50, answered one after the other; the gateway dies right after the last 200.
    let mut acknowledged = BTreeSet::new();
    let mut last = Value::Null;
    for b in 0..40 {
        let batch: Vec<Value> = (0..50)
            .map(|i| event(&format!("b{b}-e{i}"), "get", "pods", "Metadata"))
            .collect();
        last = event_list(&batch);
        let (status, body) = post(&gw, &last).await;
        assert_eq!(status, 200, "{body}");
        acknowledged.extend(
            batch
                .iter()
                .map(|e| e["auditID"].as_str().unwrap().to_owned()),
        );
    }
    let pid = gw.pid();
    drop(gw); // SIGKILL
    // Complete lines: the kill may have cut the last one short (the restarted gateway cuts it
    // off and writes its lines again whole, which `file_ids` below checks).
    let delivered_before = std::fs::read_to_string(dir.path("file.jsonl"))
        .unwrap_or_default()
        .matches('\n')
        .count();
    eprintln!(
        "killed {pid} with {} of {} events in the file sink",
        delivered_before,
        acknowledged.len()
    );

    let receiver = Receiver::start(port, None, 0).await;
    let gw = start(&policy, &args);
    let file_ids = || -> BTreeSet<String> {
        ids(&lines(&dir.path("file.jsonl")))
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    eventually(
        Some(&gw),
        "every acknowledged event in both sinks",
        Duration::from_secs(60),
        || file_ids().len() == acknowledged.len() && receiver.ids().len() == acknowledged.len(),
    )
    .await;
    assert_eq!(file_ids(), acknowledged);
    assert_eq!(receiver.ids(), acknowledged);
    // The API server never heard of the last 200 if it came too late: it re-sends, and the
    // rebuilt dedup set drops the batch.
    let (status, body) = post(&gw, &last).await;
    assert_eq!(
        (status, body["duplicates"].as_u64()),
        (200, Some(50)),
        "{body}"
    );
    let logs = gw.logs().join("\n");
    assert!(
        logs.contains("audit spool opened") && logs.contains("\"records\":40"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_output_that_was_down_receives_everything_after() {
    let dir = Dir::new();
    let pki = Pki::new(&["127.0.0.1"]);
    std::fs::write(dir.path("ca.crt"), &pki.ca).unwrap();
    std::fs::write(dir.path("token"), "s3cret-bearer\n").unwrap();
    let port = free_port();
    // The receiver answers 503 for its first 4 requests: "down for a while".
    let receiver = Receiver::start(port, Some(&pki), 4).await;
    let gw = start(
        &sinks_file(&[sink(
            "forward",
            "echo-sink",
            &format!(
                "{ALL}outputs:\n  - name: out\n    type: http\n    url: https://127.0.0.1:{port}/vector\n    caFile: {:?}\n    bearerTokenFile: {:?}\n    batchLines: 7\nmaxAttempts: 2\n",
                dir.at("ca.crt"),
                dir.at("token")
            ),
        )]),
        &[],
    );
    let events = fixtures();
    let (status, _) = post(&gw, &event_list(&events)).await;
    assert_eq!(status, 200);
    let expected: BTreeSet<String> = events
        .iter()
        .map(|e| e["auditID"].as_str().unwrap().to_owned())
        .collect();
    eventually(
        Some(&gw),
        "every event at the receiver",
        Duration::from_secs(30),
        || receiver.ids() == expected,
    )
    .await;
    let requests = receiver.requests.lock().await;
    assert!(
        requests
            .iter()
            .all(|r| r.authorization == "Bearer s3cret-bearer")
    );
    assert!(
        requests
            .iter()
            .all(|r| r.content_type == "application/x-ndjson")
    );
    let ok: Vec<_> = requests.iter().filter(|r| r.status == 200).collect();
    assert!(ok.iter().all(|r| r.body.lines().count() <= 7), "batchLines");
    assert_eq!(requests.iter().filter(|r| r.status == 503).count(), 4);
    drop(requests);
    assert_eq!(
        metric(
            &gw,
            "wasmgate_audit_sink_output_failures_total{sink=\"forward\",output=\"out\"}"
        )
        .await,
        4.0
    );
    assert_eq!(
        metric(
            &gw,
            "wasmgate_audit_sink_events_dead_lettered_total{sink=\"forward\"}"
        )
        .await,
        0.0,
        "5xx is not a poison batch"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_answers_503_until_sinks_catch_up() {
    let port = free_port();
    let gw = start(
        &sinks_file(&[sink(
            "forward",
            "echo-sink",
            &format!(
                "{ALL}outputs:\n  - {{name: out, type: http, url: \"http://127.0.0.1:{port}/\"}}\n"
            ),
        )]),
        &["--spool-max-bytes", "64Ki"],
    );
    let mut accepted = BTreeSet::new();
    let mut batch_no = 0;
    let (status, body) = loop {
        let batch: Vec<Value> = (0..5)
            .map(|i| event(&format!("b{batch_no}-e{i}"), "get", "pods", "Metadata"))
            .collect();
        let (status, body) = post(&gw, &event_list(&batch)).await;
        if status != 200 {
            break (status, body);
        }
        accepted.extend(
            batch
                .iter()
                .map(|e| e["auditID"].as_str().unwrap().to_owned()),
        );
        batch_no += 1;
        assert!(batch_no < 500, "the spool never filled up");
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "ServiceUnavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("the audit spool is full"),
        "{body}"
    );
    assert_eq!(
        metric(&gw, "wasmgate_audit_requests_total{result=\"spool_full\"}").await,
        1.0
    );
    assert!(metric(&gw, "wasmgate_audit_spool_bytes").await <= 65536.0);

    // The destination comes up: the sink drains, segments are reclaimed, intake resumes.
    let receiver = Receiver::start(port, None, 0).await;
    let retry: Vec<Value> = (0..5)
        .map(|i| event(&format!("late-{i}"), "get", "pods", "Metadata"))
        .collect();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = post(&gw, &event_list(&retry)).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the spool never drained:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    accepted.extend(
        retry
            .iter()
            .map(|e| e["auditID"].as_str().unwrap().to_owned()),
    );
    eventually(
        Some(&gw),
        "everything accepted delivered",
        Duration::from_secs(30),
        || receiver.ids() == accepted,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_batches_are_dead_lettered_and_hold_back_no_one() {
    let dir = Dir::new();
    let poison = |mode: &str, extra: &str| {
        sink(
            &format!("poison-{mode}"),
            "poison-sink",
            &format!(
                "settings: {{poison: bad, mode: {mode}}}\n{ALL}outputs:\n{}maxAttempts: 2\n{extra}",
                file_output("out", &dir.at(&format!("{mode}.jsonl")))
            ),
        )
    };
    let spool = dir.at("spool");
    let gw = start(
        &sinks_file(&[
            poison("trap", ""),
            poison("error", ""),
            poison("spin", "timeout: 100ms\n"),
            poison("sleep", "timeout: 100ms\n"),
            poison("undeclared", ""),
            sink(
                "echo",
                "echo-sink",
                &format!(
                    "{ALL}outputs:\n{}",
                    file_output("out", &dir.at("echo.jsonl"))
                ),
            ),
        ]),
        &["--spool-dir", spool.as_str()],
    );
    let bad = event_list(&[
        event("bad", "get", "pods", "Metadata"),
        event("with-bad", "get", "pods", "Metadata"),
    ]);
    let good = event_list(&[event("good", "get", "pods", "Metadata")]);
    assert_eq!(post(&gw, &bad).await.0, 200);
    assert_eq!(post(&gw, &good).await.0, 200);
    // `sleep` sleeps 30 s in a host call on each of its 2 attempts: only a deadline that holds
    // inside host calls lets the good batch through within the 30 s below.
    let modes = ["trap", "error", "spin", "sleep", "undeclared"];
    eventually(
        Some(&gw),
        "the good batch past every poisoned sink",
        Duration::from_secs(30),
        || {
            modes.iter().all(|m| {
                ids(&lines(&dir.path(&format!("{m}.jsonl"))))
                    == [("good".into(), "ResponseComplete".into())]
            }) && lines(&dir.path("echo.jsonl")).len() == 3
        },
    )
    .await;
    for mode in modes {
        let letters = lines(&dir.path(&format!("spool/dead-letter/poison-{mode}.jsonl")));
        assert_eq!(letters.len(), 1, "{mode}");
        let letter = &letters[0];
        assert_eq!(letter["attempts"], 2, "{mode}");
        let events: Vec<_> = letter["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["auditID"].as_str().unwrap())
            .collect();
        assert_eq!(
            events,
            ["bad", "with-bad"],
            "{mode}: the whole batch, never lost"
        );
        assert_eq!(letter["events"][0]["apiVersion"], "audit.k8s.io/v1");
        let error = letter["error"].as_str().unwrap();
        let expected = match mode {
            "trap" => "trapped",
            "error" => "returned an error: poisoned by bad",
            "spin" | "sleep" => "deadline of 100ms exceeded",
            _ => {
                "invalid output: a line for output \"not-granted\", which is not granted to this sink (granted: out)"
            }
        };
        assert!(error.contains(expected), "{mode}: {error}");
        let series =
            format!("wasmgate_audit_sink_events_dead_lettered_total{{sink=\"poison-{mode}\"}}");
        assert_eq!(metric(&gw, &series).await, 2.0, "{mode}");
    }
    assert_eq!(
        metric(
            &gw,
            "wasmgate_audit_sink_delivery_failures_total{sink=\"poison-trap\",reason=\"trap\"}"
        )
        .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_policy_audits_and_alerts() {
    let dir = Dir::new();
    let text = std::fs::read_to_string(repo().join("policies/demo.yaml")).unwrap();
    let text = text
        .replace(
            "../plugins/dist/",
            &format!("{}/plugins/dist/", repo().display()),
        )
        .replace(
            "../.wasmgate/audit/",
            &format!("{}/", dir.0.path().display()),
        );
    let gw = Gateway::start(&text);
    let mut events = fixtures();
    events.extend(secret_events());
    let (status, _) = post(&gw, &event_list(&events)).await;
    assert_eq!(status, 200);
    let done = |sink: &str| {
        let delivered = metric_now(
            &gw,
            &format!("wasmgate_audit_sink_events_delivered_total{{sink=\"{sink}\"}}"),
        );
        let filtered = metric_now(
            &gw,
            &format!("wasmgate_audit_sink_events_filtered_total{{sink=\"{sink}\"}}"),
        );
        delivered.unwrap_or(0.0) + filtered.unwrap_or(0.0)
    };
    eventually(Some(&gw), "the demo sinks", Duration::from_secs(20), || {
        done("redact-secrets") as usize == events.len()
            && done("exec-alert") as usize == events.len()
    })
    .await;
    let audit = lines(&dir.path("audit.jsonl"));
    let by_id: BTreeMap<String, Value> = audit
        .iter()
        .map(|l| (l["auditID"].as_str().unwrap().to_owned(), l.clone()))
        .collect();
    // The documentation's example policy: secrets and configmaps at Metadata only.
    assert_eq!(by_id["secret-create"]["level"], "Metadata");
    assert!(by_id["secret-create"].get("requestObject").is_none());
    assert_eq!(by_id["configmap-create"]["level"], "Metadata");
    assert_eq!(by_id["pod-create"]["level"], "RequestResponse");
    let text = std::fs::read_to_string(dir.path("audit.jsonl")).unwrap();
    for value in SECRET_VALUES {
        assert!(!text.contains(value), "{value} leaked");
    }
    let alerts: BTreeSet<String> = lines(&dir.path("alerts.jsonl"))
        .iter()
        .map(|a| a["alert"].as_str().unwrap().to_owned())
        .collect();
    let expected = [
        "cluster-admin-binding",
        "pod-attach",
        "pod-exec",
        "secret-read",
    ];
    assert_eq!(alerts, expected.iter().map(|a| a.to_string()).collect());
}

/// A metric's value, fetched synchronously (for `eventually`'s predicate).
pub(crate) fn metric_now(gw: &Gateway, series: &str) -> Option<f64> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| handle.block_on(async { Some(metric(gw, series).await) }))
}

#[test]
fn audit_kubeconfig_points_the_api_server_at_the_gateway() {
    let dir = Dir::new();
    let pki = Pki::new(&["wasmgate.example"]);
    std::fs::write(dir.path("ca.crt"), &pki.ca).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args([
            "manifests",
            "--kind",
            "audit-kubeconfig",
            "--url",
            "https://wasmgate.example:8443",
            "--ca-file",
            &dir.at("ca.crt"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubeconfig: Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(kubeconfig["kind"], "Config");
    assert_eq!(kubeconfig["current-context"], "wasmgate");
    let cluster = &kubeconfig["clusters"][0]["cluster"];
    assert_eq!(cluster["server"], "https://wasmgate.example:8443/audit");
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(ca).unwrap(), pki.ca);
    assert_eq!(kubeconfig["contexts"][0]["context"]["cluster"], "wasmgate");

    let http = std::process::Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args([
            "manifests",
            "--kind",
            "audit-kubeconfig",
            "--url",
            "http://x",
            "--ca-file",
            &dir.at("ca.crt"),
        ])
        .output()
        .unwrap();
    assert!(!http.status.success());
}

// === an HTTP(S) receiver for HTTP outputs ===

/// One request the receiver got.
pub(crate) struct Received {
    pub(crate) status: u16,
    authorization: String,
    content_type: String,
    pub(crate) body: String,
    /// When it arrived.
    pub(crate) at: Instant,
}

/// Accepts POSTs of JSON lines, answering 503 to the first `fail_first` of them.
pub(crate) struct Receiver {
    pub(crate) requests: Arc<tokio::sync::Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start(port: u16, tls: Option<&Pki>, fail_first: u16) -> Receiver {
        Self::start_slow(port, tls, fail_first, Duration::ZERO).await
    }

    /// Like [`Receiver::start`], answering each request only after `delay`.
    pub(crate) async fn start_slow(
        port: u16,
        tls: Option<&Pki>,
        fail_first: u16,
        delay: Duration,
    ) -> Receiver {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let acceptor = tls.map(|pki| {
            let dir = tempfile::tempdir().unwrap();
            let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
            std::fs::write(&cert, &pki.cert).unwrap();
            std::fs::write(&key, &pki.key).unwrap();
            let files = wasmgate::server::tls::TlsFiles {
                cert,
                key,
                ..Default::default()
            };
            tokio_rustls::TlsAcceptor::from(wasmgate::server::tls::server_config(&files).unwrap())
        });
        let requests = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let failures_left = Arc::new(AtomicU16::new(fail_first));
        let task = tokio::spawn({
            let requests = requests.clone();
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let (requests, failures_left, acceptor) =
                        (requests.clone(), failures_left.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let (requests, failures_left) =
                                    (requests.clone(), failures_left.clone());
                                async move {
                                    let header = |name| {
                                        req.headers()
                                            .get(name)
                                            .and_then(|v| v.to_str().ok())
                                            .unwrap_or_default()
                                            .to_owned()
                                    };
                                    let (authorization, content_type) =
                                        (header("authorization"), header("content-type"));
                                    let body = req
                                        .into_body()
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let fail = failures_left
                                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                            n.checked_sub(1)
                                        })
                                        .is_ok();
                                    let status = if fail { 503 } else { 200 };
                                    tokio::time::sleep(delay).await;
                                    requests.lock().await.push(Received {
                                        status,
                                        authorization,
                                        content_type,
                                        body: String::from_utf8_lossy(&body).into_owned(),
                                        at: Instant::now(),
                                    });
                                    let mut response =
                                        hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                                    *response.status_mut() =
                                        hyper::StatusCode::from_u16(status).unwrap();
                                    Ok::<_, std::convert::Infallible>(response)
                                }
                            },
                        );
                        let builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        match acceptor {
                            Some(acceptor) => {
                                if let Ok(tls) = acceptor.accept(tcp).await {
                                    let _ =
                                        builder.serve_connection(TokioIo::new(tls), service).await;
                                }
                            }
                            None => {
                                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                            }
                        }
                    });
                }
            }
        });
        Receiver { requests, task }
    }

    /// The auditIDs of every line accepted (200) so far.
    pub(crate) fn ids(&self) -> BTreeSet<String> {
        let requests = self.requests.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                requests
                    .lock()
                    .await
                    .iter()
                    .filter(|r| r.status == 200)
                    .flat_map(|r| {
                        r.body
                            .lines()
                            .map(|l| {
                                serde_json::from_str::<Value>(l).unwrap()["auditID"]
                                    .as_str()
                                    .unwrap()
                                    .to_owned()
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_adds_changes_and_removes_sinks() {
    let dir = Dir::new();
    let echo = |name: &str, rules: &str| {
        sink(
            name,
            "echo-sink",
            &format!(
                "{rules}outputs:\n{}",
                file_output("out", &dir.at(&format!("{name}.jsonl")))
            ),
        )
    };
    let gw = start(&sinks_file(&[echo("a", ALL)]), &[]);
    let batch = |tag: &str| {
        event_list(&[
            event(&format!("{tag}-pod"), "get", "pods", "Metadata"),
            event(&format!("{tag}-cm"), "get", "configmaps", "Metadata"),
        ])
    };
    let got = |name: &str| -> Vec<String> {
        ids(&lines(&dir.path(&format!("{name}.jsonl"))))
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(post(&gw, &batch("one")).await.0, 200);
    eventually(Some(&gw), "a", Duration::from_secs(10), || {
        got("a").len() == 2
    })
    .await;

    // a now drops pods; b is new and starts with what is accepted from now on.
    let pods_none = "rules:\n  - level: None\n    resources: [{group: \"\", resources: [pods]}]\n  - level: RequestResponse\n";
    let policy = gw.path("policies.yaml");
    let write = |text: String| {
        let tmp = policy.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &policy).unwrap();
    };
    write(sinks_file(&[echo("a", pods_none), echo("b", ALL)]));
    sinks_serving(&gw, json!(["a", "b"])).await;
    assert_eq!(post(&gw, &batch("two")).await.0, 200);
    eventually(Some(&gw), "a and b", Duration::from_secs(10), || {
        got("a").len() == 3 && got("b").len() == 2
    })
    .await;
    assert_eq!(got("a"), ["one-pod", "one-cm", "two-cm"]);
    assert_eq!(got("b"), ["two-pod", "two-cm"]);

    // a is removed: it gets nothing more, b goes on.
    write(sinks_file(&[echo("b", ALL)]));
    sinks_serving(&gw, json!(["b"])).await;
    assert_eq!(post(&gw, &batch("three")).await.0, 200);
    eventually(Some(&gw), "b", Duration::from_secs(10), || {
        got("b").len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(got("a").len(), 3);
}

/// Waits until `/readyz` lists these audit sinks (a reload went through).
async fn sinks_serving(gw: &Gateway, want: Value) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let ready: Value = gw
            .client()
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["auditSinks"] == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "no reload to {want}: {ready}\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === client authentication ===

/// A request and what came back: the status, or `None` when the TLS handshake was refused.
async fn try_send(request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let body = response.bytes().await.ok()?;
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_and_admission_answer_only_their_client_certificates_and_probes_need_none() {
    let dir = Dir::new();
    // The API server's audit client certificate, its webhook client certificate (another CA),
    // and a certificate from a CA the gateway has never heard of.
    let audit_client = Pki::new(&["kube-apiserver-audit"]);
    let webhook_client = Pki::new(&["kube-apiserver-webhooks"]);
    let stranger = Pki::new(&["intruder"]);
    std::fs::write(dir.path("audit-ca.crt"), &audit_client.ca).unwrap();
    std::fs::write(dir.path("admission-ca.crt"), &webhook_client.ca).unwrap();
    let policy = format!(
        "{}auditSinks:\n{}",
        crate::harness::policy_file(&crate::harness::entry(
            "fast",
            "validator",
            "burn",
            "settings: {millis: 0}"
        )),
        sink(
            "echo",
            "echo-sink",
            &format!(
                "{ALL}outputs:\n{}",
                file_output("out", &dir.at("echo.jsonl"))
            ),
        ),
    );
    let gw = start(
        &policy,
        &[
            "--audit-client-ca",
            &dir.at("audit-ca.crt"),
            "--admission-client-ca",
            &dir.at("admission-ca.crt"),
        ],
    );
    let anonymous = crate::harness::client(&gw.pki.ca, None, true);
    let as_audit = crate::harness::client(
        &gw.pki.ca,
        Some((&audit_client.cert, &audit_client.key)),
        true,
    );
    let as_webhooks = crate::harness::client(
        &gw.pki.ca,
        Some((&webhook_client.cert, &webhook_client.key)),
        true,
    );
    let as_stranger =
        crate::harness::client(&gw.pki.ca, Some((&stranger.cert, &stranger.key)), true);
    let batch = serde_json::to_vec(&event_list(&[event("a1", "get", "pods", "Metadata")])).unwrap();
    let review = serde_json::to_vec(&crate::harness::review("pod-create.json")).unwrap();
    let post = |client: &reqwest::Client, path: &str, body: &[u8]| {
        client
            .post(gw.url(path))
            .header("Content-Type", "application/json")
            .body(body.to_vec())
    };

    // Probes and metrics: no certificate needed (kubelet's HTTPS probes present none).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = try_send(anonymous.get(gw.url(path))).await.unwrap();
        assert_eq!(status, 200, "{path} without a client certificate");
    }

    // /audit without a certificate: 401, a Kubernetes Status.
    let (status, body) = try_send(post(&anonymous, "/audit", &batch)).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    assert_eq!(body["code"], 401);
    // With a certificate the gateway trusts, but for the admission paths only: 403.
    let (status, body) = try_send(post(&as_webhooks, "/audit", &batch))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    // From a CA nobody named: the handshake itself is refused.
    assert!(
        try_send(post(&as_stranger, "/audit", &batch))
            .await
            .is_none(),
        "a certificate from an unknown CA was served"
    );
    // Nothing of the refused batches was spooled.
    assert_eq!(
        metric(
            &gw,
            "wasmgate_audit_requests_total{result=\"unauthenticated\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&gw, "wasmgate_audit_requests_total{result=\"forbidden\"}").await,
        1.0
    );
    assert_eq!(
        metric(&gw, "wasmgate_audit_requests_total{result=\"accepted\"}").await,
        0.0
    );
    // The API server's audit certificate: accepted, spooled and delivered.
    let (status, body) = try_send(post(&as_audit, "/audit?timeout=30s", &batch))
        .await
        .unwrap();
    assert_eq!((status, &body["spooled"]), (200, &json!(1)), "{body}");
    let out = dir.path("echo.jsonl");
    eventually(
        Some(&gw),
        "the event at the sink",
        Duration::from_secs(20),
        || ids(&lines(&out)) == [("a1".to_owned(), "ResponseComplete".to_owned())],
    )
    .await;

    // The admission paths, under their own CA.
    for path in ["/validate", "/validate/fast", "/mutate"] {
        let (status, body) = try_send(post(&anonymous, path, &review)).await.unwrap();
        assert_eq!(status, 401, "{path}: {body}");
        let (status, body) = try_send(post(&as_audit, path, &review)).await.unwrap();
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, body) = try_send(post(&as_webhooks, "/validate?timeout=10s", &review))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_route_client_ca_cannot_be_mixed_with_client_ca() {
    let dir = Dir::new();
    let pki = Pki::new(&["x"]);
    std::fs::write(dir.path("ca.crt"), &pki.ca).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["serve", "--client-ca", &dir.at("ca.crt")])
        .args(["--audit-client-ca", &dir.at("ca.crt")])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--audit-client-ca") && stderr.contains("cannot be used with"),
        "{stderr}"
    );
}
