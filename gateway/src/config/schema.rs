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
    /// Signatures every `oci://` module of the file must carry (a policy's own section replaces
    /// it for that policy).
    #[serde(default)]
    pub verification: Option<Verification>,
}

/// `verification:`: an `oci://` module is refused unless it has a cosign signature by one of
/// these keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verification {
    /// Trusted cosign public keys (ECDSA P-256, PEM, as `cosign.pub`), relative to the policy
    /// file; at least one.
    pub cosign_keys: Vec<String>,
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

/// Whether the API server calls an initializer again after later webhooks changed the object
/// (`reinvocationPolicy` of admissionregistration.k8s.io/v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Reinvocation {
    /// Once per request.
    #[default]
    Never,
    /// Once more if a webhook or plugin after it changed the object, so that it sees what they
    /// added (e.g. containers). Its changes and audit annotations must then be the same on the
    /// second call: the API server keeps the first value of an annotation and refuses another.
    IfNeeded,
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
    /// The component's path, relative to the policy file, or an OCI artifact:
    /// `oci://REGISTRY/REPOSITORY@sha256:DIGEST` (or `:TAG`, resolved at every load).
    pub module: String,
    /// Optional pin: the module's sha256 in hex.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Signatures this policy's `oci://` module must carry, instead of the file's.
    #[serde(default)]
    pub verification: Option<Verification>,
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
    /// Initializers only: `Never` (default) or `IfNeeded`, rendered as the webhook's
    /// `reinvocationPolicy`.
    #[serde(default)]
    pub reinvocation: Option<Reinvocation>,
    /// Cluster objects the plugin may read through `wasmgate:plugin/cluster` (0.2.0); anything
    /// else is `denied` to it. Empty: none.
    #[serde(default)]
    pub context: Vec<ContextGrant>,
    /// Validators only: also evaluate the policy against the objects already in the cluster
    /// (the resources its rules name, from the same watch caches as `context:`), on a schedule
    /// and on change, and report the results as OpenReports (see docs/reports.md).
    #[serde(default)]
    pub background: bool,
}

/// One `context:` entry: a resource whose objects a policy may read, served from the gateway's
/// watch cache of that resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContextGrant {
    /// The API group; `""` is core.
    pub api_group: String,
    /// The API version, e.g. `v1`.
    pub version: String,
    /// The resource (plural, lowercase), e.g. `ingresses`; no sub-resource, no `*`.
    pub resource: String,
    /// Only objects in these namespaces (empty: every namespace, and cluster-scoped objects).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Only `apiVersion`, `kind` and `metadata` of each object (the cache keeps nothing else).
    #[serde(default)]
    pub metadata_only: bool,
}

impl ContextGrant {
    /// Checks a grant's names as the API server spells them.
    pub fn validate(&self) -> Result<(), String> {
        if !self.api_group.is_empty() && !names::is_dns_subdomain(&self.api_group) {
            return Err(format!(
                "apiGroup {:?} is not an API group (\"\" for core, else a DNS subdomain such as networking.k8s.io)",
                self.api_group
            ));
        }
        if self.version == "*" || !names::is_dns_label(&self.version) {
            return Err(format!(
                "version {:?} is not an API version (e.g. v1, v1beta1)",
                self.version
            ));
        }
        if self.resource.contains('/') {
            return Err(format!(
                "resource {:?}: sub-resources cannot be read, only objects",
                self.resource
            ));
        }
        if self.resource == "*" || !names::is_dns_label(&self.resource) {
            return Err(format!(
                "resource {:?} is not a resource name (plural and lowercase, e.g. ingresses; no *)",
                self.resource
            ));
        }
        if let Some(bad) = self.namespaces.iter().find(|n| !names::is_dns_label(n)) {
            return Err(format!(
                "namespaces: {bad:?} is not a namespace name (a DNS label: 1-63 lowercase letters, digits or '-')"
            ));
        }
        Ok(())
    }

