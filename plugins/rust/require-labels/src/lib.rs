//! `require-labels` (validator): the object's `metadata.labels` must contain every key listed in
//! the settings. See README.md.

use serde::Deserialize;
use wasmgate_sdk::validator::{AdmissionRequest, Guest, Verdict};
use wasmgate_sdk::view::Labels;

/// `{"labels": ["team", "owner"]}`; no labels (the default) allows everything.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    labels: Vec<String>,
}

struct RequireLabels;

impl Guest for RequireLabels {
    fn validate(request: AdmissionRequest) -> Result<Verdict, String> {
        let settings: Settings = wasmgate_sdk::settings()?;
        match request.object_as::<Labels>()? {
            Some(object) => Ok(check(&settings, &object)),
            None => Ok(Verdict::allow()), // DELETE: nothing to label.
        }
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
