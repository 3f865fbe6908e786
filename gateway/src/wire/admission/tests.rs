use super::*;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/admission-review"
);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture present")
}

#[test]
fn every_field_of_the_upstream_fixtures_decodes() {
    for (name, version) in [
        ("HEAD.v1.AdmissionReview.json", ReviewVersion::V1),
        ("HEAD.v1beta1.AdmissionReview.json", ReviewVersion::V1beta1),
        ("v1.36.0.v1.AdmissionReview.json", ReviewVersion::V1),
        (
            "v1.36.0.v1beta1.AdmissionReview.json",
            ReviewVersion::V1beta1,
        ),
    ] {
        // The upstream fixtures carry a fuzzer value for `operation`; make it a real one.
        let text = String::from_utf8(fixture(name)).unwrap();
        let text = text.replace("\"operationValue\"", "\"UPDATE\"");
        let review =
            AdmissionReview::decode(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(review.version, version);
        let r = review.request;
        assert_eq!(r.uid, "uidValue");
        assert_eq!(r.kind.kind, "kindValue");
        assert_eq!(r.resource.resource, "resourceValue");
        assert_eq!(r.sub_resource, "subResourceValue");
        assert_eq!(r.request_kind.unwrap().group, "groupValue");
        assert_eq!(r.request_resource.unwrap().version, "versionValue");
        assert_eq!(r.request_sub_resource, "requestSubResourceValue");
        assert_eq!(r.name, "nameValue");
        assert_eq!(r.namespace, "namespaceValue");
        assert_eq!(r.operation, Operation::Update);
        assert_eq!(r.user_info.username, "usernameValue");
        assert_eq!(r.user_info.extra["extraKey"], vec!["extraValue".to_owned()]);
        assert_eq!(r.dry_run, Some(true));
        let object: serde_json::Value = serde_json::from_str(r.object.unwrap().get()).unwrap();
        assert_eq!(object["spec"]["replicas"], 1);
        assert!(r.old_object.is_some());
        assert!(r.options.is_some());
    }
}

#[test]
fn raw_objects_are_kept_byte_for_byte() {
    let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":{"b" : 1,"a":[ 2 ]},"oldObject":null}}"#;
    let review = AdmissionReview::decode(body).unwrap();
    assert_eq!(
        review.request.object.unwrap().get(),
        r#"{"b" : 1,"a":[ 2 ]}"#
    );
    assert!(review.request.old_object.is_none());
    assert!(review.request.options.is_none());
    assert_eq!(review.request.dry_run, None);
}

#[test]
fn wrong_envelopes_are_named() {
    let err = AdmissionReview::decode(br#"{"apiVersion":"v1","kind":"Pod"}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"got apiVersion "v1" kind "Pod""#),
        "{err}"
    );
    let err = AdmissionReview::decode(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    )
    .unwrap_err();
    assert!(matches!(err, DecodeError::MissingRequest));
    let err = AdmissionReview::decode(b"{not json").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("request body is not a valid AdmissionReview"),
        "{err}"
    );
    // Field names are case-sensitive, as in the API server's decoder.
    let err = AdmissionReview::decode(br#"{"ApiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE"}}"#).unwrap_err();
    assert!(matches!(err, DecodeError::WrongType { .. }));
}

#[test]
fn responses_follow_the_protocol() {
    let mut allowed = AdmissionResponse::allow("abc");
    allowed.set_json_patch(b"[]");
    let json: serde_json::Value =
        serde_json::from_slice(&allowed.clone().into_review_json(ReviewVersion::V1)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"abc","allowed":true}})
    );
    allowed.set_json_patch(br#"[{"op":"add","path":"/metadata/labels/x","value":"y"}]"#);
    let json: serde_json::Value =
        serde_json::from_slice(&allowed.into_review_json(ReviewVersion::V1beta1)).unwrap();
    assert_eq!(json["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(json["response"]["patchType"], "JSONPatch");
    assert_eq!(
        json["response"]["patch"],
        "W3sib3AiOiJhZGQiLCJwYXRoIjoiL21ldGFkYXRhL2xhYmVscy94IiwidmFsdWUiOiJ5In1d"
    );

    let denied = AdmissionResponse::deny("abc", 200, "Forbidden", "no".into());
    let json: serde_json::Value =
        serde_json::from_slice(&denied.into_review_json(ReviewVersion::V1)).unwrap();
    assert_eq!(
        json["response"]["status"],
        serde_json::json!({"code":400,"message":"no","reason":"Forbidden","status":"Failure"})
    );
}

#[test]
fn an_unknown_operation_decodes_as_it_came() {
    // Forward compatibility: `admission/v1.Operation` is a string type upstream; a newer API
    // server may send a value this build does not know.
    let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"UPGRADE"}}"#;
    let review = AdmissionReview::decode(body).unwrap();
    assert_eq!(review.request.operation, Operation::Other("UPGRADE".into()));
    assert_eq!(review.request.operation.as_str(), "UPGRADE");
    for known in ["CREATE", "UPDATE", "DELETE", "CONNECT"] {
        assert_eq!(Operation::parse(known).as_str(), known);
        assert!(!matches!(Operation::parse(known), Operation::Other(_)));
    }
    // Case matters, as with the API server's constants.
    assert_eq!(
        Operation::parse("create"),
        Operation::Other("create".into())
    );
}

#[test]
fn an_object_only_a_lenient_reader_takes_is_refused() {
    // A lone surrogate escape: serde_json's raw reader passes it, a plugin's parser would not.
    let review = |object: &str| {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","operation":"CREATE","object":{object}}}}}"#
        )
    };
    let err = AdmissionReview::decode(review(r#"{"a":"\ud800"}"#).as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::InvalidObject {
                field: "object",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("AdmissionReview request.object is not valid JSON: "),
        "{err}"
    );
    // A surrogate pair, an escaped backslash before `ud800` and plain text all decode.
    for ok in [
        r#"{"a":"\ud83d\ude00"}"#,
        r#"{"a":"\\ud800"}"#,
        r#"{"a":"é"}"#,
    ] {
        let decoded = AdmissionReview::decode(review(ok).as_bytes()).unwrap();
        assert_eq!(decoded.request.object.unwrap().get(), ok);
    }
}

#[test]
fn deep_nesting_and_huge_numbers_are_passed_on_as_sent() {
    // RFC 8259 lets a parser limit nesting and number range; they are the plugin's parser's
    // limits, not the protocol's. The API server's decoder nests to 10,000 levels, so an
    // object deeper than serde_json's 128 can come from it: refusing the review would fail
    // every policy on the resource, not only one whose parser cannot read it.
    let deep = format!(r#"{{"spec":{}{}}}"#, "[".repeat(300), "]".repeat(300));
    for object in [deep.as_str(), r#"{"spec":{"replicas":1e400}}"#] {
        let body = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","operation":"CREATE","object":{object}}}}}"#
        );
        let decoded = AdmissionReview::decode(body.as_bytes()).unwrap();
        assert_eq!(decoded.request.object.unwrap().get(), object);
    }
}
