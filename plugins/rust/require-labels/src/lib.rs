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
        match request.object_as::<Labels>()? {
            Some(object) => Ok(check(&settings, &object)),
            None => Ok(Verdict::allow()), // DELETE: nothing to label.
        }
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if settings.labels.is_empty() {
            return Err("labels: list at least one label key".into());
        }
        for (i, key) in settings.labels.iter().enumerate() {
            label_key(key).map_err(|why| format!("labels[{i}]: {key:?} {why}"))?;
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

/// Whether `key` is a label key the API server accepts: an optional DNS subdomain prefix
/// (at most 253 characters) and `/`, then a name of at most 63 characters of `[A-Za-z0-9._-]`
/// that starts and ends alphanumeric. A key that no object can carry would deny everything.
fn label_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let alnum_ends = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if name.is_empty() || name.len() > 63 {
        return Err("is not a label key: the name must be 1-63 characters");
    }
    if !alnum_ends(name)
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(
            "is not a label key: the name must be alphanumerics, '-', '_' or '.', alphanumeric at both ends",
        );
    }
    if let Some(prefix) = prefix {
        let dns = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && alnum_ends(part)
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !dns {
            return Err("is not a label key: the prefix must be a lowercase DNS subdomain");
        }
    }
    Ok(())
}

wasmgate_sdk::export_validator!(RequireLabels);

#[cfg(test)]
mod tests;
