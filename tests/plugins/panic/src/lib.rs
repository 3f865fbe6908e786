//! `panic` (validator, test-only): panics on every call. With `panic = "abort"` that is a trap
//! (`unreachable`), after the panic message is written to stderr.

use wasmgate_sdk::Value;
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};

struct Panic;

impl Validator for Panic {
    /// Any settings: ignored.
    type Settings = Value;

    fn validate(request: AdmissionRequest, _settings: Value) -> Result<Verdict, String> {
        panic!("panic plugin called for {:?}", request.uid);
    }
}

wasmgate_sdk::export_validator!(Panic);
