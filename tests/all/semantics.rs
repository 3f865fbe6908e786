//! Kubernetes semantics over HTTPS (docs/kubernetes-semantics.md): what the API server would
//! send in the subtle cases, and what it expects back.

use serde_json::{Value, json};

use crate::harness::{Gateway, entry, patched, policy_file, repo, review};

fn demo() -> Gateway {
    let text = std::fs::read_to_string(repo().join("policies/demo.yaml")).unwrap();
    let text = text.replace(
        "../plugins/dist/",
        &format!("{}/plugins/dist/", repo().display()),
    );
    Gateway::start(&text)
}

/// What the API server sends for `kubectl debug --profile=sysadmin`: an UPDATE of
/// `pods/ephemeralcontainers` whose object is the Pod with a privileged ephemeral container.
fn debug_review() -> Value {
    let mut r = review("pod-update.json");
    let request = &mut r["request"];
    request["subResource"] = json!("ephemeralcontainers");
    request["requestSubResource"] = json!("ephemeralcontainers");
    request["object"]["spec"]["ephemeralContainers"] = json!([{
        "name": "debugger-x7k2p", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "securityContext": {"privileged": true}, "targetContainerName": "web",
    }]);
    r
}

#[tokio::test]
async fn the_demo_policies_cover_ephemeral_containers() {
    let gw = demo();
    let denied = gw.answer("/validate", &debug_review()).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(
        denied["status"]["message"],
        "deny-privileged: privileged containers are not allowed: spec.ephemeralContainers[0] \"debugger-x7k2p\""
    );
    // always-pull-images sets the debug container's pull policy too.
    let mut unprivileged = debug_review();
    unprivileged["request"]["object"]["spec"]["ephemeralContainers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let mutated = gw.answer("/mutate", &unprivileged).await;
    let object = patched(&unprivileged, &mutated);
    assert_eq!(
        object["spec"]["ephemeralContainers"][0]["imagePullPolicy"],
        "Always"
    );
}

#[tokio::test]
async fn the_kind_of_a_workload_comes_from_the_request() {
    // A peer's test data: the object lacks apiVersion and kind. The request says Deployment.
    let gw = demo();
    let mut r = review("deployment-create-privileged.json");
    let object = r["request"]["object"].as_object_mut().unwrap();
    object.remove("apiVersion");
    object.remove("kind");
    let denied = gw.answer("/validate", &r).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(
        denied["status"]["message"],
        "deny-privileged: privileged containers are not allowed: spec.template.spec.containers[1] \"metrics\""
    );
}

#[tokio::test]
async fn an_unknown_operation_is_decoded_and_matches_only_star() {
    let other = |op: &str| {
        let mut r = review("pod-create.json");
        r["request"]["operation"] = json!(op);
        r
    };
    let specific = entry("specific", "validator", "burn", "settings: {deny: nope}").replace(
        "operations: ['*']",
        "operations: [CREATE, UPDATE, DELETE, CONNECT]",
    );
    // A 0.2.0 plugin gets the operation as `other(name)`, spelled as the API server sent it,
    // and echoes it in a warning.
    let star = entry(
        "star",
        "validator",
        "burn",
        "settings: {warnOperation: true}",
    );
    let gw = Gateway::start(&policy_file(&format!("{specific}{star}")));
    let (status, body) = gw.post("/validate", &other("UPGRADE")).await;
    assert_eq!(status, 200, "decoded, not refused with 400: {body}");
    let response = &body["response"];
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        response["warnings"],
        json!(["operation UPGRADE"]),
        "only the `*` policy matched, and its 0.2.0 plugin was called with other(\"UPGRADE\")"
    );
    // Control: a known operation reaches both, as itself.
    let known = gw.answer("/validate", &other("CREATE")).await;
    assert_eq!(known["status"]["message"], "specific: nope");
    assert_eq!(known["warnings"], json!(["operation CREATE"]), "{known}");
}

#[tokio::test]
async fn an_unknown_operation_is_not_given_to_a_0_1_0_plugin() {
    // wasmgate:plugin@0.1.0 has a closed `enum operation`: the call is not made, and the
    // policy's failurePolicy decides (allowing silently would be a bypass).
    let mut r = review("pod-create.json");
    r["request"]["operation"] = json!("UPGRADE");
    let legacy = |failure: &str| {
        entry(
            "legacy",
            "validator",
            "legacy-labels",
            &format!("settings: {{labels: [team]}}\nfailurePolicy: {failure}"),
        )
    };
    let gw = Gateway::start(&policy_file(&legacy("Fail")));
    let denied = gw.answer("/validate", &r).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(denied["status"]["code"], 500);
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("policy \"legacy\" failed")
            && message.contains(
                "operation \"UPGRADE\" is unknown to wasmgate:plugin@0.1.0; rebuild the plugin for 0.2.0"
            ),
        "{message}"
    );

    // failurePolicy Ignore: allowed, with a warning naming the cause.
    let gw = Gateway::start(&policy_file(&legacy("Ignore")));
    let allowed = gw.answer("/validate", &r).await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    assert!(
        allowed["warnings"][0]
            .as_str()
            .unwrap()
            .contains("operation \"UPGRADE\" is unknown to wasmgate:plugin@0.1.0"),
        "{allowed}"
    );
}

