//! Owns the `wasmgate` command line: argument parsing and wiring the modules together for
//! `serve`, `check`, `test`, `status`, `manifests` and `new`. Bootstrap code: errors here are `anyhow`,
//! reported once, with context.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::{Args, Parser, Subcommand};
use tokio::time::Instant;

use crate::audit::{AuditService, FsyncPolicy, SpoolConfig, default_dead_letter_max_bytes};
use crate::config::{Config, PluginKind, parse_quantity};
use crate::context::ClusterState;
use crate::gateway::Gateway;
use crate::reload;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::server::{self, tls};
use crate::snapshot::Snapshot;
use crate::telemetry::{self, Metrics};

/// wasmgate: Kubernetes admission webhooks whose policies are sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the validating and mutating webhooks over HTTPS.
    Serve(ServeArgs),
    /// Evaluate one AdmissionReview offline, exactly as the server would, and print the answer.
    /// Exit status: 0 allowed, 1 denied, 2 error.
    Check(CheckArgs),
    /// Run test suites (`kind: TestSuite` files) offline through the server's own decision
    /// path and print a table, one row per case. Exit status: 0 when every case passes, 1 when
    /// a case fails, 2 when a suite or its policy file cannot be used.
    Test(TestArgs),
    /// Show a running gateway's snapshot and reload status (from its /readyz). Exit status: 0
    /// when the last reload succeeded, 1 when it was rejected (the previous snapshot serves),
    /// 2 when the gateway cannot be reached.
    Status(StatusArgs),
    /// Print the manifests that register wasmgate with a cluster and run it there, as YAML:
    /// webhook configurations, the API server's audit kubeconfig, audit Policy and admission
    /// configuration, and the StatefulSet and its friends. See docs/registering.md.
    Manifests(ManifestsArgs),
    /// Start a plugin from its language's template, with its tests: for Rust a crate added to
    /// the plugins workspace and its lock file. Prints the commands that build and test it.
    New(NewArgs),
    /// Push a component to an OCI registry as a CNCF Wasm artifact (annotated with its world
    /// and WIT package) and print its digest, for `module: oci://...@DIGEST`.
    Push(PushArgs),
    /// Pull a Wasm artifact from an OCI registry into a file and print its digest.
    Pull(PullArgs),
}

/// How `oci://` modules are pulled: registry access, the module cache, limits.
#[derive(Debug, Clone, Args)]
struct RegistryArgs {
    /// Where pulled `oci://` modules are cached by digest (default:
    /// $WASMGATE_CACHE/modules, else ~/.cache/wasmgate/modules); a restart with the modules
    /// cached needs no registry.
    #[arg(long, env = "WASMGATE_MODULE_CACHE")]
    module_cache: Option<PathBuf>,
    /// Registry credentials: a Docker config.json (the .dockerconfigjson of an imagePullSecrets
    /// Secret).
    #[arg(long)]
    registry_auth: Option<PathBuf>,
    /// CA certificates (PEM) trusted for registries, besides the system's.
    #[arg(long)]
    registry_ca: Option<PathBuf>,
    /// A registry (host[:port]) reached over plain HTTP (repeatable, comma-separated); every
    /// other registry over HTTPS.
    #[arg(long = "insecure-registry", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// The largest Wasm layer pulled, as a quantity (`128Mi`).
    #[arg(long, default_value = "128Mi", value_parser = parse_quantity)]
    pull_max_bytes: u64,
    /// The longest one pull (manifest, layer and signature) may take (Go duration).
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pull_timeout: std::time::Duration,
}

impl RegistryArgs {
    fn settings(&self) -> crate::supply::Settings {
        crate::supply::Settings {
            cache_dir: self
                .module_cache
                .clone()
                .unwrap_or_else(crate::supply::default_cache_dir),
            credentials: self.registry_auth.clone(),
            ca_file: self.registry_ca.clone(),
            insecure: self.insecure_registries.clone(),
            max_bytes: self.pull_max_bytes,
            timeout: self.pull_timeout,
        }
    }

    /// Sets the process's registry settings.
    fn configure(&self) -> anyhow::Result<()> {
        crate::supply::configure(self.settings()).map_err(anyhow::Error::msg)
    }
}

#[derive(Debug, Args)]
struct PushArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// Where: oci://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST to check the digest).
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Args)]
struct PullArgs {
    /// What: oci://REGISTRY/REPOSITORY@sha256:DIGEST or :TAG.
    reference: String,
    /// Where to write the component.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The plugin's language (its folder under the plugins folder).
    #[arg(value_enum)]
    language: crate::scaffold::Language,
    /// The plugin's name: a DNS label (lowercase letters, digits, '-'), also its folder, crate
    /// and component name.
    name: String,
    /// The WIT world it implements.
    #[arg(long, value_enum)]
    kind: crate::scaffold::Kind,
    /// The repository's plugins folder (templates are read and the plugin is created there).
    #[arg(long, default_value = "plugins")]
    plugins_dir: PathBuf,
}

/// A feature turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

/// What `wasmgate manifests` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ManifestKind {
    /// ValidatingWebhookConfiguration and MutatingWebhookConfiguration (kubectl apply).
    Webhooks,
    /// kubeconfig for kube-apiserver's --audit-webhook-config-file (a file on the control plane).
    AuditKubeconfig,
    /// audit Policy for kube-apiserver's --audit-policy-file (a file on the control plane).
    AuditPolicy,
    /// Namespace, ServiceAccount, Service, PriorityClass, StatefulSet (spool on a
    /// PersistentVolumeClaim per replica), PodDisruptionBudget, sized from the policy file (as
    /// in deploy/).
    Deploy,
    /// ConfigMap with the policy file and the plugins; ConfigMap with the API server's client
    /// CA (--apiserver-client-ca); Secret with the serving certificate.
    Config,
    /// AdmissionConfiguration for kube-apiserver's --admission-control-config-file: the webhook
    /// plugins present the client certificate of webhook-kubeconfig (a file on the control
    /// plane).
    AdmissionConfig,
    /// The kubeconfig that AdmissionConfiguration names: the client certificate the API server
    /// presents to the webhooks (a file on the control plane).
    WebhookKubeconfig,
    /// Secret <svc>-apiserver-client: a client certificate for the API server and the CA that
    /// signed it, with the audit and webhook kubeconfigs that embed it; in the same run,
    /// `config`'s <svc>-client-ca ConfigMap carries that CA. Generated now with a CA of its own,
    /// or signed by yours (--apiserver-client-ca, --apiserver-client-ca-key), or yours as is
    /// (--apiserver-client-ca, --client-cert, --client-key).
    ApiserverClient,
}

