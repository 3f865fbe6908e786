//! `poison-sink` (audit-sink, test-only): a batch holding an event whose `auditID` is
//! `settings.poison` fails as `settings.mode` says (`trap`: panics; `error`: returns `Err`;
//! `spin`: loops until the deadline; `sleep`: sleeps 30 s in WASI, a host call; `undeclared`:
//! emits to output `not-granted`). Any other
//! batch is echoed, one `{"auditID":..,"stage":..}` line per event, to output `out`.

use serde::Deserialize;
use wasmgate_sdk::audit_sink::{AuditSink, Emission, Event};

#[derive(Default, Deserialize)]
#[serde(default)]
struct Settings {
    poison: String,
    mode: String,
}

struct PoisonSink;

impl AuditSink for PoisonSink {
    type Settings = Settings;

    fn deliver(batch: Vec<Event>, settings: Settings) -> Result<Vec<Emission>, String> {
        if batch.iter().any(|e| e.audit_id == settings.poison) {
            match settings.mode.as_str() {
                "trap" => panic!("poisoned by {}", settings.poison),
                "spin" => {
                    let mut turns: u64 = 0;
                    loop {
                        turns = std::hint::black_box(turns.wrapping_add(1));
                    }
                }
                "sleep" => std::thread::sleep(std::time::Duration::from_secs(30)),
                "undeclared" => return Ok(vec![Emission::new("not-granted", "{}")]),
                _ => return Err(format!("poisoned by {}", settings.poison)),
            }
        }
        Ok(batch
            .iter()
            .map(|e| {
                Emission::new(
                    "out",
                    format!(
                        r#"{{"auditID":"{}","stage":"{}"}}"#,
                        e.audit_id,
                        e.stage.as_str()
                    ),
                )
            })
            .collect())
    }
}

wasmgate_sdk::export_audit_sink!(PoisonSink);
