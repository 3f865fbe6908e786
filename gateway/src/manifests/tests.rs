use super::*;

/// A policy file in a temporary directory with a dummy module per policy (the config layer
/// reads and hashes modules but does not look inside them).
fn policy_set(entries: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.wasm", "b.wasm", "c.wasm"] {
        std::fs::write(dir.path().join(name), name.as_bytes()).unwrap();
    }
    let text = format!("apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n{entries}");
    let file = dir.path().join("policies.yaml");
    std::fs::write(&file, &text).unwrap();
    let config = Config::load(&file).unwrap();
    (dir, config)
}

const ENTRIES: &str = r"
  - name: add-team
    kind: initializer
    module: a.wasm
    rules: [{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}]
    timeout: 1500ms
  - name: labels
    kind: validator
    module: b.wasm
    rules: [{operations: [CREATE, UPDATE], apiGroups: [''], apiVersions: [v1], resources: [pods], scope: Namespaced}]
    excludeNamespaces: [tools]
    objectSelector:
      matchLabels: {managed: 'yes'}
      matchExpressions: [{key: tier, operator: Exists}]
    timeout: 1s
  - name: watch-only
    kind: validator
    module: c.wasm
    rules: [{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], resources: ['*/*']}]
    namespaces: [prod]
    mode: monitor
    timeout: 3s
  - name: lenient
    kind: validator
    module: c.wasm
    rules: [{operations: [DELETE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}]
    failurePolicy: Ignore
";

fn url_options() -> Options {
    let mut options = Options::new(Service::parse("wasmgate/wasmgate").unwrap());
    options.target = Target::url("https://127.0.0.1:8443/").unwrap();
    options.ca_pem = Some(b"-----BEGIN CERTIFICATE-----\n".to_vec());
    options
}

fn json(value: &Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap()
}

fn hooks_of(docs: &[Value], kind: &str) -> Vec<serde_json::Value> {
    let doc = docs
        .iter()
        .map(json)
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"));
    assert_eq!(doc["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(doc["metadata"]["name"], "wasmgate");
    doc["webhooks"].as_array().unwrap().clone()
}

#[test]
fn one_webhook_per_policy_carries_the_policy_settings() {
    let (_dir, config) = policy_set(ENTRIES);
    let docs = webhooks(&config, &url_options()).unwrap();
    assert_eq!(docs.len(), 2);
    let validating = hooks_of(&docs, "ValidatingWebhookConfiguration");
    let mutating = hooks_of(&docs, "MutatingWebhookConfiguration");
    let names: Vec<&str> = validating
        .iter()
        .chain(&mutating)
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "labels.wasmgate.io",
            "watch-only.wasmgate.io",
            "lenient.wasmgate.io",
            "add-team.wasmgate.io"
        ]
    );
    for hook in validating.iter().chain(&mutating) {
        let name = hook["name"].as_str().unwrap();
        assert!(
            name.split('.').count() >= 3 && is_dns_subdomain(name),
            "{name}"
        );
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["matchPolicy"], "Equivalent");
        assert_eq!(
            hook["admissionReviewVersions"],
            serde_json::json!(["v1", "v1beta1"])
        );
        assert_eq!(
            hook["clientConfig"]["caBundle"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
        );
        // Only watch-only's rules (every group and resource) can match Leases and what kubelets
        // write; labels' (Pod CREATE and UPDATE) and lenient's (Deployments) can match neither,
        // so the API server has no condition to evaluate for them.
        let groups = serde_json::json!({"name": "exclude-exempt-groups",
            "expression": r#"!request.userInfo.groups.exists(g, g in ["system:nodes"])"#});
        if hook["name"] == "watch-only.wasmgate.io" {
            let conditions = hook["matchConditions"].as_array().unwrap();
            assert_eq!(conditions.len(), 2);
            assert_eq!(conditions[0]["name"], "exclude-leases");
            assert_eq!(conditions[1], groups);
        } else {
            assert!(hook.get("matchConditions").is_none(), "{hook}");
        }
    }

    let labels = &validating[0];
    assert_eq!(
        labels["clientConfig"]["url"],
        "https://127.0.0.1:8443/validate/labels"
    );
    assert_eq!(labels["failurePolicy"], "Fail");
    assert_eq!(labels["timeoutSeconds"], 2);
    assert_eq!(
        labels["rules"],
        serde_json::json!([{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
            "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}])
    );
    assert_eq!(
        labels["namespaceSelector"],
        serde_json::json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name",
            "operator": "NotIn", "values": ["kube-node-lease", "kube-system", "tools"]}]})
    );
    assert_eq!(
        labels["objectSelector"],
        serde_json::json!({"matchLabels": {"managed": "yes"},
            "matchExpressions": [{"key": "tier", "operator": "Exists"}]})
    );
    assert!(labels.get("reinvocationPolicy").is_none());

    // Monitor mode never blocks, so neither does an unreachable gateway.
    let watch = &validating[1];
    assert_eq!(watch["failurePolicy"], "Ignore");
    assert_eq!(watch["timeoutSeconds"], 4);
    assert_eq!(
        watch["namespaceSelector"]["matchExpressions"][1],
        serde_json::json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["prod"]})
    );
    assert!(watch.get("objectSelector").is_none());
    assert_eq!(validating[2]["failurePolicy"], "Ignore");
    assert_eq!(validating[2]["timeoutSeconds"], 3, "default 2s plus 1");

    let add_team = &mutating[0];
    assert_eq!(
        add_team["clientConfig"]["url"],
        "https://127.0.0.1:8443/mutate/add-team"
    );
    assert_eq!(add_team["timeoutSeconds"], 3, "1.5s rounds up to 2, plus 1");
    assert_eq!(add_team["reinvocationPolicy"], "Never");
}