#[derive(Debug, Args)]
struct ManifestsArgs {
    /// The policy file.
    #[arg(long, default_value = "policies/demo.yaml")]
    config: PathBuf,
    /// What to print; several kinds are separated by commas (audit-kubeconfig and audit-policy
    /// are files for the API server's host and are printed alone).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "webhooks")]
    kind: Vec<ManifestKind>,
    /// The gateway's base URL as the API server reaches it (https://host:port[/prefix]);
    /// `/validate/...`, `/mutate/...` and `/audit` are appended. Without it, the API server
    /// reaches the gateway through --service.
    #[arg(long)]
    url: Option<String>,
    /// The gateway's Service, namespace/name[:port]: where `deploy` and `config` put it and,
    /// without --url, how the API server reaches it.
    #[arg(long, default_value = "wasmgate/wasmgate:443")]
    service: String,
    /// The CA (PEM) that signed the gateway's serving certificate: the webhooks' caBundle, the
    /// audit kubeconfig's certificate-authority-data and the Secret's ca.crt.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// metadata.name of the webhook configurations.
    #[arg(long, default_value = "wasmgate")]
    name: String,
    /// Webhooks are named <policy>.<domain> (validate.<domain> and mutate.<domain> with
    /// --aggregate).
    #[arg(long, default_value = "wasmgate.io")]
    webhook_domain: String,
    /// One webhook per kind with the union of the rules, on /validate and /mutate, instead of
    /// one webhook per policy.
    #[arg(long)]
    aggregate: bool,
    /// Namespaces whose requests never reach the gateway (repeatable, comma-separated; an
    /// empty value clears the list). The gateway's own namespace is added when the API server
    /// reaches it through --service.
    #[arg(long = "exempt-namespace", value_delimiter = ',', default_values = crate::manifests::DEFAULT_EXEMPT_NAMESPACES)]
    exempt_namespaces: Vec<String>,
    /// User groups whose requests never reach the gateway (repeatable, comma-separated; an
    /// empty value clears the list). `system:nodes` (kubelets) is exempt on the webhooks whose
    /// rules can match what a kubelet writes to keep its node and Pods running; its mirror Pods
    /// are judged like any Pod.
    #[arg(long = "exempt-group", value_delimiter = ',', default_values = crate::manifests::DEFAULT_EXEMPT_GROUPS)]
    exempt_groups: Vec<String>,
    /// Client certificate (PEM) the API server presents to /audit (audit-kubeconfig): a path on
    /// the API server's host, which it reads (or see --embed-client-cert). With
    /// `apiserver-client`: read here and put in the Secret (it must be signed by
    /// --apiserver-client-ca).
    #[arg(long, requires = "client_key")]
    client_cert: Option<String>,
    /// Its key (PEM): a path on the API server's host.
    #[arg(long, requires = "client_cert")]
    client_key: Option<String>,
    /// Read --client-cert and --client-key here and embed them in the kubeconfig
    /// (client-certificate-data), for one self-contained file.
    #[arg(long, requires = "client_cert")]
    embed_client_cert: bool,
    /// The StatefulSet's image: NAME:TAG or NAME@sha256:DIGEST (what scripts/build-image
    /// prints).
    #[arg(long, default_value_t = crate::manifests::default_image())]
    image: String,
    /// The StatefulSet's replicas.
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// The CA (PEM) that signed the API server's client certificates: the ConfigMap
    /// <name>-client-ca (`config`) that the Pods' --audit-client-ca reads. With
    /// `apiserver-client`: your CA, which signs the certificate (--apiserver-client-ca-key) or
    /// signed --client-cert.
    #[arg(long)]
    apiserver_client_ca: Option<PathBuf>,
    /// The key (PEM, PKCS#8) of --apiserver-client-ca: `apiserver-client` signs the API
    /// server's client certificate with your CA instead of generating a CA of its own.
    #[arg(long, requires = "apiserver_client_ca", conflicts_with = "client_cert")]
    apiserver_client_ca_key: Option<PathBuf>,
    /// Render the StatefulSet without a client certificate check on /audit (any Pod could
    /// write audit events).
    #[arg(long)]
    no_audit_client_auth: bool,
    /// Render the StatefulSet with a client certificate check on /validate and /mutate too;
    /// the API server then needs the AdmissionConfiguration (`admission-config`).
    #[arg(long)]
    admission_client_auth: bool,
    /// The gateway's --spool-max-bytes; the spool volume gets 25% more.
    #[arg(long, default_value = "1Gi", value_parser = parse_spool_size)]
    spool_max_bytes: u64,
    /// The gateway's --audit-max-body-bytes; sizes the memory for audit bodies in flight.
    #[arg(long, default_value_t = server::DEFAULT_AUDIT_MAX_BODY, value_parser = parse_body_limit)]
    audit_max_body_bytes: usize,
    /// Policy calls one replica is sized to run at once (its memory limit).
    #[arg(long, default_value_t = crate::manifests::DEFAULT_PLUGIN_CALLS)]
    plugin_calls: u32,
    /// The spool PersistentVolumeClaims' storage class (default: the cluster's default).
    #[arg(long)]
    storage_class: Option<String>,
    /// Where the AdmissionConfiguration (`admission-config`) says the API server finds the
    /// webhook kubeconfig (`webhook-kubeconfig`).
    #[arg(long, default_value = crate::manifests::DEFAULT_WEBHOOK_KUBECONFIG)]
    webhook_kubeconfig_path: String,
    /// Serving certificate (PEM) for the TLS Secret (`config`).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Generate a CA and a serving certificate for the Service (or the --url host) and use
    /// them for the Secret, caBundle and ca.crt. The CA's key is not kept: print every kind
    /// that needs it in the same run.
    #[arg(long, conflicts_with_all = ["tls_cert", "ca_file"])]
    generate_tls: bool,
    /// The Secret (type kubernetes.io/dockerconfigjson, as for imagePullSecrets) with the
    /// credentials for `oci://` modules: `deploy` mounts it and passes --registry-auth.
    #[arg(long)]
    registry_secret: Option<String>,
    /// How `oci://` modules are resolved now (--registry-auth, --registry-ca, ...); a
    /// --registry-ca also goes into the policies ConfigMap for the Pods.
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The gateway's address.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    url: String,
    /// The CA that signed the gateway's certificate (default: the development CA under
    /// .wasmgate/tls/ca.crt).
    #[arg(long, default_value = ".wasmgate/tls/ca.crt")]
    cacert: PathBuf,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// The policy file.
    #[arg(long, default_value = "policies/demo.yaml")]
    config: PathBuf,
    /// Where compiled plugins are cached, so that a restart does not recompile them.
    #[arg(long, env = "WASMGATE_COMPILE_CACHE")]
    cache_dir: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Serving certificate chain (PEM). Without it, a development CA and certificate for
    /// localhost are generated under --state-dir.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Serving private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM) on every connection: mutual TLS,
    /// probes included (kubelet's HTTPS probes present none; in a cluster use the per-route
    /// CAs below).
    #[arg(long, conflicts_with_all = ["audit_client_ca", "admission_client_ca"])]
    client_ca: Option<PathBuf>,
    /// Answer `/audit` only to clients presenting a certificate signed by this CA (PEM): the
    /// API server's audit client certificate. Without one: 401; from another CA: 403. Probes
    /// and /metrics need none.
    #[arg(long)]
    audit_client_ca: Option<PathBuf>,
    /// Answer `/validate` and `/mutate` only to clients presenting a certificate signed by this
    /// CA (PEM): the API server's webhook client certificate (its AdmissionConfiguration).
    #[arg(long)]
    admission_client_ca: Option<PathBuf>,
    /// Where generated development certificates are kept.
    #[arg(long, default_value = ".wasmgate")]
    state_dir: PathBuf,
    /// Largest admission request body, in bytes.
    #[arg(long, default_value_t = server::DEFAULT_MAX_BODY)]
    max_body_bytes: usize,
    /// The most of one audit EventList held in memory at once, in bytes: a larger batch is read
    /// and spooled in parts of this size (never refused); also the largest single event read.
    #[arg(long, default_value_t = server::DEFAULT_AUDIT_MAX_BODY, value_parser = parse_body_limit)]
    audit_max_body_bytes: usize,
    /// Audit events larger than this (bytes) are truncated as the API server's truncate backend
    /// does: request and response objects dropped, annotation `audit.k8s.io/truncated: "true"`.
    #[arg(long, default_value_t = crate::audit::DEFAULT_MAX_EVENT, value_parser = parse_body_limit)]
    audit_max_event_bytes: usize,
    /// Request body bytes all requests (admission and audit) may hold at once; a request that
    /// does not fit waits for room until its deadline, then gets 503.
    #[arg(long, default_value_t = server::body::DEFAULT_BODY_BUDGET, value_parser = parse_body_limit)]
    max_body_bytes_in_flight: usize,
    /// Open client connections at most (also held under the open-file limit, which is raised
    /// to its hard limit at start); more are closed as soon as they are accepted.
    #[arg(long, default_value_t = server::conn::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// A connection with no request in flight for this long is closed (Go duration).
    #[arg(long, default_value = "90s", value_parser = parse_positive_duration)]
    idle_timeout: std::time::Duration,
    /// Move the binary's machine code onto transparent huge pages at start (Linux; when the
    /// node's huge pages are `always` or `madvise`): fewer instruction TLB misses on a review's
    /// path, for 24-30 MiB of private memory in place of shared page cache. `off` keeps the code
    /// mapped from the file (for `perf`, which then finds its symbols).
    #[arg(long, env = "WASMGATE_HUGE_TEXT", value_enum, default_value = "on")]
    huge_text: Switch,
    /// A connection older than this is closed gracefully once its requests finish (Go
    /// duration): HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`.
    #[arg(long, default_value = "10m", value_parser = parse_positive_duration)]
    max_connection_age: std::time::Duration,
    /// The audit spool's directory (default: <state-dir>/spool). One gateway per directory.
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// The most the audit spool may hold, as a quantity (`1Gi`); when full, `/audit` answers
    /// 503 until sinks catch up, and the API server re-sends.
    #[arg(long, default_value = "1Gi", value_parser = parse_spool_size)]
    spool_max_bytes: u64,
    /// When the audit spool syncs: `always` (each batch before its answer), `batch` (batches
    /// arriving together share one sync before their answers), `never` (survives a crash of
    /// wasmgate, not of the machine).
    #[arg(long, default_value = "batch", value_parser = FsyncPolicy::from_str_arg)]
    fsync: FsyncPolicy,
    /// The most the dead-letter files may take, as a quantity (default: a quarter of
    /// --spool-max-bytes). They count against --spool-max-bytes too; when they hold this much,
    /// further dead letters are dropped, counted and logged.
    #[arg(long, value_parser = parse_quantity)]
    dead_letter_max_bytes: Option<u64>,
    /// On SIGTERM, how long audit sinks may go on delivering the spool's backlog (while
    /// `/audit` answers 503) before they stop; what is left is delivered after the restart.
    /// A Go duration; keep it well inside the Pod's terminationGracePeriodSeconds (30 s by
    /// default), which must also cover requests in flight.
    #[arg(long, default_value = "10s", value_parser = parse_drain_timeout)]
    audit_drain_timeout: std::time::Duration,
    /// Create and keep this gateway's Validating- and MutatingWebhookConfiguration in the
    /// cluster, equal to what `wasmgate manifests --kind webhooks` renders from the serving
    /// policies, at start, after every reload and every certificate rotation; with several
    /// replicas, the holder of a Lease writes. See docs/registering.md.
    #[arg(long)]
    register: bool,
    /// The kubeconfig for --register and for the watch caches of `context:` grants (default:
    /// the in-cluster configuration, when running in a cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Objects one `context:` cache (one granted resource) may hold; past it the cache is
    /// emptied and its lookups refused until it fits.
    #[arg(long, default_value_t = crate::context::DEFAULT_MAX_OBJECTS)]
    context_max_objects: usize,
    /// Bytes (a quantity: 512Mi) one `context:` cache may hold.
    #[arg(long, default_value = "512Mi", value_parser = parse_cache_bytes)]
    context_max_bytes: usize,
    /// How often policies with `background: true` are evaluated against every object in the
    /// cluster (and the reports read back), besides 2 s after each change: a Go duration from
    /// 10s to 24h.
    #[arg(long, default_value = "10m", value_parser = parse_reports_interval)]
    reports_interval: std::time::Duration,
    /// The gateway's base URL as the API server reaches it (as `manifests --url`); without it,
    /// through --register-service.
    #[arg(long, requires = "register")]
    register_url: Option<String>,
    /// The gateway's Service, namespace/name[:port] (as `manifests --service`); the Lease is
    /// `<name>-register` in its namespace.
    #[arg(long, default_value = "wasmgate/wasmgate:443")]
    register_service: String,
    /// The CA bundle (PEM) for the caBundle, every certificate in it, re-read at every check
    /// (default: the last certificate of --tls-cert, or the development CA). To rotate to a new
    /// CA: old and new CA here, then the new serving certificate, then the new CA alone.
    #[arg(long, requires = "register")]
    register_ca_file: Option<PathBuf>,
    /// metadata.name of the webhook configurations (as `manifests --name`).
    #[arg(long, default_value = "wasmgate")]
    register_name: String,
    /// How long the Lease holds without renewal: another replica takes over this long after
    /// the writer stops renewing. Whole seconds, 1s to 5m; the holder renews every sixth of it
    /// (at most every 2 s).
    #[arg(long, default_value = "15s", value_parser = parse_lease_duration, requires = "register")]
    register_lease_duration: std::time::Duration,
}

