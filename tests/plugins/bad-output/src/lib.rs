//! `bad-output` (initializer, test-only): answers `replaced("this is not json")`, which the host
//! must treat as an invalid return value (a plugin failure), never as a patch.

use wasmgate_sdk::Value;
use wasmgate_sdk::initializer::{AdmissionRequest, Change, Initializer, Mutation, Remarks};

struct BadOutput;

impl Initializer for BadOutput {
    /// Any settings: ignored.
    type Settings = Value;

    fn initialize(_request: AdmissionRequest, _settings: Value) -> Result<Mutation, String> {
        Ok(Mutation {
            change: Change::Replaced("this is not json".into()),
            remarks: Remarks::none(),
        })
    }
}

wasmgate_sdk::export_initializer!(BadOutput);
