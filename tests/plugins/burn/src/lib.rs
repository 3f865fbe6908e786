//! `burn` (validator, test-only): busy-loops for `settings.millis` milliseconds of wall time,
//! then allows, or denies with `settings.deny` when that is a string; with `warnOperation` it
//! warns `operation <OP>` with the request's operation as it arrived (an unknown one included).
//! Exercises deadlines, parallel validators and the operations the plugin is given.

use std::time::{Duration, Instant};

use serde::Deserialize;
use wasmgate_sdk::Value;
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};

#[derive(Default, Deserialize)]
#[serde(default)]
struct Settings {
    millis: u64,
    deny: Value,
    #[serde(rename = "warnOperation")]
    warn_operation: bool,
}

struct Burn;

impl Validator for Burn {
    type Settings = Settings;

    fn validate(request: AdmissionRequest, settings: Settings) -> Result<Verdict, String> {
        let start = Instant::now();
        let budget = Duration::from_millis(settings.millis);
        while start.elapsed() < budget {
            std::hint::spin_loop();
        }
        let verdict = match settings.deny.as_str() {
            Some(message) => Verdict::deny(message),
            None => Verdict::allow(),
        };
        Ok(if settings.warn_operation {
            verdict.with_warning(format!("operation {}", request.operation.as_str()))
        } else {
            verdict
        })
    }
}

wasmgate_sdk::export_validator!(Burn);
