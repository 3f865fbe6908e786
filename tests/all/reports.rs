//! Background scans (`background: true`), offline: the caches filled from a file of objects
//! (the same caches `serve` fills from its watchers), the real plugin evaluated through the
//! snapshot's policy on each matching object, and the aggregated OpenReports reports.
//! tests/e2e/reports.py covers the API server side (CRDs, writes, leader).

use std::sync::Arc;

use serde_json::json;
use wasmgate::config::Config;
use wasmgate::context::{ClusterState, Limits, file};
use wasmgate::reports::{Memo, Outcome, build, scan};
use wasmgate::runtime::{Runtime, RuntimeConfig};
use wasmgate::snapshot::Snapshot;
use wasmgate::telemetry::Metrics;

use crate::harness::{module, policy_file};

fn pod(ns: &str, name: &str, team: Option<&str>) -> serde_json::Value {
    let labels = team.map_or(json!({}), |t| json!({"team": t}));
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

#[test]
fn a_scan_evaluates_matching_objects_and_sees_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let entry = format!(
        "  - name: require-team\n    kind: validator\n    module: {}\n    settings: {{labels: [team]}}\n    rules: [{{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}}]\n    excludeNamespaces: [kube-system]\n    mode: monitor\n    background: true\n",
        module("require-labels")
    );
    std::fs::write(dir.path().join("policies.yaml"), policy_file(&entry)).unwrap();
    let config = Config::load(&dir.path().join("policies.yaml")).unwrap();
    let objects = file::group(vec![
        pod("a", "bad", None),
        pod("a", "good", Some("web")),
        pod("b", "bad", None),
        pod("kube-system", "ignored", None),
    ])
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    let cluster = ClusterState::from_objects(objects, Limits::default(), metrics.clone());
    cluster.prepare(&config).unwrap();
    let runtime = Runtime::new(&RuntimeConfig { cache_dir: None }).unwrap();
    let snapshot = Snapshot::build_with(&config, &runtime, 1, None, Some(&cluster)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut memo = Memo::default();

    let findings = rt
        .block_on(scan(&snapshot, &cluster, &mut memo, &metrics))
        .expect("the cache is synced");
    let mut seen: Vec<(String, String, Outcome)> = findings
        .iter()
        .map(|f| {
            (
                f.subject.namespace.clone(),
                f.subject.name.clone(),
                f.outcome,
            )
        })
        .collect();
    seen.sort();
    // kube-system is excluded as admission would exclude it.
    assert_eq!(
        seen,
        [
            ("a".into(), "bad".into(), Outcome::Fail),
            ("a".into(), "good".into(), Outcome::Pass),
            ("b".into(), "bad".into(), Outcome::Fail),
        ]
    );
    let bad = findings
        .iter()
        .find(|f| f.outcome == Outcome::Fail)
        .unwrap();
    assert!(bad.message.contains("team"), "{}", bad.message);
    assert_eq!(bad.subject.kind, "Pod");
    assert!(bad.subject.uid.starts_with("uid-"));
    let text = metrics.encode();
    assert!(
        text.contains("wasmgate_background_scan_objects{policy=\"require-team\"} 3"),
        "{text}"
    );
    assert!(text.contains("wasmgate_background_scan_violations{policy=\"require-team\"} 2"));

    // Fixing one object in the cache: the next scan sees it pass; b's report is unchanged.
    let before = build::reports(&findings);
    let key = wasmgate::context::key_of(&config.entries[0].entry.background_grants().unwrap()[0]);
    cluster
        .cache(&key)
        .unwrap()
        .apply(pod("a", "bad", Some("ops")))
        .unwrap();
    let after = build::reports(
        &rt.block_on(scan(&snapshot, &cluster, &mut memo, &metrics))
            .unwrap(),
    );
    assert_eq!(after["a"]["summary"]["fail"], 0);
    assert_eq!(after["a"]["summary"]["pass"], 2);
    assert!(!build::same(&before["a"], &after["a"]));
    assert!(build::same(&before["b"], &after["b"]));
}
