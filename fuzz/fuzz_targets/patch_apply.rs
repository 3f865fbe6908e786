//! An initializer's patch on a request's object, as the host applies it
//! (`wasmgate::admission::patch::Document`, which opens only what the operations reach) against
//! `json_patch` on the whole parsed object, the reference it must agree with.
//!
//! The input is the object's JSON text on the first line and the patch (RFC 6902) after it. What
//! must hold whenever both are JSON and the patch is a JSON Patch: no panic; when the object
//! parses whole, the same outcome as `json_patch`: the same object (also as written back to
//! text), or the same error message with the document as it was (all or none); never
//! "unchanged" for a patch that changed it. When it does not parse whole (nesting past 128, a
//! number beyond f64), the host may only refuse with "unreadable" where a patch reaches it.
//! The host's one documented difference, a pointer deeper than `MAX_DEPTH` tokens (which never
//! applies), is left out of the comparison.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;
use wasmgate::admission::patch::{Document, MAX_DEPTH, PatchFailure};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (object, patch) = text.split_once('\n').unwrap_or((text, "[]"));
    let Ok(raw) = serde_json::from_str::<&RawValue>(object) else {
        return;
    };
    let Ok(patch) = serde_json::from_str::<json_patch::Patch>(patch) else {
        return;
    };
    let deep = |pointer: &json_patch::jsonptr::Pointer| pointer.tokens().count() > MAX_DEPTH;
    let beyond = patch.0.iter().any(|operation| {
        deep(operation.path())
            || match operation {
                json_patch::PatchOperation::Move(op) => deep(&op.from),
                json_patch::PatchOperation::Copy(op) => deep(&op.from),
                _ => false,
            }
    });
    let mut document = Document::new(raw);
    let outcome = document.apply(&patch.0);
    let Ok(before) = serde_json::from_str::<Value>(object)
        .map_err(drop)
        .and_then(|before| if beyond { Err(()) } else { Ok(before) })
    else {
        // Not readable whole: the host reads only what the patch reaches.
        if let Ok(_changed) = &outcome {
            document.to_text().expect("an applied patch writes back");
        }
        return;
    };
    let mut expected = before.clone();
    // `patch_unsafe`: on an error the reference's copy is dropped (its own undo can panic).
    match (json_patch::patch_unsafe(&mut expected, &patch.0), outcome) {
        (Ok(()), Ok(changed)) => {
            assert_eq!(document.to_value().unwrap(), expected, "the patched object");
            let text = document.to_text().unwrap();
            // Values the patch added may nest it past what serde_json reads back.
            if depth(&expected) <= 128 {
                match serde_json::from_str::<Value>(&text) {
                    Ok(written) => assert!(
                        same(&written, &expected),
                        "the patched object, written back: {written} against {expected}"
                    ),
                    // The largest f64s, written, may read back beyond f64 (see `same`).
                    Err(e) => assert!(
                        e.to_string().starts_with("number out of range"),
                        "the patched object written back is not JSON: {e}: {text}"
                    ),
                }
            }
            if !changed {
                assert_eq!(
                    expected, before,
                    "a patch said to change nothing changed it"
                );
            }
        }
        (Err(reference), Err(failure @ PatchFailure::DoesNotApply { .. })) => {
            assert_eq!(
                failure.to_string(),
                reference.to_string(),
                "the error message"
            );
            assert_eq!(
                document.to_value().unwrap(),
                before,
                "a failed patch changed the object"
            );
        }
        (reference, host) => panic!("json_patch: {reference:?}; the host: {host:?}"),
    }
});

/// How many containers deep `value` nests (a scalar is 0).
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        Value::Array(elements) => 1 + elements.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// JSON equality, but a float is only as exact as serde_json's default reading of its text
/// (without `float_roundtrip`, writing an f64 and reading it back can move its last digit).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= f64::EPSILON * 4.0 * x.abs().max(y.abs())
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}
