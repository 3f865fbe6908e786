//! Owns rendering registration and deployment manifests (`wasmgate manifests`): the Validating-
//! and MutatingWebhookConfigurations for a policy file, the API server's audit webhook
//! kubeconfig and audit Policy, and the objects that run wasmgate in a cluster. No I/O beyond
//! reading the policy file via `config`: every other input (CA, certificates) arrives as bytes
//! from the caller, and the output is YAML text.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use serde_yaml_ng::{Mapping, Value};

use crate::config::{
    AuditRule, Config, FailurePolicy, LabelSelector, Mode, PluginKind, Reinvocation, ResolvedEntry,
    Rule, Scope, SelectorOperator,
};
use crate::wire::audit::{Level, Stage};

/// Builds a [`Value`] that reads like the YAML it becomes: `{ "key": value, ... }` is a mapping
/// (keys in the order written), `[a, b]` a sequence, anything else goes through `Value::from`.
/// Values that are expressions of more than one token go in parentheses.
macro_rules! yaml {
    ({ $($key:literal : $value:tt),* $(,)? }) => {{
        #[allow(unused_mut)]
        let mut map = ::serde_yaml_ng::Mapping::new();
        $( map.insert(::serde_yaml_ng::Value::from($key), yaml!($value)); )*
        ::serde_yaml_ng::Value::Mapping(map)
    }};
    ([ $($value:tt),* $(,)? ]) => {
        ::serde_yaml_ng::Value::Sequence(vec![$( yaml!($value) ),*])
    };
    ($value:expr) => { ::serde_yaml_ng::Value::from($value) };
}

/// The label every Namespace carries with its own name (set by the API server since 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Namespaces whose objects never reach the gateway by default: the control plane's own.
pub const DEFAULT_EXEMPT_NAMESPACES: &[&str] = &["kube-system", "kube-node-lease"];
/// Groups whose requests never reach the gateway by default: kubelets (node and pod status,
/// mirror pods), so that a gateway outage can never take nodes down with it.
pub const DEFAULT_EXEMPT_GROUPS: &[&str] = &["system:nodes"];
/// The port wasmgate listens on inside its Pod.
pub const CONTAINER_PORT: u16 = 8443;
/// The API server never waits longer than this for a webhook.
pub const MAX_TIMEOUT_SECONDS: u64 = 30;
/// A ConfigMap holds at most 1 MiB (the API server refuses larger ones).
pub const CONFIGMAP_LIMIT: usize = 1 << 20;
/// Where the Deployment mounts the policies ConfigMap.
pub const POLICY_DIR: &str = "/etc/wasmgate/policies";
/// Where the Deployment mounts the TLS Secret.
pub const TLS_DIR: &str = "/etc/wasmgate/tls";
/// The policy file's key in the ConfigMap.
pub const POLICY_KEY: &str = "policies.yaml";
/// Where audit sinks' `file` outputs with relative paths write in the cluster (an `emptyDir`).
pub const OUTPUT_DIR: &str = "/var/log/wasmgate";
/// The audit spool's directory in the cluster (an `emptyDir`: it survives container restarts,
/// not the Pod's deletion).
pub const SPOOL_DIR: &str = "/var/lib/wasmgate/spool";

/// A manifest that cannot be rendered, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

fn bad(message: impl Into<String>) -> ManifestError {
    ManifestError(message.into())
}

/// An in-cluster Service: where `deploy` puts wasmgate, and how the API server may reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its namespace (also where the Deployment and its friends go).
    pub namespace: String,
    /// Its name (also the name of the Deployment and its friends).
    pub name: String,
    /// The Service port (443 by default).
    pub port: u16,
}

