//! `redact-secrets` (audit-sink): writes every event it is given to one output as an
//! `audit.k8s.io/v1` Event line, after removing every Secret value (`data`, `stringData`, the
//! `last-applied-configuration` annotation, the values of a JSON patch) and every value under a
//! key its settings name. See README.md.

mod stream;

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use wasmgate_sdk::audit_sink::{AuditSink, Emission, Event};
use wasmgate_sdk::serde_json;

/// What replaces a redacted value.
pub const REDACTED: &str = "[REDACTED]";
/// The annotation `kubectl apply` keeps a full copy of the object in, values included.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The keys redacted when the settings name none: the usual names of credentials.
const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "token",
    "secret",
    "apikey",
    "privatekey",
    "credentials",
];

/// `{"output": "audit", "keys": ["password", "token"]}`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    /// The output every event goes to.
    output: String,
    /// Key names whose values are redacted anywhere: a key matches when, lower-cased and
    /// without `-` and `_`, it ends with one of these (also lower-cased, without `-`, `_`):
    /// `password` matches `password`, `dbPassword` and `DB_PASSWORD`.
    keys: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            output: "audit".into(),
            keys: DEFAULT_KEYS.iter().map(|k| (*k).to_owned()).collect(),
        }
    }
}

struct RedactSecrets;

impl AuditSink for RedactSecrets {
    type Settings = Settings;

    fn deliver(batch: Vec<Event>, settings: Settings) -> Result<Vec<Emission>, String> {
        let redactor = Redactor::new(&settings.keys);
        batch
            .into_iter()
            .map(|event| Ok(Emission::new(&settings.output, redactor.line(event)?)))
            .collect()
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if settings.output.is_empty() {
            return Err("output: name the output every event goes to".into());
        }
        for (i, key) in settings.keys.iter().enumerate() {
            // A key of only `-` and `_` would match nothing: the operator meant something else.
            if normalize(key).is_empty() {
                return Err(format!(
                    "keys[{i}]: {key:?} names no key (letters or digits are needed)"
                ));
            }
        }
        Ok(())
    }
}

/// Redacts events for one batch's settings.
struct Redactor {
    keys: Vec<String>,
}

impl Redactor {
    fn new(keys: &[String]) -> Self {
        Redactor {
            keys: keys
                .iter()
                .map(|k| normalize(k))
                .filter(|k| !k.is_empty())
                .collect(),
        }
    }

    /// The event's line, redacted.
    fn line(&self, mut event: Event) -> Result<String, String> {
        let secret = event
            .object_ref
            .as_ref()
            .is_some_and(|o| o.resource == "secrets" && o.api_group.is_empty());
        let request = match event.request_object.as_deref() {
            Some(text) => Some(self.object(text, secret)?),
            None => None,
        };
        let response = match event.response_object.as_deref() {
            Some(text) => Some(self.object(text, secret)?),
            None => None,
        };
        for (key, value) in &mut event.annotations {
            if self.sensitive(key) {
                *value = REDACTED.to_owned();
            }
        }
        event.to_json_with(request.as_deref(), response.as_deref())
    }

    /// An object's JSON, redacted; the same text when there was nothing to redact.
    fn object<'t>(&self, text: &'t str, secret: bool) -> Result<Cow<'t, str>, String> {
        stream::redact(self, text, secret).map_err(|stream::Malformed| {
            match serde_json::from_str::<IgnoredAny>(text) {
                Err(e) => format!("object is not JSON: {e}"),
                Ok(_) => {
                    "object is JSON redact-secrets cannot read (a bug: please report it)".into()
                }
            }
        })
    }

    /// Whether `key`, lower-cased and without `-` and `_`, ends with one of the keys.
    fn sensitive(&self, key: &str) -> bool {
        if !key.is_ascii() {
            let key = normalize(key);
            return self.keys.iter().any(|k| key.ends_with(k.as_str()));
        }
        // Without allocating: compare from the end, skipping `-` and `_`.
        self.keys.iter().any(|k| {
            let mut chars = key
                .bytes()
                .rev()
                .filter(|b| *b != b'-' && *b != b'_')
                .map(|b| b.to_ascii_lowercase());
            k.bytes().rev().all(|want| chars.next() == Some(want))
        })
    }
}

/// Lower-cased, without `-` and `_`.
fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

wasmgate_sdk::export_audit_sink!(RedactSecrets);

#[cfg(test)]
mod tests;
