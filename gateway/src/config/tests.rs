use super::*;
use crate::config::{KafkaKey, SaslMechanism};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("wasmgate-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.wasm"), b"not really wasm").unwrap();
        Dir(dir)
    }

    fn load(&self, text: &str) -> Result<Config, ConfigError> {
        let file = self.0.join("policies.yaml");
        std::fs::write(&file, text).unwrap();
        Config::load(&file)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = "apiVersion: wasmgate.io/v1alpha1
kind: PolicySet
policies:
  - name: require-labels
    kind: validator
    module: p.wasm
    settings:
      labels: [team]
    rules:
      - operations: [CREATE]
        apiGroups: [\"\"]
        apiVersions: [v1]
        resources: [pods]
";

#[test]
fn a_good_file_loads_with_defaults() {
    let dir = Dir::new("good");
    let config = dir.load(GOOD).unwrap();
    let entry = &config.entries[0];
    assert_eq!(entry.module.settings_json, r#"{"labels":["team"]}"#);
    assert_eq!(entry.module.timeout, DEFAULT_TIMEOUT);
    assert_eq!(entry.module.memory_limit, DEFAULT_MEMORY_LIMIT);
    assert_eq!(entry.entry.mode, Mode::Enforce);
    assert_eq!(entry.entry.failure_policy, FailurePolicy::Fail);
    assert_eq!(entry.module.line, Some(4));
    assert_eq!(config.content_hash.len(), 64);
}

fn error_of(dir: &Dir, text: &str) -> String {
    dir.load(text).unwrap_err().to_string()
}

#[test]
fn mistakes_name_the_file_line_and_reason() {
    let dir = Dir::new("bad");
    let file = dir.0.join("policies.yaml").display().to_string();

    let e = error_of(&dir, &GOOD.replace("    settings:", "    setings:"));
    assert!(
        e.starts_with(&format!("{file}:7: policies[0]: unknown field `setings`")),
        "{e}"
    );

    let e = error_of(
        &dir,
        &GOOD.replace("module: p.wasm", "module: missing.wasm"),
    );
    assert!(
        e.starts_with(&format!(
            "{file}:6: policy \"require-labels\": cannot read module"
        )),
        "{e}"
    );
    assert!(e.contains("missing.wasm"), "{e}");

    let e = error_of(
        &dir,
        &GOOD.replace("module: p.wasm", "module: p.wasm\n    sha256: 0000"),
    );
    assert!(
        e.starts_with(&format!("{file}:7: policy \"require-labels\": module")),
        "{e}"
    );
    assert!(e.contains("but the policy pins 0000"), "{e}");

    let e = error_of(&dir, &GOOD.replace("kind: validator", "kind: mutator"));
    assert!(
        e.starts_with(&format!(
            "{file}:5: policies[0].kind: unknown variant `mutator`"
        )),
        "{e}"
    );

    let e = error_of(&dir, &GOOD.replace("[CREATE]", "[CREATE, PATCH]"));
    assert!(
        e.contains(":10: policy \"require-labels\": rules[0]: unknown operation \"PATCH\""),
        "{e}"
    );

    let e = error_of(
        &dir,
        &GOOD.replace("name: require-labels", "name: Require_Labels"),
    );
    assert!(e.contains("must be a DNS label"), "{e}");

    let e = error_of(
        &dir,
        &GOOD.replace("    settings:", "    timeout: 45s\n    settings:"),
    );
    assert!(
        e.starts_with(&format!(
            "{file}:7: policy \"require-labels\": timeout 45s must be more than 0 and at most 30s"
        )),
        "{e}"
    );

    // A number where a Go duration belongs: at the `timeout` line, not the policy's first.
    let e = error_of(
        &dir,
        &GOOD.replace("    settings:", "    timeout: 1\n    settings:"),
    );
    assert!(
        e.starts_with(&format!("{file}:7: policy \"require-labels\": timeout: ")),
        "{e}"
    );

    let e = error_of(
        &dir,
        &GOOD.replace(
            "    settings:",
            "    instanceReuse:\n      maxIdle: 2\n      maxCalls: 1\n    settings:",
        ),
    );
    assert!(
        e.starts_with(&format!(
            "{file}:9: policy \"require-labels\": instanceReuse.maxCalls"
        )),
        "{e}"
    );

    let e = error_of(
        &dir,
        &GOOD.replace("    settings:", "    memoryLimit: lots\n    settings:"),
    );
    assert!(
        e.starts_with(&format!(
            "{file}:7: policy \"require-labels\": memoryLimit: \"lots\" is not a byte quantity"
        )),
        "{e}"
    );

    let e = error_of(&dir, &GOOD.replace("kind: PolicySet", "kind: Policy"));
    assert!(
        e.starts_with(&format!("{file}:1: expected apiVersion")),
        "{e}"
    );

    let e = error_of(&dir, "policies: [\n");
    assert!(e.starts_with(&file), "{e}");

    let twice = format!("{GOOD}{}", GOOD.split("policies:\n").nth(1).unwrap());
    let e = error_of(&dir, &twice);
    assert!(e.contains("the name is used twice"), "{e}");
}

#[test]
fn a_correct_pin_is_accepted() {
    let dir = Dir::new("pin");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"not really wasm"));
    let config = dir
        .load(&GOOD.replace(
            "module: p.wasm",
            &format!("module: p.wasm\n    sha256: {}", digest.to_uppercase()),
        ))
        .unwrap();
    assert_eq!(config.entries[0].module.sha256, digest);
}

const SINKS: &str = "apiVersion: wasmgate.io/v1alpha1
kind: PolicySet
auditSinks:
  - name: redact
    module: p.wasm
    settings:
      output: audit
    rules:
      - level: None
        users: [\"system:kube-proxy\"]
        verbs: [watch]
      - level: Metadata
        resources:
          - group: \"\"
            resources: [secrets, configmaps]
      - level: RequestResponse
    omitStages: [RequestReceived]
    outputs:
      - name: audit
        type: file
        path: out/audit.jsonl
        maxSize: 10Mi
      - name: console
        type: stdout
";

#[test]
fn audit_sinks_load_with_defaults_and_resolved_outputs() {
    let dir = Dir::new("sinks");
    let config = dir.load(SINKS).unwrap();
    assert!(config.entries.is_empty());
    let sink = &config.sinks[0];
    assert_eq!(sink.module.line, Some(4));
    assert_eq!(sink.module.timeout, DEFAULT_SINK_TIMEOUT);
    assert_eq!(sink.max_attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(sink.in_flight, super::audit::default_in_flight());
    assert!((2..=8).contains(&sink.in_flight));
    assert_eq!(sink.module.settings_json, r#"{"output":"audit"}"#);
    assert_eq!(sink.entry.rules.len(), 3);
    assert_eq!(
        sink.outputs,
        vec![
            OutputSpec {
                name: "audit".into(),
                kind: OutputKind::File {
                    path: dir.0.join("out/audit.jsonl"),
                    max_size: 10 << 20,
                    max_files: 5,
                },
            },
            OutputSpec {
                name: "console".into(),
                kind: OutputKind::Stdout,
            },
        ]
    );
}

#[test]
fn audit_sink_mistakes_name_the_file_line_and_reason() {
    let dir = Dir::new("sinks-bad");
    let file = dir.0.join("policies.yaml").display().to_string();

    let e = error_of(
        &dir,
        &SINKS.replace("      - level: Metadata", "      - level: Some"),
    );
    assert!(
        e.starts_with(&format!(
            "{file}:12: auditSinks[0].rules[1].level: unknown variant `Some`"
        )),
        "{e}"
    );
    let e = error_of(
        &dir,
        &SINKS.replace(
            "        maxSize: 10Mi",
            "        maxSize: 10Mi\n        url: http://x",
        ),
    );
    assert!(
        e.starts_with(&format!("{file}:23: audit sink \"redact\": outputs[0] \"audit\": url does not apply to a file output")),
        "{e}"
    );
    let e = error_of(&dir, &SINKS.replace("        path: out/audit.jsonl\n", ""));
    assert!(
        e.contains("outputs[0] \"audit\": a file output needs a path"),
        "{e}"
    );
    let e = error_of(
        &dir,
        &SINKS.replace("        type: stdout", "        type: syslog"),
    );
    assert!(
        e.contains("auditSinks[0].outputs[1].type: unknown variant `syslog`"),
        "{e}"
    );
    let e = error_of(
        &dir,
        &SINKS.replace("      - name: console", "      - name: audit"),
    );
    assert!(
        e.contains("outputs[1] \"audit\": the name is used twice"),
        "{e}"
    );
    let e = error_of(
        &dir,
        &SINKS.replace(
            "      - level: RequestResponse",
            "      - level: RequestResponse\n        nonResourceURLs: [healthz]",
        ),
    );
    assert!(
        e.contains("rules[2]: nonResourceURLs \"healthz\" must start with / or be *"),
        "{e}"
    );
    let e = error_of(
        &dir,
        &SINKS.replace(
            "            resources: [secrets, configmaps]",
            "            resourceNames: [x]",
        ),
    );
    assert!(
        e.contains("rules[1]: resources[0]: resourceNames requires resources"),
        "{e}"
    );
    let e = error_of(
        &dir,
        &SINKS.replace("    omitStages:", "    maxAttempts: 0\n    omitStages:"),
    );
    assert!(e.contains("maxAttempts 0 must be between 1 and 100"), "{e}");
    for bad in ["0", "33"] {
        let e = error_of(
            &dir,
            &SINKS.replace(
                "    omitStages:",
                &format!("    maxInFlight: {bad}\n    omitStages:"),
            ),
        );
        assert!(
            e.contains(&format!("maxInFlight {bad} must be between 1 and 32")),
            "{e}"
        );
    }
    let e = error_of(
        &dir,
        &SINKS.replace("    omitStages:", "    timeout: 2m\n    omitStages:"),
    );
    assert!(
        e.contains("timeout 2m must be more than 0 and at most 60s"),
        "{e}"
    );
    let e = error_of(&dir, &SINKS.replace("module: p.wasm", "module: nope.wasm"));
    assert!(
        e.starts_with(&format!(
            "{file}:5: audit sink \"redact\": cannot read module"
        )),
        "{e}"
    );
    let e = error_of(
        &dir,
        &SINKS.replace(
            "        type: stdout",
            "        type: http\n        url: https://logs.example/\n        caFile: missing.pem",
        ),
    );
    assert!(e.contains("caFile") && e.contains("missing.pem"), "{e}");
    let e = error_of(
        &dir,
        &SINKS.replace("    outputs:", "    outputs: []\n    unused:"),
    );
    assert!(e.contains("unknown field `unused`"), "{e}");

    // Two sinks may not share a file; names are unique across policies and sinks.
    let second = SINKS
        .split("auditSinks:\n")
        .nth(1)
        .unwrap()
        .replace("name: redact", "name: other");
    let e = error_of(
        &dir,
        &format!(
            "{SINKS}{}",
            second.replace("      - name: console\n        type: stdout\n", "")
        ),
    );
    assert!(
        e.contains("audit sink \"other\": output \"audit\" writes to")
            && e.contains("which audit sink \"redact\" already writes to"),
        "{e}"
    );
    let e = error_of(
        &dir,
        &format!(
            "{}{}",
            GOOD,
            SINKS
                .split("kind: PolicySet\n")
                .nth(1)
                .unwrap()
                .replace("name: redact", "name: require-labels")
        ),
    );
    assert!(
        e.contains("audit sink \"require-labels\": the name is used twice"),
        "{e}"
    );
}

#[test]
fn rules_and_selectors_the_api_server_would_refuse_are_refused() {
    // Each of these renders to a webhook configuration the API server's validation
    // (`pkg/apis/admissionregistration/validation/validation.go`) refuses to store.
    let dir = Dir::new("apiserver-rules");
    let with = |from: &str, to: &str| {
        assert!(GOOD.contains(from), "{from}");
        error_of(&dir, &GOOD.replace(from, to))
    };
    for (from, to, expected) in [
        (
            "operations: [CREATE]",
            "operations: ['*', CREATE]",
            "rules[0]: operations: if '*' is present, it must be the only value",
        ),
        (
            "apiGroups: [\"\"]",
            "apiGroups: ['*', apps]",
            "rules[0]: apiGroups: if '*' is present, it must be the only value",
        ),
        (
            "apiVersions: [v1]",
            "apiVersions: [v1, '']",
            "rules[0]: apiVersions: a version must not be empty",
        ),
        (
            "resources: [pods]",
            "resources: ['*/*', pods]",
            "if '*/*' is present, must not specify other resources",
        ),
        (
            "resources: [pods]",
            "resources: [pods, '*']",
            "if '*' is present, must not specify other resources without subresources",
        ),
        (
            "resources: [pods]",
            "resources: ['*', pods]",
            "if '*' is present, must not specify other resources without subresources",
        ),
        (
            "resources: [pods]",
            "resources: ['pods/*', pods/status]",
            "if 'pods/*' is present, must not specify pods/status",
        ),
        (
            "resources: [pods]",
            "resources: ['*/scale', deployments/scale]",
            "if '*/scale' is present, must not specify deployments/scale",
        ),
        (
            "resources: [pods]",
            "resources: [pods]\n    objectSelector: {matchLabels: {'bad key!': x}}",
            "objectSelector: matchLabels key \"bad key!\"",
        ),
        (
            "resources: [pods]",
            "resources: [pods]\n    objectSelector: {matchLabels: {app: 'not a value'}}",
            "objectSelector: matchLabels value \"not a value\"",
        ),
        (
            "resources: [pods]",
            "resources: [pods]\n    objectSelector: {matchExpressions: [{key: 'Example.com/x', operator: Exists}]}",
            "objectSelector: matchExpressions key \"Example.com/x\": the prefix must be a DNS subdomain",
        ),
        (
            "resources: [pods]",
            "resources: [pods]\n    objectSelector: {matchExpressions: [{key: tier, operator: In, values: ['-db']}]}",
            "objectSelector: value \"-db\" of key \"tier\"",
        ),
        (
            "resources: [pods]",
            "resources: [pods]\n    excludeNamespaces: [Kube_System]",
            "excludeNamespaces: \"Kube_System\" is not a namespace name",
        ),
        (
            "resources: [pods]",
            "resources: [pods]\n    reinvocation: IfNeeded",
            "reinvocation applies to initializers only",
        ),
    ] {
        let error = with(from, to);
        assert!(error.contains(expected), "{to}: {error}");
    }
    // What the API server accepts is accepted.
    for (from, to) in [
        (
            "resources: [pods]",
            "resources: ['*', 'pods/status', '*/scale']",
        ),
        ("resources: [pods]", "resources: ['*/*']"),
        (
            "resources: [pods]",
            "resources: ['pods/*', deployments/status]",
        ),
        (
            "resources: [pods]",
            "resources: [pods]\n    objectSelector: {matchLabels: {app.kubernetes.io/name: web, empty: ''}}",
        ),
    ] {
        dir.load(&GOOD.replace(from, to))
            .unwrap_or_else(|e| panic!("{to}: {e}"));
    }
}

#[test]
fn reinvocation_is_read_for_initializers() {
    let dir = Dir::new("reinvocation");
    let text = GOOD
        .replace("kind: validator", "kind: initializer")
        .replace(
            "resources: [pods]",
            "resources: [pods]\n    reinvocation: IfNeeded",
        );
    let config = dir.load(&text).unwrap();
    assert_eq!(
        config.entries[0].entry.reinvocation,
        Some(Reinvocation::IfNeeded)
    );
    let error = error_of(&dir, &text.replace("IfNeeded", "Sometimes"));
    assert!(error.contains("unknown variant `Sometimes`"), "{error}");
}

/// `module:` must name a regular file under [`MAX_MODULE_BYTES`]: a device never ends, a FIFO
/// blocks until someone writes, a huge file would be read whole. Each is refused at once, on
/// the `module:` line, with the reason.
#[test]
fn a_module_that_is_not_a_small_regular_file_is_refused() {
    let dir = Dir::new("special");
    let file = dir.0.join("policies.yaml").display().to_string();
    let fifo = dir.0.join("fifo.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let huge = dir.0.join("huge.wasm");
    // Sparse: no disk is used, but its length is one byte over the cap.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_MODULE_BYTES + 1)
        .unwrap();
    let cases = [
        ("/dev/zero", "it is a character device, not a regular file"),
        (
            fifo.to_str().unwrap(),
            "it is a FIFO (named pipe), not a regular file",
        ),
        (
            dir.0.to_str().unwrap(),
            "it is a directory, not a regular file",
        ),
        (
            huge.to_str().unwrap(),
            "it has 134217729 bytes, more than the 134217728 a module may have",
        ),
    ];
    for (module, why) in cases {
        // On a thread of its own, so that a loader that blocks fails the test instead of
        // hanging it.
        let text = GOOD.replace("module: p.wasm", &format!("module: {module}"));
        let policies = dir.0.join("policies.yaml");
        std::fs::write(&policies, text).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(Config::load(&policies).map(|_| ())));
        let e = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("loading module: {module} did not end within 10 s"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "{file}:6: policy \"require-labels\": cannot read module {module}: {why}"
            )),
            "{e}"
        );
    }
}

#[test]
fn kafka_outputs_resolve_and_refuse_what_cannot_work() {
    let dir = Dir::new("kafka");
    std::fs::write(dir.0.join("ca.crt"), "x").unwrap();
    std::fs::write(dir.0.join("user"), "u").unwrap();
    std::fs::write(dir.0.join("pass"), "p").unwrap();
    let with = |output: &str| {
        SINKS.replace(
            "      - name: console\n        type: stdout\n",
            &format!("      - {output}\n"),
        )
    };
    let good = with(
        "{name: console, type: kafka, bootstrapServers: [\"k1:9093\", \"10.0.0.2:9093\"], topic: audit.k8s, key: namespace, caFile: ca.crt, sasl: {mechanism: SCRAM-SHA-512, usernameFile: user, passwordFile: pass}}",
    );
    let config = dir.load(&good).unwrap();
    let OutputKind::Kafka(spec) = &config.sinks[0].outputs[1].kind else {
        panic!("{:?}", config.sinks[0].outputs[1]);
    };
    assert_eq!(spec.bootstrap_servers, ["k1:9093", "10.0.0.2:9093"]);
    assert_eq!(
        (spec.topic.as_str(), spec.key),
        ("audit.k8s", KafkaKey::Namespace)
    );
    assert_eq!(
        spec.ca_file.as_deref(),
        Some(dir.0.join("ca.crt").as_path())
    );
    let sasl = spec.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
    for (output, error) in [
        (
            "{name: console, type: kafka, topic: a}",
            "a kafka output needs bootstrapServers",
        ),
        (
            "{name: console, type: kafka, bootstrapServers: [\"k1\"], topic: a}",
            "\"k1\" is not host:port",
        ),
        (
            "{name: console, type: kafka, bootstrapServers: [\"k1:9092\"]}",
            "a kafka output needs a topic",
        ),
        (
            "{name: console, type: kafka, bootstrapServers: [\"k1:9092\"], topic: \"a b\"}",
            "topic \"a b\": 1-249 of",
        ),
        (
            "{name: console, type: kafka, bootstrapServers: [\"k1:9092\"], topic: a, certFile: ca.crt}",
            "certFile and keyFile go together",
        ),
        (
            "{name: console, type: kafka, bootstrapServers: [\"k1:9092\"], topic: a, key: pod}",
            "unknown variant `pod`",
        ),
        (
            "{name: console, type: kafka, bootstrapServers: [\"k1:9092\"], topic: a, url: \"https://x\"}",
            "url does not apply to a kafka output",
        ),
        (
            "{name: console, type: kafka, bootstrapServers: [\"k1:9092\"], topic: a, sasl: {mechanism: GSSAPI, usernameFile: user, passwordFile: pass}}",
            "unknown variant `GSSAPI`",
        ),
        (
            "{name: console, type: kafka, bootstrapServers: [\"k1:9092\"], topic: a, sasl: {mechanism: PLAIN, usernameFile: nope, passwordFile: pass}}",
            "sasl.usernameFile",
        ),
    ] {
        let e = error_of(&dir, &with(output));
        assert!(e.contains(error), "{output}: {e}");
    }
}

/// `background: true` scans the resources the rules name: validators only, named resources
/// only; they join the policy's `context:` grants as resources to watch (whole objects).
#[test]
fn background_scans_the_named_resources_of_a_validator() {
    let dir = Dir::new("background");
    let text = GOOD.replace(
        "resources: [pods]",
        "resources: [pods]\n      - operations: [CREATE]\n        apiGroups: [apps]\n        apiVersions: [v1]\n        resources: [deployments, pods]\n    background: true\n    context:\n      - {apiGroup: \"\", version: v1, resource: pods, metadataOnly: true}",
    );
    let config = dir.load(&text).unwrap();
    let entry = &config.entries[0].entry;
    assert!(entry.background);
    let scans: Vec<String> = entry
        .background_grants()
        .unwrap()
        .iter()
        .map(ContextGrant::describe)
        .collect();
    assert_eq!(
        scans,
        ["core/v1 pods", "apps/v1 deployments", "apps/v1 pods"]
    );
    // The metadata-only grant does not cover the scan's whole objects: both are watched.
    let watched: Vec<String> = entry.watched().iter().map(ContextGrant::describe).collect();
    assert_eq!(
        watched,
        [
            "core/v1 pods (metadata only)",
            "core/v1 pods",
            "apps/v1 deployments",
            "apps/v1 pods"
        ]
    );
    let e = error_of(
        &dir,
        &text.replace("resources: [deployments, pods]", "resources: [\"*\"]"),
    );
    assert!(
        e.contains("background scans need named API groups, versions and resources, not `*`"),
        "{e}"
    );
    let e = error_of(
        &dir,
        &text.replace("resources: [deployments, pods]", "resources: [pods/status]"),
    );
    assert!(e.contains("sub-resources cannot be read"), "{e}");
    let e = error_of(&dir, &text.replace("kind: validator", "kind: initializer"));
    assert!(e.contains("background applies to validators only"), "{e}");
    // Without background nothing is scanned.
    let config = dir.load(GOOD).unwrap();
    assert!(
        config.entries[0]
            .entry
            .background_grants()
            .unwrap()
            .is_empty()
    );
}