impl Service {
    /// Parses `--service namespace/name[:port]`.
    pub fn parse(spec: &str) -> Result<Service, ManifestError> {
        let err = || {
            bad(format!(
                "--service {spec:?}: expected namespace/name[:port], each a DNS label"
            ))
        };
        let (namespace, rest) = spec.split_once('/').ok_or_else(err)?;
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) => (name, port.parse::<u16>().map_err(|_| err())?),
            None => (rest, 443),
        };
        if !is_dns_label(namespace) || !is_dns_label(name) || port == 0 {
            return Err(err());
        }
        Ok(Service {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port,
        })
    }
}

/// How the API server reaches the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `https://host[:port][/prefix]`: endpoint paths are appended to it.
    Url(String),
    /// Through the in-cluster Service.
    Service(Service),
}

impl Target {
    /// Parses `--url`: `https://` only, a host, no userinfo, query or fragment (what the API
    /// server accepts in `clientConfig.url`). A trailing `/` is dropped.
    pub fn url(url: &str) -> Result<Target, ManifestError> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad(format!("--url {url:?}: webhooks must use https://")))?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() || host.starts_with(':') {
            return Err(bad(format!("--url {url:?}: no host")));
        }
        if rest.contains(['?', '#', '@']) {
            return Err(bad(format!(
                "--url {url:?}: no userinfo, query or fragment allowed"
            )));
        }
        Ok(Target::Url(url.trim_end_matches('/').to_owned()))
    }

    /// The `clientConfig` for an endpoint path such as `/validate/require-labels`.
    fn client_config(&self, path: &str, ca_bundle: Option<&str>) -> Value {
        let mut config = match self {
            Target::Url(base) => yaml!({ "url": (format!("{base}{path}")) }),
            Target::Service(Service {
                namespace,
                name,
                port,
            }) => yaml!({
                "service": {
                    "namespace": (namespace.as_str()),
                    "name": (name.as_str()),
                    "path": path,
                    "port": (*port),
                }
            }),
        };
        if let (Some(ca), Value::Mapping(map)) = (ca_bundle, &mut config) {
            map.insert("caBundle".into(), ca.into());
        }
        config
    }

    /// The full URL of an endpoint (the audit kubeconfig's `server`).
    fn endpoint_url(&self, path: &str) -> String {
        match self {
            Target::Url(base) => format!("{base}{path}"),
            Target::Service(Service {
                namespace,
                name,
                port,
            }) => format!("https://{name}.{namespace}.svc:{port}{path}"),
        }
    }

    fn namespace(&self) -> Option<&str> {
        match self {
            Target::Url(_) => None,
            Target::Service(service) => Some(&service.namespace),
        }
    }
}

/// TLS material for the Secret the Deployment mounts.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// Serving certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Its private key, PEM.
    pub key_pem: Vec<u8>,
}

/// A client certificate in a kubeconfig.
#[derive(Debug, Clone)]
pub enum ClientCredentials {
    /// Paths on the API server's host (`client-certificate`, `client-key`): the API server reads
    /// them, so a renewed certificate needs no new kubeconfig.
    Files {
        /// The certificate's path.
        cert: String,
        /// The key's path.
        key: String,
    },
    /// PEM embedded in the kubeconfig (`client-certificate-data`, `client-key-data`): one
    /// self-contained file.
    Embedded {
        /// The certificate chain, PEM.
        cert_pem: Vec<u8>,
        /// The key, PEM.
        key_pem: Vec<u8>,
    },
}