#[test]
fn aggregated_webhooks_take_the_union() {
    let (_dir, config) = policy_set(ENTRIES);
    let mut options = url_options();
    options.aggregate = true;
    let docs = webhooks(&config, &options).unwrap();
    let validating = hooks_of(&docs, "ValidatingWebhookConfiguration");
    let mutating = hooks_of(&docs, "MutatingWebhookConfiguration");
    assert_eq!(validating.len(), 1);
    assert_eq!(mutating.len(), 1);
    let v = &validating[0];
    assert_eq!(v["name"], "validate.wasmgate.io");
    assert_eq!(v["clientConfig"]["url"], "https://127.0.0.1:8443/validate");
    assert_eq!(v["rules"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["failurePolicy"], "Fail",
        "one enforcing Fail policy is enough"
    );
    assert_eq!(
        v["timeoutSeconds"], 4,
        "validators run in parallel: the slowest, 3s, plus 1"
    );
    // Only what every validator excludes (nothing in common here) besides the control plane;
    // no In list because not every validator names namespaces.
    assert_eq!(
        v["namespaceSelector"],
        serde_json::json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name",
            "operator": "NotIn", "values": ["kube-node-lease", "kube-system"]}]})
    );
    assert!(v.get("objectSelector").is_none());
    assert_eq!(mutating[0]["name"], "mutate.wasmgate.io");
    assert_eq!(
        mutating[0]["clientConfig"]["url"],
        "https://127.0.0.1:8443/mutate"
    );
}

#[test]
fn aggregated_timeouts_add_up_for_initializers_and_stop_at_30() {
    let entry = |name: &str, timeout: &str| {
        format!(
            "  - name: {name}\n    kind: initializer\n    module: a.wasm\n    rules: [{{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}}]\n    timeout: {timeout}\n    failurePolicy: Ignore\n"
        )
    };
    let (_dir, config) = policy_set(&(entry("one", "2s") + &entry("two", "3s")));
    let mut options = url_options();
    options.aggregate = true;
    let hooks = hooks_of(
        &webhooks(&config, &options).unwrap(),
        "MutatingWebhookConfiguration",
    );
    assert_eq!(hooks[0]["timeoutSeconds"], 6);
    assert_eq!(
        hooks[0]["failurePolicy"], "Ignore",
        "no policy asks to fail"
    );
    let (_dir, config) = policy_set(&(entry("one", "20s") + &entry("two", "20s")));
    let hooks = hooks_of(
        &webhooks(&config, &options).unwrap(),
        "MutatingWebhookConfiguration",
    );
    assert_eq!(hooks[0]["timeoutSeconds"], 30);
}

