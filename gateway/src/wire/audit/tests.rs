use super::*;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/audit-events"
);

/// Every fixture line, as (file name, line).
fn fixture_lines() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    for name in names {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            out.push((name.clone(), line.to_owned()));
        }
    }
    out
}

fn list(items: &[&str]) -> String {
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        items.join(",")
    )
}

#[test]
fn every_fixture_decodes_v1_and_v1beta1_alike() {
    let lines = fixture_lines();
    assert!(lines.len() >= 36, "{} fixture events", lines.len());
    for (name, line) in &lines {
        let event = Event::decode(line).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!event.audit_id.is_empty(), "{name}");
        assert!(!event.verb.is_empty(), "{name}");
        assert!(!event.user.username.is_empty(), "{name}");
        assert!(event.response_code().is_some(), "{name}");
    }
}

#[test]
fn a_fixture_keeps_its_objects_byte_for_byte() {
    let text =
        std::fs::read_to_string(format!("{FIXTURES}/attach_cluster_admin_role.json")).unwrap();
    let event = Event::decode(text.trim()).unwrap();
    assert_eq!(event.level, Level::RequestResponse);
    assert_eq!(event.stage, Stage::ResponseComplete);
    let object = event.request_object.as_ref().unwrap().get();
    assert!(text.contains(object), "request object re-encoded: {object}");
    let oref = event.object_ref.as_ref().unwrap();
    assert_eq!(oref.resource, "clusterrolebindings");
    assert_eq!(oref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(event.response_code(), Some(201));
}

#[test]
fn a_list_keeps_the_good_items_around_a_bad_one() {
    let good = r#"{"level":"Metadata","auditID":"a","stage":"ResponseComplete","verb":"get","requestURI":"/api/v1/pods?limit=5"}"#;
    let body = list(&[
        good,
        "42",
        r#"{"level":"Sometimes","auditID":"b","stage":"ResponseComplete"}"#,
        r#"{"level":"Metadata","auditID":"","stage":"ResponseComplete"}"#,
        r#"{"kind":"Pod","level":"Metadata","auditID":"c","stage":"ResponseComplete"}"#,
        r#"{"apiVersion":"audit.k8s.io/v1beta1","kind":"Event","level":"Request","auditID":"d","stage":"RequestReceived","timestamp":"2018-10-26T13:38:34Z","metadata":{"creationTimestamp":null},"user":{"username":"u"},"annotations":null,"requestObject":null}"#,
    ]);
    let items = decode_event_list(body.as_bytes()).unwrap();
    assert_eq!(items.len(), 6);
    let event = items[0].event.as_ref().unwrap();
    assert_eq!(event.path(), "/api/v1/pods");
    assert_eq!(items[0].raw.get(), good);
    let errors: Vec<_> = items
        .iter()
        .filter_map(|i| i.event.as_ref().err())
        .collect();
    assert_eq!(
        errors.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(
        errors[1].message.contains("unknown variant `Sometimes`"),
        "{}",
        errors[1]
    );
    assert_eq!(errors[2].to_string(), "item 3: auditID is empty");
    assert_eq!(errors[3].to_string(), "item 4: kind \"Pod\" is not Event");
    let beta = items[5].event.as_ref().unwrap();
    assert_eq!(beta.level, Level::Request);
    assert!(beta.request_object.is_none(), "null is absent");
    assert!(beta.user.groups.is_empty());
}

#[test]
fn bodies_that_are_not_event_lists_are_refused_with_a_reason() {
    let wrong =
        decode_event_list(br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#)
            .unwrap_err();
    assert_eq!(
        wrong.to_string(),
        "expected kind EventList in audit.k8s.io/v1 or audit.k8s.io/v1beta1, got apiVersion \"admission.k8s.io/v1\" kind \"AdmissionReview\""
    );
    let not_json = decode_event_list(b"{not json").unwrap_err();
    assert!(
        not_json
            .to_string()
            .starts_with("request body is not a valid audit EventList")
    );
    let items_not_list =
        decode_event_list(br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}"#)
            .unwrap_err();
    assert!(matches!(items_not_list, ListError::Json(_)));
    let empty = decode_event_list(
        br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":null}"#,
    )
    .unwrap();
    assert!(empty.is_empty());
}

#[test]
fn to_json_writes_a_v1_event_with_type_metadata() {
    let text = r#"{"level":"Request","auditID":"x","stage":"ResponseComplete","verb":"create","user":{"username":"u"},"requestObject":{"a" : 1},"objectRef":{"resource":"pods","namespace":"ns"}}"#;
    let event = Event::decode(text).unwrap();
    let json: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
    assert_eq!(json["kind"], "Event");
    assert_eq!(json["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(json["requestObject"]["a"], 1);
    assert_eq!(
        json["objectRef"],
        serde_json::json!({"resource":"pods","namespace":"ns"})
    );
    assert!(json.get("responseObject").is_none());
    assert!(
        event.to_json().contains(r#""requestObject":{"a" : 1}"#),
        "raw kept"
    );
}

#[test]
fn a_body_captured_from_a_real_api_server_decodes_whole() {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/apiserver/smoke/audit-eventlist.json"
    ))
    .unwrap();
    let items = decode_event_list(&body).unwrap();
    assert_eq!(items.len(), 20);
    for item in &items {
        let event = item.event.as_ref().unwrap();
        assert!(
            event.kind.is_empty() && event.api_version.is_empty(),
            "items carry no type"
        );
        assert_eq!(event.level, Level::RequestResponse);
    }
    let forbidden = items
        .iter()
        .filter_map(|i| i.event.as_ref().ok())
        .find(|e| e.user.username == "e2e-user" && e.stage == Stage::ResponseComplete)
        .unwrap();
    assert_eq!(forbidden.response_code(), Some(403));
    let non_resource = items
        .iter()
        .filter_map(|i| i.event.as_ref().ok())
        .find(|e| e.object_ref.is_none())
        .unwrap();
    assert!(
        non_resource.path().starts_with("/openapi/v3"),
        "{}",
        non_resource.request_uri
    );
}

/// Collects what the streaming decoder hands over, in order.
#[derive(Default)]
struct Collect {
    log: Vec<String>,
    stop_at: Option<usize>,
}

impl ItemSink for Collect {
    fn verified(&mut self) -> Result<(), String> {
        self.log.push("verified".into());
        Ok(())
    }

    fn item(&mut self, index: usize, raw: Box<RawValue>) -> Result<(), String> {
        if self.stop_at == Some(index) {
            return Err(format!("stopped at {index}"));
        }
        self.log.push(raw.get().to_owned());
        Ok(())
    }
}

/// What the streaming decoder hands over; the decoder of a body held whole must hand over the
/// same, in the same order, and end the same way (every test through here checks both).
fn stream(body: &str) -> (Result<usize, StreamError>, Vec<String>) {
    let mut sink = Collect::default();
    let out = decode_event_list_streaming(body.as_bytes(), &mut sink);
    let mut whole = Collect::default();
    let from_slice = decode_event_list_slice(body.as_bytes(), &mut whole);
    assert_eq!(whole.log, sink.log, "{body}");
    // serde_json's positions of some errors differ by a column between its two readers.
    let unplaced = |e: &StreamError| {
        let text = e.to_string();
        text.split(" at line ")
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        from_slice.as_ref().map_err(unplaced),
        out.as_ref().map_err(unplaced),
        "{body}"
    );
    (out, sink.log)
}

#[test]
fn the_streaming_decoder_hands_over_every_item_as_received() {
    let good = r#"{"level":"Metadata","auditID":"a","stage":"ResponseComplete"}"#;
    let body = list(&[good, "42", r#"{"x": [1, 2]}"#]);
    let (out, log) = stream(&body);
    assert_eq!(out.unwrap(), 3);
    assert_eq!(log, vec!["verified", good, "42", r#"{"x": [1, 2]}"#]);
    // The same items, one by one, as the whole-body decoder sees them.
    let whole = decode_event_list(body.as_bytes()).unwrap();
    let raws: Vec<_> = whole.iter().map(|i| i.raw.get()).collect();
    assert_eq!(&log[1..], raws.as_slice());
    // A real API server's body.
    let captured = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/apiserver/smoke/audit-eventlist.json"
    ))
    .unwrap();
    let (out, log) = stream(&captured);
    let whole = decode_event_list(captured.as_bytes()).unwrap();
    assert_eq!(out.unwrap(), whole.len());
    assert_eq!(log.len(), whole.len() + 1);
}

#[test]
fn the_streaming_decoder_checks_the_type_before_the_first_item() {
    let wrong = r#"{"kind":"PodList","apiVersion":"v1","items":[{"auditID":"a"}]}"#;
    let (out, log) = stream(wrong);
    match out {
        Err(StreamError::List(ListError::WrongType { api_version, kind })) => {
            assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "PodList"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        log.is_empty(),
        "items handed over before the type was checked: {log:?}"
    );

    // Type fields after the items: verified at the end.
    let late = r#"{"items":[1],"apiVersion":"audit.k8s.io/v1","kind":"EventList"}"#;
    let (out, log) = stream(late);
    assert_eq!(out.unwrap(), 1);
    assert_eq!(log, vec!["1", "verified"]);
    let missing = r#"{"items":[1]}"#;
    assert!(matches!(
        stream(missing).0,
        Err(StreamError::List(ListError::WrongType { .. }))
    ));
    // No items, or null: an empty list.
    for empty in [
        r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1"}"#,
        r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":null}"#,
    ] {
        assert_eq!(stream(empty).0.unwrap(), 0, "{empty}");
    }
    for broken in [
        "[]",
        "{",
        r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}"#,
        r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]} trailing"#,
    ] {
        assert!(
            matches!(stream(broken).0, Err(StreamError::List(ListError::Json(_)))),
            "{broken}"
        );
    }
}

#[test]
fn a_sink_can_stop_the_stream() {
    let mut sink = Collect {
        stop_at: Some(1),
        ..Default::default()
    };
    let out = decode_event_list_streaming(list(&["1", "2", "3"]).as_bytes(), &mut sink);
    match out {
        Err(StreamError::Stopped(message)) => assert_eq!(message, "stopped at 1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sink.log, vec!["verified", "1"]);
}

#[test]
fn truncation_drops_the_objects_and_says_so() {
    let event = r#"{"level":"RequestResponse","auditID":"a","stage":"ResponseComplete","verb":"list","requestObject":{"big":1},"responseObject":{"items":[1,2,3]},"annotations":{"authorization.k8s.io/decision":"allow"},"future":"kept"}"#;
    let cut = truncate_event(event).unwrap();
    let decoded = Event::decode(&cut).unwrap();
    assert!(decoded.request_object.is_none());
    assert!(decoded.response_object.is_none());
    assert_eq!(decoded.annotations[TRUNCATED_ANNOTATION], "true");
    assert_eq!(
        decoded.annotations["authorization.k8s.io/decision"],
        "allow"
    );
    assert_eq!(decoded.verb, "list");
    assert!(cut.contains(r#""future":"kept""#), "{cut}");
    // No annotations, or null ones: the map is created.
    for event in [
        r#"{"level":"Request","auditID":"b","stage":"ResponseComplete","requestObject":{}}"#,
        r#"{"level":"Request","auditID":"b","stage":"ResponseComplete","annotations":null}"#,
    ] {
        let cut = Event::decode(&truncate_event(event).unwrap()).unwrap();
        assert_eq!(cut.annotations[TRUNCATED_ANNOTATION], "true");
    }
    // The same event truncates to the same bytes: a re-sent batch is still deduplicated.
    assert_eq!(truncate_event(event).unwrap(), cut);
}