    /// `group/version resource`, with `core` for the core group, as lookup messages name it.
    pub fn describe(&self) -> String {
        let group = if self.api_group.is_empty() {
            "core"
        } else {
            &self.api_group
        };
        let mut text = format!("{group}/{} {}", self.version, self.resource);
        if !self.namespaces.is_empty() {
            text.push_str(&format!(" in namespaces {}", self.namespaces.join(",")));
        }
        if self.metadata_only {
            text.push_str(" (metadata only)");
        }
        text
    }
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
            rule.validate().map_err(|m| format!("rules[{i}]: {m}"))?;
        }
        if self.reinvocation.is_some() && self.kind != PluginKind::Initializer {
            return Err("reinvocation applies to initializers only".into());
        }
        for (field, list) in [
            ("namespaces", &self.namespaces),
            ("excludeNamespaces", &self.exclude_namespaces),
        ] {
            // They become `kubernetes.io/metadata.name` values of a namespaceSelector.
            if let Some(bad) = list.iter().find(|n| !names::is_dns_label(n)) {
                return Err(format!(
                    "{field}: {bad:?} is not a namespace name (a DNS label: 1-63 lowercase letters, digits or '-')"
                ));
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
            selector
                .validate()
                .map_err(|m| format!("objectSelector: {m}"))?;
        }
        if self.background {
            if self.kind != PluginKind::Validator {
                return Err("background applies to validators only".into());
            }
            self.background_grants()?;
        }
        for (i, grant) in self.context.iter().enumerate() {
            grant.validate().map_err(|m| format!("context[{i}]: {m}"))?;
            if let Some(j) = self.context[..i].iter().position(|g| {
                (&g.api_group, &g.version, &g.resource)
                    == (&grant.api_group, &grant.version, &grant.resource)
            }) {
                return Err(format!(
                    "context[{i}]: {} is granted twice (context[{j}] already grants it)",
                    grant.describe()
                ));
            }
        }
        Ok(())
    }
}

impl PolicyEntry {
    /// The resources a `background` policy scans: every (group, version, resource) its rules
    /// name, once each, as grants on whole objects in every namespace (a background scan reads
    /// them from the same watch caches as `context:`, and `manifests --kind deploy` grants
    /// `get`, `list`, `watch` on them). Empty without `background`. Refused when a rule uses `*`
    /// or a sub-resource: a scan needs named resources to watch.
    pub fn background_grants(&self) -> Result<Vec<ContextGrant>, String> {
        let mut grants: Vec<ContextGrant> = Vec::new();
        if !self.background {
            return Ok(grants);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            for group in &rule.api_groups {
                for version in &rule.api_versions {
                    for resource in &rule.resources {
                        let grant = ContextGrant {
                            api_group: group.clone(),
                            version: version.clone(),
                            resource: resource.clone(),
                            namespaces: Vec::new(),
                            metadata_only: false,
                        };
                        if [group, version, resource].iter().any(|s| s.contains('*')) {
                            return Err(format!(
                                "rules[{i}]: background scans need named API groups, versions and resources, not `*` ({})",
                                grant.describe()
                            ));
                        }
                        grant.validate().map_err(|m| {
                            format!("rules[{i}]: background scans read whole objects: {m}")
                        })?;
                        if !grants.contains(&grant) {
                            grants.push(grant);
                        }
                    }
                }
            }
        }
        Ok(grants)
    }

    /// Every resource the gateway must watch for this policy: its `context:` grants, then the
    /// resources its background scan reads (whole objects) that no grant already covers.
    pub fn watched(&self) -> Vec<ContextGrant> {
        let mut all = self.context.clone();
        for grant in self.background_grants().unwrap_or_default() {
            let covered = all.iter().any(|g| {
                (&g.api_group, &g.version, &g.resource)
                    == (&grant.api_group, &grant.version, &grant.resource)
                    && !g.metadata_only
                    && g.namespaces.is_empty()
            });
            if !covered {
                all.push(grant);
            }
        }
        all
    }
}

impl Rule {
    /// Checks a rule as the API server checks a webhook's rules (`validateRuleWithOperations`
    /// and `validateResources` in `pkg/apis/admissionregistration/validation/validation.go`), so
    /// that a rule accepted here renders to a configuration the API server stores. One
    /// difference, stricter: `*` mixed with a named resource is refused in any order (upstream
    /// refuses it only when the named resource comes first).
    pub fn validate(&self) -> Result<(), String> {
        for (field, list) in [
            ("operations", &self.operations),
            ("apiGroups", &self.api_groups),
            ("apiVersions", &self.api_versions),
            ("resources", &self.resources),
        ] {
            if list.is_empty() {
                return Err(format!("{field} must list at least one value"));
            }
            if field != "resources" && list.len() > 1 && list.iter().any(|v| v == "*") {
                return Err(format!(
                    "{field}: if '*' is present, it must be the only value"
                ));
            }
        }
        for op in &self.operations {
            if !matches!(
                op.as_str(),
                "CREATE" | "UPDATE" | "DELETE" | "CONNECT" | "*"
            ) {
                return Err(format!(
                    "unknown operation {op:?} (CREATE, UPDATE, DELETE, CONNECT or *)"
                ));
            }
        }
        if self.api_versions.iter().any(String::is_empty) {
            return Err("apiVersions: a version must not be empty".into());
        }
        validate_resources(&self.resources)
    }
}

