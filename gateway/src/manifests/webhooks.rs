//! Owns the Validating- and MutatingWebhookConfigurations rendered from a policy file: one
//! webhook per policy (or one per kind, aggregated), with its rules, selectors, failure policy,
//! timeout and match conditions. Must not render anything that runs the gateway.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::{MAX_TIMEOUT_SECONDS, ManifestError, NAMESPACE_NAME_LABEL, NODES_GROUP, Options, bad};
use crate::config::{
    Config, FailurePolicy, LabelSelector, Mode, PluginKind, Reinvocation, ResolvedEntry, Rule,
    Scope, SelectorOperator,
};

/// The ValidatingWebhookConfiguration and MutatingWebhookConfiguration for `config` (each only
/// when the file has policies of that kind).
pub fn webhooks(config: &Config, options: &Options) -> Result<Vec<Value>, ManifestError> {
    options.validate()?;
    let mut docs = Vec::new();
    for kind in [PluginKind::Validator, PluginKind::Initializer] {
        let entries: Vec<&ResolvedEntry> = config
            .entries
            .iter()
            .filter(|e| e.entry.kind == kind)
            .collect();
        if entries.is_empty() {
            continue;
        }
        let hooks = if options.aggregate {
            let policies: Vec<_> = entries.iter().map(|e| &e.entry).collect();
            if let Some(why) = crate::policy::aggregation_conflict(&policies) {
                return Err(bad(format!("--aggregate: {why}")));
            }
            vec![aggregated_webhook(kind, &entries, options)]
        } else {
            entries
                .iter()
                .map(|e| policy_webhook(kind, e, options))
                .collect()
        };
        let config_kind = match kind {
            PluginKind::Validator => "ValidatingWebhookConfiguration",
            PluginKind::Initializer => "MutatingWebhookConfiguration",
        };
        docs.push(yaml!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": config_kind,
            "metadata": {
                "name": (options.name.as_str()),
                "labels": (options.labels()),
            },
            "webhooks": (hooks),
        }));
    }
    Ok(docs)
}

fn endpoint(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Validator => "validate",
        PluginKind::Initializer => "mutate",
    }
}

/// One webhook for one policy, on `/validate/{policy}` or `/mutate/{policy}`: the API server
/// applies the policy's own selectors, failure policy and timeout.
fn policy_webhook(kind: PluginKind, entry: &ResolvedEntry, options: &Options) -> Value {
    let e = &entry.entry;
    let failure = match e.mode {
        // A monitor-mode policy never blocks, so an unreachable gateway must not either.
        Mode::Monitor => FailurePolicy::Ignore,
        Mode::Enforce => e.failure_policy,
    };
    let namespaces = if e.namespaces.is_empty() {
        None
    } else {
        Some(e.namespaces.clone())
    };
    webhook(
        kind,
        format!("{}.{}", e.name, options.webhook_domain),
        &format!("/{}/{}", endpoint(kind), e.name),
        e.rules.iter().map(rule).collect(),
        failure,
        timeout_seconds(entry.module.timeout),
        namespace_selector(options, &e.exclude_namespaces, namespaces),
        e.object_selector.as_ref().map(label_selector),
        e.reinvocation.unwrap_or_default(),
        Reach::of(&e.rules),
        options,
    )
}

