//! The serde schema of `policies/*.yaml`. Our own format, so unknown keys are errors.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyFile {
    /// Must be `wasmgate.io/v1alpha1`.
    pub api_version: String,
    /// Must be `PolicySet`.
    pub kind: String,
    /// Free metadata (name, labels), as in Kubernetes objects; not interpreted.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Admission policies; initializers run in this order.
    #[serde(default)]
    pub policies: Vec<PolicyEntry>,
    /// Audit sinks: each sees the events its rules route to it, independently of the others.
    #[serde(default)]
    pub audit_sinks: Vec<super::AuditSinkEntry>,
}

/// The kind of plugin an entry runs, i.e. the WIT world its module must implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// World `validator`, served on `/validate`.
    Validator,
    /// World `initializer`, served on `/mutate`.
    Initializer,
}

impl PluginKind {
    /// The WIT world's name.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::Validator => "validator",
            PluginKind::Initializer => "initializer",
        }
    }
}

/// What a deny does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// A deny denies.
    #[default]
    Enforce,
    /// A deny becomes a warning and a log line; an initializer's changes are not applied.
    Monitor,
}

/// What a plugin failure (trap, deadline, memory cap, invalid output) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum FailurePolicy {
    /// Deny with code 500 and a message naming the plugin and the cause.
    #[default]
    Fail,
    /// Allow, with a warning naming the plugin and the cause.
    Ignore,
}

/// Which objects a rule covers by scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Scope {
    /// Cluster-scoped resources only.
    Cluster,
    /// Namespaced resources only.
    Namespaced,
    /// Both.
    #[default]
    #[serde(rename = "*")]
    All,
}

/// One admission rule, as in admissionregistration.k8s.io/v1 `RuleWithOperations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` or `*`.
    pub operations: Vec<String>,
    /// API groups (`""` is core) or `*`.
    pub api_groups: Vec<String>,
    /// API versions or `*`.
    pub api_versions: Vec<String>,
    /// Resources: `pods`, `pods/status`, `*`, `pods/*`, `*/scale`, `*/*`.
    pub resources: Vec<String>,
    /// `Cluster`, `Namespaced` or `*` (the default).
    #[serde(default)]
    pub scope: Scope,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold.
    #[serde(default)]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn`; must be empty for `Exists` and `DoesNotExist`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[allow(missing_docs)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One admission policy: a plugin module, where it applies and how its answers count.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyEntry {
    /// A DNS label, unique in the file; also the path of `/validate/{name}`.
    pub name: String,
    /// `validator` or `initializer`.
    pub kind: PluginKind,
    /// The component's path, relative to the policy file.
    pub module: String,
    /// Optional pin: the module's sha256 in hex.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Free settings given to the plugin as JSON text.
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    /// When the policy applies; at least one rule.
    pub rules: Vec<Rule>,
    /// Only these namespaces (empty: all). Cluster-scoped objects never match a non-empty list.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Never these namespaces.
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// Only objects (new or old) whose labels match.
    #[serde(default)]
    pub object_selector: Option<LabelSelector>,
    /// `enforce` (default) or `monitor`.
    #[serde(default)]
    pub mode: Mode,
    /// `Fail` (default) or `Ignore`.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Per-call deadline as a Go duration (`250ms`, `2s`); default 2s, at most 30s.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Linear-memory cap as a quantity (`64Mi`); default 64Mi, at most 1Gi.
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// Opt-in reuse of warm instances (gives up isolation between requests); absent: a fresh
    /// instance per call.
    #[serde(default)]
    pub instance_reuse: Option<InstanceReuse>,
}

/// `instanceReuse`: keep up to `maxIdle` instances warm and retire each after `maxCalls` calls
/// (or at once after a trap, and on every reload).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceReuse {
    /// Calls an instance serves before it is retired: 2 to 1,000,000.
    pub max_calls: u32,
    /// Idle instances kept: 1 to 16.
    pub max_idle: usize,
}

impl PolicyEntry {
    /// Checks what the schema alone cannot: rule values and selector shapes.
    pub fn validate(&self) -> Result<(), String> {
        if self.rules.is_empty() {
            return Err(
                "needs at least one rule (operations, apiGroups, apiVersions, resources)".into(),
            );
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |m: String| format!("rules[{i}]: {m}");
            if rule.operations.is_empty()
                || rule.api_groups.is_empty()
                || rule.api_versions.is_empty()
                || rule.resources.is_empty()
            {
                return Err(at("operations, apiGroups, apiVersions and resources must each list at least one value".into()));
            }
            for op in &rule.operations {
                if !matches!(
                    op.as_str(),
                    "CREATE" | "UPDATE" | "DELETE" | "CONNECT" | "*"
                ) {
                    return Err(at(format!(
                        "unknown operation {op:?} (CREATE, UPDATE, DELETE, CONNECT or *)"
                    )));
                }
            }
            for res in &rule.resources {
                let mut parts = res.splitn(2, '/');
                let main = parts.next().unwrap_or_default();
                if main.is_empty()
                    || parts
                        .next()
                        .is_some_and(|sub| sub.is_empty() || sub.contains('/'))
                {
                    return Err(at(format!(
                        "bad resource {res:?} (e.g. pods, pods/status, *, pods/*, */scale)"
                    )));
                }
            }
        }
        if let Some(reuse) = &self.instance_reuse {
            if !(2..=1_000_000).contains(&reuse.max_calls) {
                return Err("instanceReuse.maxCalls must be between 2 and 1000000".into());
            }
            if !(1..=16).contains(&reuse.max_idle) {
                return Err("instanceReuse.maxIdle must be between 1 and 16".into());
            }
        }
        if let Some(selector) = &self.object_selector {
            for req in &selector.match_expressions {
                let needs_values =
                    matches!(req.operator, SelectorOperator::In | SelectorOperator::NotIn);
                if needs_values == req.values.is_empty() {
                    return Err(format!(
                        "objectSelector: operator {:?} on key {:?} {}",
                        req.operator,
                        req.key,
                        if needs_values {
                            "needs values"
                        } else {
                            "takes no values"
                        }
                    ));
                }
            }
        }
        Ok(())
    }
}
