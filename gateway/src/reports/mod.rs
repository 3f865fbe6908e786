//! Owns background reports: evaluating the validators with `background: true` against the
//! objects already in the cluster (read from the context watch caches, never from the API
//! server), on a schedule and on change (debounced), one call at a time on the slow lane under
//! each policy's deadline and memory cap, and handing the aggregated OpenReports objects to the
//! writer, while this replica leads. Knows nothing of HTTP; calls plugins through
//! [`crate::runtime::Plugin`] and matches objects with the admission [`crate::policy::Matcher`].

pub mod build;
pub mod write;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use build::{Finding, MAX_RESULTS, Outcome, Subject};

use crate::config::{ContextGrant, PluginKind};
use crate::context::{ClusterState, key_of};
use crate::policy::{Policy, RequestAttributes, ResourceRef};
use crate::runtime::{
    AdmissionRequest, Decision, GroupVersionKind, GroupVersionResource, Plugin, UserInfo,
    WitOperation,
};
use crate::snapshot::Snapshot;
use crate::telemetry::Metrics;
use crate::wire::Operation;

/// How often the task looks for changes (and leadership).
pub const POLL: Duration = Duration::from_secs(1);
/// How long after the first change it saw the task scans: changes within it share one scan.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// The default full-scan interval (`serve --reports-interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// What a policy's previous scan found, to call the plugin again only for objects that changed.
struct PolicyMemo {
    /// The policy it was found with (a reload makes a new one: everything is evaluated again).
    policy: Arc<Policy<Plugin>>,
    /// The change counts of the caches its `context:` grants read: when one moves, another
    /// object may have changed this one's verdict, and everything is evaluated again.
    context_changes: Vec<u64>,
    /// By (resource, namespace, name): the object's JSON text as evaluated, and the finding.
    findings: HashMap<(String, String, String), (Arc<str>, Finding)>,
}

/// The state kept between scans.
#[derive(Default)]
pub struct Memo {
    policies: HashMap<String, PolicyMemo>,
}

/// One background policy of a snapshot: the policy and what it scans and reads.
struct Background {
    policy: Arc<Policy<Plugin>>,
    scans: Vec<ContextGrant>,
    context: Vec<ContextGrant>,
}

fn background(snapshot: &Snapshot) -> Vec<Background> {
    snapshot
        .config
        .entries
        .iter()
        .filter(|e| e.entry.background && e.entry.kind == PluginKind::Validator)
        .filter_map(|e| {
            let policy = snapshot
                .policies
                .of_kind(PluginKind::Validator, Some(&e.entry.name))?
                .into_iter()
                .next()?
                .clone();
            Some(Background {
                policy,
                scans: e.entry.background_grants().unwrap_or_default(),
                context: e.entry.context.clone(),
            })
        })
        .collect()
}

/// What the task compares to decide whether to scan: the snapshot, and the change counts of
/// every cache a background policy scans or reads.
fn fingerprint(snapshot: &Snapshot, cluster: &ClusterState) -> Vec<u64> {
    let mut f = vec![snapshot.generation];
    for b in background(snapshot) {
        for grant in b.scans.iter().chain(&b.context) {
            f.push(cluster.cache(&key_of(grant)).map_or(0, |c| c.changes()));
        }
    }
    f
}

#[derive(serde::Deserialize)]
struct Head {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: HeadMeta,
}

#[derive(serde::Deserialize, Default)]
struct HeadMeta {
    #[serde(default)]
    uid: String,
}