/// One webhook for every policy of `kind`, on `/validate` or `/mutate`: one call per request,
/// and the gateway applies each policy's selectors itself.
fn aggregated_webhook(kind: PluginKind, entries: &[&ResolvedEntry], options: &Options) -> Value {
    let reach = entries
        .iter()
        .map(|e| Reach::of(&e.entry.rules))
        .fold(Reach::default(), Reach::or);
    let mut rules: Vec<Value> = Vec::new();
    for e in entries {
        for r in e.entry.rules.iter().map(rule) {
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
    }
    // Fail closed if any enforcing policy asks to.
    let failure = if entries
        .iter()
        .any(|e| e.entry.mode == Mode::Enforce && e.entry.failure_policy == FailurePolicy::Fail)
    {
        FailurePolicy::Fail
    } else {
        FailurePolicy::Ignore
    };
    // Validators run in parallel (the slowest counts); initializers one after another.
    let plugin_time = match kind {
        PluginKind::Validator => entries.iter().map(|e| e.module.timeout).max(),
        PluginKind::Initializer => Some(entries.iter().map(|e| e.module.timeout).sum()),
    }
    .unwrap_or_default();
    // Only namespaces that every policy excludes can be left out by the API server.
    let mut excluded: Option<BTreeSet<String>> = None;
    for e in entries {
        let mine: BTreeSet<String> = e.entry.exclude_namespaces.iter().cloned().collect();
        excluded = Some(match excluded {
            None => mine,
            Some(all) => all.intersection(&mine).cloned().collect(),
        });
    }
    let excluded: Vec<String> = excluded.unwrap_or_default().into_iter().collect();
    let only = if entries.iter().all(|e| !e.entry.namespaces.is_empty()) {
        let union: BTreeSet<String> = entries
            .iter()
            .flat_map(|e| e.entry.namespaces.iter().cloned())
            .collect();
        Some(union.into_iter().collect())
    } else {
        None
    };
    webhook(
        kind,
        format!("{}.{}", endpoint(kind), options.webhook_domain),
        &format!("/{}", endpoint(kind)),
        rules,
        failure,
        timeout_seconds(plugin_time),
        namespace_selector(options, &excluded, only),
        None,
        // The API server reinvokes a webhook as a whole: every initializer runs again if one
        // of them asks for it (each must give the same answer on its own output).
        if entries
            .iter()
            .any(|e| e.entry.reinvocation == Some(Reinvocation::IfNeeded))
        {
            Reinvocation::IfNeeded
        } else {
            Reinvocation::Never
        },
        reach,
        options,
    )
}

#[allow(clippy::too_many_arguments)]
fn webhook(
    kind: PluginKind,
    name: String,
    path: &str,
    rules: Vec<Value>,
    failure: FailurePolicy,
    timeout_seconds: u64,
    namespace_selector: Value,
    object_selector: Option<Value>,
    reinvocation: Reinvocation,
    reach: Reach,
    options: &Options,
) -> Value {
    let ca = options.ca_b64();
    let mut hook = yaml!({
        "name": name,
        "clientConfig": (options.target.client_config(path, ca.as_deref())),
        "rules": (rules),
        "failurePolicy": (match failure {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }),
        "matchPolicy": "Equivalent",
        "namespaceSelector": namespace_selector,
    });
    let Value::Mapping(map) = &mut hook else {
        return hook;
    };
    if let Some(selector) = object_selector {
        map.insert("objectSelector".into(), selector);
    }
    map.insert("sideEffects".into(), "None".into());
    map.insert("timeoutSeconds".into(), timeout_seconds.into());
    map.insert("admissionReviewVersions".into(), yaml!(["v1", "v1beta1"]));
    if kind == PluginKind::Initializer {
        let policy = match reinvocation {
            Reinvocation::Never => "Never",
            Reinvocation::IfNeeded => "IfNeeded",
        };
        map.insert("reinvocationPolicy".into(), policy.into());
    }
    let conditions = match_conditions(options, reach);
    if !conditions.is_empty() {
        map.insert("matchConditions".into(), conditions.into());
    }
    hook
}

/// The webhook's `timeoutSeconds`: the plugin time rounded up, plus a second for the network
/// and the envelope, so that a plugin timeout is answered by the gateway (with the policy's
/// failure policy) before the API server gives up on the call; at most 30.
fn timeout_seconds(plugin_time: Duration) -> u64 {
    let secs = plugin_time.as_secs() + u64::from(plugin_time.subsec_nanos() > 0);
    (secs + 1).clamp(1, MAX_TIMEOUT_SECONDS)
}

fn rule(r: &Rule) -> Value {
    yaml!({
        "operations": (r.operations.clone()),
        "apiGroups": (r.api_groups.clone()),
        "apiVersions": (r.api_versions.clone()),
        "resources": (r.resources.clone()),
        "scope": (match r.scope {
            Scope::Cluster => "Cluster",
            Scope::Namespaced => "Namespaced",
            Scope::All => "*",
        }),
    })
}

/// `kubernetes.io/metadata.name NotIn` the exempt namespaces (the control plane's, the
/// gateway's own when it runs in the cluster, and the policy's `excludeNamespaces`), and `In`
/// the policy's `namespaces` when it lists some.
fn namespace_selector(options: &Options, excluded: &[String], only: Option<Vec<String>>) -> Value {
    let mut not_in: BTreeSet<String> = options.exempt_namespaces.iter().cloned().collect();
    // The gateway must never gate its own Pods: with every replica down, none could start.
    not_in.extend(options.target.namespace().map(str::to_owned));
    not_in.extend(excluded.iter().cloned());
    let mut expressions = Vec::new();
    if !not_in.is_empty() {
        expressions.push(yaml!({
            "key": NAMESPACE_NAME_LABEL,
            "operator": "NotIn",
            "values": (not_in.into_iter().collect::<Vec<_>>()),
        }));
    }
    if let Some(only) = only {
        expressions.push(yaml!({
            "key": NAMESPACE_NAME_LABEL,
            "operator": "In",
            "values": only,
        }));
    }
    yaml!({ "matchExpressions": expressions })
}

fn label_selector(selector: &LabelSelector) -> Value {
    let mut map = Mapping::new();
    if !selector.match_labels.is_empty() {
        let labels: Mapping = selector
            .match_labels
            .iter()
            .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
            .collect();
        map.insert("matchLabels".into(), Value::Mapping(labels));
    }
    if !selector.match_expressions.is_empty() {
        let expressions: Vec<Value> = selector
            .match_expressions
            .iter()
            .map(|req| {
                let operator = match req.operator {
                    SelectorOperator::In => "In",
                    SelectorOperator::NotIn => "NotIn",
                    SelectorOperator::Exists => "Exists",
                    SelectorOperator::DoesNotExist => "DoesNotExist",
                };
                let mut m = Mapping::new();
                m.insert("key".into(), req.key.as_str().into());
                m.insert("operator".into(), operator.into());
                if !req.values.is_empty() {
                    m.insert("values".into(), req.values.clone().into());
                }
                Value::Mapping(m)
            })
            .collect();
        map.insert("matchExpressions".into(), expressions.into());
    }
    Value::Mapping(map)
}

/// Whether any of `rules` can match `coordination.k8s.io` Leases (its group or `*`, and
/// `leases` or `*`, with or without a subresource).
fn may_match_leases(rules: &[Rule]) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .iter()
            .any(|g| g == "*" || g == "coordination.k8s.io")
            && r.resources.iter().any(|res| {
                let resource = res.split('/').next().unwrap_or_default();
                resource == "*" || resource == "leases"
            })
    })
}

