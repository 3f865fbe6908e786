//! Owns what the cluster should hold for a serving snapshot: the webhook configurations
//! `wasmgate manifests --kind webhooks` renders, as JSON objects to apply, and which of the two
//! kinds must be deleted because no policy of that kind is served. Pure: no I/O.

use serde_json::Value;

use crate::config::Config;
use crate::manifests::{self, ManifestError, Options};

/// The two kinds of webhook configuration wasmgate keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookKind {
    /// `ValidatingWebhookConfiguration` (validators).
    Validating,
    /// `MutatingWebhookConfiguration` (initializers).
    Mutating,
}

impl WebhookKind {
    /// Both kinds, validating first.
    pub const ALL: [WebhookKind; 2] = [WebhookKind::Validating, WebhookKind::Mutating];

    /// The object's `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            WebhookKind::Validating => "ValidatingWebhookConfiguration",
            WebhookKind::Mutating => "MutatingWebhookConfiguration",
        }
    }
}

/// The desired state of one kind: the whole object to apply, or `None` (delete it).
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Which configuration.
    pub kind: WebhookKind,
    /// Its `metadata.name`.
    pub name: String,
    /// The object, or `None` when no policy of this kind is served.
    pub object: Option<Value>,
}

/// What the cluster must hold for `config`: exactly what `wasmgate manifests --kind webhooks`
/// prints with the same `options`, one entry per kind.
pub fn desired(config: &Config, options: &Options) -> Result<Vec<Desired>, ManifestError> {
    let docs = manifests::webhooks(config, options)?;
    let mut out = Vec::new();
    for kind in WebhookKind::ALL {
        let object = docs
            .iter()
            .find(|d| d.get("kind").and_then(|k| k.as_str()) == Some(kind.kind()))
            .map(|d| {
                serde_json::to_value(d).map_err(|e| {
                    manifests::ManifestError(format!("cannot convert {} to JSON: {e}", kind.kind()))
                })
            })
            .transpose()?;
        out.push(Desired {
            kind,
            name: options.name.clone(),
            object,
        });
    }
    Ok(out)
}

/// The CA to publish as `caBundle`, from a PEM file: the last certificate of a chain (a serving
/// chain ends with its CA; a file holding only a CA is that CA).
pub fn ca_from_pem(pem: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.rfind(BEGIN)?;
    let end = pem[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &pem[start..end]))
}

/// The CA bundle to publish as `caBundle`, from a PEM file of CA certificates: every certificate
/// in it, in order. During a rotation the file holds the old and the new CA, so the API server
/// trusts the serving certificate on either side of the switch.
pub fn ca_bundle_from_pem(pem: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = String::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let end = rest[start..].find(END)? + start + END.len();
        out.push_str(&rest[start..end]);
        out.push('\n');
        rest = &rest[end..];
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::{Service, Target};

    fn config(yaml: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        // The config layer reads and hashes modules but does not look inside them.
        std::fs::write(dir.path().join("m.wasm"), b"m").unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, yaml).unwrap();
        let config = Config::load(&path).unwrap();
        (dir, config)
    }

    fn options() -> Options {
        let mut o = Options::new(Service::parse("wasmgate/wasmgate:443").unwrap());
        o.target = Target::url("https://127.0.0.1:8443").unwrap();
        o.ca_pem = Some(b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n".to_vec());
        o
    }

    #[test]
    fn validators_only_render_one_object_and_delete_the_other_kind() {
        let (_d, c) = config(
            "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: require-labels\n    kind: validator\n    module: m.wasm\n    settings: {labels: [team]}\n    failurePolicy: Ignore\n    timeout: 3s\n    rules: [{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [configmaps]}]\n",
        );
        let d = desired(&c, &options()).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].kind, WebhookKind::Validating);
        let v = d[0].object.as_ref().expect("a validating configuration");
        assert_eq!(v["kind"], "ValidatingWebhookConfiguration");
        assert_eq!(v["metadata"]["name"], "wasmgate");
        let hook = &v["webhooks"][0];
        assert_eq!(hook["name"], "require-labels.wasmgate.io");
        assert_eq!(hook["failurePolicy"], "Ignore");
        // The plugin's 3 s plus a second for the network, as `manifests` renders it.
        assert_eq!(hook["timeoutSeconds"], 4);
        assert_eq!(hook["rules"][0]["resources"][0], "configmaps");
        assert_eq!(
            hook["clientConfig"]["url"],
            "https://127.0.0.1:8443/validate/require-labels"
        );
        assert_eq!(
            hook["clientConfig"]["caBundle"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tClFVSkQKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
        );
        assert_eq!(d[1].kind, WebhookKind::Mutating);
        assert_eq!(
            d[1].object, None,
            "no initializer: the mutating one is deleted"
        );
    }

    #[test]
    fn equals_what_manifests_prints() {
        let (_d, c) = config(
            "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: pull\n    kind: initializer\n    module: m.wasm\n    rules: [{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}]\n",
        );
        let d = desired(&c, &options()).unwrap();
        let printed = manifests::webhooks(&c, &options()).unwrap();
        assert_eq!(printed.len(), 1);
        assert_eq!(d[0].object, None);
        assert_eq!(
            d[1].object.as_ref().unwrap(),
            &serde_json::to_value(&printed[0]).unwrap()
        );
    }

    #[test]
    fn ca_is_the_last_certificate_of_a_chain() {
        let chain = "-----BEGIN CERTIFICATE-----\nTEVBRg==\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            ca_from_pem(chain).unwrap(),
            "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(ca_from_pem("no pem here"), None);
    }

    #[test]
    fn a_ca_bundle_keeps_every_certificate() {
        let one = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----";
        let two = "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----";
        let file = format!("# old\n{one}\n# new\n{two}\n");
        assert_eq!(
            ca_bundle_from_pem(&file).unwrap(),
            format!("{one}\n{two}\n")
        );
        assert_eq!(ca_from_pem(&file).unwrap(), format!("{two}\n"));
        assert_eq!(ca_bundle_from_pem("no PEM here"), None);
    }
}
