//! The policy-file loader on any text: YAML -> schema -> validation -> modules read (from
//! plugins/dist, relative to a file in policies/) and checked against their pins.
//!
//! What must hold: no panic; a refusal names the file and, when it gives a line, a line of the
//! text; an accepted file's entries have unique DNS-label names, deadlines and memory caps
//! within their bounds, and module bytes that match their recorded sha256.
//!
//! The loader reads whatever path a policy names, and refuses anything but a regular file
//! under `MAX_MODULE_BYTES` (so `/dev/zero`, a FIFO, a directory are errors, not hangs). Texts
//! naming kernel files (`/proc`, `/sys`) are skipped: reading some of them has side effects or
//! blocks, which says nothing about the parser.
#![no_main]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wasmgate::config::{Config, MAX_MEMORY_LIMIT, MAX_TIMEOUT, ResolvedModule};

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        for name in ["always-pull-images", "require-labels", "redact-secrets"] {
            wasmgate_fuzz::plugin(name);
        }
        wasmgate_fuzz::repo().join("policies/fuzz.yaml")
    })
}

fn check_module(module: &ResolvedModule, max_timeout: std::time::Duration) {
    assert!(!module.timeout.is_zero() && module.timeout <= max_timeout);
    assert!((1 << 20..=MAX_MEMORY_LIMIT).contains(&module.memory_limit));
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&module.bytes[..]);
    assert_eq!(hex::encode(digest), module.sha256);
    serde_json::from_str::<serde_json::Value>(&module.settings_json).expect("settings are JSON");
}

fn dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["proc/", "sys/", "/proc", "/sys"]
        .iter()
        .any(|p| text.contains(p))
    {
        return;
    }
    let file = file();
    match Config::parse(file, text) {
        Err(e) => {
            assert_eq!(&e.file, file);
            assert!(!e.message.is_empty());
            if let Some(line) = e.line {
                // YAML breaks lines at \n, \r\n, a lone \r, and (libyaml, as YAML 1.1) at NEL,
                // LS and PS too: count them all, an upper bound.
                let lines = text
                    .matches(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
                    .count()
                    + 1;
                assert!(
                    (1..=lines + 1).contains(&line),
                    "error on line {line} of {lines}: {e}"
                );
            }
        }
        Ok(config) => {
            let mut names = HashSet::new();
            for entry in &config.entries {
                assert!(dns_label(&entry.entry.name), "{:?}", entry.entry.name);
                assert!(names.insert(entry.entry.name.clone()), "name used twice");
                check_module(&entry.module, MAX_TIMEOUT);
            }
            for sink in &config.sinks {
                assert!(dns_label(&sink.entry.name), "{:?}", sink.entry.name);
                assert!(names.insert(sink.entry.name.clone()), "name used twice");
                check_module(&sink.module, wasmgate::config::MAX_SINK_TIMEOUT);
                assert!(sink.max_attempts >= 1);
            }
        }
    }
});
