//! `hostile` (validator, test-only): one misbehaviour per setting `act`, each of which the host
//! must contain (see ../README.md and RELIABILITY.md, "Hostile plugins"):
//!
//! - `sleep`: sleeps `millis` (default 30,000) in WASI (`std::thread::sleep`, a host call);
//! - `recurse`: recurses without end (a stack overflow);
//! - `huge`: denies with a message of `bytes` (default 16 MiB) bytes;
//! - `warnings`: allows with `count` (default 200,000) warnings `warning <n>`;
//! - `annotations`: allows with `count` audit annotations `k<n>` = `v`;
//! - `long-warnings`: allows with `count` warnings of `bytes` characters each;
//! - `flood`: logs `count` lines through host `log` (and the first 100 to stdout), each with a
//!   forged second line and a terminal escape, then allows;
//! - `partial`: prints a line, builds a verdict with warnings, then panics before returning it;
//! - `code`: denies with HTTP code `code` (e.g. 200 or 999);
//! - `sleep-at-load`: its settings check (run at load) sleeps 30 s in WASI, then allows;
//! - anything else: allows.

use serde::Deserialize;
use wasmgate_sdk::validator::{AdmissionRequest, Denial, Validator, Verdict};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Settings {
    act: String,
    millis: Option<u64>,
    bytes: Option<usize>,
    count: Option<usize>,
    code: Option<u16>,
}

struct Hostile;

/// Recursion the optimiser cannot turn into a loop (work remains after each call), with no
/// frame in linear memory: each level costs Wasm call stack only, so the engine's stack limit
/// is what ends it (a Rust frame on the shadow stack in linear memory would end it first, as an
/// out-of-bounds access).
#[inline(never)]
fn recurse(depth: u64, limit: u64) -> u64 {
    if depth == limit {
        return depth;
    }
    recurse(depth + 1, limit)
        .wrapping_mul(depth | 1)
        .rotate_left(7)
        ^ depth
}

impl Validator for Hostile {
    type Settings = Settings;

    fn validate(request: AdmissionRequest, settings: Settings) -> Result<Verdict, String> {
        Ok(match settings.act.as_str() {
            "sleep" => {
                let millis = settings.millis.unwrap_or(30_000);
                std::thread::sleep(std::time::Duration::from_millis(millis));
                Verdict::allow()
            }
            "recurse" => {
                let depth = recurse(0, settings.count.map_or(u64::MAX, |c| c as u64));
                Verdict::deny(format!("recursion ended at {depth}"))
            }
            "huge" => Verdict::deny("x".repeat(settings.bytes.unwrap_or(16 << 20))),
            "warnings" => {
                let mut verdict = Verdict::allow();
                verdict.remarks.warnings = (0..settings.count.unwrap_or(200_000))
                    .map(|n| format!("warning {n}"))
                    .collect();
                verdict
            }
            "annotations" => {
                let mut verdict = Verdict::allow();
                verdict.remarks.audit_annotations = (0..settings.count.unwrap_or(100_000))
                    .map(|n| (format!("k{n}"), "v".to_owned()))
                    .collect();
                verdict
            }
            "long-warnings" => {
                let mut verdict = Verdict::allow();
                let bytes = settings.bytes.unwrap_or(300);
                verdict.remarks.warnings = (0..settings.count.unwrap_or(40))
                    .map(|n| format!("{n:03} {}", "w".repeat(bytes.saturating_sub(4))))
                    .collect();
                verdict
            }
            "flood" => {
                for n in 0..settings.count.unwrap_or(1000) {
                    let forged = format!(
                        "flood {n} for {}\nlevel=ERROR forged line \u{1b}[31m",
                        request.uid
                    );
                    wasmgate_sdk::log::info(&forged);
                    // Within the 16 KiB stdout pipe: past it, `println!` panics.
                    if n < 100 {
                        println!("{forged}");
                    }
                }
                Verdict::allow()
            }
            "partial" => {
                println!("partial: about to answer {}", request.uid);
                let verdict = Verdict::allow().with_warning("partial warning, never returned");
                std::hint::black_box(&verdict);
                panic!("partial: trapped after building an answer");
            }
            "code" => Verdict::denied(Denial {
                code: settings.code.unwrap_or(200),
                reason: "Custom".into(),
                message: "denied with a custom code".into(),
            }),
            _ => Verdict::allow(),
        })
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if settings.act == "sleep-at-load" {
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        Ok(())
    }
}

wasmgate_sdk::export_validator!(Hostile);
