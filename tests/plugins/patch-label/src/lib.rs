//! `patch-label` (initializer, test-only): sets label `settings.key` to `settings.value` by
//! answering `patched` (RFC 6902 operations) instead of the whole object. `settings.mode` makes
//! it answer a patch the host must refuse as an invalid output: `missing-path` (removes a path
//! that does not exist), `kind` (changes `kind`), `not-json`, `not-a-list` (a JSON object
//! instead of an array of operations), `huge` (a 5 MiB value), `unmovable` (moves `metadata`
//! onto the root, then removes a path that is not there: `json_patch`'s own undo of that
//! panics); `sleep` sleeps 30 s in WASI (a host call) before it answers. With `refuse` its settings check
//! refuses them with a message of that many `x`.

use serde::Deserialize;
use wasmgate_sdk::initializer::{AdmissionRequest, Change, Initializer, Mutation, Remarks};
use wasmgate_sdk::serde_json::json;
use wasmgate_sdk::{json_pointer, k8s};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    refuse: Option<usize>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Good,
    MissingPath,
    Kind,
    NotJson,
    NotAList,
    Huge,
    Unmovable,
    Sleep,
}

struct PatchLabel;

impl Initializer for PatchLabel {
    type Settings = Settings;

    fn initialize(request: AdmissionRequest, settings: Settings) -> Result<Mutation, String> {
        if let Mode::Sleep = settings.mode {
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        let Some(object) = request.object_json()? else {
            return Ok(Mutation::unchanged());
        };
        let raw = |text: &str| Mutation {
            change: Change::Patched(text.to_owned()),
            remarks: Remarks::none(),
        };
        let label = json_pointer(["metadata", "labels", settings.key.as_str()]);
        Ok(match settings.mode {
            Mode::Good if k8s::label(&object, &settings.key) == Some(settings.value.as_str()) => {
                Mutation::unchanged()
            }
            Mode::Good if k8s::labels(&object).is_none() => Mutation::patched(&json!([
                {"op": "add", "path": "/metadata/labels", "value": {}},
                {"op": "add", "path": label, "value": settings.value},
            ])),
            Mode::Good => Mutation::patched(&json!([
                {"op": "add", "path": label, "value": settings.value},
            ])),
            Mode::MissingPath => Mutation::patched(&json!([
                {"op": "remove", "path": "/metadata/no-such-field"},
            ])),
            Mode::Kind => Mutation::patched(&json!([
                {"op": "replace", "path": "/kind", "value": "Secret"},
            ])),
            Mode::Unmovable => Mutation::patched(&json!([
                {"op": "move", "from": "/metadata", "path": ""},
                {"op": "remove", "path": "/no-such-field"},
            ])),
            Mode::NotJson => raw("this is not a patch"),
            Mode::NotAList => raw(r#"{"op": "add", "path": "/a", "value": 1}"#),
            Mode::Sleep => Mutation::unchanged(),
            Mode::Huge => Mutation::patched(&json!([
                {"op": "add", "path": label, "value": "x".repeat(5 << 20)},
            ])),
        })
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if let Some(bytes) = settings.refuse {
            return Err("x".repeat(bytes));
        }
        if settings.key.is_empty() {
            return Err("key must not be empty".into());
        }
        Ok(())
    }
}

wasmgate_sdk::export_initializer!(PatchLabel);
