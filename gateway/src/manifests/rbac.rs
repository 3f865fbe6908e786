//! Owns wasmgate's identity in the cluster: its ServiceAccount (and, once the gateway calls the
//! Kubernetes API, the Roles and bindings it needs, least privilege). Must not render workloads.

use serde_yaml_ng::Value;

use super::Options;

/// The ServiceAccount the StatefulSet's Pods run as. The gateway does not call the Kubernetes
/// API yet, so no token is mounted and no Role is bound.
pub fn service_account(options: &Options) -> Value {
    let super::Service {
        namespace, name, ..
    } = &options.service;
    yaml!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": (name.as_str()),
            "namespace": (namespace.as_str()),
            "labels": (options.labels()),
        },
        "automountServiceAccountToken": false,
    })
}