/// The Lease duration: whole seconds (`leaseDurationSeconds`), 1 s to 5 minutes.
fn parse_cache_bytes(text: &str) -> Result<usize, String> {
    let bytes = parse_quantity(text)?;
    if bytes < 1 << 20 {
        return Err("a context cache must be allowed at least 1Mi".into());
    }
    usize::try_from(bytes).map_err(|_| "too large".into())
}

fn parse_reports_interval(text: &str) -> Result<std::time::Duration, String> {
    let d = crate::wire::parse_go_duration(text).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(10) || d > std::time::Duration::from_secs(86_400) {
        return Err("must be from 10s to 24h".into());
    }
    Ok(d)
}

fn parse_lease_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = crate::wire::parse_go_duration(text).map_err(|e| e.to_string())?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 || d.as_secs() > 300 {
        return Err("must be whole seconds from 1s to 5m".into());
    }
    Ok(d)
}

/// The drain timeout: a Go duration of at most 10 minutes.
fn parse_drain_timeout(text: &str) -> Result<std::time::Duration, String> {
    crate::wire::parse_go_duration(text)
        .map_err(|e| e.to_string())
        .and_then(|d| {
            if d > std::time::Duration::from_secs(600) {
                Err("must be at most 10m".into())
            } else {
                Ok(d)
            }
        })
}

