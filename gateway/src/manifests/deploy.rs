//! Owns the objects that run wasmgate in a cluster: Namespace, Service, PriorityClass, the
//! StatefulSet (spool on a PersistentVolumeClaim per replica) and its PodDisruptionBudget, sized
//! by [`super::sizing`]. Must not render webhooks, the policy ConfigMap or RBAC rules.

use serde_yaml_ng::Value;

use super::rbac;
use super::sizing::{CPU_REQUEST, Sizing, quantity};
use super::{
    CLIENT_CA_DIR, CONTAINER_PORT, ManifestError, OUTPUT_DIR, Options, POLICY_DIR, POLICY_KEY,
    SPOOL_DIR, Service, TLS_DIR,
};
use crate::config::Config;

/// Where the compile cache's volume is mounted in the Pod (an `emptyDir`: a new Pod recompiles).
pub const CACHE_DIR: &str = "/var/cache/wasmgate";
/// `serve --cache-dir`: a directory inside [`CACHE_DIR`] that the gateway creates itself. The
/// kubelet makes an `emptyDir` owned by root with mode 0777 (setgid for `fsGroup`), which the
/// gateway rightly refuses as a compile cache (anyone could write native code there); the
/// subdirectory it creates is its own, mode 0700.
pub const CACHE_ARG_DIR: &str = "/var/cache/wasmgate/compiled";
/// The preStop sleep: the Service stops sending new requests once the endpoint is gone; wait
/// for that before the process stops accepting, so that no webhook call is refused.
pub const PRESTOP_SECONDS: u64 = 5;
/// `serve --audit-drain-timeout`: after SIGTERM, `/audit` answers 503 and the sinks deliver
/// what is spooled for at most this long; what is left stays on the spool's claim.
pub const AUDIT_DRAIN_SECONDS: u64 = 10;
/// terminationGracePeriodSeconds: the preStop sleep, the audit drain, then the server's drain
/// of requests in flight ([`crate::server::DRAIN_TIMEOUT`]), then this much for the process to
/// exit, before the kubelet's SIGKILL.
pub const EXIT_MARGIN_SECONDS: u64 = 10;
/// The priority of wasmgate's Pods: above every workload (a gateway that cannot be scheduled
/// blocks every admission its Fail policies cover), below the system classes (2000000000+).
pub const PRIORITY: i64 = 1_000_000_000;

/// The grace period the StatefulSet gives a Pod between SIGTERM (after preStop) and SIGKILL.
pub fn termination_grace_seconds() -> u64 {
    PRESTOP_SECONDS
        + AUDIT_DRAIN_SECONDS
        + crate::server::DRAIN_TIMEOUT.as_secs()
        + EXIT_MARGIN_SECONDS
}

