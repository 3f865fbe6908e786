//! The `auditSinks:` part of the policy file: its schema (the rules are `audit.k8s.io/v1` Policy
//! rules; the outputs are named grants) and its validation. Our own format, so unknown keys are
//! errors; the rule fields keep the upstream names so that an audit Policy's rules paste in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::wire::audit::{Level, Stage};

/// A sink's per-call deadline when its entry names none. A sink formats a batch of at most a
/// few hundred events: milliseconds; the margin is for cold pages and a loaded machine.
pub const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `timeout` a sink may ask for. Nothing waits on a sink but its own cursor, but a
/// call holds a pool slot and a blocking thread for that long.
pub const MAX_SINK_TIMEOUT: Duration = Duration::from_secs(60);
/// Failed calls of one batch before it is moved to the dead-letter file. With the backoff
/// (0.25 s doubling) five attempts span about four seconds: enough to ride out a transient
/// failure, short enough that a poison batch does not hold the sink back for long.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The most `maxAttempts` may be: with the backoff capped at 10 s, about a quarter of an hour.
pub const MAX_MAX_ATTEMPTS: u32 = 100;
/// The most batches one sink may have in flight (`maxInFlight`): each holds a fresh instance
/// (up to its `memoryLimit`) and one of the policy's instance slots, of which there are 64.
pub const MAX_IN_FLIGHT: u32 = 32;

/// Batches a sink has in flight when its entry names no `maxInFlight`: one per core (at least
/// two, so that one batch's output write overlaps the next one's plugin call), at most 8.
pub fn default_in_flight() -> u32 {
    std::thread::available_parallelism()
        .map_or(2, |n| u32::try_from(n.get()).unwrap_or(8))
        .clamp(2, 8)
}
/// A file output's size before rotation when its grant names none.
pub const DEFAULT_FILE_MAX_SIZE: u64 = 100 << 20;
/// The smallest `maxSize`: below this, rotation would churn on every batch.
pub const MIN_FILE_MAX_SIZE: u64 = 4 << 10;
/// Rotated files kept when a file output names no `maxFiles`.
pub const DEFAULT_FILE_MAX_FILES: u32 = 5;
/// The most rotated files a file output may keep; more is a job for a log shipper.
pub const MAX_FILE_MAX_FILES: u32 = 1000;
/// Lines per POST of an HTTP output when its grant names none: Loki, Elasticsearch and Splunk
/// accept bodies of a few MiB; 500 lines of 1-3 KB events are about 1 MiB.
pub const DEFAULT_HTTP_BATCH_LINES: u32 = 500;
/// The most lines one POST may carry.
pub const MAX_HTTP_BATCH_LINES: u32 = 100_000;

/// One audit sink: a plugin of the `audit-sink` world, which events it sees at which level, and
/// the outputs it may write to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditSinkEntry {
    /// A DNS label, unique in the file (among policies too).
    pub name: String,
    /// The component's path, relative to the policy file.
    pub module: String,
    /// Optional pin: the module's sha256 in hex.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Free settings given to the plugin as JSON text.
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    /// `audit.k8s.io/v1` Policy rules: the first match gives the level; no match means None.
    pub rules: Vec<AuditRule>,
    /// Stages this sink never sees, merged into every rule's (as the Policy's `omitStages`).
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    /// Strip `metadata.managedFields` from objects, unless a rule says otherwise.
    #[serde(default)]
    pub omit_managed_fields: bool,
    /// The outputs granted to the sink; it may write to no others.
    pub outputs: Vec<OutputEntry>,
    /// Per-call deadline as a Go duration; default 5s, at most 60s.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Linear-memory cap as a quantity (`64Mi`); default 64Mi, at most 1Gi.
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// Failed calls of one batch before it goes to the dead-letter file; default 5.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Batches delivered at once, each in its own fresh instance; default one per core (2-8),
    /// at most 32. Outputs still receive them in spool order.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

/// One `audit.k8s.io/v1` PolicyRule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditRule {
    /// The level events matching this rule are kept at.
    pub level: Level,
    /// Usernames (exact); empty means any.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups; any one in common matches; empty means any.
    #[serde(default)]
    pub user_groups: Vec<String>,
    /// Verbs (exact); empty means any.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resources; empty (with `namespaces` empty) means any request.
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    /// Namespaces of resource requests; `""` means cluster-scoped.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Non-resource paths: exact, `*`, or a prefix ending in `*`.
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    /// Stages not recorded for this rule.
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    /// Overrides the sink's `omitManagedFields` for this rule.
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
}