#[test]
fn service_webhooks_exempt_the_gateways_own_namespace() {
    let (_dir, config) = policy_set(ENTRIES);
    let mut options = Options::new(Service::parse("gate/wg:8443").unwrap());
    options.exempt_groups.clear();
    options.exempt_namespaces = vec!["kube-system".into()];
    let hooks = hooks_of(
        &webhooks(&config, &options).unwrap(),
        "ValidatingWebhookConfiguration",
    );
    assert_eq!(
        hooks[0]["clientConfig"],
        serde_json::json!({"service": {"namespace": "gate", "name": "wg",
            "path": "/validate/labels", "port": 8443}})
    );
    assert_eq!(
        hooks[0]["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["gate", "kube-system", "tools"])
    );
    assert!(
        hooks[0].get("matchConditions").is_none(),
        "no exempt groups and rules that cannot match Leases: no condition for the API server to evaluate"
    );
}

#[test]
fn only_webhooks_whose_rules_can_match_leases_exclude_them() {
    let (dir, _) = policy_set(ENTRIES);
    let rules = |groups: &str, resources: &str| {
        format!(
            "  - name: p-{}\n    kind: validator\n    module: b.wasm\n    rules: [{{operations: [UPDATE], apiGroups: [{groups}], apiVersions: ['*'], resources: [{resources}]}}]\n",
            groups.len() + resources.len()
        )
    };
    let cases = [
        ("'*'", "'*'", true),
        ("coordination.k8s.io", "leases", true),
        ("'*'", "'leases/*'", true),
        ("coordination.k8s.io", "'*/*'", true),
        ("coordination.k8s.io", "leasecandidates", false),
        ("''", "'*'", false),
        ("apps", "leases", false),
    ];
    for (groups, resources, excluded) in cases {
        let file = dir.path().join("leases.yaml");
        std::fs::write(
            &file,
            format!(
                "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n{}",
                rules(groups, resources)
            ),
        )
        .unwrap();
        let config = Config::load(&file).unwrap();
        for aggregate in [false, true] {
            let mut options = Options::new(Service::parse("gate/wg").unwrap());
            options.aggregate = aggregate;
            let hooks = hooks_of(
                &webhooks(&config, &options).unwrap(),
                "ValidatingWebhookConfiguration",
            );
            let names: Vec<&str> = hooks[0]["matchConditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                names.contains(&"exclude-leases"),
                excluded,
                "apiGroups {groups}, resources {resources}, aggregate {aggregate}: {names:?}"
            );
        }
    }
}

#[test]
fn kubelets_are_exempt_where_the_rules_can_match_what_they_write() {
    let (dir, _) = policy_set(ENTRIES);
    let rule = |operations: &str, groups: &str, resources: &str| {
        format!(
            "  - name: p\n    kind: validator\n    module: b.wasm\n    rules: [{{operations: [{operations}], apiGroups: [{groups}], apiVersions: ['*'], resources: [{resources}]}}]\n"
        )
    };
    // (operations, apiGroups, resources, whether kubelets are exempt)
    let cases = [
        // Mirror Pods are judged like any Pod; kubelets never update a Pod's spec.
        ("CREATE, UPDATE", "''", "pods", false),
        ("CREATE", "''", "'pods/exec'", false),
        ("'*'", "apps", "'*'", false),
        ("'*'", "''", "configmaps", false),
        // A kubelet deletes its Pods, reports their status, evicts them.
        ("DELETE", "''", "pods", true),
        ("'*'", "''", "pods", true),
        ("UPDATE", "''", "'pods/status'", true),
        ("UPDATE", "''", "'pods/*'", true),
        ("CREATE", "''", "'*/eviction'", true),
        // It registers and reports its Node, writes events, gets tokens and certificates.
        ("CREATE", "''", "nodes", true),
        ("UPDATE", "''", "'nodes/status'", true),
        ("DELETE", "''", "nodes", false),
        ("UPDATE", "''", "events", true),
        ("CREATE", "''", "'serviceaccounts/token'", true),
        ("CREATE", "certificates.k8s.io", "'*'", true),
        ("UPDATE", "certificates.k8s.io", "'*'", false),
        ("DELETE", "storage.k8s.io", "csinodes", true),
        ("CREATE", "authentication.k8s.io", "tokenreviews", true),
        ("CREATE", "'*'", "'*'", true),
        ("'*'", "'*'", "'*/*'", true),
    ];
    for (operations, groups, resources, exempt) in cases {
        let file = dir.path().join("kubelet.yaml");
        std::fs::write(
            &file,
            format!(
                "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n{}",
                rule(operations, groups, resources)
            ),
        )
        .unwrap();
        let config = Config::load(&file).unwrap();
        // The expression of the webhook's group exemption, if it has one.
        let exemption = |options: &Options| {
            let hooks = hooks_of(
                &webhooks(&config, options).unwrap(),
                "ValidatingWebhookConfiguration",
            );
            hooks[0]["matchConditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == "exclude-exempt-groups")
                .map(|c| c["expression"].as_str().unwrap().to_owned())
        };
        for aggregate in [false, true] {
            let mut options = Options::new(Service::parse("gate/wg").unwrap());
            options.aggregate = aggregate;
            let expression = exemption(&options);
            let case = format!(
                "operations {operations}, apiGroups {groups}, resources {resources}, aggregate {aggregate}"
            );
            if exempt {
                assert_eq!(
                    expression.as_deref(),
                    Some(r#"!request.userInfo.groups.exists(g, g in ["system:nodes"])"#),
                    "{case}"
                );
            } else {
                assert_eq!(expression, None, "{case}");
            }
            // Any other group stays exempt everywhere, and system:nodes with it only where
            // kubelets write.
            options.exempt_groups = vec!["system:nodes".into(), "ops".into()];
            let expression = exemption(&options);
            let want = if exempt {
                r#"!request.userInfo.groups.exists(g, g in ["system:nodes", "ops"])"#
            } else {
                r#"!request.userInfo.groups.exists(g, g in ["ops"])"#
            };
            assert_eq!(expression.as_deref(), Some(want), "{case}");
        }
    }
}

#[test]
fn a_file_without_initializers_has_no_mutating_configuration() {
    let (_dir, config) = policy_set(
        "  - name: only\n    kind: validator\n    module: b.wasm\n    rules: [{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}]\n",
    );
    let docs = webhooks(&config, &url_options()).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(json(&docs[0])["kind"], "ValidatingWebhookConfiguration");
}

#[test]
fn targets_and_names_are_checked() {
    assert_eq!(
        Target::url("https://gw.example.com/prefix/").unwrap(),
        Target::Url("https://gw.example.com/prefix".into())
    );
    for bad in [
        "http://gw:8443",
        "https://",
        "https://:8443",
        "https://gw?x=1",
        "https://u@gw",
        "https://gw#f",
    ] {
        assert!(Target::url(bad).is_err(), "{bad}");
    }
    assert_eq!(
        Service::parse("ns/svc").unwrap(),
        Service {
            namespace: "ns".into(),
            name: "svc".into(),
            port: 443
        }
    );
    assert_eq!(Service::parse("ns/svc:9443").unwrap().port, 9443);
    for bad in ["svc", "ns/", "NS/svc", "ns/svc:0", "ns/svc:http", "ns/a.b"] {
        assert!(Service::parse(bad).is_err(), "{bad}");
    }
    let mut options = url_options();
    options.webhook_domain = "local".into();
    assert!(options.validate().unwrap_err().0.contains("three"));
    options.webhook_domain = "Example.com".into();
    assert!(options.validate().is_err());
    let mut options = url_options();
    options.name = "Gate".into();
    assert!(options.validate().is_err());
}

#[test]
fn cel_strings_are_escaped() {
    assert_eq!(cel_string("system:nodes"), r#""system:nodes""#);
    assert_eq!(cel_string(r#"a"b\c"#), r#""a\"b\\c""#);
}

#[test]
fn audit_kubeconfig_points_at_the_audit_endpoint() {
    let mut options = url_options();
    options.audit_client = Some(ClientCredentials::Files {
        cert: "/etc/kubernetes/pki/wasmgate-client.crt".into(),
        key: "/etc/kubernetes/pki/wasmgate-client.key".into(),
    });
    let kc = json(&audit_kubeconfig(&options).unwrap());
    assert_eq!(kc["kind"], "Config");
    assert_eq!(kc["current-context"], "wasmgate");
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:8443/audit"
    );
    assert_eq!(
        kc["clusters"][0]["cluster"]["certificate-authority-data"],
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
    );
    assert_eq!(
        kc["users"][0]["user"]["client-certificate"],
        "/etc/kubernetes/pki/wasmgate-client.crt"
    );
    assert_eq!(kc["contexts"][0]["context"]["user"], "kube-apiserver");
    options.audit_client = Some(ClientCredentials::Embedded {
        cert_pem: b"CERT".to_vec(),
        key_pem: b"KEY".to_vec(),
    });
    let kc = json(&audit_kubeconfig(&options).unwrap());
    assert_eq!(
        kc["users"][0]["user"],
        serde_json::json!({"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"})
    );

    let options = Options::new(Service::parse("gate/wg").unwrap());
    let kc = json(&audit_kubeconfig(&options).unwrap());
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://wg.gate.svc:443/audit"
    );
    assert!(
        kc["clusters"][0]["cluster"]
            .get("certificate-authority-data")
            .is_none()
    );
    assert_eq!(kc["users"][0]["user"], serde_json::json!({}));
}

#[test]
fn deploy_objects_fit_together() {
    let (_dir, config) = policy_set(ENTRIES);
    let mut options = Options::new(Service::parse("gate/wg:9443").unwrap());
    options.replicas = 5;
    options.image = format!(
        "registry.example:5000/team/wasmgate@sha256:{}",
        "a".repeat(64)
    );
    options.storage_class = Some("fast-ssd".into());
    let docs: Vec<serde_json::Value> = deploy(&options, &config)
        .unwrap()
        .iter()
        .map(json)
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "Service",
            "PriorityClass",
            "StatefulSet",
            "PodDisruptionBudget",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding"
        ]
    );
    assert_eq!(docs[0]["metadata"]["name"], "gate");
    for doc in docs[1..6].iter().filter(|d| d["kind"] != "PriorityClass") {
        assert_eq!(doc["metadata"]["namespace"], "gate");
        assert_eq!(doc["metadata"]["name"], "wg");
    }
    let labels = serde_json::json!({"app.kubernetes.io/name": "wasmgate",
        "app.kubernetes.io/instance": "wasmgate"});
    let service = &docs[2]["spec"];
    assert_eq!(service["selector"], labels);
    assert_eq!(service["ports"][0]["port"], 9443);
    assert_eq!(service["ports"][0]["targetPort"], "https");
    assert_eq!(docs[3]["metadata"]["name"], "wg-critical");
    let set = &docs[4]["spec"];
    assert_eq!(set["replicas"], 5);
    assert_eq!(set["serviceName"], "wg");
    assert_eq!(set["selector"]["matchLabels"], labels);
    assert_eq!(set["template"]["metadata"]["labels"], labels);
    let pod = &set["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "wg-critical");
    assert_eq!(pod["securityContext"]["fsGroup"], 65532);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], options.image);
    assert_eq!(container["ports"][0]["containerPort"], CONTAINER_PORT);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["scheme"], "HTTPS");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--config=/etc/wasmgate/policies/policies.yaml"));
    assert!(args.contains(&"--tls-cert=/etc/wasmgate/tls/tls.crt"));
    assert!(args.contains(&"--spool-dir=/var/lib/wasmgate/spool"));
    // The compile cache is a subdirectory of its emptyDir, which the gateway creates 0700: the
    // kubelet's emptyDir itself is root's and world-writable, and the gateway refuses it.
    assert!(args.contains(&"--cache-dir=/var/cache/wasmgate/compiled"));
    assert!(args.contains(&"--spool-max-bytes=1Gi"));
    // /audit asks for the API server's client certificate by default; admission does not.
    assert!(args.contains(&"--audit-client-ca=/etc/wasmgate/client-ca/ca.crt"));
    assert!(!args.iter().any(|a| a.starts_with("--admission-client-ca")));
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for dir in [
        POLICY_DIR,
        TLS_DIR,
        CLIENT_CA_DIR,
        SPOOL_DIR,
        OUTPUT_DIR,
        "/var/cache/wasmgate",
        "/tmp",
    ] {
        assert!(mounts.contains(&dir), "{dir} is not mounted");
    }
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
    };
    assert_eq!(
        volume("policies").unwrap()["configMap"]["name"],
        "wg-policies"
    );
    assert_eq!(volume("tls").unwrap()["secret"]["secretName"], "wg-tls");
    assert_eq!(
        volume("client-ca").unwrap()["configMap"]["name"],
        "wg-client-ca"
    );
    // The spool is no Pod volume: it is the claim template's, one PVC per replica.
    assert!(volume("spool").is_none());
    let claim = &set["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "spool");
    assert_eq!(
        claim["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"])
    );
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1280Mi");
    assert_eq!(claim["spec"]["storageClassName"], "fast-ssd");
    assert_eq!(
        set["persistentVolumeClaimRetentionPolicy"],
        serde_json::json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(pod["serviceAccountName"], "wg");
    // SIGTERM: preStop, then the server's drain, then the exit, all inside the grace period.
    assert_eq!(
        container["lifecycle"]["preStop"]["sleep"]["seconds"],
        deploy::PRESTOP_SECONDS
    );
    assert!(args.contains(&"--audit-drain-timeout=10s"));
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap()
            > deploy::PRESTOP_SECONDS
                + deploy::AUDIT_DRAIN_SECONDS
                + crate::server::DRAIN_TIMEOUT.as_secs()
    );
    assert_eq!(docs[5]["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(docs[5]["spec"]["maxUnavailable"], 1);
}

#[test]
fn deploy_resources_follow_the_policy_file() {
    // Four 64Mi policies (the default), a 512Mi one, and a sink writing a file output.
    let (dir, _) = policy_set(ENTRIES);
    std::fs::write(dir.path().join("s.wasm"), vec![0u8; 3 << 20]).unwrap();
    let text = format!(
        "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n{ENTRIES}  - name: big\n    kind: validator\n    module: c.wasm\n    memoryLimit: 512Mi\n    rules: [{{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}}]\nauditSinks:\n  - name: s\n    module: s.wasm\n    memoryLimit: 32Mi\n    maxInFlight: 3\n    rules: [{{level: Metadata}}]\n    outputs: [{{name: f, type: file, path: out.jsonl, maxSize: 10Mi, maxFiles: 3}}]\n"
    );
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, text).unwrap();
    let config = Config::load(&file).unwrap();
    let mut options = Options::new(Service::parse("gate/wg").unwrap());
    options.plugin_calls = 4;
    options.audit_max_body = 16 << 20;
    options.spool_max_bytes = 4 << 30;
    let docs: Vec<serde_json::Value> = deploy(&options, &config)
        .unwrap()
        .iter()
        .map(json)
        .collect();
    let pod = &docs[4]["spec"]["template"]["spec"];
    let resources = &pod["containers"][0]["resources"];
    // limit = 128Mi base + 8 audit bodies × 16Mi + 32Mi sink × 3 in flight + 4 calls × 512Mi
    // + one instance made ahead for each policy and the sink (4 × 64 + 512 + 32)
    assert_eq!(resources["limits"]["memory"], "3200Mi");
    // request = 128Mi base + one 16Mi body + 32Mi sink + 2 calls × 512Mi
    assert_eq!(resources["requests"]["memory"], "1200Mi");
    // cache: 64Mi + 10 × the modules (3Mi sink + four tiny ones) = 94Mi; outputs: 16Mi +
    // 10Mi × (3 + 1); tmp 16Mi.
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()["emptyDir"]["sizeLimit"]
            .clone()
    };
    assert_eq!(volume("cache"), "95Mi");
    assert_eq!(volume("outputs"), "56Mi");
    assert_eq!(volume("tmp"), "16Mi");
    assert_eq!(resources["requests"]["ephemeral-storage"], "167Mi");
    assert_eq!(resources["limits"]["ephemeral-storage"], "167Mi");
    assert_eq!(
        docs[4]["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "5Gi"
    );
    let args = pod["containers"][0]["args"].as_array().unwrap();
    assert!(args.contains(&"--spool-max-bytes=4Gi".into()));
    assert!(args.contains(&"--audit-max-body-bytes=16777216".into()));

    // Without sinks, no memory is set aside for audit bodies.
    let (_dir, admission_only) = policy_set(ENTRIES);
    let docs: Vec<serde_json::Value> = deploy(&options, &admission_only)
        .unwrap()
        .iter()
        .map(json)
        .collect();
    // 128Mi + 4 × 64Mi + one instance made ahead for each of the four policies
    assert_eq!(
        docs[4]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "640Mi"
    );
}