/// Everything the manifests depend on besides the policy file.
#[derive(Debug, Clone)]
pub struct Options {
    /// How the API server reaches the gateway (webhooks, audit kubeconfig).
    pub target: Target,
    /// Where wasmgate runs in the cluster (deploy, config).
    pub service: Service,
    /// The CA (PEM) that signed the gateway's serving certificate: `caBundle` and the audit
    /// kubeconfig's `certificate-authority-data`. Without it the API server uses system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// `metadata.name` of the webhook configurations (the API server orders configurations by
    /// name).
    pub name: String,
    /// Webhook names are `<policy>.<domain>` (or `validate.<domain>`, `mutate.<domain>`).
    pub webhook_domain: String,
    /// One webhook per kind with the union of rules, instead of one per policy.
    pub aggregate: bool,
    /// Namespaces whose requests never reach the gateway.
    pub exempt_namespaces: Vec<String>,
    /// User groups whose requests never reach the gateway.
    pub exempt_groups: Vec<String>,
    /// The client certificate the API server presents to `/audit` (audit kubeconfig).
    pub audit_client: Option<ClientCredentials>,
    /// The container image of the Deployment.
    pub image: String,
    /// The Deployment's replicas.
    pub replicas: u32,
    /// Serving identity for the TLS Secret (`config`); no Secret is rendered without it.
    pub tls: Option<TlsMaterial>,
}

impl Options {
    /// Defaults for a gateway running as `service`, reached through it: the demo's names, no
    /// CA.
    pub fn new(service: Service) -> Options {
        Options {
            target: Target::Service(service.clone()),
            service,
            ca_pem: None,
            name: "wasmgate".into(),
            webhook_domain: "wasmgate.io".into(),
            aggregate: false,
            exempt_namespaces: DEFAULT_EXEMPT_NAMESPACES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            exempt_groups: DEFAULT_EXEMPT_GROUPS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            audit_client: None,
            image: default_image(),
            replicas: 3,
            tls: None,
        }
    }

    fn ca_b64(&self) -> Option<String> {
        self.ca_pem
            .as_ref()
            .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem))
    }

    /// Checks what clap cannot: names that the API server would refuse.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !is_dns_subdomain(&self.name) {
            return Err(bad(format!(
                "--name {:?} must be a DNS subdomain (lowercase letters, digits, '-', '.')",
                self.name
            )));
        }
        // A webhook name must be a fully qualified name: at least three DNS segments.
        let probe = format!("validate.{}", self.webhook_domain);
        if !is_dns_subdomain(&probe) || self.webhook_domain.split('.').count() < 2 {
            return Err(bad(format!(
                "--webhook-domain {:?} must be a DNS domain of at least two segments (e.g. wasmgate.io), so that webhook names have three",
                self.webhook_domain
            )));
        }
        for ns in &self.exempt_namespaces {
            if !is_dns_label(ns) {
                return Err(bad(format!("--exempt-namespace {ns:?} is not a DNS label")));
            }
        }
        if self.replicas == 0 {
            return Err(bad("--replicas must be at least 1"));
        }
        Ok(())
    }

    fn labels(&self) -> Value {
        yaml!({
            "app.kubernetes.io/name": "wasmgate",
            "app.kubernetes.io/instance": (self.name.as_str()),
        })
    }
}

/// The image `deploy` uses unless told otherwise: this build's version.
pub fn default_image() -> String {
    format!("wasmgate:{}", env!("CARGO_PKG_VERSION"))
}

// === webhooks ===

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
        options,
    )
}

