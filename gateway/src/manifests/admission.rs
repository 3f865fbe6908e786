//! Owns the API server's side of calling the admission webhooks with a client certificate: the
//! AdmissionConfiguration (`--admission-control-config-file`) and the kubeconfig it names, whose
//! user is the webhook's host. Must not render the webhook configurations themselves.

use base64::Engine as _;
use serde_yaml_ng::{Mapping, Value};

use super::{ClientCredentials, ManifestError, Options, Service, Target, bad};

/// Where the AdmissionConfiguration says the webhook kubeconfig is, unless told otherwise.
pub const DEFAULT_WEBHOOK_KUBECONFIG: &str = "/etc/kubernetes/wasmgate/webhook-kubeconfig.yaml";

/// The AdmissionConfiguration for kube-apiserver's `--admission-control-config-file`: both
/// webhook admission plugins read their client credentials from `kubeconfig_path` (what
/// [`webhook_kubeconfig`] renders).
pub fn admission_configuration(kubeconfig_path: &str) -> Result<Value, ManifestError> {
    if !kubeconfig_path.starts_with('/') {
        return Err(bad(format!(
            "--webhook-kubeconfig-path {kubeconfig_path:?} must be absolute (the API server resolves it on its host)"
        )));
    }
    let plugin = |name: &str| {
        yaml!({
            "name": name,
            "configuration": {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "WebhookAdmissionConfiguration",
                "kubeConfigFile": kubeconfig_path,
            },
        })
    };
    Ok(yaml!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            (plugin("ValidatingAdmissionWebhook")),
            (plugin("MutatingAdmissionWebhook")),
        ],
    }))
}

/// The kubeconfig the AdmissionConfiguration names: one user, named for the webhooks' host as
/// the API server looks it up (`<svc>.<ns>.svc`, with `:port` unless 443, for a Service; the
/// URL's host[:port] otherwise), presenting the client certificate.
pub fn webhook_kubeconfig(options: &Options) -> Result<Value, ManifestError> {
    options.validate()?;
    let user_name = match &options.target {
        Target::Service(Service {
            namespace,
            name,
            port,
        }) if *port == 443 => format!("{name}.{namespace}.svc"),
        Target::Service(Service {
            namespace,
            name,
            port,
        }) => format!("{name}.{namespace}.svc:{port}"),
        Target::Url(url) => {
            let host = url
                .trim_start_matches("https://")
                .split('/')
                .next()
                .unwrap_or_default();
            host.strip_suffix(":443").unwrap_or(host).to_owned()
        }
    };
    let mut user = Mapping::new();
    match &options.audit_client {
        None => {
            return Err(bad(
                "webhook-kubeconfig needs the client certificate: --client-cert and --client-key",
            ));
        }
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
        "users": [{ "name": user_name, "user": (Value::Mapping(user)) }],
    }))
}