/// The audit body limit: at most the spool reader's record limit.
fn parse_body_limit(text: &str) -> Result<usize, String> {
    let bytes: usize = text.parse().map_err(|e| format!("{e}"))?;
    if bytes == 0 || bytes as u64 >= u64::from(crate::audit::spool::MAX_RECORD_PAYLOAD) / 2 {
        return Err("must be more than 0 and less than 512 MiB".into());
    }
    Ok(bytes)
}

fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match crate::wire::parse_go_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be positive".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_spool_size(text: &str) -> Result<u64, String> {
    let bytes = parse_quantity(text)?;
    if bytes < 64 << 10 {
        return Err("the spool must be allowed at least 64Ki".into());
    }
    Ok(bytes)
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The AdmissionReview (JSON) to evaluate.
    #[arg(long)]
    request: PathBuf,
    /// Only this policy (as `/validate/{policy}` or `/mutate/{policy}`).
    #[arg(long)]
    policy: Option<String>,
    /// Run the initializers (`/mutate`) instead of the validators (`/validate`).
    #[arg(long)]
    mutate: bool,
    /// The cluster state `context:` grants read: a YAML or JSON file of objects (a list, a
    /// `kind: List`, or YAML documents).
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Say on stderr, per policy, whether it matched and ran or was skipped and why, and warn
    /// about rules that can never match. Without it, one summary line.
    #[arg(long)]
    explain: bool,
}

#[derive(Debug, Args)]
struct TestArgs {
    /// The suite files.
    #[arg(required = true)]
    suites: Vec<PathBuf>,
    /// Also write the results as JUnit XML to this file.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Where compiled plugins are cached, so that a second run does not recompile them.
    #[arg(long, env = "WASMGATE_COMPILE_CACHE")]
    cache_dir: Option<PathBuf>,
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime starts its threads: the move refuses to run beside any.
    let text = match &cli.command {
        Command::Serve(args) if args.huge_text == Switch::On => {
            Some(wasmgate_hugetext::move_text())
        }
        _ => None,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wasmgate: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve(args) => rt.block_on(serve(args, text)).map(|()| ExitCode::SUCCESS),
        Command::Check(args) => rt.block_on(check(args)),
        Command::Test(args) => rt.block_on(test(args)),
        Command::Status(args) => rt.block_on(status(args)),
        Command::Manifests(args) => manifests(args).map(|()| ExitCode::SUCCESS),
        Command::Push(args) => push(args).map(|()| ExitCode::SUCCESS),
        Command::Pull(args) => pull(args).map(|()| ExitCode::SUCCESS),
        Command::New(args) => {
            crate::scaffold::create(&args.plugins_dir, args.language, &args.name, args.kind)
                .map(|created| {
                    print!("{created}");
                    ExitCode::SUCCESS
                })
                .map_err(anyhow::Error::from)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("wasmgate: {e:#}");
        ExitCode::from(2)
    })
}

/// The default compile cache: `$WASMGATE_CACHE/compiled`, else `$XDG_CACHE_HOME/wasmgate/compiled`,
/// else `~/.cache/wasmgate/compiled`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("WASMGATE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("wasmgate")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wasmgate")))?;
    Some(base.join("compiled"))
}

/// The runtime, with the compile cache of --cache-dir or the default one.
fn runtime(cache_dir: Option<&Path>) -> anyhow::Result<Runtime> {
    // wasmtime's cache wants an absolute directory.
    let cache_dir = cache_dir
        .map(Path::to_path_buf)
        .or_else(default_cache_dir)
        .map(|d| std::path::absolute(&d).unwrap_or(d));
    Ok(Runtime::new(&RuntimeConfig { cache_dir })?)
}

