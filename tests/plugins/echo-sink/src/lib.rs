//! `echo-sink` (audit-sink, test-only): for each event, emits one JSON line to output
//! `settings.output` (default `out`):
//! `{"auditID":..,"stage":..,"verb":..,"level":..,"hasRequestObject":..,"hasResponseObject":..,
//! "annotations":[keys]}`.
//!
//! With `settings.slowVerb`, a batch holding an event with that verb first spins for
//! `settings.spin` iterations (default 300,000,000: a few hundred milliseconds), so that tests
//! can make one batch finish after the ones sent behind it.

use serde::{Deserialize, Serialize};
use wasmgate_sdk::audit_sink::{AuditSink, Emission, Event};
use wasmgate_sdk::serde_json;

#[derive(Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
struct Settings {
    output: String,
    slow_verb: Option<String>,
    spin: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            output: "out".into(),
            slow_verb: None,
            spin: 300_000_000,
        }
    }
}

/// One emitted line; fields serialize in this order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    #[serde(rename = "auditID")]
    audit_id: &'a str,
    stage: &'static str,
    verb: &'a str,
    level: &'static str,
    has_request_object: bool,
    has_response_object: bool,
    /// The keys of the event's annotations, in the order received.
    annotations: Vec<&'a str>,
}

struct EchoSink;

impl AuditSink for EchoSink {
    type Settings = Settings;

    fn deliver(batch: Vec<Event>, settings: Settings) -> Result<Vec<Emission>, String> {
        if let Some(verb) = &settings.slow_verb
            && batch.iter().any(|e| &e.verb == verb)
        {
            let mut x = 0u64;
            for i in 0..settings.spin {
                x = std::hint::black_box(x.wrapping_add(i));
            }
            std::hint::black_box(x);
        }
        batch
            .iter()
            .map(|event| echo(&settings.output, event))
            .collect()
    }
}

fn echo(output: &str, event: &Event) -> Result<Emission, String> {
    let line = Line {
        audit_id: &event.audit_id,
        stage: event.stage.as_str(),
        verb: &event.verb,
        level: event.level.as_str(),
        has_request_object: event.request_object.is_some(),
        has_response_object: event.response_object.is_some(),
        annotations: event.annotations.iter().map(|(k, _)| k.as_str()).collect(),
    };
    let line = serde_json::to_string(&line).map_err(|err| err.to_string())?;
    Ok(Emission::new(output, line))
}

wasmgate_sdk::export_audit_sink!(EchoSink);