/// One webhook for every policy of `kind`, on `/validate` or `/mutate`: one call per request,
/// and the gateway applies each policy's selectors itself.
fn aggregated_webhook(kind: PluginKind, entries: &[&ResolvedEntry], options: &Options) -> Value {
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
    map.insert("matchConditions".into(), match_conditions(options));
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

/// CEL conditions evaluated by the API server before it calls the gateway: kubelets' requests
/// and leases (the control plane's heartbeats) never reach it, whatever the rules say.
fn match_conditions(options: &Options) -> Value {
    let mut conditions = vec![yaml!({
        "name": "exclude-leases",
        "expression": r#"!(request.resource.group == "coordination.k8s.io" && request.resource.resource == "leases")"#,
    })];
    if !options.exempt_groups.is_empty() {
        let groups = options
            .exempt_groups
            .iter()
            .map(|g| cel_string(g))
            .collect::<Vec<_>>()
            .join(", ");
        conditions.push(yaml!({
            "name": "exclude-exempt-groups",
            "expression": (format!("!request.userInfo.groups.exists(g, g in [{groups}])")),
        }));
    }
    conditions.into()
}

/// A CEL string literal.
fn cel_string(s: &str) -> String {
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

// === audit ===

/// The kubeconfig for kube-apiserver's `--audit-webhook-config-file`: the gateway's `/audit`
/// endpoint, its CA, and optionally the client certificate the API server presents.
pub fn audit_kubeconfig(options: &Options) -> Result<Value, ManifestError> {
    options.validate()?;
    let mut cluster = yaml!({ "server": (options.target.endpoint_url("/audit")) });
    if let (Some(ca), Value::Mapping(map)) = (options.ca_b64(), &mut cluster) {
        map.insert("certificate-authority-data".into(), ca.into());
    }
    let mut user = Mapping::new();
    match &options.audit_client {
        None => {}
        Some(ClientCredentials::Files { cert, key }) => {
            user.insert("client-certificate".into(), cert.as_str().into());
            user.insert("client-key".into(), key.as_str().into());
        }
        Some(ClientCredentials::Embedded { cert_pem, key_pem }) => {
            let b64 = &base64::engine::general_purpose::STANDARD;
            user.insert(
                "client-certificate-data".into(),
                b64.encode(cert_pem).into(),
            );
            user.insert("client-key-data".into(), b64.encode(key_pem).into());
        }
    }
    Ok(yaml!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": (options.name.as_str()), "cluster": cluster }],
        "users": [{ "name": "kube-apiserver", "user": (Value::Mapping(user)) }],
        "contexts": [{
            "name": (options.name.as_str()),
            "context": { "cluster": (options.name.as_str()), "user": "kube-apiserver" },
        }],
        "current-context": (options.name.as_str()),
    }))
}

/// Requests the generated audit Policy drops at the API server when no sink wants any of them:
/// the control plane's heartbeats, events, and health probes, which are most of the volume of
/// an idle cluster.
const AUDIT_NOISE: &[Noise] = &[
    Noise::Resource("coordination.k8s.io", "leases"),
    Noise::Resource("", "events"),
    Noise::Resource("events.k8s.io", "events"),
    Noise::Url("/healthz"),
    Noise::Url("/livez"),
    Noise::Url("/readyz"),
];

