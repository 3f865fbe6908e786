//! Owns the shape of wasmgate's OpenReports objects (`openreports.io/v1alpha1`): a scan's
//! findings aggregated into one `Report` per namespace and one `ClusterReport` for
//! cluster-scoped objects, each with a bounded number of results and a complete summary, and
//! the comparison that decides whether a report in the cluster needs writing. No I/O.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The `apiVersion` of the reports.
pub const API_VERSION: &str = "openreports.io/v1alpha1";
/// The name of every report wasmgate writes (one per namespace, one cluster report).
pub const REPORT_NAME: &str = "wasmgate";
/// `source` of the reports and their results.
pub const SOURCE: &str = "wasmgate";
/// Results one report lists at most: the failing ones first (`fail`, then `error`, then
/// `warn`); the summary counts every evaluation and [`OMITTED_ANNOTATION`] says how many
/// results were left out. Passing evaluations are counted, never listed.
pub const MAX_RESULTS: usize = 100;
/// The annotation giving how many results a report left out to stay under [`MAX_RESULTS`].
pub const OMITTED_ANNOTATION: &str = "wasmgate.io/omitted-results";
/// The label every report wasmgate writes carries (and that it lists its reports by).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "wasmgate");

/// The result of one policy on one object, as OpenReports spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Denied (or, for a policy in monitor mode, would have been).
    Fail,
    /// The plugin failed (trap, deadline, memory cap, invalid output).
    Error,
    /// Allowed with warnings.
    Warn,
    /// Allowed.
    Pass,
}

impl Outcome {
    /// `fail`, `error`, `warn`, `pass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::Warn => "warn",
            Outcome::Pass => "pass",
        }
    }
}

/// The object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject {
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its kind.
    pub kind: String,
    /// Its namespace; empty for a cluster-scoped object.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
}

/// One policy's result on one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The policy's name.
    pub policy: String,
    /// What it decided.
    pub outcome: Outcome,
    /// The denial's message, the warnings, or the failure.
    pub message: String,
    /// The object.
    pub subject: Subject,
}

/// The reports of `findings`, by namespace (`""`: the cluster report). A namespace without
/// findings has no report.
pub fn reports(findings: &[Finding]) -> BTreeMap<String, Value> {
    let mut by_namespace: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        by_namespace
            .entry(f.subject.namespace.as_str())
            .or_default()
            .push(f);
    }
    by_namespace
        .into_iter()
        .map(|(ns, findings)| (ns.to_owned(), report(ns, findings)))
        .collect()
}

fn report(namespace: &str, mut findings: Vec<&Finding>) -> Value {
    let mut summary: BTreeMap<&str, u64> = ["pass", "fail", "warn", "error", "skip"]
        .into_iter()
        .map(|k| (k, 0))
        .collect();
    for f in &findings {
        *summary.entry(f.outcome.as_str()).or_default() += 1;
    }
    findings.retain(|f| f.outcome != Outcome::Pass);
    findings.sort_by(|a, b| {
        (a.outcome, &a.policy, &a.subject).cmp(&(b.outcome, &b.policy, &b.subject))
    });
    let omitted = findings.len().saturating_sub(MAX_RESULTS);
    let results: Vec<Value> = findings
        .iter()
        .take(MAX_RESULTS)
        .map(|f| result(f))
        .collect();
    let mut metadata = json!({
        "name": REPORT_NAME,
        "labels": { (MANAGED_BY.0): MANAGED_BY.1 },
        "annotations": { OMITTED_ANNOTATION: omitted.to_string() },
    });
    if !namespace.is_empty() {
        metadata["namespace"] = namespace.into();
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": if namespace.is_empty() { "ClusterReport" } else { "Report" },
        "metadata": metadata,
        "source": SOURCE,
        "configuration": {
            "limits": { "maxResults": MAX_RESULTS, "statusFilter": ["fail", "error", "warn"] },
        },
        "summary": summary,
        "results": results,
    })
}

