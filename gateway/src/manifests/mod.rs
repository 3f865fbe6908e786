//! Owns rendering registration and deployment manifests (`wasmgate manifests`): the Validating-
//! and MutatingWebhookConfigurations for a policy file, the API server's audit webhook
//! kubeconfig and audit Policy, and the objects that run wasmgate in a cluster. No I/O beyond
//! reading the policy file via `config`: every other input (CA, certificates) arrives as bytes
//! from the caller, and the output is YAML text.

use std::fmt::Write as _;

use base64::Engine as _;
use serde_yaml_ng::Value;

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

mod admission;
mod apiserver;
mod audit;
mod config;
mod deploy;
mod rbac;
pub mod sizing;
mod webhooks;
mod yaml;

pub use admission::{DEFAULT_WEBHOOK_KUBECONFIG, admission_configuration, webhook_kubeconfig};
pub use apiserver::{apiserver_client_secret, apiserver_client_secret_name};
pub use audit::{audit_kubeconfig, audit_policy};
pub use config::{config_objects, serving_names};
pub use deploy::{deploy, termination_grace_seconds};
pub use rbac::{lease_name, rbac};
pub use webhooks::webhooks;

/// The label every Namespace carries with its own name (set by the API server since 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Namespaces whose objects never reach the gateway by default: the control plane's own.
pub const DEFAULT_EXEMPT_NAMESPACES: &[&str] = &["kube-system", "kube-node-lease"];
/// The kubelets' group: every kubelet's identity is in it.
pub const NODES_GROUP: &str = "system:nodes";
/// Groups whose requests never reach the gateway by default: kubelets, for what they write to
/// keep their nodes and Pods running (node and Pod status, Pod deletions, certificates,
/// tokens), so that a gateway outage can never take nodes down with it. Their mirror Pods are
/// judged like any Pod.
pub const DEFAULT_EXEMPT_GROUPS: &[&str] = &[NODES_GROUP];
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
/// The audit spool's directory in the cluster (a PersistentVolumeClaim per replica: it survives
/// the Pod's deletion, and the next Pod of the same ordinal resumes it).
pub const SPOOL_DIR: &str = "/var/lib/wasmgate/spool";
/// Where the StatefulSet mounts the API server's client CA (ConfigMap `<name>-client-ca`, key
/// `ca.crt`), for `--audit-client-ca` and `--admission-client-ca`.
pub const CLIENT_CA_DIR: &str = "/etc/wasmgate/client-ca";
/// Where the registry credentials Secret is mounted (`--registry-secret`).
pub const REGISTRY_DIR: &str = "/etc/wasmgate/registry";
/// The policies ConfigMap's key for the registry CA (`--registry-ca`).
pub const REGISTRY_CA_KEY: &str = "registry-ca.crt";

/// A manifest that cannot be rendered, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

