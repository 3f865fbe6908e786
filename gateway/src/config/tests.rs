use super::*;

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
    assert_eq!(entry.settings_json, r#"{"labels":["team"]}"#);
    assert_eq!(entry.timeout, DEFAULT_TIMEOUT);
    assert_eq!(entry.memory_limit, DEFAULT_MEMORY_LIMIT);
    assert_eq!(entry.entry.mode, Mode::Enforce);
    assert_eq!(entry.entry.failure_policy, FailurePolicy::Fail);
    assert_eq!(entry.line, Some(4));
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
        e.contains(":4: policy \"require-labels\": rules[0]: unknown operation \"PATCH\""),
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
        e.contains("timeout 45s must be more than 0 and at most 30s"),
        "{e}"
    );

    let e = error_of(
        &dir,
        &GOOD.replace("    settings:", "    memoryLimit: lots\n    settings:"),
    );
    assert!(
        e.contains("memoryLimit: \"lots\" is not a byte quantity"),
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
    assert_eq!(config.entries[0].module_sha256, digest);
}
