//! `echo-sink` (audit-sink, test-only): for each event, emits one JSON line to output
//! `settings.output` (default `out`):
//! `{"auditID":..,"stage":..,"verb":..,"level":..,"hasRequestObject":..,"hasResponseObject":..}`.

use serde::{Deserialize, Serialize};
use wasmgate_sdk::audit_sink::{AuditSink, Emission, Event};
use wasmgate_sdk::serde_json;

#[derive(Deserialize)]
#[serde(default)]
struct Settings {
    output: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            output: "out".into(),
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
}

struct EchoSink;

impl AuditSink for EchoSink {
    type Settings = Settings;

    fn deliver(batch: Vec<Event>, settings: Settings) -> Result<Vec<Emission>, String> {
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
    };
    let line = serde_json::to_string(&line).map_err(|err| err.to_string())?;
    Ok(Emission::new(output, line))
}

wasmgate_sdk::export_audit_sink!(EchoSink);
