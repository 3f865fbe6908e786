//! `spin` (validator, test-only): never returns. Only the host's deadline (epoch interruption)
//! can stop it. With settings `{"atLoad": true}` its settings check spins too.

use serde::Deserialize;
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Settings {
    at_load: bool,
}

struct Spin;

impl Validator for Spin {
    type Settings = Settings;

    fn validate(_request: AdmissionRequest, _settings: Settings) -> Result<Verdict, String> {
        spin()
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if settings.at_load { spin() } else { Ok(()) }
    }
}

fn spin() -> ! {
    let mut turns: u64 = 0;
    loop {
        // `black_box` keeps the optimiser from proving the loop empty.
        turns = std::hint::black_box(turns.wrapping_add(1));
    }
}

wasmgate_sdk::export_validator!(Spin);