/// A class of requests: a resource (without subresources) of a group, or the non-resource URLs
/// under a path prefix.
#[derive(Debug, Clone, Copy)]
enum Noise {
    Resource(&'static str, &'static str),
    Url(&'static str),
}

/// The audit Policy for kube-apiserver's `--audit-policy-file`, from the policy file's audit
/// sinks. The gateway routes every event through each sink's own rules and strips it to that
/// sink's level, so this policy only has to produce every event some sink wants, at the highest
/// level any sink wants anything: the noise classes no sink wants are dropped (level `None`),
/// everything else is sent at that level, and the stages every sink omits are omitted.
pub fn audit_policy(config: &Config) -> Result<Value, ManifestError> {
    let sinks = &config.sinks;
    if sinks.is_empty() {
        return Err(bad(format!(
            "{}: no auditSinks, so the API server has nothing to send",
            config.file.display()
        )));
    }
    let top = sinks
        .iter()
        .flat_map(|s| s.entry.rules.iter().map(|r| r.level))
        .max()
        .unwrap_or(Level::None);
    if top == Level::None {
        return Err(bad(format!(
            "{}: every audit sink's rules say None, so the API server has nothing to send",
            config.file.display()
        )));
    }
    let unwanted: Vec<Noise> = AUDIT_NOISE
        .iter()
        .copied()
        .filter(|noise| sinks.iter().all(|s| never_wants(&s.entry.rules, *noise)))
        .collect();
    let mut rules = Vec::new();
    let mut resources: Vec<(&str, Vec<&str>)> = Vec::new();
    for noise in &unwanted {
        if let Noise::Resource(group, resource) = *noise {
            match resources.iter_mut().find(|(g, _)| *g == group) {
                Some((_, list)) => list.push(resource),
                None => resources.push((group, vec![resource])),
            }
        }
    }
    if !resources.is_empty() {
        let resources: Vec<Value> = resources
            .into_iter()
            .map(|(group, list)| yaml!({ "group": group, "resources": list }))
            .collect();
        rules.push(yaml!({ "level": "None", "resources": resources }));
    }
    let urls: Vec<String> = unwanted
        .iter()
        .filter_map(|noise| match noise {
            Noise::Url(prefix) => Some(format!("{prefix}*")),
            Noise::Resource(..) => None,
        })
        .collect();
    if !urls.is_empty() {
        rules.push(yaml!({ "level": "None", "nonResourceURLs": urls }));
    }
    rules.push(yaml!({ "level": (top.as_str()) }));
    // A stage is left out only if every sink leaves it out everywhere.
    let mut omit: Option<Vec<Stage>> = None;
    for sink in sinks {
        let mine = &sink.entry.omit_stages;
        omit = Some(match omit {
            None => mine.clone(),
            Some(all) => all.into_iter().filter(|s| mine.contains(s)).collect(),
        });
    }
    let omit: Vec<Value> = omit
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.as_str().into())
        .collect();
    let omit_managed_fields = sinks.iter().all(|s| {
        s.entry.omit_managed_fields
            && s.entry
                .rules
                .iter()
                .all(|r| r.omit_managed_fields != Some(false))
    });
    let mut policy = yaml!({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
    });
    if let Value::Mapping(map) = &mut policy {
        if !omit.is_empty() {
            map.insert("omitStages".into(), omit.into());
        }
        if omit_managed_fields {
            map.insert("omitManagedFields".into(), true.into());
        }
        map.insert("rules".into(), rules.into());
    }
    Ok(policy)
}

/// Whether a sink with these rules (first match wins, no match is `None`) gives every request
/// of `noise` the level `None`.
fn never_wants(rules: &[AuditRule], noise: Noise) -> bool {
    for rule in rules {
        if !could_match(rule, noise) {
            continue;
        }
        if rule.level != Level::None {
            return false;
        }
        if covers(rule, noise) {
            return true;
        }
    }
    true
}

/// Whether `rule` matches at least one request of `noise`.
fn could_match(rule: &AuditRule, noise: Noise) -> bool {
    match noise {
        Noise::Resource(group, resource) => {
            rule.non_resource_urls.is_empty()
                && (rule.resources.is_empty()
                    || rule.resources.iter().any(|gr| {
                        (gr.group == "*" || gr.group == group)
                            && (gr.resources.is_empty()
                                || gr.resources.iter().any(|r| r == "*" || r == resource))
                    }))
        }
        Noise::Url(prefix) => {
            rule.resources.is_empty()
                && rule.namespaces.is_empty()
                && (rule.non_resource_urls.is_empty()
                    || rule
                        .non_resource_urls
                        .iter()
                        .any(|p| match p.strip_suffix('*') {
                            Some(p) => p.starts_with(prefix) || prefix.starts_with(p),
                            None => p.starts_with(prefix),
                        }))
        }
    }
}

/// Whether `rule` matches every request of `noise`.
fn covers(rule: &AuditRule, noise: Noise) -> bool {
    if !(rule.users.is_empty() && rule.user_groups.is_empty() && rule.verbs.is_empty()) {
        return false;
    }
    match noise {
        Noise::Resource(group, resource) => {
            rule.namespaces.is_empty()
                && rule.non_resource_urls.is_empty()
                && (rule.resources.is_empty()
                    || rule.resources.iter().any(|gr| {
                        (gr.group == "*" || gr.group == group)
                            && gr.resource_names.is_empty()
                            && (gr.resources.is_empty()
                                || gr.resources.iter().any(|r| r == "*" || r == resource))
                    }))
        }
        Noise::Url(prefix) => {
            rule.non_resource_urls.is_empty()
                || rule
                    .non_resource_urls
                    .iter()
                    .any(|p| p.strip_suffix('*').is_some_and(|p| prefix.starts_with(p)))
        }
    }
}