/// The admission request a background evaluation sends: the object as if it were created now
/// (`CREATE`, no old object, no user, not a dry run).
fn request(
    grant: &ContextGrant,
    namespace: &str,
    name: &str,
    json: &str,
    head: &Head,
) -> AdmissionRequest {
    let (group, version) = match head.api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), head.api_version.clone()),
    };
    AdmissionRequest {
        uid: format!("background/{namespace}/{name}"),
        kind: GroupVersionKind {
            group,
            version,
            kind: head.kind.clone(),
        },
        resource: GroupVersionResource {
            group: grant.api_group.clone(),
            version: grant.version.clone(),
            resource: grant.resource.clone(),
        },
        sub_resource: String::new(),
        request_kind: None,
        request_resource: None,
        request_sub_resource: String::new(),
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        operation: WitOperation::Create,
        user_info: UserInfo {
            username: String::new(),
            uid: String::new(),
            groups: Vec::new(),
            extra: Vec::new(),
        },
        object: Some(json.to_owned()),
        old_object: None,
        dry_run: false,
        options: None,
    }
}

/// Evaluates every background policy of `snapshot` against the objects of the caches it scans
/// that its rules, namespaces and object selector match. `None` while a cache it needs has not
/// synced (or went over its cap: a scan of part of the objects would report the rest fixed).
/// Objects unchanged since the previous scan keep their finding (see [`PolicyMemo`]).
pub async fn scan(
    snapshot: &Snapshot,
    cluster: &ClusterState,
    memo: &mut Memo,
    metrics: &Metrics,
) -> Option<Vec<Finding>> {
    let policies = background(snapshot);
    // Every cache first, so that a scan is of one moment as far as possible.
    let mut inputs = Vec::new();
    for b in &policies {
        let mut objects = Vec::new();
        for grant in &b.scans {
            let cache = cluster.cache(&key_of(grant))?;
            if !cache.is_synced() {
                return None;
            }
            let list = cache
                .with_objects(|o| {
                    o.iter()
                        .map(|((ns, name), e)| {
                            (ns.clone(), name.clone(), e.json.clone(), e.labels.clone())
                        })
                        .collect::<Vec<_>>()
                })
                // The watcher logs the overflow; the scan waits for a list that fits.
                .inspect_err(
                    |e| tracing::debug!(policy = %b.policy.name, "background scan waits: {e}"),
                )
                .ok()?;
            objects.push((grant.clone(), list));
        }
        let context_changes: Vec<u64> = b
            .context
            .iter()
            .map(|g| cluster.cache(&key_of(g)).map_or(0, |c| c.changes()))
            .collect();
        inputs.push((b, objects, context_changes));
    }
    memo.policies
        .retain(|name, _| policies.iter().any(|b| &b.policy.name == name));
    let mut findings = Vec::new();
    for (b, objects, context_changes) in inputs {
        let started = Instant::now();
        let policy = &b.policy;
        let previous = memo
            .policies
            .remove(&policy.name)
            .filter(|m| Arc::ptr_eq(&m.policy, policy) && m.context_changes == context_changes);
        let mut next = PolicyMemo {
            policy: policy.clone(),
            context_changes,
            findings: HashMap::new(),
        };
        let (mut scanned, mut violations) = (0usize, 0usize);
        for (grant, list) in objects {
            for (namespace, name, json, labels) in list {
                let attrs = RequestAttributes {
                    operation: &Operation::Create,
                    resource: ResourceRef {
                        group: &grant.api_group,
                        version: &grant.version,
                        resource: &grant.resource,
                        sub_resource: "",
                    },
                    requested: None,
                    name: &name,
                    namespace: &namespace,
                };
                if !policy.matcher.matches(&attrs, || (Some(labels), None)) {
                    continue;
                }
                scanned += 1;
                let id = (grant.resource.clone(), namespace.clone(), name.clone());
                let kept = previous
                    .as_ref()
                    .and_then(|m| m.findings.get(&id))
                    .filter(|(seen, _)| Arc::ptr_eq(seen, &json) || **seen == *json)
                    .map(|(_, f)| f.clone());
                let finding = match kept {
                    Some(f) => f,
                    None => evaluate(policy, &grant, &namespace, &name, &json).await,
                };
                if finding.outcome != Outcome::Pass {
                    violations += 1;
                }
                // A plugin failure may pass: it is evaluated again next time.
                if finding.outcome != Outcome::Error {
                    next.findings.insert(id, (json, finding.clone()));
                }
                findings.push(finding);
            }
        }
        metrics
            .reports
            .scanned(&policy.name, scanned, violations, started.elapsed());
        memo.policies.insert(policy.name.clone(), next);
    }
    Some(findings)
}

