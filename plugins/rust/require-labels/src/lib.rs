//! `require-labels` (validator): the object's `metadata.labels` must contain every key listed in
//! the settings. See README.md.

use serde::Deserialize;
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};
use wasmgate_sdk::view::Labels;

/// `{"labels": ["team", "owner"]}`: required, at least one valid label key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    labels: Vec<String>,
}

struct RequireLabels;

impl Validator for RequireLabels {
    type Settings = Settings;

    fn validate(request: AdmissionRequest, settings: Settings) -> Result<Verdict, String> {
        match request.object_view::<Labels>()? {
            Some(object) => Ok(check(&settings, &object)),
            None => Ok(Verdict::allow()), // DELETE: nothing to label.
        }
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if settings.labels.is_empty() {
            return Err("labels: list at least one label key".into());
        }
        for (i, key) in settings.labels.iter().enumerate() {
            wasmgate_sdk::k8s::label_key(key)
                .map_err(|why| format!("labels[{i}]: {key:?} {why}"))?;
        }
        Ok(())
    }
}

fn check(settings: &Settings, object: &Labels) -> Verdict {
    let missing: Vec<&str> = settings
        .labels
        .iter()
        .map(String::as_str)
        .filter(|key| object.get(key).is_none())
        .collect();
    if missing.is_empty() {
        Verdict::allow()
    } else {
        Verdict::deny(format!("missing required labels: {}", missing.join(", ")))
    }
}

wasmgate_sdk::export_validator!(RequireLabels);

#[cfg(test)]
mod tests;