/// What a kubelet writes to keep its node and its Pods running, as admission sees it:
/// operations, group, resource and sub-resource. It is what Kubernetes' node role grants
/// (`system:node`, `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`, and the node
/// authorizer): register and report its Node, its events, delete its Pods and report their
/// status, evict them, rotate its certificates, get its Pods' service account tokens and
/// certificates, its CSI node, its volumes' claims' status, its stale ResourceSlices, and the
/// token and access reviews that authenticate calls to it. A patch is an `UPDATE` to admission.
///
/// Not in it: the kubelet's Pod `CREATE`s, its mirror Pods. They are the API's copies of
/// static Pods, which run whether or not the copy is admitted, and policies judge them as Pod
/// Security admission does.
#[rustfmt::skip]
const KUBELET_WRITES: &[(&[&str], &str, &str, &str)] = &[
    (&["CREATE", "UPDATE"], "", "nodes", ""),
    (&["UPDATE"], "", "nodes", "status"),
    (&["CREATE", "UPDATE"], "", "events", ""),
    (&["DELETE"], "", "pods", ""),
    (&["UPDATE"], "", "pods", "status"),
    (&["CREATE"], "", "pods", "eviction"),
    (&["CREATE"], "", "serviceaccounts", "token"),
    (&["UPDATE"], "", "persistentvolumeclaims", "status"),
    (&["CREATE"], "certificates.k8s.io", "certificatesigningrequests", ""),
    (&["CREATE"], "certificates.k8s.io", "podcertificaterequests", ""),
    (&["CREATE", "UPDATE", "DELETE"], "coordination.k8s.io", "leases", ""),
    (&["CREATE", "UPDATE", "DELETE"], "storage.k8s.io", "csinodes", ""),
    (&["DELETE"], "resource.k8s.io", "resourceslices", ""),
    (&["CREATE"], "authentication.k8s.io", "tokenreviews", ""),
    (&["CREATE"], "authorization.k8s.io", "subjectaccessreviews", ""),
    (&["CREATE"], "authorization.k8s.io", "localsubjectaccessreviews", ""),
];