fn load(
    common: &CommonArgs,
    spool_dir: Option<&Path>,
    cluster: &Arc<ClusterState>,
) -> anyhow::Result<(Arc<Runtime>, Snapshot)> {
    common.registry.configure()?;
    let runtime = runtime(common.cache_dir.as_deref())?;
    let config = Config::load(&common.config)?;
    if let Some(dir) = spool_dir {
        config.check_outputs_outside(dir)?;
    }
    cluster.prepare(&config)?;
    let snapshot = Snapshot::build_with(&config, &runtime, 1, None, Some(cluster))?;
    Ok((Arc::new(runtime), snapshot))
}

/// The caches of `context:` grants for `serve`: fed from the API server of --kubeconfig, or of
/// the in-cluster configuration when running in a cluster; without either, a policy file with
/// `context:` is refused.
async fn serve_cluster(
    args: &ServeArgs,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<ClusterState>> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if args.kubeconfig.is_none() && !in_cluster {
        return Ok(ClusterState::none(metrics));
    }
    let client = crate::register::client(args.kubeconfig.as_deref()).await?;
    let limits = crate::context::Limits {
        max_objects: args.context_max_objects,
        max_bytes: args.context_max_bytes,
    };
    Ok(ClusterState::live(client, limits, metrics))
}

async fn serve(args: ServeArgs, text: Option<wasmgate_hugetext::Outcome>) -> anyhow::Result<()> {
    telemetry::init_logging(args.common.log_json);
    if let Some(text) = text {
        tracing::info!("{text}");
    }
    let started = std::time::Instant::now();
    // Each connection is a file: the soft limit (often 1,024) would cap them long before
    // memory does.
    let fd_limit = server::conn::raise_fd_limit();
    let max_connections = server::conn::effective_max_connections(args.max_connections, fd_limit);
    // The caBundle --register publishes: the serving chain's last certificate by default.
    let mut ca_file = args.tls_cert.clone().unwrap_or_default();
    let files = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca.clone(),
            audit_client_ca: args.audit_client_ca.clone(),
            admission_client_ca: args.admission_client_ca.clone(),
        },
        _ => {
            let dev = tls::dev_identity(&args.state_dir.join("tls"))?;
            ca_file = dev.ca.clone();
            tracing::info!(
                ca = %dev.ca.display(), cert = %dev.files.cert.display(),
                "no --tls-cert given: serving a development certificate for localhost and 127.0.0.1; trust its CA with `curl --cacert {}`",
                dev.ca.display()
            );
            tls::TlsFiles {
                client_ca: args.client_ca.clone(),
                audit_client_ca: args.audit_client_ca.clone(),
                admission_client_ca: args.admission_client_ca.clone(),
                ..dev.files
            }
        }
    };
    let tls_config = tls::load(&files)?;
    let registration = if args.register {
        Some(registration(&args, &ca_file).await?)
    } else {
        None
    };
    let spool_dir = args
        .spool_dir
        .clone()
        .unwrap_or_else(|| args.state_dir.join("spool"));
    let metrics = Arc::new(Metrics::new());
    let cluster = serve_cluster(&args, metrics.clone()).await?;
    let gateway_metrics = metrics.clone();
    let (runtime, snapshot) =
        tokio::task::block_in_place(|| load(&args.common, Some(&spool_dir), &cluster))?;
    metrics.observe_runtime(runtime.counters());
    let policies = snapshot.policies.len();
    let sinks = snapshot.audit_sinks.clone();
    let reports_client = cluster.client();
    let reports_cluster = cluster.clone();
    let mut gateway = Gateway::new(snapshot, metrics.clone()).with_cluster(cluster);
    // The spool is opened only when there is a sink to feed: an admission-only gateway keeps
    // no audit state, and `/audit` answers 404 there.
    let audit = if sinks.is_empty() {
        None
    } else {
        let dead_letter_max_bytes = args
            .dead_letter_max_bytes
            .unwrap_or_else(|| default_dead_letter_max_bytes(args.spool_max_bytes));
        anyhow::ensure!(
            dead_letter_max_bytes < args.spool_max_bytes,
            "--dead-letter-max-bytes ({dead_letter_max_bytes}) must be less than --spool-max-bytes ({}): dead letters count against it",
            args.spool_max_bytes
        );
        let spool = SpoolConfig {
            dir: spool_dir,
            max_bytes: args.spool_max_bytes,
            fsync: args.fsync,
            dead_letter_max_bytes,
        };
        let audit = AuditService::start(&spool, sinks, metrics)
            .await
            .context("cannot start the audit webhook")?;
        let limits = crate::audit::IntakeLimits {
            part_bytes: args.audit_max_body_bytes,
            max_event: args.audit_max_event_bytes,
        };
        gateway = gateway.with_audit(audit.clone(), limits);
        Some(audit)
    };
    let audit_sinks = audit.as_ref().map_or(0, |a| a.sink_names().len());
    let gateway = Arc::new(gateway);
    let listener = server::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server_config = server::ServerConfig {
        max_body: args.max_body_bytes,
        audit_max_body: args.audit_max_body_bytes,
        body_budget: args.max_body_bytes_in_flight,
        conn: server::ConnLimits {
            max_connections,
            idle_timeout: args.idle_timeout,
            max_age: args.max_connection_age,
        },
    };
    let tls_handle: server::TlsConfigHandle = Arc::new(ArcSwap::new(tls_config));
    // One shutdown signal for the server and the reloader.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // The server stops accepting only once the audit sinks are drained: meanwhile `/audit`
    // answers 503 (the API server sends to another replica) and admission is still served.
    let drained = {
        let (stop, gateway, audit) = (stop_rx.clone(), gateway.clone(), audit.clone());
        let timeout = args.audit_drain_timeout;
        async move {
            stopped(stop).await;
            gateway.begin_drain();
            if let Some(audit) = audit {
                tracing::info!(timeout = ?timeout, "shutting down: /audit answers 503; audit sinks deliver what is spooled");
                let started = Instant::now();
                let left = audit.drain(timeout).await;
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    events_left = left.values().sum::<u64>(),
                    "audit sinks stopped"
                );
            }
        }
    };
    let mtls = files.client_ca.is_some();
    let audit_client_auth = files.audit_client_ca.is_some();
    let admission_client_auth = files.admission_client_ca.is_some();
    let mut reloader = reload::Reloader::new(
        args.common.config.clone(),
        runtime.clone(),
        gateway.clone(),
        Some((files, tls_handle.clone())),
    );
    if let Some(r) = registration.clone() {
        reloader = reloader.before_swap(Arc::new(move |old, new| r.before_swap(old, new)));
    }
    let reloading = reloader.start(stopped(stop_rx.clone()));
    // Background reports: written by the registration Lease's holder; without --register,
    // by every replica (run one, or give --register: see docs/reports.md).
    let reporting = reports_client.map(|client| {
        let leader = registration.clone();
        let gateway = gateway.clone();
        crate::reports::start(
            move || gateway.snapshot(),
            reports_cluster,
            client,
            move || leader.as_ref().is_none_or(|r| r.is_leading()),
            args.reports_interval,
            gateway_metrics.clone(),
            stopped(stop_rx.clone()),
        )
    });
    let registering = registration.map(|r| {
        let gateway = gateway.clone();
        r.start(
            move || gateway.snapshot().config.clone(),
            stopped(stop_rx.clone()),
        )
    });
    tracing::info!(
        listen = %listener.local_addr()?, policies, audit_sinks, mtls, audit_client_auth,
        admission_client_auth, max_connections, open_file_limit = fd_limit,
        startup_ms = started.elapsed().as_millis() as u64, "wasmgate is serving"
    );
    server::serve(listener, tls_handle, gateway, server_config, drained).await;
    let _ = reloading.await;
    if let Some(registering) = registering {
        let _ = registering.await;
    }
    if let Some(reporting) = reporting {
        let _ = reporting.await;
    }
    drop(audit);
    drop(runtime);
    Ok(())
}