/// Resources of one API group in an audit rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GroupResources {
    /// The API group; `""` is core, `*` is any.
    #[serde(default)]
    pub group: String,
    /// `pods`, `pods/log`, `*`, `*/status`, `pods/*`; empty means the whole group.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Object names; requires `resources`.
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// The kind of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputType {
    /// JSON Lines in a file with size-based rotation.
    File,
    /// The gateway's standard output.
    Stdout,
    /// POSTs of JSON lines to a URL.
    Http,
    /// Records produced to a Kafka topic.
    Kafka,
}

/// What a Kafka output keys each record with (records with one key go to one partition, in
/// order). Read from the line the sink wrote, as an `audit.k8s.io/v1` Event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum KafkaKey {
    /// `auditID`: a request's stages land in one partition, in order.
    #[default]
    #[serde(rename = "auditID")]
    AuditId,
    /// `objectRef.namespace` (no key for cluster-scoped requests).
    #[serde(rename = "namespace")]
    Namespace,
    /// `user.username`.
    #[serde(rename = "user")]
    User,
}

/// A Kafka output's SASL login.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SaslEntry {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// A file holding the user name.
    pub username_file: String,
    /// A file holding the password.
    pub password_file: String,
}

/// A SASL mechanism a Kafka output can log in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// User name and password in the clear (over TLS, please).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka and brokers use.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A resolved SASL login: credentials are read from the files when the output connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name file.
    pub username_file: PathBuf,
    /// The password file.
    pub password_file: PathBuf,
}

/// A resolved Kafka output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSpec {
    /// `host:port` of the brokers to start from.
    pub bootstrap_servers: Vec<String>,
    /// The topic (it must exist: the output does not create it).
    pub topic: String,
    /// What each record is keyed with.
    pub key: KafkaKey,
    /// TLS: the CA bundle to trust (TLS is on when this or a client certificate is given).
    pub ca_file: Option<PathBuf>,
    /// TLS client certificate and its key (PEM).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key.
    pub key_file: Option<PathBuf>,
    /// SASL login.
    pub sasl: Option<Sasl>,
}

/// One output granted to a sink, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutputEntry {
    /// What the sink calls it in its emissions; unique within the sink.
    pub name: String,
    /// `file`, `stdout`, `http` or `kafka`.
    #[serde(rename = "type")]
    pub kind: OutputType,
    /// file: the path, relative to the policy file or absolute.
    #[serde(default)]
    pub path: Option<String>,
    /// file: rotate before the file would grow past this quantity (`100Mi`).
    #[serde(default)]
    pub max_size: Option<String>,
    /// file: rotated files kept (`audit.jsonl.1` ...); default 5.
    #[serde(default)]
    pub max_files: Option<u32>,
    /// http: the URL to POST to (`https://` or `http://`).
    #[serde(default)]
    pub url: Option<String>,
    /// http: PEM CA bundle to trust instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// http: a file holding a bearer token, read before every POST (tokens rotate).
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    /// http: lines per POST; default 500.
    #[serde(default)]
    pub batch_lines: Option<u32>,
    /// kafka: `host:port` of the brokers to start from.
    #[serde(default)]
    pub bootstrap_servers: Option<Vec<String>>,
    /// kafka: the topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// kafka: the record key: `auditID` (default), `namespace` or `user`.
    #[serde(default)]
    pub key: Option<KafkaKey>,
    /// kafka: TLS client certificate (PEM), with `keyFile`.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// kafka: the client certificate's key (PEM).
    #[serde(default)]
    pub key_file: Option<String>,
    /// kafka: SASL login (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`) with credentials in files.
    #[serde(default)]
    pub sasl: Option<SaslEntry>,
}

/// Where an output writes, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// JSON Lines in `path`, rotated to `path.1` ... `path.{max_files}`.
    File {
        /// Absolute path.
        path: PathBuf,
        /// Rotate before the file would grow past this many bytes.
        max_size: u64,
        /// Rotated files kept.
        max_files: u32,
    },
    /// Standard output.
    Stdout,
    /// POSTs to `url`.
    Http {
        /// The URL.
        url: String,
        /// CA bundle to trust instead of the system's roots.
        ca_file: Option<PathBuf>,
        /// Bearer token file.
        bearer_token_file: Option<PathBuf>,
        /// Lines per POST.
        batch_lines: usize,
    },
    /// Records produced to a Kafka topic.
    Kafka(KafkaSpec),
}

/// One granted output, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The grant's name.
    pub name: String,
    /// Where it writes.
    pub kind: OutputKind,
}

