//! The AdmissionReview decoder on any body, as `/validate` and `/mutate` receive it. No panic;
//! a decoded review converts to the plugin contract's request (an operation the contract does not
//! know included: `operation::other`), and an answer to it encodes to an AdmissionReview of the
//! same version that echoes the uid. What serde_json does not read as JSON is refused, and the
//! object handed on is the value the body holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate::admission::wit_request;
use wasmgate::wire::{AdmissionResponse, AdmissionReview, Operation};

fuzz_target!(|data: &[u8]| {
    let Ok(review) = AdmissionReview::decode(data) else {
        return;
    };
    // What is not JSON is refused: serde_json's reader of what the decoder does not type (no
    // limit on nesting; the bytes of what it skips are not checked to be UTF-8) reads the body.
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
        "a body that is not JSON was decoded"
    );
    if let Ok(whole) = serde_json::from_slice::<serde_json::Value>(data) {
        let sent = &whole["request"]["object"];
        let given = review.request.object.as_ref().map(|o| {
            serde_json::from_str::<serde_json::Value>(o.get()).expect("the object sent is JSON")
        });
        assert_eq!(
            given.as_ref().unwrap_or(&serde_json::Value::Null),
            sent,
            "the object handed on is the one sent"
        );
    }
    let request = wit_request(&review.request);
    assert_eq!(request.uid, review.request.uid);
    if let Operation::Other(name) = &review.request.operation {
        assert!(
            matches!(&request.operation, wasmgate::runtime::WitOperation::Other(n) if n == name),
            "an unknown operation reaches the plugin by its name"
        );
    }
    if let Some(object) = &request.object {
        // A strict parser reads the object, up to the two limits RFC 8259 (section 9) lets a
        // parser set and serde_json sets: nesting (128 levels; the API server's own decoder
        // allows 10,000) and numbers beyond f64. The gateway passes such an object on as sent.
        if let Err(e) = serde_json::from_str::<serde_json::Value>(object) {
            let e = e.to_string();
            assert!(
                e.starts_with("recursion limit exceeded") || e.starts_with("number out of range"),
                "the object is passed as JSON: {e}"
            );
        }
    }
    let uid = review.request.uid.clone();
    let answer = AdmissionResponse::deny(uid.clone(), 403, "Forbidden", "denied".into())
        .into_review_json(review.version);
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("the answer is JSON");
    assert_eq!(answer["apiVersion"], review.version.api_version());
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], uid.as_str());
    assert_eq!(answer["response"]["allowed"], false);
});
