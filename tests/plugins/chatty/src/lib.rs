//! `chatty` (validator, test-only): writes one line to stdout and one to stderr, logs its
//! settings text at `info`, then allows with warning `chatty was here` and audit annotation
//! `chatty=yes`. Exercises stdio capture, host logging and remarks.

use wasmgate_sdk::Value;
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};

struct Chatty;

impl Validator for Chatty {
    /// Any settings: ignored.
    type Settings = Value;

    fn validate(request: AdmissionRequest, _settings: Value) -> Result<Verdict, String> {
        println!("chatty: stdout line for {}", request.uid);
        eprintln!("chatty: stderr line for {}", request.uid);
        wasmgate_sdk::log::info(&wasmgate_sdk::settings_raw());
        Ok(Verdict::allow()
            .with_warning("chatty was here")
            .with_annotation("chatty", "yes"))
    }
}

wasmgate_sdk::export_validator!(Chatty);
