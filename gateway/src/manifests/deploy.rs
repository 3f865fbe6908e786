//! Owns the objects that run wasmgate in a cluster and do not depend on the policy file:
//! Namespace, ServiceAccount, Service, the workload and its PodDisruptionBudget. Must not read
//! the policy file.

use serde_yaml_ng::Value;

use super::{
    CONTAINER_PORT, ManifestError, OUTPUT_DIR, Options, POLICY_DIR, POLICY_KEY, SPOOL_DIR, Service,
    TLS_DIR,
};

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
    ]
    .into_iter()
    .chain(super::rbac(options))
    .collect())
}
