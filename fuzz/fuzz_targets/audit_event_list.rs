//! The audit `EventList` decoder on any body, as `/audit` receives it, and what a sink does with
//! each event: route it with the Kubernetes documentation's example audit Policy (the demo
//! `redact-secrets` rules), strip it to its level, write it as an `audit.k8s.io/v1` line.
//!
//! What must hold: no panic; the decoder of a body held whole hands over the same items, in the
//! same order, as the streaming decoder and ends the same way; an item's raw text is valid JSON;
//! a decoded event's line decodes again, to the level it was stripped to and without the objects
//! that level leaves out.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use wasmgate::audit::route::strip;
use wasmgate::audit::spool::key_of;
use wasmgate::config::AuditRule;
use wasmgate::policy::audit::AuditRules;
use wasmgate::wire::audit::{
    Event, ItemSink, Level, Stage, decode_event_list, decode_event_list_slice,
    decode_event_list_streaming,
};

/// `policies/demo.yaml`'s redact-secrets rules, as JSON.
const RULES: &str = r#"[
  {"level": "RequestResponse", "resources": [{"group": "", "resources": ["pods"]}]},
  {"level": "Metadata", "resources": [{"group": "", "resources": ["pods/log", "pods/status"]}]},
  {"level": "None", "resources": [{"group": "", "resources": ["configmaps"], "resourceNames": ["controller-leader"]}]},
  {"level": "None", "users": ["system:kube-proxy"], "verbs": ["watch"],
   "resources": [{"group": "", "resources": ["endpoints", "services"]}]},
  {"level": "None", "userGroups": ["system:authenticated"], "nonResourceURLs": ["/api*", "/version"]},
  {"level": "Request", "resources": [{"group": "", "resources": ["configmaps"]}], "namespaces": ["kube-system"]},
  {"level": "Metadata", "resources": [{"group": "", "resources": ["secrets", "configmaps"]}]},
  {"level": "Request", "resources": [{"group": ""}, {"group": "extensions"}]},
  {"level": "Metadata", "omitStages": ["RequestReceived"]}
]"#;

fn rules() -> &'static AuditRules {
    static RULES_: OnceLock<AuditRules> = OnceLock::new();
    RULES_.get_or_init(|| {
        let rules: Vec<AuditRule> = serde_json::from_str(RULES).expect("the rules are valid");
        AuditRules::new(&rules, &[Stage::RequestReceived], true)
    })
}

/// What a streamed decoder hands over, in order.
#[derive(Default)]
struct Handed(Vec<String>);

impl ItemSink for Handed {
    fn verified(&mut self) -> Result<(), String> {
        self.0.push("verified".into());
        Ok(())
    }

    fn item(&mut self, _index: usize, raw: Box<RawValue>) -> Result<(), String> {
        self.0.push(raw.get().to_owned());
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let (mut streamed, mut whole) = (Handed::default(), Handed::default());
    let by_stream = decode_event_list_streaming(data, &mut streamed);
    let by_slice = decode_event_list_slice(data, &mut whole);
    assert_eq!(
        streamed.0, whole.0,
        "the two decoders handed over different items"
    );
    match (&by_stream, &by_slice) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("one decoder took the body, the other did not: {by_stream:?} {by_slice:?}"),
    }
    let Ok(items) = decode_event_list(data) else {
        return;
    };
    for item in items {
        let raw = item.raw.get();
        serde_json::from_str::<&serde_json::value::RawValue>(raw).expect("an item is JSON");
        let _ = key_of(raw.as_bytes());
        let Ok(mut event) = item.event else {
            continue;
        };
        let _ = (event.response_code(), event.path());
        let Some(routing) = rules().route(&event) else {
            continue;
        };
        strip(&mut event, routing);
        let line = event.to_json();
        let again = Event::decode(&line)
            .unwrap_or_else(|e| panic!("a stripped event's line does not decode: {e}: {line}"));
        assert_eq!(again.level, routing.level);
        if routing.level < Level::Request {
            assert!(again.request_object.is_none());
        }
        if routing.level < Level::RequestResponse {
            assert!(again.response_object.is_none());
        }
    }
});