/// Whether any of `rules` can match something a kubelet writes ([`KUBELET_WRITES`]).
fn may_match_kubelet_writes(rules: &[Rule]) -> bool {
    rules.iter().any(|rule| {
        KUBELET_WRITES
            .iter()
            .any(|&(operations, group, resource, sub_resource)| {
                crate::policy::rule_can_match(rule, operations, group, resource, sub_resource)
            })
    })
}

/// What a webhook's rules can match that decides its conditions.
#[derive(Debug, Clone, Copy, Default)]
struct Reach {
    /// Leases ([`may_match_leases`]).
    leases: bool,
    /// Something a kubelet writes ([`may_match_kubelet_writes`]).
    kubelet_writes: bool,
}

impl Reach {
    fn of(rules: &[Rule]) -> Reach {
        Reach {
            leases: may_match_leases(rules),
            kubelet_writes: may_match_kubelet_writes(rules),
        }
    }

    fn or(self, other: Reach) -> Reach {
        Reach {
            leases: self.leases || other.leases,
            kubelet_writes: self.kubelet_writes || other.kubelet_writes,
        }
    }
}

/// The webhook's CEL `matchConditions`, evaluated by the API server before it calls the gateway:
/// `exclude-leases` (leases are the control plane's heartbeats) when its rules can match Leases,
/// and `exclude-exempt-groups` when groups are exempt. [`NODES_GROUP`] (the default) is exempt
/// only where the rules can match what a kubelet writes ([`KUBELET_WRITES`]); other groups
/// everywhere. The API server builds a CEL activation for a webhook with any condition, before
/// each call (+0.10-0.12 ms at p50, BENCHMARKS.md), so a webhook that needs none gets none.
fn match_conditions(options: &Options, reach: Reach) -> Vec<Value> {
    let mut conditions = Vec::new();
    if reach.leases {
        conditions.push(yaml!({
            "name": "exclude-leases",
            "expression": r#"!(request.resource.group == "coordination.k8s.io" && request.resource.resource == "leases")"#,
        }));
    }
    let groups: Vec<String> = options
        .exempt_groups
        .iter()
        .filter(|g| reach.kubelet_writes || g.as_str() != NODES_GROUP)
        .map(|g| cel_string(g))
        .collect();
    if !groups.is_empty() {
        let groups = groups.join(", ");
        conditions.push(yaml!({
            "name": "exclude-exempt-groups",
            "expression": (format!("!request.userInfo.groups.exists(g, g in [{groups}])")),
        }));
    }
    conditions
}

/// A CEL string literal.
pub(super) fn cel_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
