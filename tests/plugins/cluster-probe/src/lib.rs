//! `cluster-probe` (validator, test-only): reads the request's own object back through the
//! `cluster` import (`get`, then `list` of its namespace) and allows with one warning per
//! lookup saying what it answered: `get: found`, `get: none`, `get: denied: <message>`, ...

use wasmgate_sdk::NoSettings;
use wasmgate_sdk::cluster::{self, LookupError};
use wasmgate_sdk::validator::{AdmissionRequest, Validator, Verdict};

struct ClusterProbe;

impl Validator for ClusterProbe {
    type Settings = NoSettings;

    fn validate(request: AdmissionRequest, _settings: NoSettings) -> Result<Verdict, String> {
        let get = cluster::get(&request.resource, &request.namespace, &request.name)
            .map(|found| if found.is_some() { "found" } else { "none" }.to_owned());
        let list = cluster::list(&request.resource, &request.namespace, "")
            .map(|objects| format!("{} objects", objects.len()));
        Ok(Verdict::allow()
            .with_warning(format!("get: {}", describe(get)))
            .with_warning(format!("list: {}", describe(list))))
    }
}

fn describe(result: Result<String, LookupError>) -> String {
    match result {
        Ok(answer) => answer,
        Err(LookupError::Denied(why)) => format!("denied: {why}"),
        Err(LookupError::NotReady) => "not ready".into(),
        Err(LookupError::Invalid(why)) => format!("invalid: {why}"),
        Err(LookupError::TooLarge(why)) => format!("too large: {why}"),
    }
}

wasmgate_sdk::export_validator!(ClusterProbe);