#[test]
fn images_are_names_with_a_tag_or_a_digest() {
    let digest = "0123456789abcdef".repeat(4);
    for good in [
        "wasmgate".to_owned(),
        "wasmgate:0.1.0".to_owned(),
        format!("wasmgate@sha256:{digest}"),
        format!("wasmgate:0.1.0@sha256:{digest}"),
        "registry.example:5000/team/wasmgate:v1".to_owned(),
        "localhost/wasmgate:dev".to_owned(),
    ] {
        assert!(is_image_reference(&good), "{good}");
    }
    for bad in [
        "".to_owned(),
        "Wasmgate:1".to_owned(),
        "wasmgate:".to_owned(),
        format!("wasmgate@sha256:{}", &digest[1..]),
        format!("wasmgate@sha512:{digest}"),
        format!("wasmgate@sha256:{}", digest.to_uppercase()),
        "wasmgate:a b".to_owned(),
        "/wasmgate".to_owned(),
    ] {
        assert!(!is_image_reference(&bad), "{bad}");
    }
}

#[test]
fn admission_configuration_names_the_webhook_kubeconfig() {
    let config = json(&admission_configuration("/etc/kubernetes/wg/kc.yaml").unwrap());
    assert_eq!(config["apiVersion"], "apiserver.config.k8s.io/v1");
    assert_eq!(config["kind"], "AdmissionConfiguration");
    let plugins: Vec<&str> = config["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        plugins,
        ["ValidatingAdmissionWebhook", "MutatingAdmissionWebhook"]
    );
    for plugin in config["plugins"].as_array().unwrap() {
        assert_eq!(
            plugin["configuration"],
            serde_json::json!({"apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "WebhookAdmissionConfiguration", "kubeConfigFile": "/etc/kubernetes/wg/kc.yaml"})
        );
    }
    assert!(admission_configuration("relative.yaml").is_err());

    // The user is named for the host the API server calls.
    let mut options = Options::new(Service::parse("gate/wg").unwrap());
    assert!(
        webhook_kubeconfig(&options).is_err(),
        "no client certificate"
    );
    options.audit_client = Some(ClientCredentials::Files {
        cert: "/pki/c.crt".into(),
        key: "/pki/c.key".into(),
    });
    let kc = json(&webhook_kubeconfig(&options).unwrap());
    assert_eq!(kc["users"][0]["name"], "wg.gate.svc");
    assert_eq!(kc["users"][0]["user"]["client-certificate"], "/pki/c.crt");
    options.target = Target::Service(Service::parse("gate/wg:8443").unwrap());
    assert_eq!(
        json(&webhook_kubeconfig(&options).unwrap())["users"][0]["name"],
        "wg.gate.svc:8443"
    );
    options.target = Target::url("https://gw.example:443/x").unwrap();
    assert_eq!(
        json(&webhook_kubeconfig(&options).unwrap())["users"][0]["name"],
        "gw.example"
    );
}

#[test]
fn config_objects_carry_the_pinned_policy_file_and_the_plugins() {
    let (_dir, config) = policy_set(ENTRIES);
    let text = std::fs::read_to_string(&config.file).unwrap();
    let mut options = Options::new(Service::parse("gate/wg").unwrap());
    options.ca_pem = Some(b"CA".to_vec());
    options.tls = Some(TlsMaterial {
        cert_pem: b"CERT".to_vec(),
        key_pem: b"KEY".to_vec(),
    });
    let docs: Vec<serde_json::Value> = config_objects(&config, &text, &options)
        .unwrap()
        .iter()
        .map(json)
        .collect();
    assert_eq!(docs.len(), 2);
    let cm = &docs[0];
    assert_eq!(cm["metadata"]["name"], "wg-policies");
    assert_eq!(cm["metadata"]["namespace"], "gate");
    // c.wasm is used twice but stored once.
    let binary = cm["binaryData"].as_object().unwrap();
    assert_eq!(
        binary.keys().collect::<Vec<_>>(),
        ["a.wasm", "b.wasm", "c.wasm"]
    );
    assert_eq!(binary["a.wasm"], "YS53YXNt");
    // The rendered file loads, with every module found by its key and pinned.
    let dir = tempfile::tempdir().unwrap();
    let b64 = &base64::engine::general_purpose::STANDARD;
    for (key, data) in binary {
        std::fs::write(
            dir.path().join(key),
            b64.decode(data.as_str().unwrap()).unwrap(),
        )
        .unwrap();
    }
    let policies = cm["data"]["policies.yaml"].as_str().unwrap();
    assert!(policies.contains("sha256: "));
    let file = dir.path().join("policies.yaml");
    std::fs::write(&file, policies).unwrap();
    let reloaded = Config::load(&file).unwrap();
    assert_eq!(reloaded.entries.len(), config.entries.len());
    for (a, b) in reloaded.entries.iter().zip(&config.entries) {
        assert_eq!(a.module.sha256, b.module.sha256);
        assert_eq!(a.entry.sha256.as_deref(), Some(b.module.sha256.as_str()));
    }
    let secret = &docs[1];
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["name"], "wg-tls");
    assert_eq!(
        secret["data"],
        serde_json::json!({"tls.crt": "Q0VSVA==", "tls.key": "S0VZ", "ca.crt": "Q0E="})
    );
    // No TLS material, no Secret.
    options.tls = None;
    assert_eq!(config_objects(&config, &text, &options).unwrap().len(), 1);
}

#[test]
fn config_objects_refuse_what_a_configmap_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.wasm"), vec![0u8; CONFIGMAP_LIMIT]).unwrap();
    let text = "apiVersion: wasmgate.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: big\n    kind: validator\n    module: big.wasm\n    rules: [{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}]\n";
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, text).unwrap();
    let config = Config::load(&file).unwrap();
    let options = Options::new(Service::parse("gate/wg").unwrap());
    let err = config_objects(&config, text, &options).unwrap_err();
    assert!(err.0.contains("more than a ConfigMap holds"), "{err}");
}