#[tokio::test]
async fn a_namespace_object_is_judged_by_its_own_name() {
    let policy = entry("deny-all", "validator", "burn", "settings: {deny: nope}")
        .replace("resources: ['*']", "resources: [namespaces]");
    let gw = Gateway::start(&policy_file(&format!(
        "{policy}    excludeNamespaces: [payments]\n"
    )));
    let excluded = review("namespace-create.json");
    let mut other = excluded.clone();
    other["request"]["name"] = json!("web");
    other["request"]["namespace"] = json!("");
    other["request"]["object"]["metadata"]["name"] = json!("web");
    assert_eq!(gw.answer("/validate", &excluded).await["allowed"], true);
    assert_eq!(gw.answer("/validate", &other).await["allowed"], false);
}

#[tokio::test]
async fn an_object_selector_never_matches_connect() {
    let policy = entry(
        "not-exempt",
        "validator",
        "burn",
        "settings: {deny: nope}\nobjectSelector: {matchExpressions: [{key: exempt, operator: DoesNotExist}]}",
    )
    .replace("resources: ['*']", "resources: ['*', 'pods/exec']");
    let gw = Gateway::start(&policy_file(&policy));
    let exec = gw
        .answer("/validate", &review("pod-exec-connect.json"))
        .await;
    assert_eq!(
        exec["allowed"], true,
        "PodExecOptions have no labels: {exec}"
    );
    let create = gw.answer("/validate", &review("pod-create.json")).await;
    assert_eq!(create["allowed"], false, "control: {create}");
}

#[tokio::test]
async fn an_initializer_may_not_rename_the_object() {
    for (field, value) in [
        ("name", "other"),
        ("namespace", "kube-system"),
        ("generateName", "web-"),
        ("uid", "0000"),
        ("resourceVersion", "1"),
    ] {
        let policy = entry(
            "rename",
            "initializer",
            "set-metadata",
            &format!("settings: {{field: {field}, value: '{value}'}}"),
        );
        let gw = Gateway::start(&policy_file(&policy));
        let answer = gw.answer("/mutate", &review("pod-create.json")).await;
        assert_eq!(answer["allowed"], false, "{field}: {answer}");
        assert_eq!(answer["status"]["code"], 500);
        assert_eq!(
            answer["status"]["message"],
            format!(
                "policy \"rename\" failed: plugin invalid output: an initializer may not change metadata.{field}"
            )
        );
    }
    // Control: another metadata field is the initializer's to set.
    let policy = entry(
        "annotate",
        "initializer",
        "set-metadata",
        "settings: {field: finalizers, value: x}",
    );
    let gw = Gateway::start(&policy_file(&policy));
    let answer = gw.answer("/mutate", &review("pod-create.json")).await;
    assert_eq!(answer["allowed"], true, "{answer}");
}

#[tokio::test]
async fn a_reinvoked_initializer_gives_the_same_answer() {
    // reinvocationPolicy IfNeeded: the API server calls the initializers again on the object
    // as later webhooks left it; on their own output they change nothing more.
    let gw = demo();
    let first = review("pod-create.json");
    let answer = gw.answer("/mutate", &first).await;
    let mut again = first.clone();
    again["request"]["object"] = patched(&first, &answer);
    let answer = gw.answer("/mutate", &again).await;
    assert_eq!(answer["allowed"], true);
    assert!(answer.get("patch").is_none(), "{answer}");
    assert!(answer.get("auditAnnotations").is_none(), "{answer}");
}

#[tokio::test]
async fn an_equivalent_request_matches_by_the_requested_version() {
    // matchPolicy Equivalent: a request for widgets v2, sent converted to v1 (the version of the
    // rule that matched in an aggregated webhook), still reaches a policy written for v2.
    let policy = entry("v2-only", "validator", "burn", "settings: {deny: nope}").replace(
        "apiGroups: ['', apps, batch], apiVersions: ['*'], resources: ['*']",
        "apiGroups: [example.com], apiVersions: [v2], resources: [widgets]",
    );
    let gw = Gateway::start(&policy_file(&policy));
    let mut r = review("pod-create.json");
    let request = &mut r["request"];
    request["kind"] = json!({"group": "example.com", "version": "v1", "kind": "Widget"});
    request["resource"] = json!({"group": "example.com", "version": "v1", "resource": "widgets"});
    request["requestKind"] = json!({"group": "example.com", "version": "v2", "kind": "Widget"});
    request["requestResource"] =
        json!({"group": "example.com", "version": "v2", "resource": "widgets"});
    assert_eq!(gw.answer("/validate", &r).await["allowed"], false);
    r["request"]["requestResource"]["version"] = json!("v3");
    assert_eq!(gw.answer("/validate", &r).await["allowed"], true, "control");
}
