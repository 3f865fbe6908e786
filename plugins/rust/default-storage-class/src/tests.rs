use wasmgate_sdk::serde_json::json;

use super::*;

#[test]
fn sets_absent_or_null_class() {
    for spec in [json!({}), json!({"storageClassName": null})] {
        let pvc = json!({"kind": "PersistentVolumeClaim", "spec": spec});
        assert_eq!(
            set_default(&pvc, "standard"),
            Some(json!({"op": "add", "path": "/spec/storageClassName", "value": "standard"}))
        );
    }
}

#[test]
fn keeps_empty_and_set_classes() {
    for class in ["", "fast"] {
        let pvc = json!({"spec": {"storageClassName": class}});
        assert_eq!(set_default(&pvc, "standard"), None);
    }
}

#[test]
fn leaves_claims_without_spec_alone() {
    let pvc = json!({"kind": "PersistentVolumeClaim"});
    assert_eq!(set_default(&pvc, "standard"), None);
    let pvc = json!({"kind": "PersistentVolumeClaim", "spec": "x"});
    assert_eq!(set_default(&pvc, "standard"), None);
}

#[test]
fn settings_use_the_kubernetes_spelling() {
    let settings: Settings = wasmgate_sdk::parse_settings(r#"{"storageClassName": "x"}"#).unwrap();
    assert_eq!(settings.storage_class_name, "x");
    assert!(wasmgate_sdk::parse_settings::<Settings>(r#"{"storage_class_name": "x"}"#).is_err());
}

#[test]
fn settings_are_checked_at_load() {
    let check = wasmgate_sdk::initializer::validate_settings::<DefaultStorageClass>;
    assert_eq!(check(r#"{"storageClassName": "fast-ssd"}"#), Ok(()));
    assert_eq!(check("{}"), Err("missing field `storageClassName`".into()));
    assert_eq!(
        check(r#"{"storageClassName": 7}"#),
        Err("storageClassName: invalid type: integer `7`, expected a string".into())
    );
    assert!(
        check(r#"{"storageClassName": "Fast SSD"}"#)
            .unwrap_err()
            .contains("not a StorageClass name")
    );
    assert!(
        check(r#"{"storageClassName": "x", "default": true}"#)
            .unwrap_err()
            .contains("unknown field `default`")
    );
}