#[test]
fn serving_names_are_what_the_api_server_checks() {
    assert_eq!(
        serving_names(&Target::Service(Service::parse("gate/wg").unwrap())),
        ["wg.gate.svc", "wg.gate.svc.cluster.local", "wg.gate"]
    );
    assert_eq!(
        serving_names(&Target::url("https://127.0.0.1:8443/x").unwrap()),
        ["127.0.0.1"]
    );
    assert_eq!(
        serving_names(&Target::url("https://[::1]:8443").unwrap()),
        ["::1"]
    );
    assert_eq!(
        serving_names(&Target::url("https://gw.example.com").unwrap()),
        ["gw.example.com"]
    );
}

#[test]
fn yaml_stream_has_header_and_separators() {
    let docs = vec![yaml!({ "a": 1 }), yaml!({ "b": ["x", ""] })];
    assert_eq!(
        to_yaml(&["made here".into()], &docs).unwrap(),
        "# made here\n---\na: 1\n---\nb:\n- x\n- \"\"\n"
    );
    assert_eq!(to_yaml(&[], &docs[..1]).unwrap(), "a: 1\n");
}

/// A policy file with these audit sinks (YAML list items), each writing to a file output.
fn sinks(entries: &str) -> (tempfile::TempDir, Config) {
    policy_set(&format!("auditSinks:\n{entries}"))
}

