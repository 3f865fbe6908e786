use wasmgate_sdk::parse_settings;
use wasmgate_sdk::serde_json::json;
use wasmgate_sdk::types::{Decision, Denial};

use super::*;
use wasmgate_sdk::Value;

fn verdict(settings: &str, object: Value) -> Verdict {
    check(
        &parse_settings(settings).unwrap(),
        &wasmgate_sdk::serde_json::from_value(object).unwrap(),
    )
}

#[test]
fn denies_listing_only_missing_labels_in_settings_order() {
    let settings = r#"{"labels": ["team", "app", "owner"]}"#;
    let object = json!({"metadata": {"labels": {"app": "web"}}});
    assert_eq!(
        verdict(settings, object).decision,
        Decision::Denied(Denial {
            code: 403,
            reason: "Forbidden".into(),
            message: "missing required labels: team, owner".into(),
        })
    );
}

#[test]
fn allows_when_all_present() {
    let object = json!({"metadata": {"labels": {"team": "a", "owner": "b"}}});
    assert!(verdict(r#"{"labels": ["team", "owner"]}"#, object).is_allowed());
}

#[test]
fn denies_objects_without_labels() {
    let verdict = verdict(r#"{"labels": ["team"]}"#, json!({"metadata": {}}));
    assert!(!verdict.is_allowed());
}

#[test]
fn empty_settings_allow_everything() {
    assert!(verdict("{}", json!({})).is_allowed());
    assert!(verdict("", json!({})).is_allowed());
}

#[test]
fn misspelt_settings_are_an_error() {
    assert!(parse_settings::<Settings>(r#"{"label": ["team"]}"#).is_err());
}
