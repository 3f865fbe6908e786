//! Owns the API server's client identity toward the gateway: the Secret holding the client
//! certificate kube-apiserver presents to `/audit` and the admission paths, with the audit and
//! webhook kubeconfigs that use it. Must not generate keys (the caller hands in PEM) nor render
//! the objects that run the gateway.

use base64::Engine as _;
use serde_yaml_ng::Value;

use super::{ClientCredentials, ManifestError, Options, bad};

/// The Secret's name: `<service>-apiserver-client` in the gateway's namespace.
pub fn apiserver_client_secret_name(options: &Options) -> String {
    format!("{}-apiserver-client", options.service.name)
}

/// The Secret `<service>-apiserver-client` (`kubernetes.io/tls`): `tls.crt` and `tls.key` are the
/// client certificate and key (`cert_pem`, `key_pem`), `ca.crt` the CA that signed it (what the
/// gateway's `--audit-client-ca` and `--admission-client-ca` trust), `audit-webhook.kubeconfig`
/// the kubeconfig for kube-apiserver's `--audit-webhook-config-file` and `webhook.kubeconfig` the
/// one the AdmissionConfiguration names, both with the certificate embedded. Copy the two
/// kubeconfigs to the control-plane hosts from here.
pub fn apiserver_client_secret(
    options: &Options,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Value, ManifestError> {
    let client_ca = options.client_ca_pem.as_ref().ok_or_else(|| {
        bad("the API server's client certificate needs the CA that signs it (--apiserver-client-ca)")
    })?;
    let mut with_cert = options.clone();
    with_cert.audit_client = Some(ClientCredentials::Embedded {
        cert_pem: cert_pem.to_vec(),
        key_pem: key_pem.to_vec(),
    });
    let audit = super::to_yaml(&[], &[super::audit_kubeconfig(&with_cert)?])?;
    let webhook = super::to_yaml(&[], &[super::webhook_kubeconfig(&with_cert)?])?;
    let b64 = &base64::engine::general_purpose::STANDARD;
    Ok(yaml!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": (apiserver_client_secret_name(options)),
            "namespace": (options.service.namespace.as_str()),
            "labels": (options.labels()),
        },
        "data": {
            "tls.crt": (b64.encode(cert_pem)),
            "tls.key": (b64.encode(key_pem)),
            "ca.crt": (b64.encode(client_ca)),
            "audit-webhook.kubeconfig": (b64.encode(audit)),
            "webhook.kubeconfig": (b64.encode(webhook)),
        },
    }))
}
