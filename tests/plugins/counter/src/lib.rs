//! `counter` (validator, test-only): counts its calls in a global and allows with the warning
//! `call N`. A fresh instance per call always says `call 1`; a reused (warm) instance counts up,
//! which is exactly the isolation that `instanceReuse` gives up.

use std::sync::atomic::{AtomicU32, Ordering};

use wasmgate_sdk::Value;
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Counter;

impl Validator for Counter {
    /// Any settings: ignored.
    type Settings = Value;

    fn validate(_request: AdmissionRequest, _settings: Value) -> Result<Verdict, String> {
        let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Verdict::allow().with_warning(format!("call {n}")))
    }
}

wasmgate_sdk::export_validator!(Counter);