fn sink(name: &str, rules: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    module: a.wasm\n    rules:\n{rules}{extra}    outputs:\n      - {{name: out, type: file, path: {name}.jsonl}}\n"
    )
}

#[test]
fn audit_policy_drops_only_what_no_sink_wants() {
    let (_dir, config) = sinks(
        &(sink(
            "redact",
            "      - level: None\n        users: [system:kube-proxy]\n      - level: RequestResponse\n",
            "    omitStages: [RequestReceived]\n    omitManagedFields: true\n",
        ) + &sink(
            "alerts",
            "      - level: Metadata\n        resources: [{group: '', resources: [pods/exec, secrets]}]\n      - level: None\n",
            "    omitStages: [RequestReceived, ResponseStarted]\n",
        )),
    );
    let policy = json(&audit_policy(&config).unwrap());
    assert_eq!(policy["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(policy["kind"], "Policy");
    // The redact sink keeps everything but kube-proxy's requests: nothing may be dropped.
    assert_eq!(
        policy["rules"],
        serde_json::json!([{"level": "RequestResponse"}])
    );
    assert_eq!(policy["omitStages"], serde_json::json!(["RequestReceived"]));
    assert!(
        policy.get("omitManagedFields").is_none(),
        "only one sink omits them"
    );

    let (_dir, config) = sinks(
        &(sink(
            "redact",
            "      - level: None\n        resources: [{group: coordination.k8s.io, resources: [leases]}, {group: '', resources: ['*']}]\n      - level: None\n        nonResourceURLs: ['/healthz*', /livez]\n      - level: Request\n",
            "    omitManagedFields: true\n",
        ) + &sink(
            "alerts",
            "      - level: Metadata\n        resources: [{group: '', resources: [pods/exec]}]\n",
            "    omitManagedFields: true\n",
        )),
    );
    let policy = json(&audit_policy(&config).unwrap());
    assert_eq!(
        policy["rules"],
        serde_json::json!([
            {"level": "None", "resources": [
                {"group": "coordination.k8s.io", "resources": ["leases"]},
                {"group": "", "resources": ["events"]}]},
            // `/livez` alone leaves `/livez/ping` wanted.
            {"level": "None", "nonResourceURLs": ["/healthz*"]},
            {"level": "Request"},
        ])
    );
    assert!(policy.get("omitStages").is_none());
    assert_eq!(policy["omitManagedFields"], true);
}

#[test]
fn audit_policy_keeps_noise_a_sink_asks_for() {
    let (_dir, config) = sinks(&sink(
        "leases",
        "      - level: None\n        users: [system:apiserver]\n      - level: Metadata\n        resources: [{group: coordination.k8s.io}]\n      - level: None\n        verbs: [watch]\n      - level: None\n",
        "",
    ));
    let policy = json(&audit_policy(&config).unwrap());
    let rules = policy["rules"].as_array().unwrap();
    assert_eq!(
        rules[0]["resources"],
        serde_json::json!([{"group": "", "resources": ["events"]}, {"group": "events.k8s.io", "resources": ["events"]}]),
        "leases are wanted at Metadata; events fall through to None"
    );
    assert_eq!(
        rules[1]["nonResourceURLs"],
        serde_json::json!(["/healthz*", "/livez*", "/readyz*"])
    );
    assert_eq!(rules[2], serde_json::json!({"level": "Metadata"}));
}

#[test]
fn audit_policy_needs_a_sink_that_wants_something() {
    let (_dir, config) = policy_set("");
    assert!(
        audit_policy(&config)
            .unwrap_err()
            .0
            .contains("no auditSinks")
    );
    let (_dir, config) = sinks(&sink("quiet", "      - level: None\n", ""));
    assert!(audit_policy(&config).unwrap_err().0.contains("say None"));
}

#[test]
fn config_objects_carry_audit_sinks_with_writable_outputs() {
    let (_dir, config) = policy_set(
        "  - name: labels\n    kind: validator\n    module: b.wasm\n    rules: [{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}]\nauditSinks:\n  - name: redact\n    module: c.wasm\n    rules: [{level: Metadata}]\n    outputs:\n      - {name: audit, type: file, path: ./audit/events.jsonl}\n      - {name: kept, type: file, path: /data/events.jsonl}\n      - {name: console, type: stdout}\n",
    );
    let text = std::fs::read_to_string(&config.file).unwrap();
    let options = Options::new(Service::parse("gate/wg").unwrap());
    let docs: Vec<serde_json::Value> = config_objects(&config, &text, &options)
        .unwrap()
        .iter()
        .map(json)
        .collect();
    let cm = &docs[0];
    assert_eq!(
        cm["binaryData"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["b.wasm", "c.wasm"]
    );
    let file: serde_json::Value =
        serde_yaml_ng::from_str(cm["data"]["policies.yaml"].as_str().unwrap()).unwrap();
    let sink = &file["auditSinks"][0];
    assert_eq!(sink["module"], "c.wasm");
    assert_eq!(sink["sha256"], config.sinks[0].module.sha256.as_str());
    assert_eq!(
        sink["outputs"],
        serde_json::json!([
            {"name": "audit", "type": "file", "path": "/var/log/wasmgate/audit/events.jsonl"},
            {"name": "kept", "type": "file", "path": "/data/events.jsonl"},
            {"name": "console", "type": "stdout"},
        ])
    );
}

#[test]
fn aggregation_is_refused_where_one_webhook_would_skip_a_policy() {
    // Two versions of one CRD: with matchPolicy Equivalent the API server sends one webhook a
    // request in one version only (policy/equivalence.rs).
    let (_dir, config) = policy_set(
        r"
  - name: widgets-v1
    kind: validator
    module: a.wasm
    rules: [{operations: [CREATE], apiGroups: [example.com], apiVersions: [v1], resources: [widgets]}]
  - name: widgets-v2
    kind: validator
    module: b.wasm
    rules: [{operations: [CREATE], apiGroups: [example.com], apiVersions: [v2], resources: [widgets]}]
",
    );
    let mut options = url_options();
    assert_eq!(
        hooks_of(
            &webhooks(&config, &options).unwrap(),
            "ValidatingWebhookConfiguration"
        )
        .len(),
        2,
        "one webhook per policy is fine"
    );
    options.aggregate = true;
    let error = webhooks(&config, &options).unwrap_err().to_string();
    assert!(
        error.contains(r#"--aggregate: policies "widgets-v1" and "widgets-v2" cover "widgets""#),
        "{error}"
    );
}

#[test]
fn reinvocation_is_rendered_per_policy_and_for_the_aggregate() {
    let (_dir, config) = policy_set(
        r"
  - name: first
    kind: initializer
    module: a.wasm
    rules: [{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}]
    reinvocation: IfNeeded
  - name: second
    kind: initializer
    module: b.wasm
    rules: [{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}]
",
    );
    let mut options = url_options();
    let mutating = hooks_of(
        &webhooks(&config, &options).unwrap(),
        "MutatingWebhookConfiguration",
    );
    assert_eq!(mutating[0]["reinvocationPolicy"], "IfNeeded");
    assert_eq!(mutating[1]["reinvocationPolicy"], "Never");
    options.aggregate = true;
    let mutating = hooks_of(
        &webhooks(&config, &options).unwrap(),
        "MutatingWebhookConfiguration",
    );
    assert_eq!(mutating[0]["reinvocationPolicy"], "IfNeeded");
}

#[test]
fn deploy_runs_register_with_exactly_the_rbac_it_needs() {
    let (_dir, config) = policy_set(ENTRIES);
    let mut options = Options::new(Service::parse("gate/wg:9443").unwrap());
    options.name = "wg-hooks".into();
    let docs: Vec<serde_json::Value> = deploy(&options, &config)
        .unwrap()
        .iter()
        .map(json)
        .collect();
    let find = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap();
    let pod = &find("StatefulSet")["spec"]["template"]["spec"];
    // The token is mounted: --register calls the API server with it.
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["serviceAccountName"], "wg");
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "--register",
        "--register-service=gate/wg:9443",
        "--register-name=wg-hooks",
        "--register-ca-file=/etc/wasmgate/tls/ca.crt",
    ] {
        assert!(args.contains(&want), "{want} missing from {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--register-url")));
    assert_eq!(container["env"][0]["name"], "POD_NAME");
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    // The RBAC names what those flags write: the configurations --register-name, the Lease of
    // --register-service, for the ServiceAccount the Pods run as.
    let cluster_role = find("ClusterRole");
    assert_eq!(
        cluster_role["rules"][0]["resourceNames"],
        serde_json::json!(["wg-hooks"])
    );
    let role = find("Role");
    assert_eq!(role["metadata"]["namespace"], "gate");
    assert_eq!(
        role["rules"][0]["resourceNames"],
        serde_json::json!([lease_name(&options.service)])
    );
    assert_eq!(lease_name(&options.service), "wg-register");
    for binding in [find("ClusterRoleBinding"), find("RoleBinding")] {
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "wg", "namespace": "gate"}])
        );
    }
    // Rendered with --url, the replicas register that URL.
    options.target = Target::url("https://10.0.0.5:8443").unwrap();
    let docs: Vec<serde_json::Value> = deploy(&options, &config)
        .unwrap()
        .iter()
        .map(json)
        .collect();
    let set = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let args = &set["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&serde_json::json!("--register-url=https://10.0.0.5:8443")),
        "{args}"
    );
}

