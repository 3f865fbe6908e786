//! `redact-secrets` (audit-sink): writes every event it is given to one output as an
//! `audit.k8s.io/v1` Event line, after removing every Secret value (`data`, `stringData`, the
//! `last-applied-configuration` annotation, the values of a JSON patch) and every value under a
//! key its settings name. See README.md.

use serde::Deserialize;
use wasmgate_sdk::audit_sink::{AuditSink, Emission, Event};
use wasmgate_sdk::{Value, serde_json};

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

    /// An object's JSON, redacted; unchanged text when there was nothing to redact.
    fn object(&self, text: &str, secret: bool) -> Result<String, String> {
        if !secret && !self.might_match(text) {
            return Ok(text.to_owned()); // the common case: no parse, no re-encode
        }
        let mut value: Value =
            serde_json::from_str(text).map_err(|e| format!("object is not JSON: {e}"))?;
        if self.redact(&mut value, secret) {
            serde_json::to_string(&value).map_err(|e| e.to_string())
        } else {
            Ok(text.to_owned())
        }
    }

    /// A cheap over-approximation: could any key of `text` be sensitive, or is there a
    /// Secret or a last-applied copy inside?
    fn might_match(&self, text: &str) -> bool {
        let lower = text.to_ascii_lowercase().replace(['-', '_'], "");
        lower.contains("\"secret\"")
            || lower.contains("lastappliedconfiguration")
            || self.keys.iter().any(|k| lower.contains(k.as_str()))
    }

    fn sensitive(&self, key: &str) -> bool {
        let key = normalize(key);
        self.keys.iter().any(|k| key.ends_with(k.as_str()))
    }

    /// Redacts `value` in place; `secret` when it belongs to a Secret (or a list or patch of
    /// Secrets). Returns whether anything changed.
    fn redact(&self, value: &mut Value, secret: bool) -> bool {
        let mut changed = false;
        match value {
            Value::Object(map) => {
                let secret = secret || map.get("kind").and_then(Value::as_str) == Some("Secret");
                // An env-style pair `{"name": "DB_PASSWORD", "value": "..."}`.
                let named_sensitive = map
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|name| self.sensitive(name));
                for (key, child) in map.iter_mut() {
                    let whole = (secret && (key == "data" || key == "stringData"))
                        || self.sensitive(key)
                        || (named_sensitive && (key == "value" || key == "valueFrom"))
                        // The values of a JSON patch of a Secret.
                        || (secret && key == "value");
                    if whole {
                        changed |= redact_all(child);
                    } else if key == LAST_APPLIED {
                        changed |= self.last_applied(child, secret);
                    } else {
                        changed |= self.redact(child, secret);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    changed |= self.redact(item, secret);
                }
            }
            _ => {}
        }
        changed
    }

    /// The last-applied annotation holds the object as JSON text: a Secret's is dropped whole,
    /// another object's is redacted like the object itself.
    fn last_applied(&self, value: &mut Value, secret: bool) -> bool {
        let Value::String(text) = value else {
            return redact_all(value);
        };
        if secret {
            return redact_all(value);
        }
        match serde_json::from_str::<Value>(text) {
            Ok(mut inner) => {
                if self.redact(&mut inner, false) {
                    *value = Value::String(inner.to_string());
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        }
    }
}

/// Replaces every value under `value`: a map keeps its keys (which key changed is worth
/// knowing; its value is not), anything else becomes [`REDACTED`].
fn redact_all(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                *child = Value::String(REDACTED.into());
            }
            true
        }
        Value::Null => false,
        other => {
            *other = Value::String(REDACTED.into());
            true
        }
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
