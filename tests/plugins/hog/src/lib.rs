//! `hog` (validator, test-only): allocates and touches memory 1 MiB at a time, forever. Only the
//! host's memory cap can stop it: `memory.grow` fails, the allocator aborts, the call traps.

use wasmgate_sdk::validator::{AdmissionRequest, Guest, Verdict};

const CHUNK: usize = 1 << 20;

struct Hog;

impl Guest for Hog {
    fn validate(_request: AdmissionRequest) -> Result<Verdict, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Non-zero bytes, so every page is written, not just reserved.
            hoard.push(std::hint::black_box(vec![0xA5; CHUNK]));
        }
    }
}

wasmgate_sdk::export_validator!(Hog);