/// What `serve --register` needs, checked before serving: a bad kubeconfig or name stops
/// start-up.
async fn registration(
    args: &ServeArgs,
    default_ca: &Path,
) -> anyhow::Result<crate::register::Registration> {
    use crate::manifests::{Options, Service, Target};
    let service = Service::parse(&args.register_service)?;
    let mut options = Options::new(service.clone());
    if let Some(url) = &args.register_url {
        options.target = Target::url(url)?;
    }
    options.name = args.register_name.clone();
    options.validate()?;
    let ca_file = args
        .register_ca_file
        .clone()
        .unwrap_or_else(|| default_ca.to_path_buf());
    let client = crate::register::client(args.kubeconfig.as_deref()).await?;
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "wasmgate".into());
    Ok(crate::register::Registration::new(
        crate::register::Settings {
            client,
            options,
            ca_file,
            ca_file_is_bundle: args.register_ca_file.is_some(),
            lease: (
                service.namespace.clone(),
                crate::manifests::lease_name(&service),
            ),
            identity: format!("{host}_{}", std::process::id()),
            lease_duration: args.register_lease_duration,
        },
    ))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    telemetry::init_logging(args.common.log_json);
    let metrics = Arc::new(Metrics::new());
    // The file's objects, served through the same caches and lookups as `serve`'s.
    let cluster = match &args.cluster {
        Some(path) => ClusterState::from_objects(
            crate::context::file::load(path).map_err(anyhow::Error::msg)?,
            crate::context::Limits::default(),
            metrics.clone(),
        ),
        None => ClusterState::none(metrics.clone()),
    };
    let (_runtime, snapshot) = tokio::task::block_in_place(|| load(&args.common, None, &cluster))?;
    let body = read(&args.request)?;
    let gateway = Gateway::new(snapshot, metrics).with_cluster(cluster);
    let kind = if args.mutate {
        PluginKind::Initializer
    } else {
        PluginKind::Validator
    };
    explain(&gateway, kind, &args, &body);
    let deadline = Instant::now() + server::DEFAULT_TIMEOUT;
    match gateway
        .review(kind, args.policy.as_deref(), &body, deadline)
        .await
    {
        Ok((review, response)) => {
            let allowed = response.allowed;
            let json: serde_json::Value =
                serde_json::from_slice(&response.into_review_json(review.version))?;
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(answer) => {
            let status: serde_json::Value =
                serde_json::from_slice(&answer.body).unwrap_or_default();
            anyhow::bail!(
                "{}: {}",
                args.request.display(),
                status["message"].as_str().unwrap_or("cannot be evaluated")
            )
        }
    }
}

/// `check`'s account on stderr of which policies matched the review (with `--explain`, each
/// policy and why it was skipped, and rules that can never match). Nothing for a body that is
/// not a review or an unknown policy: the evaluation reports those.
fn explain(gateway: &Gateway, kind: PluginKind, args: &CheckArgs, body: &[u8]) {
    let Ok(review) = crate::wire::AdmissionReview::decode(body) else {
        return;
    };
    let snapshot = gateway.snapshot();
    let policy = args.policy.as_deref();
    let Some(explanation) =
        crate::admission::explain(&snapshot.policies, kind, policy, &review.request)
    else {
        return;
    };
    if args.explain {
        eprint!("{explanation}");
    }
    let hint = !args.explain && explanation.matched() < explanation.policies.len();
    eprintln!(
        "wasmgate check: {}{}",
        explanation.summary(),
        if hint {
            " (--explain says why the others were skipped)"
        } else {
            ""
        }
    );
}

async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    // Warnings and errors only; RUST_LOG=info shows the plugins' own log lines too.
    if std::env::var_os("RUST_LOG").is_none() {
        telemetry::init_logging_filtered("warn");
    } else {
        telemetry::init_logging(false);
    }
    let runtime = tokio::task::block_in_place(|| runtime(args.cache_dir.as_deref()))?;
    let outcomes = crate::suite::run(&args.suites, &runtime).await;
    print!("{}", crate::suite::table(&outcomes));
    if let Some(path) = &args.junit {
        let xml = crate::suite::junit(&outcomes).context("cannot write JUnit XML")?;
        std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::from(crate::suite::exit_status(&outcomes)))
}

