//! `panic` (validator, test-only): panics on every call. With `panic = "abort"` that is a trap
//! (`unreachable`), after the panic message is written to stderr.

use wasmgate_sdk::validator::{AdmissionRequest, Guest, Verdict};

struct Panic;

impl Guest for Panic {
    fn validate(request: AdmissionRequest) -> Result<Verdict, String> {
        panic!("panic plugin called for {:?}", request.uid);
    }
}

wasmgate_sdk::export_validator!(Panic);
