//! `spin` (validator, test-only): never returns. Only the host's deadline (epoch interruption)
//! can stop it.

use wasmgate_sdk::validator::{AdmissionRequest, Guest, Verdict};

struct Spin;

impl Guest for Spin {
    fn validate(_request: AdmissionRequest) -> Result<Verdict, String> {
        let mut turns: u64 = 0;
        loop {
            // `black_box` keeps the optimiser from proving the loop empty.
            turns = std::hint::black_box(turns.wrapping_add(1));
        }
    }
}

wasmgate_sdk::export_validator!(Spin);