// === deploy ===

/// The objects that run wasmgate in the cluster as `options.service`: Namespace, ServiceAccount, Service, Deployment, PodDisruptionBudget. They do not
/// depend on the policy file, so `deploy/` can hold them verbatim; the policies and plugins
/// (ConfigMap) and the TLS Secret come from [`config_objects`].
pub fn deploy(options: &Options) -> Result<Vec<Value>, ManifestError> {
    options.validate()?;
    let Service {
        namespace,
        name,
        port,
    } = &options.service;
    let ns = namespace.as_str();
    let labels = options.labels();
    let meta = |name: &str| {
        yaml!({
            "name": name,
            "namespace": ns,
            "labels": (labels.clone()),
        })
    };
    let https_probe = |path: &str, period: u32, failures: u32| {
        yaml!({
            "httpGet": { "path": path, "port": "https", "scheme": "HTTPS" },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        })
    };
    let args: Vec<Value> = [
        "serve".to_owned(),
        format!("--listen=0.0.0.0:{CONTAINER_PORT}"),
        format!("--config={POLICY_DIR}/{POLICY_KEY}"),
        format!("--tls-cert={TLS_DIR}/tls.crt"),
        format!("--tls-key={TLS_DIR}/tls.key"),
        "--cache-dir=/var/cache/wasmgate".to_owned(),
        format!("--spool-dir={SPOOL_DIR}"),
        "--state-dir=/tmp/wasmgate".to_owned(),
        "--log-json".to_owned(),
    ]
    .into_iter()
    .map(Value::from)
    .collect();
    let container = yaml!({
        "name": "wasmgate",
        "image": (options.image.as_str()),
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [{ "name": "https", "containerPort": CONTAINER_PORT, "protocol": "TCP" }],
        // Compiling the plugins on a cold start takes seconds; the other probes wait for it.
        "startupProbe": (https_probe("/healthz", 2, 60)),
        "readinessProbe": (https_probe("/readyz", 5, 2)),
        "livenessProbe": (https_probe("/healthz", 10, 3)),
        // The Service stops sending new requests once the endpoint is gone; wait for that
        // before the process stops accepting, so that no webhook call is refused.
        "lifecycle": { "preStop": { "sleep": { "seconds": 5 } } },
        "resources": {
            "requests": { "cpu": "100m", "memory": "128Mi" },
            "limits": { "memory": "1Gi" },
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        },
        "volumeMounts": [
            { "name": "policies", "mountPath": POLICY_DIR, "readOnly": true },
            { "name": "tls", "mountPath": TLS_DIR, "readOnly": true },
            { "name": "cache", "mountPath": "/var/cache/wasmgate" },
            { "name": "spool", "mountPath": SPOOL_DIR },
            { "name": "outputs", "mountPath": OUTPUT_DIR },
            { "name": "tmp", "mountPath": "/tmp" },
        ],
    });
    let selector = labels.clone();
    Ok(vec![
        yaml!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": {
                    "app.kubernetes.io/name": "wasmgate",
                    // wasmgate's Pod meets the restricted Pod Security Standard.
                    "pod-security.kubernetes.io/enforce": "restricted",
                },
            },
        }),
        yaml!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": (meta(name)),
            // The gateway never calls the Kubernetes API.
            "automountServiceAccountToken": false,
        }),
        yaml!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": (meta(name)),
            "spec": {
                "selector": (selector.clone()),
                "ports": [{
                    "name": "https",
                    "port": (*port),
                    "targetPort": "https",
                    "protocol": "TCP",
                }],
            },
        }),
        yaml!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": (meta(name)),
            "spec": {
                "replicas": (options.replicas),
                "revisionHistoryLimit": 5,
                "selector": { "matchLabels": (selector.clone()) },
                // Never fewer ready replicas than asked for during a rollout.
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 },
                },
                "template": {
                    "metadata": { "labels": (selector.clone()) },
                    "spec": {
                        "serviceAccountName": (name.as_str()),
                        "automountServiceAccountToken": false,
                        // The preStop sleep (5 s), the audit drain (--audit-drain-timeout,
                        // 10 s) and the server's DRAIN_TIMEOUT (30 s), with room to spare.
                        "terminationGracePeriodSeconds": 60,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "topologySpreadConstraints": [{
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": { "matchLabels": (selector.clone()) },
                        }],
                        "containers": [container],
                        "volumes": [
                            { "name": "policies", "configMap": { "name": (format!("{name}-policies")) } },
                            { "name": "tls", "secret": { "secretName": (format!("{name}-tls")) } },
                            { "name": "cache", "emptyDir": { "sizeLimit": "256Mi" } },
                            // serve's --spool-max-bytes (1Gi by default), with room to spare.
                            { "name": "spool", "emptyDir": { "sizeLimit": "2Gi" } },
                            { "name": "outputs", "emptyDir": { "sizeLimit": "1Gi" } },
                            { "name": "tmp", "emptyDir": { "sizeLimit": "16Mi" } },
                        ],
                    },
                },
            },
        }),
        yaml!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": (meta(name)),
            "spec": {
                "maxUnavailable": 1,
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
                "selector": { "matchLabels": selector },
            },
        }),
    ])
}

