//! `hog` (validator, test-only): allocates and touches memory 1 MiB at a time, forever. Only the
//! host's memory cap can stop it: `memory.grow` fails, the allocator aborts, the call traps.
//! With settings `{"atLoad": true}` its settings check hogs too.

use serde::Deserialize;
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};

const CHUNK: usize = 1 << 20;

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Settings {
    at_load: bool,
}

struct Hog;

impl Validator for Hog {
    type Settings = Settings;

    fn validate(_request: AdmissionRequest, _settings: Settings) -> Result<Verdict, String> {
        hog()
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if settings.at_load { hog() } else { Ok(()) }
    }
}

fn hog() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Non-zero bytes, so every page is written, not just reserved.
        hoard.push(std::hint::black_box(vec![0xA5; CHUNK]));
    }
}

wasmgate_sdk::export_validator!(Hog);
