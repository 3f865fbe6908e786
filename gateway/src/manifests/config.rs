//! Owns the objects that carry the policy file into the cluster: the ConfigMap with the policies
//! and plugins, the TLS Secret, and the serving certificate's names. Must not render webhooks.

use base64::Engine as _;
use serde_yaml_ng::{Mapping, Value};

use super::{
    CONFIGMAP_LIMIT, ManifestError, OUTPUT_DIR, Options, REGISTRY_CA_KEY, Service, Target, bad,
    is_configmap_key,
};
use crate::config::Config;

/// The ConfigMap `<name>-policies` with the policy file (modules renamed to their key in the
/// ConfigMap and pinned by sha256) and every plugin as binary data; when given, the ConfigMap
/// `<name>-client-ca` with the API server's client CA, and the Secret `<name>-tls` the
/// StatefulSet mounts. `policy_text` is the policy file as
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
                    oci: e.module.oci.as_ref(),
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
                    oci: e.module.oci.as_ref(),
                })
                .collect(),
        ),
    ];
    // Text keys: trusted cosign keys and the registry CA.
    let mut data = Mapping::new();
    let base_dir = config.file.parent().unwrap_or(std::path::Path::new("."));
    let mut key_names: Vec<(String, String)> = Vec::new(); // (path as written, key)
    let mut rename_keys = |section: &mut Value| -> Result<(), ManifestError> {
        let Some(Value::Sequence(keys)) = section
            .get_mut("verification")
            .and_then(|v| v.get_mut("cosignKeys"))
        else {
            return Ok(());
        };
        for k in keys {
            let Some(path) = k.as_str().map(str::to_owned) else {
                continue;
            };
            let key = match key_names.iter().find(|(p, _)| *p == path) {
                Some((_, key)) => key.clone(),
                None => {
                    let key = format!("cosign-{}.pub", key_names.len() + 1);
                    let pem = std::fs::read_to_string(base_dir.join(&path))
                        .map_err(|e| bad(format!("cosign key {path}: {e}")))?;
                    data.insert(key.as_str().into(), pem.into());
                    key_names.push((path, key.clone()));
                    key
                }
            };
            *k = key.into();
        }
        Ok(())
    };
    rename_keys(&mut doc)?;
    if let Some(Value::Sequence(items)) = doc.get_mut("policies") {
        for item in items {
            rename_keys(item)?;
        }
    }
    if let Some(ca) = &options.registry_ca_pem {
        let ca = String::from_utf8(ca.clone()).map_err(|_| bad("--registry-ca is not PEM text"))?;
        data.insert(REGISTRY_CA_KEY.into(), ca.into());
    }
    for (section, modules) in &sections {
        let Some(items) = doc.get_mut(*section).and_then(Value::as_sequence_mut) else {
            continue;
        };
        for (item, module) in items.iter_mut().zip(modules) {
            // An `oci://` module is pulled by each replica: no bytes in the ConfigMap, and the
            // reference pinned to the digest it resolved to now.
            if let (Some(oci), Value::Mapping(map)) = (module.oci, &mut *item) {
                let reference = match oci.reference.split_once('@') {
                    Some(_) => oci.reference.clone(),
                    None => format!("{}@{}", oci.reference, oci.digest),
                };
                map.insert("module".into(), reference.into());
                map.insert("sha256".into(), module.sha256.into());
                continue;
            }
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
    size += data
        .values()
        .map(|v| v.as_str().map_or(0, str::len))
        .sum::<usize>();
    data.insert(super::POLICY_KEY.into(), text.into());
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
        "data": (Value::Mapping(data)),
        "binaryData": (Value::Mapping(binary)),
    })];
    if let Some(ca) = &options.client_ca_pem {
        let ca = String::from_utf8(ca.clone())
            .map_err(|_| bad("--apiserver-client-ca is not PEM text"))?;
        docs.push(yaml!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": (format!("{name}-client-ca")),
                "namespace": (namespace.as_str()),
                "labels": (labels.clone()),
            },
            "data": { "ca.crt": ca },
        }));
    }
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
    oci: Option<&'a crate::config::OciOrigin>,
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
