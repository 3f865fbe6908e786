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

fn refused(settings: &str) -> String {
    wasmgate_sdk::validator::validate_settings::<RequireLabels>(settings).unwrap_err()
}

#[test]
fn settings_are_checked_at_load() {
    assert_eq!(
        wasmgate_sdk::validator::validate_settings::<RequireLabels>(
            r#"{"labels": ["team", "example.com/owner"]}"#
        ),
        Ok(())
    );
    // The issue's operator mistake: a string where a list belongs.
    assert_eq!(
        refused(r#"{"labels": "team"}"#),
        r#"labels: invalid type: string "team", expected a sequence"#
    );
    assert_eq!(refused("{}"), "missing field `labels`");
    assert_eq!(refused(""), "missing field `labels`");
    assert!(
        refused(r#"{"label": ["team"]}"#).ends_with("unknown field `label`, expected `labels`"),
        "{}",
        refused(r#"{"label": ["team"]}"#)
    );
    assert_eq!(
        refused(r#"{"labels": []}"#),
        "labels: list at least one label key"
    );
    assert!(
        refused(r#"{"labels": ["team", "-bad"]}"#)
            .starts_with("labels[1]: \"-bad\" is not a label key")
    );
    assert!(refused(r#"{"labels": ["Example.com/team"]}"#).contains("prefix"));
    assert!(refused(&format!(r#"{{"labels": ["{}"]}}"#, "a".repeat(64))).contains("1-63"));
}