#[test]
fn apiserver_client_secret_carries_a_certificate_the_gateway_accepts_and_kubeconfigs_using_it() {
    use rustls::pki_types::{CertificateDer, UnixTime, pem::PemObject};
    let (ca, cert, key) = crate::server::tls::generate_client("kube-apiserver").unwrap();
    let mut options = Options::new(Service::parse("gate/wg:9443").unwrap());
    options.target = Target::url("https://10.0.0.5:8443").unwrap();
    options.ca_pem = Some(b"serving CA".to_vec());
    // Without the client CA there is nothing to tell the gateway to trust.
    assert!(apiserver_client_secret(&options, cert.as_bytes(), key.as_bytes()).is_err());
    options.client_ca_pem = Some(ca.clone().into_bytes());
    let secret = json(&apiserver_client_secret(&options, cert.as_bytes(), key.as_bytes()).unwrap());
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["name"], "wg-apiserver-client");
    assert_eq!(secret["metadata"]["namespace"], "gate");
    let b64 = &base64::engine::general_purpose::STANDARD;
    let data = |k: &str| b64.decode(secret["data"][k].as_str().unwrap()).unwrap();
    assert_eq!(data("tls.crt"), cert.as_bytes());
    assert_eq!(data("tls.key"), key.as_bytes());
    assert_eq!(data("ca.crt"), ca.as_bytes());
    // Both kubeconfigs present exactly that certificate and key.
    for (file, server) in [
        (
            "audit-webhook.kubeconfig",
            Some("https://10.0.0.5:8443/audit"),
        ),
        ("webhook.kubeconfig", None),
    ] {
        let kubeconfig: serde_json::Value = serde_yaml_ng::from_slice(&data(file)).unwrap();
        let user = &kubeconfig["users"][0]["user"];
        let embedded = |k: &str| b64.decode(user[k].as_str().unwrap()).unwrap();
        assert_eq!(
            embedded("client-certificate-data"),
            cert.as_bytes(),
            "{file}"
        );
        assert_eq!(embedded("client-key-data"), key.as_bytes(), "{file}");
        if let Some(server) = server {
            assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], server);
        }
    }
    // The certificate is one the gateway's client-CA check accepts: rustls's verifier over
    // that CA, as --audit-client-ca builds it.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .unwrap();
    let leaf = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    verifier
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .expect("the gateway accepts the API server's client certificate");
    // And one from another CA is refused by the same check.
    let (_, stranger, _) = crate::server::tls::generate_client("kube-apiserver").unwrap();
    let stranger = CertificateDer::from_pem_slice(stranger.as_bytes()).unwrap();
    assert!(
        verifier
            .verify_client_cert(&stranger, &[], UnixTime::now())
            .is_err()
    );
}