/// `validateResources`: well-formed entries, and no entry already covered by a wildcard.
fn validate_resources(resources: &[String]) -> Result<(), String> {
    let mut all_subresources_of = std::collections::BTreeSet::new(); // x/*
    let mut subresource_of_all = std::collections::BTreeSet::new(); // */x
    for res in resources {
        let mut parts = res.splitn(2, '/');
        let main = parts.next().unwrap_or_default();
        let sub = parts.next();
        if main.is_empty() || sub.is_some_and(|sub| sub.is_empty() || sub.contains('/')) {
            return Err(format!(
                "bad resource {res:?} (e.g. pods, pods/status, *, pods/*, */scale, */*)"
            ));
        }
        let Some(sub) = sub else { continue };
        if all_subresources_of.contains(main) {
            return Err(format!(
                "resources: if '{main}/*' is present, must not specify {res}"
            ));
        }
        if subresource_of_all.contains(sub) {
            return Err(format!(
                "resources: if '*/{sub}' is present, must not specify {res}"
            ));
        }
        if sub == "*" {
            all_subresources_of.insert(main);
        }
        if main == "*" {
            subresource_of_all.insert(sub);
        }
    }
    if resources.len() > 1 && resources.iter().any(|r| r == "*/*") {
        return Err("resources: if '*/*' is present, must not specify other resources".into());
    }
    let star = resources.iter().any(|r| r == "*");
    if star && resources.iter().any(|r| r != "*" && !r.contains('/')) {
        return Err(
            "resources: if '*' is present, must not specify other resources without subresources"
                .into(),
        );
    }
    Ok(())
}

impl LabelSelector {
    /// Checks a selector as the API server does (`ValidateLabelSelector` in
    /// `apimachinery/pkg/apis/meta/v1/validation`): qualified-name keys, valid label values,
    /// values for `In`/`NotIn` and none for `Exists`/`DoesNotExist`.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in &self.match_labels {
            names::qualified_name(key).map_err(|m| format!("matchLabels key {key:?}: {m}"))?;
            names::label_value(value)
                .map_err(|m| format!("matchLabels value {value:?} of {key:?}: {m}"))?;
        }
        for req in &self.match_expressions {
            names::qualified_name(&req.key)
                .map_err(|m| format!("matchExpressions key {:?}: {m}", req.key))?;
            let needs_values =
                matches!(req.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if needs_values == req.values.is_empty() {
                return Err(format!(
                    "operator {:?} on key {:?} {}",
                    req.operator,
                    req.key,
                    if needs_values {
                        "needs values"
                    } else {
                        "takes no values"
                    }
                ));
            }
            for value in &req.values {
                names::label_value(value)
                    .map_err(|m| format!("value {value:?} of key {:?}: {m}", req.key))?;
            }
        }
        Ok(())
    }
}

/// Kubernetes name syntax (`apimachinery/pkg/util/validation/validation.go`).
pub(crate) mod names {
    /// `IsDNS1123Label`.
    pub fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    /// `IsDNS1123Subdomain`.
    pub fn is_dns_subdomain(s: &str) -> bool {
        s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    /// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
    fn is_name_part(s: &str) -> bool {
        let alnum = |b: u8| b.is_ascii_alphanumeric();
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().next().is_some_and(alnum)
            && s.bytes().last().is_some_and(alnum)
            && s.bytes()
                .all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
    }

    /// `IsQualifiedName`: `[prefix/]name`, the prefix a DNS subdomain.
    pub fn qualified_name(s: &str) -> Result<(), String> {
        let (prefix, name) = match s.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, s),
        };
        if let Some(prefix) = prefix
            && !is_dns_subdomain(prefix)
        {
            return Err("the prefix must be a DNS subdomain".into());
        }
        if !is_name_part(name) {
            return Err(
                "the name must be 1-63 characters of [A-Za-z0-9-_.], alphanumeric at both ends"
                    .into(),
            );
        }
        Ok(())
    }

    /// `IsValidLabelValue`: empty, or a name part.
    pub fn label_value(s: &str) -> Result<(), String> {
        if s.is_empty() || is_name_part(s) {
            Ok(())
        } else {
            Err("a label value must be empty or 1-63 characters of [A-Za-z0-9-_.], alphanumeric at both ends".into())
        }
    }
}
