//! `burn` (validator, test-only): busy-loops for `settings.millis` milliseconds of wall time,
//! then allows, or denies with `settings.deny` when that is a string. Exercises deadlines and
//! parallel validators.

use std::time::{Duration, Instant};

use serde::Deserialize;
use wasmgate_sdk::Value;
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};

#[derive(Default, Deserialize)]
#[serde(default)]
struct Settings {
    millis: u64,
    deny: Value,
}

struct Burn;

impl Validator for Burn {
    type Settings = Settings;

    fn validate(_request: AdmissionRequest, settings: Settings) -> Result<Verdict, String> {
        let start = Instant::now();
        let budget = Duration::from_millis(settings.millis);
        while start.elapsed() < budget {
            std::hint::spin_loop();
        }
        Ok(match settings.deny.as_str() {
            Some(message) => Verdict::deny(message),
            None => Verdict::allow(),
        })
    }
}

wasmgate_sdk::export_validator!(Burn);