#[test]
fn deploy_grants_exactly_what_context_asks() {
    // Two policies, three grants of two groups: one namespace-limited, one metadata-only, one
    // resource granted twice (one rule names it once).
    let (_dir, config) = policy_set(
        r"
  - name: unique-host
    kind: validator
    module: a.wasm
    rules: [{operations: [CREATE], apiGroups: [networking.k8s.io], apiVersions: [v1], resources: [ingresses]}]
    context:
      - {apiGroup: networking.k8s.io, version: v1, resource: ingresses, namespaces: [prod, web]}
      - {apiGroup: '', version: v1, resource: namespaces, metadataOnly: true}
  - name: quota
    kind: validator
    module: b.wasm
    rules: [{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}]
    context:
      - {apiGroup: networking.k8s.io, version: v1, resource: ingresses}
      - {apiGroup: '', version: v1, resource: pods}
",
    );
    let options = Options::new(Service::parse("gate/wg").unwrap());
    let docs: Vec<serde_json::Value> = deploy(&options, &config)
        .unwrap()
        .iter()
        .map(json)
        .collect();
    let named = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let role = named("ClusterRole", "gate-wg-context");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["namespaces", "pods"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"],
             "verbs": ["get", "list", "watch"]},
        ])
    );
    let binding = named("ClusterRoleBinding", "gate-wg-context");
    assert_eq!(binding["roleRef"]["name"], "gate-wg-context");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "wg", "namespace": "gate"}])
    );
    // The register RBAC is unchanged, and nothing else grants list or watch.
    let listing: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| {
            serde_json::to_string(&d["rules"])
                .unwrap()
                .contains("\"list\"")
        })
        .collect();
    assert_eq!(listing, [&role]);

    // Without `context:` there is no context role at all.
    let (_dir, plain) = policy_set(ENTRIES);
    let docs: Vec<serde_json::Value> = deploy(&options, &plain).unwrap().iter().map(json).collect();
    assert!(docs.iter().all(|d| {
        !d["metadata"]["name"]
            .as_str()
            .unwrap()
            .ends_with("-context")
    }));
    let text = serde_json::to_string(&docs).unwrap();
    assert!(!text.contains("\"list\"") && !text.contains("\"watch\""));
}

#[test]
fn deploy_grants_what_background_scans_read_and_the_reports() {
    // A background policy on Deployments with a metadata-only grant on Namespaces: the scan
    // watches Deployments (whole objects), and the reports role writes OpenReports.
    let (_dir, config) = policy_set(
        r"
  - name: replicas
    kind: validator
    module: a.wasm
    background: true
    rules: [{operations: [CREATE, UPDATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}]
    context:
      - {apiGroup: '', version: v1, resource: namespaces, metadataOnly: true}
",
    );
    let options = Options::new(Service::parse("gate/wg").unwrap());
    let docs: Vec<serde_json::Value> = deploy(&options, &config)
        .unwrap()
        .iter()
        .map(json)
        .collect();
    let named = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    assert_eq!(
        named("ClusterRole", "gate-wg-context")["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
        ])
    );
    assert_eq!(
        named("ClusterRole", "gate-wg-reports")["rules"],
        serde_json::json!([{"apiGroups": ["openreports.io"], "resources": ["reports", "clusterreports"],
            "verbs": ["get", "list", "create", "patch", "delete"]}])
    );
    assert_eq!(
        named("ClusterRoleBinding", "gate-wg-reports")["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "wg", "namespace": "gate"}])
    );
    // Without background, no reports role.
    let (_dir, plain) = policy_set(ENTRIES);
    let text = serde_json::to_string(
        &deploy(&options, &plain)
            .unwrap()
            .iter()
            .map(json)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(!text.contains("openreports.io"));
}