/// The ConfigMap `<name>-policies` with the policy file (modules renamed to their key in the
/// ConfigMap and pinned by sha256) and every plugin as binary data, and, when TLS material is
/// given, the Secret `<name>-tls` the Deployment mounts. `policy_text` is the policy file as
/// read by `config`.
pub fn config_objects(
    config: &Config,
    policy_text: &str,
    options: &Options,
) -> Result<Vec<Value>, ManifestError> {
    options.validate()?;
    let Service {
        namespace, name, ..
    } = &options.service;
    let mut doc: Value = serde_yaml_ng::from_str(policy_text)
        .map_err(|e| bad(format!("{}: {e}", config.file.display())))?;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let mut binary = Mapping::new();
    let mut keys: Vec<(String, String)> = Vec::new(); // (key, sha256)
    let mut size = 0usize;
    // (section, entry name, module path, bytes, sha256) in file order, per section.
    let sections: [(&str, Vec<ModuleRef<'_>>); 2] = [
        (
            "policies",
            config
                .entries
                .iter()
                .map(|e| ModuleRef {
                    name: &e.entry.name,
                    path: &e.module.path,
                    bytes: &e.module.bytes,
                    sha256: &e.module.sha256,
                })
                .collect(),
        ),
        (
            "auditSinks",
            config
                .sinks
                .iter()
                .map(|e| ModuleRef {
                    name: &e.entry.name,
                    path: &e.module.path,
                    bytes: &e.module.bytes,
                    sha256: &e.module.sha256,
                })
                .collect(),
        ),
    ];
    for (section, modules) in &sections {
        let Some(items) = doc.get_mut(*section).and_then(Value::as_sequence_mut) else {
            continue;
        };
        for (item, module) in items.iter_mut().zip(modules) {
            let base = module
                .path
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("plugin.wasm");
            let key = match keys.iter().find(|(k, _)| k == base) {
                // The same file name holding other bytes: keep both, under distinct keys.
                Some((_, sha)) if sha != module.sha256 => format!("{}-{base}", module.name),
                _ => base.to_owned(),
            };
            if !is_configmap_key(&key) {
                return Err(bad(format!(
                    "{:?}: module file name {key:?} is not a valid ConfigMap key",
                    module.name
                )));
            }
            if !keys.iter().any(|(k, _)| *k == key) {
                keys.push((key.clone(), module.sha256.to_owned()));
                size += module.bytes.len();
                binary.insert(key.as_str().into(), b64.encode(module.bytes).into());
            }
            let Value::Mapping(map) = item else { continue };
            map.insert("module".into(), key.as_str().into());
            map.insert("sha256".into(), module.sha256.into());
            if *section == "auditSinks" {
                relocate_file_outputs(map);
            }
        }
    }
    let text = serde_yaml_ng::to_string(&doc).map_err(|e| bad(e.to_string()))?;
    let text = format!(
        "# Rendered by `wasmgate manifests --kind config` from {}; modules are keys of this ConfigMap.\n{text}",
        config
            .file
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("the policy file")
    );
    size += text.len();
    if size > CONFIGMAP_LIMIT {
        return Err(bad(format!(
            "the policies and plugins take {size} bytes, more than a ConfigMap holds ({CONFIGMAP_LIMIT})"
        )));
    }
    let labels = options.labels();
    let mut docs = vec![yaml!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": (format!("{name}-policies")),
            "namespace": (namespace.as_str()),
            "labels": (labels.clone()),
        },
        "data": { "policies.yaml": text },
        "binaryData": (Value::Mapping(binary)),
    })];
    if let Some(tls) = &options.tls {
        let mut data = yaml!({
            "tls.crt": (b64.encode(&tls.cert_pem)),
            "tls.key": (b64.encode(&tls.key_pem)),
        });
        if let (Some(ca), Value::Mapping(map)) = (options.ca_b64(), &mut data) {
            map.insert("ca.crt".into(), ca.into());
        }
        docs.push(yaml!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": (format!("{name}-tls")),
                "namespace": (namespace.as_str()),
                "labels": labels,
            },
            "type": "kubernetes.io/tls",
            "data": data,
        }));
    }
    Ok(docs)
}