/// The objects that run wasmgate in the cluster as `options.service`: Namespace,
/// ServiceAccount, Service, PriorityClass, StatefulSet and PodDisruptionBudget. Requests and
/// limits come from `config` (see [`Sizing`]); the policies and plugins (ConfigMap), the TLS
/// Secret and the API server's client CA come from [`super::config_objects`].
pub fn deploy(options: &Options, config: &Config) -> Result<Vec<Value>, ManifestError> {
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
    let sizing = Sizing::derive(
        config,
        options.audit_max_body,
        crate::server::MAX_AUDIT_IN_FLIGHT as u64,
        options.spool_max_bytes,
        u64::from(options.plugin_calls),
    );
    let https_probe = |path: &str, period: u32, failures: u32| {
        yaml!({
            "httpGet": { "path": path, "port": "https", "scheme": "HTTPS" },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        })
    };
    let mut args: Vec<String> = vec![
        "serve".to_owned(),
        format!("--listen=0.0.0.0:{CONTAINER_PORT}"),
        format!("--config={POLICY_DIR}/{POLICY_KEY}"),
        format!("--tls-cert={TLS_DIR}/tls.crt"),
        format!("--tls-key={TLS_DIR}/tls.key"),
        format!("--cache-dir={CACHE_ARG_DIR}"),
        format!("--spool-dir={SPOOL_DIR}"),
        format!("--spool-max-bytes={}", quantity(options.spool_max_bytes)),
        format!("--audit-max-body-bytes={}", options.audit_max_body),
        format!("--audit-drain-timeout={AUDIT_DRAIN_SECONDS}s"),
        "--state-dir=/tmp/wasmgate".to_owned(),
        "--log-json".to_owned(),
        // The gateway keeps its own webhook configurations (the ServiceAccount's RBAC below
        // allows exactly these and its Lease); the caBundle is the serving Secret's CA.
        "--register".to_owned(),
        format!("--register-service={namespace}/{name}:{port}"),
        format!("--register-name={}", options.name),
        format!("--register-ca-file={TLS_DIR}/ca.crt"),
    ];
    if let super::Target::Url(url) = &options.target {
        args.push(format!("--register-url={url}"));
    }
    let mut mounts = vec![
        yaml!({ "name": "policies", "mountPath": POLICY_DIR, "readOnly": true }),
        yaml!({ "name": "tls", "mountPath": TLS_DIR, "readOnly": true }),
    ];
    let mut volumes = vec![
        yaml!({ "name": "policies", "configMap": { "name": (format!("{name}-policies")) } }),
        yaml!({ "name": "tls", "secret": { "secretName": (format!("{name}-tls")) } }),
    ];
    if options.audit_client_auth || options.admission_client_auth {
        let ca = format!("{CLIENT_CA_DIR}/ca.crt");
        if options.audit_client_auth {
            args.push(format!("--audit-client-ca={ca}"));
        }
        if options.admission_client_auth {
            args.push(format!("--admission-client-ca={ca}"));
        }
        mounts.push(yaml!({ "name": "client-ca", "mountPath": CLIENT_CA_DIR, "readOnly": true }));
        volumes.push(yaml!({
            "name": "client-ca",
            "configMap": { "name": (format!("{name}-client-ca")) },
        }));
    }
    // `oci://` modules: each replica pulls into the cache volume, with the registry credentials
    // Secret mounted (the same Secret an `imagePullSecrets` would name).
    let pulls = config
        .entries
        .iter()
        .map(|e| &e.module)
        .chain(config.sinks.iter().map(|s| &s.module))
        .any(|m| m.oci.is_some());
    if pulls {
        args.push(format!("--module-cache={CACHE_DIR}/modules"));
        if let Some(secret) = &options.registry_secret {
            args.push(format!(
                "--registry-auth={}/.dockerconfigjson",
                super::REGISTRY_DIR
            ));
            mounts.push(
                yaml!({ "name": "registry", "mountPath": (super::REGISTRY_DIR), "readOnly": true }),
            );
            volumes
                .push(yaml!({ "name": "registry", "secret": { "secretName": (secret.as_str()) } }));
        }
        if options.registry_ca_pem.is_some() {
            args.push(format!(
                "--registry-ca={POLICY_DIR}/{}",
                super::REGISTRY_CA_KEY
            ));
        }
    }
    mounts.extend([
        yaml!({ "name": "cache", "mountPath": CACHE_DIR }),
        yaml!({ "name": "spool", "mountPath": SPOOL_DIR }),
        yaml!({ "name": "outputs", "mountPath": OUTPUT_DIR }),
        yaml!({ "name": "tmp", "mountPath": "/tmp" }),
    ]);
    volumes.extend([
        yaml!({ "name": "cache", "emptyDir": { "sizeLimit": (quantity(sizing.cache)) } }),
        yaml!({ "name": "outputs", "emptyDir": { "sizeLimit": (quantity(sizing.outputs)) } }),
        yaml!({ "name": "tmp", "emptyDir": { "sizeLimit": (quantity(sizing.tmp)) } }),
    ]);
    let ephemeral = quantity(sizing.ephemeral_storage());
    let container = yaml!({
        "name": "wasmgate",
        "image": (options.image.as_str()),
        "imagePullPolicy": "IfNotPresent",
        "args": (args.into_iter().map(Value::from).collect::<Vec<_>>()),
        // The Pod's name is its identity in the registration Lease.
        "env": [{
            "name": "POD_NAME",
            "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } },
        }],
        "ports": [{ "name": "https", "containerPort": CONTAINER_PORT, "protocol": "TCP" }],
        // Compiling the plugins on a cold start takes seconds; the other probes wait for it.
        // The probes present no client certificate: /healthz and /readyz never ask for one.
        "startupProbe": (https_probe("/healthz", 2, 60)),
        "readinessProbe": (https_probe("/readyz", 5, 2)),
        "livenessProbe": (https_probe("/healthz", 10, 3)),
        "lifecycle": { "preStop": { "sleep": { "seconds": PRESTOP_SECONDS } } },
        "resources": {
            "requests": {
                "cpu": CPU_REQUEST,
                "memory": (quantity(sizing.memory_request)),
                "ephemeral-storage": (ephemeral.as_str()),
            },
            "limits": {
                "memory": (quantity(sizing.memory_limit)),
                "ephemeral-storage": (ephemeral.as_str()),
            },
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        },
        "volumeMounts": mounts,
    });
    let selector = labels.clone();
    let priority_class = format!("{name}-critical");
    let mut spool_claim = yaml!({
        "accessModes": ["ReadWriteOnce"],
        "resources": { "requests": { "storage": (quantity(sizing.spool_volume)) } },
    });
    if let (Some(class), Value::Mapping(map)) = (&options.storage_class, &mut spool_claim) {
        map.insert("storageClassName".into(), class.as_str().into());
    }
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
        rbac::service_account(options),
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
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": { "name": (priority_class.as_str()), "labels": (labels.clone()) },
            "value": PRIORITY,
            "globalDefault": false,
            "preemptionPolicy": "PreemptLowerPriority",
            "description": "wasmgate admission and audit gateway: its absence blocks admission and drops audit",
        }),
        yaml!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": (meta(name)),
            "spec": {
                "replicas": (options.replicas),
                "serviceName": (name.as_str()),
                "revisionHistoryLimit": 5,
                // Replicas are interchangeable: start and stop them all at once, not in order.
                "podManagementPolicy": "Parallel",
                "updateStrategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": { "maxUnavailable": 1 },
                },
                "selector": { "matchLabels": (selector.clone()) },
                // A spool holds events answered 200 and not yet delivered: keep it when the
                // StatefulSet is deleted or scaled down; a Pod of the same ordinal resumes it.
                "persistentVolumeClaimRetentionPolicy": {
                    "whenDeleted": "Retain",
                    "whenScaled": "Retain",
                },
                "template": {
                    "metadata": { "labels": (selector.clone()) },
                    "spec": {
                        "serviceAccountName": (name.as_str()),
                        // `--register` calls the API server with this token.
                        "automountServiceAccountToken": true,
                        "priorityClassName": (priority_class.as_str()),
                        "terminationGracePeriodSeconds": (termination_grace_seconds()),
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            // The spool's volume is writable by that user.
                            "fsGroup": 65532,
                            "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "topologySpreadConstraints": [
                            {
                                "maxSkew": 1,
                                "topologyKey": "kubernetes.io/hostname",
                                "whenUnsatisfiable": "ScheduleAnyway",
                                "labelSelector": { "matchLabels": (selector.clone()) },
                            },
                            {
                                "maxSkew": 1,
                                "topologyKey": "topology.kubernetes.io/zone",
                                "whenUnsatisfiable": "ScheduleAnyway",
                                "labelSelector": { "matchLabels": (selector.clone()) },
                            },
                        ],
                        "containers": [container],
                        "volumes": volumes,
                    },
                },
                "volumeClaimTemplates": [{
                    "metadata": { "name": "spool", "labels": (labels.clone()) },
                    "spec": spool_claim,
                }],
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
    .chain(super::rbac(options, config))
    .collect())
}