pub(crate) fn bad(message: impl Into<String>) -> ManifestError {
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
    pub(crate) fn client_config(&self, path: &str, ca_bundle: Option<&str>) -> Value {
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
    pub(crate) fn endpoint_url(&self, path: &str) -> String {
        match self {
            Target::Url(base) => format!("{base}{path}"),
            Target::Service(Service {
                namespace,
                name,
                port,
            }) => format!("https://{name}.{namespace}.svc:{port}{path}"),
        }
    }

    pub(crate) fn namespace(&self) -> Option<&str> {
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
    /// The container image of the StatefulSet: `NAME:TAG` or `NAME@sha256:DIGEST` (what
    /// `scripts/build-image` prints).
    pub image: String,
    /// The StatefulSet's replicas.
    pub replicas: u32,
    /// Serving identity for the TLS Secret (`config`); no Secret is rendered without it.
    pub tls: Option<TlsMaterial>,
    /// The CA (PEM) that signed the API server's client certificates: the ConfigMap
    /// `<name>-client-ca` (`config`) that `--audit-client-ca` reads.
    pub client_ca_pem: Option<Vec<u8>>,
    /// `/audit` answers only the API server's client certificate (`--audit-client-ca`).
    pub audit_client_auth: bool,
    /// The admission paths answer only the API server's client certificate
    /// (`--admission-client-ca`); needs the API server's AdmissionConfiguration.
    pub admission_client_auth: bool,
    /// `serve --spool-max-bytes`, and the spool volume's size with headroom.
    pub spool_max_bytes: u64,
    /// `serve --audit-max-body-bytes`, and the memory for audit bodies in flight.
    pub audit_max_body: u64,
    /// Policy calls one replica is sized to run at once (memory limit).
    pub plugin_calls: u32,
    /// The spool PersistentVolumeClaims' storage class (default: the cluster's default).
    pub storage_class: Option<String>,
    /// The Secret (`kubernetes.io/dockerconfigjson`, as for `imagePullSecrets`) with the
    /// credentials for `oci://` modules, mounted into the Pods (`deploy`).
    pub registry_secret: Option<String>,
    /// CA certificates (PEM) for the registries of `oci://` modules: carried by the policies
    /// ConfigMap (`config`) and passed as `--registry-ca` (`deploy`).
    pub registry_ca_pem: Option<Vec<u8>>,
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
            client_ca_pem: None,
            audit_client_auth: true,
            admission_client_auth: false,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            audit_max_body: crate::server::DEFAULT_AUDIT_MAX_BODY as u64,
            plugin_calls: DEFAULT_PLUGIN_CALLS,
            storage_class: None,
            registry_secret: None,
            registry_ca_pem: None,
        }
    }

    pub(crate) fn ca_b64(&self) -> Option<String> {
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
        if self.plugin_calls == 0 {
            return Err(bad("--plugin-calls must be at least 1"));
        }
        if !is_image_reference(&self.image) {
            return Err(bad(format!(
                "--image {:?}: expected NAME[:TAG] or NAME@sha256:<64 hex digits>",
                self.image
            )));
        }
        if let Some(class) = &self.storage_class
            && !is_dns_subdomain(class)
        {
            return Err(bad(format!(
                "--storage-class {class:?} is not a DNS subdomain"
            )));
        }
        Ok(())
    }

    pub(crate) fn labels(&self) -> Value {
        yaml!({
            "app.kubernetes.io/name": "wasmgate",
            "app.kubernetes.io/instance": (self.name.as_str()),
        })
    }
}

/// `serve --spool-max-bytes`'s default.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Policy calls a replica is sized for by default: the API server's concurrent webhook calls
/// to one replica rarely exceed this; the runtime's own cap is far higher, so a burst past it
/// can reach the memory limit.
pub const DEFAULT_PLUGIN_CALLS: u32 = 16;

/// Whether `image` is `NAME[:TAG]` or `NAME[:TAG]@sha256:<64 hex>`, NAME being lowercase
/// path components with an optional registry host[:port].
pub fn is_image_reference(image: &str) -> bool {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let Some(hex) = digest.strip_prefix("sha256:") else {
            return false;
        };
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return false;
        }
    }
    // A tag follows the last ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    });
    let mut parts = name.split('/').peekable();
    let host_ok = match parts.peek() {
        Some(first)
            if name.contains('/')
                && (first.contains('.') || first.contains(':') || *first == "localhost") =>
        {
            let host = parts.next().unwrap_or_default();
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        }
        _ => true,
    };
    let path_ok = parts.clone().count() > 0
        && parts.all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        });
    tag_ok && host_ok && path_ok
}

/// The image `deploy` uses unless told otherwise: this build's version.
pub fn default_image() -> String {
    format!("wasmgate:{}", env!("CARGO_PKG_VERSION"))
}

// === output ===

/// The documents as one YAML stream (`---` between documents), after `header` comment lines;
/// strings a YAML 1.1 reader would take for another type are quoted ([`yaml`]).
pub fn to_yaml(header: &[String], docs: &[Value]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for line in header {
        let _ = writeln!(out, "# {line}");
    }
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 || !header.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&yaml::document(doc)?);
    }
    Ok(out)
}

// === names ===

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

pub(crate) fn is_configmap_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
use crate::config::Config;
#[cfg(test)]
use webhooks::cel_string;

#[cfg(test)]
mod tests;