/// A module named by a policy or an audit sink.
struct ModuleRef<'a> {
    name: &'a str,
    path: &'a std::path::Path,
    bytes: &'a [u8],
    sha256: &'a str,
}

/// A sink's `file` outputs with a relative path would resolve next to the policy file, in the
/// read-only ConfigMap volume: they go under [`OUTPUT_DIR`] instead (an `emptyDir`).
fn relocate_file_outputs(sink: &mut Mapping) {
    let Some(Value::Sequence(outputs)) = sink.get_mut("outputs") else {
        return;
    };
    for output in outputs {
        let Value::Mapping(output) = output else {
            continue;
        };
        if output.get("type").and_then(Value::as_str) != Some("file") {
            continue;
        }
        let relative = match output.get("path").and_then(Value::as_str) {
            Some(path) if !path.starts_with('/') => path.trim_start_matches("./").to_owned(),
            _ => continue,
        };
        output.insert("path".into(), format!("{OUTPUT_DIR}/{relative}").into());
    }
}

/// The DNS names a serving certificate for `target` needs: for a Service, the name the API
/// server checks (`<svc>.<ns>.svc`) and its longer forms; for a URL, its host.
pub fn serving_names(target: &Target) -> Vec<String> {
    match target {
        Target::Url(url) => {
            let host = url
                .trim_start_matches("https://")
                .split('/')
                .next()
                .unwrap_or_default();
            // [v6]:port, host:port, or host.
            let host = match host.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or_default(),
                None => host.rsplit_once(':').map_or(host, |(h, _)| h),
            };
            vec![host.to_owned()]
        }
        Target::Service(Service {
            namespace, name, ..
        }) => vec![
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}.svc.cluster.local"),
            format!("{name}.{namespace}"),
        ],
    }
}

// === output ===

/// The documents as one YAML stream (`---` between documents), after `header` comment lines.
pub fn to_yaml(header: &[String], docs: &[Value]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for line in header {
        let _ = writeln!(out, "# {line}");
    }
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 || !header.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml_ng::to_string(doc).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

// === names ===

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_configmap_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests;