/// `wasmgate push`: identifies the component's world and contract, pushes it, prints the digest.
fn push(args: PushArgs) -> anyhow::Result<()> {
    let reference = crate::supply::OciRef::parse(&args.reference).map_err(anyhow::Error::msg)?;
    let bytes = read(&args.file)?;
    let runtime = runtime(None)?;
    let (world, contract) = runtime
        .identify(&bytes)
        .with_context(|| format!("{} is not a wasmgate plugin component", args.file.display()))?;
    let supply =
        crate::supply::Supply::new(args.registry.settings()).map_err(anyhow::Error::msg)?;
    let title = args.file.file_name().map_or_else(
        || "plugin.wasm".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let digest = supply
        .push(&bytes, &title, &reference, world.name(), contract.package())
        .map_err(|e| anyhow::anyhow!("cannot push to {reference}: {e}"))?;
    eprintln!(
        "pushed {} ({} bytes, world {}, {}) to {reference}",
        args.file.display(),
        bytes.len(),
        world.name(),
        contract.package()
    );
    println!("{digest}");
    Ok(())
}

/// `wasmgate pull`: pulls (digest-verified) into a file, prints the manifest digest.
fn pull(args: PullArgs) -> anyhow::Result<()> {
    let reference = crate::supply::OciRef::parse(&args.reference).map_err(anyhow::Error::msg)?;
    let supply =
        crate::supply::Supply::new(args.registry.settings()).map_err(anyhow::Error::msg)?;
    let fetched = supply
        .fetch(&reference, &[])
        .map_err(|e| anyhow::anyhow!("cannot pull {reference}: {e}"))?;
    std::fs::write(&args.output, &fetched.bytes)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "pulled {reference} ({} bytes, layer {}) to {}",
        fetched.bytes.len(),
        fetched.layer_digest,
        args.output.display()
    );
    println!("{}", fetched.manifest_digest);
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let uri: http::Uri = args
        .url
        .parse()
        .with_context(|| format!("bad --url {}", args.url))?;
    let host = uri
        .host()
        .context("--url needs a host")?
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        <rustls_pki_types::CertificateDer<'_> as rustls_pki_types::pem::PemObject>::pem_file_iter(
            &args.cacert,
        )
        .with_context(|| format!("cannot read {}", args.cacert.display()))?
    {
        roots.add(cert.with_context(|| format!("bad PEM in {}", args.cacert.display()))?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let name = rustls_pki_types::ServerName::try_from(host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake failed")?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let request = http::Request::get("/readyz")
        .header("host", host.as_str())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    let ready: serde_json::Value =
        serde_json::from_slice(&body).context("/readyz did not answer JSON")?;
    let reload = &ready["reload"];
    println!("generation    {}", ready["generation"]);
    println!(
        "content hash  {}",
        ready["contentHash"].as_str().unwrap_or("?")
    );
    println!(
        "policies      {}",
        ready["policies"]
            .as_array()
            .map(|p| p
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    for plugin in ready["plugins"].as_array().into_iter().flatten() {
        let text = |key: &str| plugin[key].as_str().unwrap_or("?").to_owned();
        let settings = match plugin["settings"].as_str() {
            Some("checked") => "settings checked at load".to_owned(),
            Some("skipped") => format!(
                "settings NOT checked ({} has no validate-settings; rebuild the plugin for wasmgate:plugin@0.2.0)",
                text("contract")
            ),
            other => format!("settings {}", other.unwrap_or("?")),
        };
        println!(
            "plugin        {} ({}, {}): {settings}",
            text("name"),
            text("kind"),
            text("contract")
        );
    }
    println!(
        "reloads       {} attempted, {} succeeded, {} failed",
        reload["attempts"], reload["succeeded"], reload["failed"]
    );
    if let Some(error) = reload["lastTlsError"].as_str() {
        println!("certificates  last reload rejected: {error}");
    }
    Ok(match reload["lastError"].as_str() {
        Some(error) => {
            println!("last reload   REJECTED (the previous snapshot keeps serving): {error}");
            ExitCode::from(1)
        }
        None => {
            println!("last reload   ok");
            ExitCode::SUCCESS
        }
    })
}

fn manifests(args: ManifestsArgs) -> anyhow::Result<()> {
    use crate::manifests::{self, ClientCredentials, Options, Service, Target, TlsMaterial};
    let kinds = &args.kind;
    let control_plane_file = kinds.iter().any(|k| {
        matches!(
            k,
            ManifestKind::AuditKubeconfig
                | ManifestKind::AuditPolicy
                | ManifestKind::AdmissionConfig
                | ManifestKind::WebhookKubeconfig
        )
    });
    if control_plane_file && kinds.len() > 1 {
        anyhow::bail!(
            "audit-kubeconfig, audit-policy, admission-config and webhook-kubeconfig are files for the API server's host: print each on its own"
        );
    }
    let service = Service::parse(&args.service)?;
    let mut options = Options::new(service);
    if let Some(url) = &args.url {
        options.target = Target::url(url)?;
    }
    options.name = args.name;
    options.webhook_domain = args.webhook_domain;
    options.aggregate = args.aggregate;
    options.exempt_namespaces = args
        .exempt_namespaces
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    options.exempt_groups = args
        .exempt_groups
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    options.audit_client = match (args.client_cert.clone(), args.client_key.clone()) {
        (Some(cert), Some(key)) if args.embed_client_cert => Some(ClientCredentials::Embedded {
            cert_pem: read(Path::new(&cert))?,
            key_pem: read(Path::new(&key))?,
        }),
        (Some(cert), Some(key)) => Some(ClientCredentials::Files { cert, key }),
        _ => None,
    };
    options.image = args.image;
    options.replicas = args.replicas;
    options.audit_client_auth = !args.no_audit_client_auth;
    options.admission_client_auth = args.admission_client_auth;
    options.spool_max_bytes = args.spool_max_bytes;
    options.audit_max_body = args.audit_max_body_bytes as u64;
    options.plugin_calls = args.plugin_calls;
    options.storage_class = args.storage_class;
    options.registry_secret = args.registry_secret;
    if let Some(ca) = &args.registry.registry_ca {
        options.registry_ca_pem = Some(read(ca)?);
    }
    if let Some(ca) = &args.apiserver_client_ca {
        options.client_ca_pem = Some(read(ca)?);
    }
    if let Some(ca) = &args.ca_file {
        options.ca_pem = Some(read(ca)?);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options.tls = Some(TlsMaterial {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        });
    }
    let mut header = vec![format!(
        "Generated by `wasmgate manifests --kind {}` (wasmgate {}).",
        kinds
            .iter()
            .map(|k| clap::ValueEnum::to_possible_value(k)
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default())
            .collect::<Vec<_>>()
            .join(","),
        env!("CARGO_PKG_VERSION")
    )];
    if args.generate_tls {
        let mut names = manifests::serving_names(&options.target);
        for name in manifests::serving_names(&Target::Service(options.service.clone())) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (ca, cert, key) = tls::generate(&refs).context("cannot generate a certificate")?;
        options.ca_pem = Some(ca.into_bytes());
        options.tls = Some(TlsMaterial {
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
        });
        header.push(format!(
            "Serving certificate generated for {}; its CA is the caBundle and the Secret's ca.crt.",
            names.join(", ")
        ));
    }
    // The API server's client certificate, generated once for every kind of this run.
    let apiserver_client = if kinds.contains(&ManifestKind::ApiserverClient) {
        let copy = format!(
            "copy its kubeconfigs to the control-plane hosts: `kubectl -n {} get secret {} -o jsonpath='{{.data.audit-webhook\\.kubeconfig}}' | base64 -d`.",
            options.service.namespace,
            manifests::apiserver_client_secret_name(&options)
        );
        let given = match (&args.client_cert, &args.client_key) {
            (Some(cert), Some(key)) => Some((cert.as_str(), key.as_str())),
            _ => None,
        };
        let (cert, key) = match (
            &args.apiserver_client_ca,
            &args.apiserver_client_ca_key,
            given,
        ) {
            (None, _, None) => {
                let (ca, cert, key) = tls::generate_client("kube-apiserver")
                    .context("cannot generate the API server's client certificate")?;
                options.client_ca_pem = Some(ca.into_bytes());
                header.push(format!(
                    "Client certificate for the API server generated (CN kube-apiserver) with its own CA, the Secret's ca.crt; {copy}"
                ));
                (cert, key)
            }
            (None, _, Some(_)) => anyhow::bail!(
                "apiserver-client with --client-cert needs --apiserver-client-ca: the CA that signed it, which the Pods' --audit-client-ca trusts"
            ),
            (Some(ca_path), Some(ca_key), _) => {
                let ca = options.client_ca_pem.as_deref().unwrap_or_default();
                let (cert, key) =
                    tls::sign_client("kube-apiserver", ca, &read(ca_key)?).map_err(|e| {
                        anyhow::anyhow!(
                            "--apiserver-client-ca {} with --apiserver-client-ca-key {}: {e}",
                            ca_path.display(),
                            ca_key.display()
                        )
                    })?;
                header.push(format!(
                    "Client certificate for the API server signed by {} (CN kube-apiserver); {copy}",
                    ca_path.display()
                ));
                (cert, key)
            }
            (Some(ca_path), None, Some((cert_path, key_path))) => {
                let ca = options.client_ca_pem.as_deref().unwrap_or_default();
                let cert = read(Path::new(cert_path))?;
                let key = read(Path::new(key_path))?;
                tls::check_client(ca, &cert, &key).map_err(|e| {
                    anyhow::anyhow!(
                        "--client-cert {cert_path} with --client-key {key_path} and --apiserver-client-ca {}: {e}",
                        ca_path.display()
                    )
                })?;
                header.push(format!(
                    "The API server's client certificate {cert_path}, signed by {}; {copy}",
                    ca_path.display()
                ));
                (
                    String::from_utf8(cert).context("--client-cert is not PEM text")?,
                    String::from_utf8(key).context("--client-key is not PEM text")?,
                )
            }
            (Some(_), None, None) => anyhow::bail!(
                "apiserver-client with --apiserver-client-ca: pass its key (--apiserver-client-ca-key) to sign a new client certificate, or --client-cert and --client-key for one it signed"
            ),
        };
        Some((cert, key))
    } else {
        None
    };
    let needs_config = kinds.iter().any(|k| {
        matches!(
            k,
            ManifestKind::Webhooks
                | ManifestKind::Config
                | ManifestKind::AuditPolicy
                | ManifestKind::Deploy
        )
    });
    let loaded = if needs_config {
        args.registry.configure()?;
        let config = Config::load(&args.config)?;
        let text = std::fs::read_to_string(&args.config)
            .with_context(|| format!("cannot read {}", args.config.display()))?;
        header.push(format!("Policy file: {}.", args.config.display()));
        Some((config, text))
    } else {
        None
    };
    let policy = || {
        loaded
            .as_ref()
            .context("internal error: the policy file was not loaded")
    };
    let mut docs = Vec::new();
    for kind in kinds {
        match kind {
            ManifestKind::Webhooks => docs.extend(manifests::webhooks(&policy()?.0, &options)?),
            ManifestKind::Config => {
                let (config, text) = policy()?;
                docs.extend(manifests::config_objects(config, text, &options)?);
                if options.tls.is_none() {
                    header.push(format!(
                        "No Secret: create it with `kubectl -n {} create secret tls {}-tls --cert=tls.crt --key=tls.key` (or pass --tls-cert/--tls-key or --generate-tls).",
                        options.service.namespace, options.service.name
                    ));
                }
            }
            ManifestKind::AuditPolicy => docs.push(manifests::audit_policy(&policy()?.0)?),
            ManifestKind::AuditKubeconfig => docs.push(manifests::audit_kubeconfig(&options)?),
            ManifestKind::Deploy => {
                docs.extend(manifests::deploy(&options, &policy()?.0)?);
                if options.audit_client_auth && options.client_ca_pem.is_none() {
                    header.push(format!(
                        "/audit needs the API server's client CA: create it with `kubectl -n {} create configmap {}-client-ca --from-file=ca.crt=CLIENT-CA.crt` (or render `--kind config --apiserver-client-ca CLIENT-CA.crt`).",
                        options.service.namespace, options.service.name
                    ));
                }
            }
            ManifestKind::AdmissionConfig => docs.push(manifests::admission_configuration(
                &args.webhook_kubeconfig_path,
            )?),
            ManifestKind::WebhookKubeconfig => docs.push(manifests::webhook_kubeconfig(&options)?),
            ManifestKind::ApiserverClient => {
                let (cert, key) = apiserver_client
                    .as_ref()
                    .context("internal error: no client certificate was generated")?;
                docs.push(manifests::apiserver_client_secret(
                    &options,
                    cert.as_bytes(),
                    key.as_bytes(),
                )?);
            }
        }
    }
    print!("{}", manifests::to_yaml(&header, &docs)?);
    Ok(())
}