fn result(f: &Finding) -> Value {
    let s = &f.subject;
    let mut subject = json!({
        "apiVersion": s.api_version,
        "kind": s.kind,
        "name": s.name,
    });
    if !s.namespace.is_empty() {
        subject["namespace"] = s.namespace.as_str().into();
    }
    if !s.uid.is_empty() {
        subject["uid"] = s.uid.as_str().into();
    }
    json!({
        "policy": f.policy,
        "result": f.outcome.as_str(),
        "source": SOURCE,
        "message": f.message,
        "scored": true,
        "resources": [subject],
    })
}

/// Whether `existing` (a report as the API server returns it) says what `desired` says: the
/// same source, configuration, summary, results and omitted count. Server-set metadata and
/// fields of other managers do not count; an absent list is an empty one.
pub fn same(existing: &Value, desired: &Value) -> bool {
    let list = |v: &Value, field: &str| -> Value {
        match &v[field] {
            Value::Null => json!([]),
            other => other.clone(),
        }
    };
    let annotation = |v: &Value| v["metadata"]["annotations"][OMITTED_ANNOTATION].clone();
    ["source", "configuration", "summary"]
        .iter()
        .all(|k| existing[k] == desired[k])
        && list(existing, "results") == list(desired, "results")
        && annotation(existing) == annotation(desired)
        && existing["metadata"]["labels"][MANAGED_BY.0]
            == desired["metadata"]["labels"][MANAGED_BY.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(ns: &str, name: &str, outcome: Outcome) -> Finding {
        Finding {
            policy: "p".into(),
            outcome,
            message: format!("{name} is {}", outcome.as_str()),
            subject: Subject {
                api_version: "v1".into(),
                kind: if ns.is_empty() { "Namespace" } else { "Pod" }.into(),
                namespace: ns.into(),
                name: name.into(),
                uid: String::new(),
            },
        }
    }

    #[test]
    fn one_report_per_namespace_bounded_and_summarised() {
        let mut findings = vec![
            finding("", "kube-system", Outcome::Fail),
            finding("b", "ok", Outcome::Pass),
        ];
        for i in 0..(MAX_RESULTS + 5) {
            findings.push(finding("a", &format!("w{i:03}"), Outcome::Warn));
        }
        findings.push(finding("a", "z-failing", Outcome::Fail));
        findings.push(finding("a", "ok", Outcome::Pass));
        let reports = reports(&findings);
        assert_eq!(reports.keys().collect::<Vec<_>>(), ["", "a", "b"]);
        assert_eq!(reports[""]["kind"], "ClusterReport");
        assert!(reports[""]["metadata"].get("namespace").is_none());
        let a = &reports["a"];
        assert_eq!(a["kind"], "Report");
        assert_eq!(a["metadata"]["namespace"], "a");
        assert_eq!(
            a["summary"],
            json!({"pass": 1, "fail": 1, "warn": MAX_RESULTS + 5, "error": 0, "skip": 0})
        );
        let results = a["results"].as_array().unwrap();
        // Bounded; the failing one first although its name sorts last; the rest counted.
        assert_eq!(results.len(), MAX_RESULTS);
        assert_eq!(results[0]["resources"][0]["name"], "z-failing");
        assert_eq!(results[0]["result"], "fail");
        assert_eq!(a["metadata"]["annotations"][OMITTED_ANNOTATION], "6");
        // A namespace whose objects all pass has a report with a summary and no results.
        assert_eq!(reports["b"]["results"], json!([]));
        assert_eq!(reports["b"]["summary"]["pass"], 1);
    }

    #[test]
    fn same_ignores_server_fields_and_sees_content_changes() {
        let desired = reports(&[finding("a", "x", Outcome::Fail)])["a"].clone();
        let mut stored = desired.clone();
        stored["metadata"]["resourceVersion"] = "42".into();
        stored["metadata"]["uid"] = "u".into();
        assert!(same(&stored, &desired));
        let fixed = reports(&[finding("a", "x", Outcome::Pass)])["a"].clone();
        assert!(!same(&stored, &fixed));
        // An empty list the server dropped is still empty.
        let mut stored = fixed.clone();
        stored.as_object_mut().unwrap().remove("results");
        assert!(same(&stored, &fixed));
    }
}