async fn evaluate(
    policy: &Arc<Policy<Plugin>>,
    grant: &ContextGrant,
    namespace: &str,
    name: &str,
    json: &str,
) -> Finding {
    let head: Head = serde_json::from_str(json).unwrap_or(Head {
        api_version: String::new(),
        kind: String::new(),
        metadata: HeadMeta::default(),
    });
    let request = Arc::new(request(grant, namespace, name, json, &head));
    let deadline = Instant::now() + policy.timeout;
    let result = policy
        .plugin
        .validate_background(&request, deadline, policy.timeout)
        .await;
    let (outcome, message) = match result {
        Ok(verdict) => match verdict.decision {
            Decision::Denied(denial) => (Outcome::Fail, denial.message),
            Decision::Allowed if !verdict.remarks.warnings.is_empty() => {
                (Outcome::Warn, verdict.remarks.warnings.join("; "))
            }
            Decision::Allowed => (Outcome::Pass, String::new()),
        },
        Err(failure) => (Outcome::Error, failure.to_string()),
    };
    Finding {
        policy: policy.name.clone(),
        outcome,
        message,
        subject: Subject {
            api_version: head.api_version,
            kind: head.kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: head.metadata.uid,
        },
    }
}

/// Keeps the cluster's reports equal to what the background policies find, while `leading()`
/// holds, until `shutdown` resolves: a full scan (re-reading the cluster's reports) every
/// `interval` and on gaining leadership, and a scan [`DEBOUNCE`] after a change to a scanned
/// or read cache or a new snapshot. Without any background policy it writes nothing (unless
/// it had some before: then it deletes its reports).
pub fn start(
    snapshot: impl Fn() -> Arc<Snapshot> + Send + 'static,
    cluster: Arc<ClusterState>,
    client: kube::Client,
    leading: impl Fn() -> bool + Send + 'static,
    interval: Duration,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut writer = write::Writer::new(client);
        let mut memo = Memo::default();
        let mut last: Option<Vec<u64>> = None;
        let mut last_full: Option<Instant> = None;
        let mut pending: Option<Instant> = None;
        let mut had_background = false;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut shutdown => break,
            }
            if !leading() {
                last_full = None;
                continue;
            }
            let snap = snapshot();
            let any = snap.config.entries.iter().any(|e| e.entry.background);
            if !any && !had_background {
                continue;
            }
            had_background |= any;
            let now = fingerprint(&snap, &cluster);
            if last.as_ref() != Some(&now) && pending.is_none() {
                pending = Some(Instant::now());
            }
            let full = last_full.is_none_or(|at| at.elapsed() >= interval);
            if !full && pending.is_none_or(|at| at.elapsed() < DEBOUNCE) {
                continue;
            }
            let Some(findings) = scan(&snap, &cluster, &mut memo, &metrics).await else {
                // A cache not synced yet (or over its cap): looked at again after DEBOUNCE.
                pending = Some(Instant::now());
                continue;
            };
            let reports: BTreeMap<String, serde_json::Value> = build::reports(&findings);
            if full {
                writer.resync();
            }
            match writer.sync(&reports, &metrics).await {
                Ok(()) => {
                    last = Some(now);
                    pending = None;
                    if full {
                        last_full = Some(Instant::now());
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot write the OpenReports reports (are the openreports.io CRDs installed?): {e}"
                    );
                    // Tried again after a while, not at every poll (the writer reads the
                    // cluster's reports again first).
                    pending = Some(Instant::now() + Duration::from_secs(10));
                    if full {
                        last_full = Some(Instant::now());
                    }
                }
            }
        }
    })
}