impl AuditSinkEntry {
    /// Checks what the schema alone cannot: the rules (as the API server's policy validation
    /// does) and the outputs. Returns the resolved outputs.
    pub fn validate(&self, base: &Path) -> Result<Vec<OutputSpec>, String> {
        if self.rules.is_empty() {
            return Err(
                "needs at least one rule (an audit Policy with no rules records nothing)".into(),
            );
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate().map_err(|m| format!("rules[{i}]: {m}"))?;
        }
        if self.outputs.is_empty() {
            return Err("needs at least one output to write to".into());
        }
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for (i, output) in self.outputs.iter().enumerate() {
            let at = |m: String| format!("outputs[{i}] {:?}: {m}", output.name);
            super::validate_name(&output.name).map_err(at)?;
            if outputs.iter().any(|o: &OutputSpec| o.name == output.name) {
                return Err(at("the name is used twice".into()));
            }
            let kind = output.resolve(base).map_err(at)?;
            outputs.push(OutputSpec {
                name: output.name.clone(),
                kind,
            });
        }
        Ok(outputs)
    }
}

impl AuditRule {
    /// The checks of `apiserver/pkg/audit/policy/validation.go`.
    fn validate(&self) -> Result<(), String> {
        if !self.non_resource_urls.is_empty()
            && (!self.resources.is_empty() || !self.namespaces.is_empty())
        {
            return Err(
                "rules cannot apply to both regular resources and non-resource URLs".into(),
            );
        }
        for url in &self.non_resource_urls {
            if url != "*" && !url.starts_with('/') {
                return Err(format!("nonResourceURLs {url:?} must start with / or be *"));
            }
            if url.find('*').is_some_and(|at| at != url.len() - 1) {
                return Err(format!(
                    "nonResourceURLs {url:?}: * may only be the last character"
                ));
            }
        }
        for (i, gr) in self.resources.iter().enumerate() {
            if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                return Err(format!("resources[{i}]: resourceNames requires resources"));
            }
            for res in &gr.resources {
                let mut parts = res.splitn(2, '/');
                let main = parts.next().unwrap_or_default();
                if main.is_empty()
                    || parts
                        .next()
                        .is_some_and(|sub| sub.is_empty() || sub.contains('/'))
                {
                    return Err(format!(
                        "resources[{i}]: bad resource {res:?} (e.g. pods, pods/log, *, */status, pods/*)"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl OutputEntry {
    fn resolve(&self, base: &Path) -> Result<OutputKind, String> {
        let only = |allowed: &[&str]| -> Result<(), String> {
            let set = [
                ("path", self.path.is_some()),
                ("maxSize", self.max_size.is_some()),
                ("maxFiles", self.max_files.is_some()),
                ("url", self.url.is_some()),
                ("caFile", self.ca_file.is_some()),
                ("bearerTokenFile", self.bearer_token_file.is_some()),
                ("batchLines", self.batch_lines.is_some()),
                ("bootstrapServers", self.bootstrap_servers.is_some()),
                ("topic", self.topic.is_some()),
                ("key", self.key.is_some()),
                ("certFile", self.cert_file.is_some()),
                ("keyFile", self.key_file.is_some()),
                ("sasl", self.sasl.is_some()),
            ];
            match set
                .iter()
                .find(|(key, present)| *present && !allowed.contains(key))
            {
                Some((key, _)) => Err(format!(
                    "{key} does not apply to a {} output",
                    match self.kind {
                        OutputType::File => "file",
                        OutputType::Stdout => "stdout",
                        OutputType::Http => "http",
                        OutputType::Kafka => "kafka",
                    }
                )),
                None => Ok(()),
            }
        };
        match self.kind {
            OutputType::Stdout => {
                only(&[])?;
                Ok(OutputKind::Stdout)
            }
            OutputType::File => {
                only(&["path", "maxSize", "maxFiles"])?;
                let path = self.path.as_deref().filter(|p| !p.is_empty());
                let path = base.join(path.ok_or("a file output needs a path")?);
                let max_size = match &self.max_size {
                    None => DEFAULT_FILE_MAX_SIZE,
                    Some(q) => {
                        let bytes =
                            super::parse_quantity(q).map_err(|e| format!("maxSize: {e}"))?;
                        if bytes < MIN_FILE_MAX_SIZE {
                            return Err(format!("maxSize {q} must be at least 4Ki"));
                        }
                        bytes
                    }
                };
                let max_files = self.max_files.unwrap_or(DEFAULT_FILE_MAX_FILES);
                if max_files > MAX_FILE_MAX_FILES {
                    return Err(format!(
                        "maxFiles {max_files} must be at most {MAX_FILE_MAX_FILES}"
                    ));
                }
                Ok(OutputKind::File {
                    path,
                    max_size,
                    max_files,
                })
            }
            OutputType::Http => {
                only(&["url", "caFile", "bearerTokenFile", "batchLines"])?;
                let url = self.url.clone().ok_or("an http output needs a url")?;
                let uri: http::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
                if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
                    return Err(format!(
                        "url {url:?} must be an absolute http:// or https:// URL"
                    ));
                }
                let readable =
                    |key: &str, file: &Option<String>| -> Result<Option<PathBuf>, String> {
                        let Some(file) = file else { return Ok(None) };
                        let path = base.join(file);
                        std::fs::metadata(&path)
                            .map_err(|e| format!("{key} {}: {e}", path.display()))?;
                        Ok(Some(path))
                    };
                let ca_file = readable("caFile", &self.ca_file)?;
                if ca_file.is_some() && uri.scheme_str() != Some("https") {
                    return Err("caFile needs an https:// url".into());
                }
                let bearer_token_file = readable("bearerTokenFile", &self.bearer_token_file)?;
                let batch_lines = self.batch_lines.unwrap_or(DEFAULT_HTTP_BATCH_LINES);
                if !(1..=MAX_HTTP_BATCH_LINES).contains(&batch_lines) {
                    return Err(format!(
                        "batchLines {batch_lines} must be between 1 and {MAX_HTTP_BATCH_LINES}"
                    ));
                }
                Ok(OutputKind::Http {
                    url,
                    ca_file,
                    bearer_token_file,
                    batch_lines: batch_lines as usize,
                })
            }
            OutputType::Kafka => {
                only(&[
                    "bootstrapServers",
                    "topic",
                    "key",
                    "caFile",
                    "certFile",
                    "keyFile",
                    "sasl",
                ])?;
                let readable = |key: &str, file: &str| -> Result<PathBuf, String> {
                    let path = base.join(file);
                    std::fs::metadata(&path)
                        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
                    Ok(path)
                };
                let servers = self.bootstrap_servers.clone().unwrap_or_default();
                if servers.is_empty() {
                    return Err("a kafka output needs bootstrapServers (host:port, ...)".into());
                }
                for server in &servers {
                    let port = server
                        .rsplit_once(':')
                        .map(|(host, port)| (host, port.parse::<u16>()));
                    if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p > 0)
                        || server.contains([',', ' ', '/'])
                    {
                        return Err(format!("bootstrapServers: {server:?} is not host:port"));
                    }
                }
                let topic = self.topic.clone().ok_or("a kafka output needs a topic")?;
                // Kafka's own rule for topic names.
                if topic.is_empty()
                    || topic.len() > 249
                    || topic == "."
                    || topic == ".."
                    || !topic
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(format!(
                        "topic {topic:?}: 1-249 of [a-zA-Z0-9._-], not \".\" or \"..\""
                    ));
                }
                let ca_file = self
                    .ca_file
                    .as_deref()
                    .map(|f| readable("caFile", f))
                    .transpose()?;
                let cert_file = self
                    .cert_file
                    .as_deref()
                    .map(|f| readable("certFile", f))
                    .transpose()?;
                let key_file = self
                    .key_file
                    .as_deref()
                    .map(|f| readable("keyFile", f))
                    .transpose()?;
                if cert_file.is_some() != key_file.is_some() {
                    return Err("certFile and keyFile go together".into());
                }
                let sasl = match &self.sasl {
                    None => None,
                    Some(sasl) => Some(Sasl {
                        mechanism: sasl.mechanism,
                        username_file: readable("sasl.usernameFile", &sasl.username_file)?,
                        password_file: readable("sasl.passwordFile", &sasl.password_file)?,
                    }),
                };
                Ok(OutputKind::Kafka(KafkaSpec {
                    bootstrap_servers: servers,
                    topic,
                    key: self.key.unwrap_or_default(),
                    ca_file,
                    cert_file,
                    key_file,
                    sasl,
                }))
            }
        }
    }
}

/// `path` made absolute, with `.` and `..` resolved and symbolic links followed in the part
/// that exists (the rest is kept as written), so that two spellings of one place compare equal.
pub(super) fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut lexical = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    // The longest existing ancestor, canonicalized, then the rest.
    let mut rest = Vec::new();
    let mut existing = lexical.as_path();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return lexical,
        }
    }
}
