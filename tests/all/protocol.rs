//! The HTTP and TLS contract: statuses for bad input, HTTP/2 by ALPN, mutual TLS, draining.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Gateway, Options, Pki, client, entry, policy_file, review};

fn simple() -> Gateway {
    simple_with(Options::default())
}

fn simple_with(options: Options) -> Gateway {
    Gateway::start_with(
        &policy_file(&entry("fast", "validator", "burn", "settings: {millis: 0}")),
        options,
    )
}

async fn raw(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = gw
        .client()
        .request(method, gw.url(path))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn bad_requests_get_precise_statuses() {
    let gw = Gateway::start_with(
        &policy_file(&entry("fast", "validator", "burn", "settings: {millis: 0}")),
        Options {
            extra_args: vec!["--max-body-bytes".into(), "65536".into()],
            ..Default::default()
        },
    );
    let pod = serde_json::to_vec(&review("pod-create.json")).unwrap();
    let json = "application/json";

    let (status, headers, body) = raw(&gw, reqwest::Method::GET, "/validate", json, vec![]).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    assert_eq!(body["kind"], "Status");

    let (status, _, body) = raw(
        &gw,
        reqwest::Method::POST,
        "/validate",
        "text/plain",
        pod.clone(),
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(
        body["message"],
        "Content-Type must be application/json, got \"text/plain\""
    );

    let (status, _, body) = raw(
        &gw,
        reqwest::Method::POST,
        "/validate",
        json,
        vec![b' '; 70_000],
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        body["message"],
        "request body is larger than the limit of 65536 bytes"
    );

    let (status, _, body) = raw(
        &gw,
        reqwest::Method::POST,
        "/validate",
        json,
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("request body is not a valid AdmissionReview: "),
        "{body}"
    );

    let (status, _, body) = raw(
        &gw,
        reqwest::Method::POST,
        "/validate",
        json,
        br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "expected kind AdmissionReview in admission.k8s.io/v1 or admission.k8s.io/v1beta1, got apiVersion \"v1\" kind \"Pod\""
    );

    let no_uid = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#;
    let (status, _, body) = raw(
        &gw,
        reqwest::Method::POST,
        "/validate",
        json,
        no_uid.to_vec(),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("AdmissionReview request has no uid"))
    );

    let (status, _, body) = raw(
        &gw,
        reqwest::Method::POST,
        "/validate/nope",
        json,
        pod.clone(),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("no validator policy named \"nope\""))
    );

    let (status, _, body) = raw(
        &gw,
        reqwest::Method::POST,
        "/validate?timeout=soon",
        json,
        pod.clone(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("bad timeout query parameter"),
        "{body}"
    );

    let (status, _, _) = raw(&gw, reqwest::Method::GET, "/nowhere", json, vec![]).await;
    assert_eq!(status, 404);

    // After all that, a good request on the same gateway.
    let (status, _, body) = raw(
        &gw,
        reqwest::Method::POST,
        "/validate?timeout=10s",
        "application/json; charset=utf-8",
        pod,
    )
    .await;
    assert_eq!(
        (status, body["response"]["allowed"].clone()),
        (200, json!(true))
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let gw = simple();
    let health = gw.client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = gw.readyz().await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["policies"], json!(["fast"]));
    assert_eq!(ready["generation"], 1);
}

#[tokio::test]
async fn http2_is_offered_by_alpn_and_http1_still_works() {
    let gw = simple();
    let pod = serde_json::to_vec(&review("pod-create.json")).unwrap();
    for (h2, version) in [
        (true, reqwest::Version::HTTP_2),
        (false, reqwest::Version::HTTP_11),
    ] {
        let response = client(&gw.pki.ca, None, h2)
            .post(gw.url("/validate"))
            .header("Content-Type", "application/json")
            .body(pod.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let clients = Pki::new(&["kube-apiserver"]);
    let strangers = Pki::new(&["someone-else"]);
    let gw = simple_with(Options {
        client_ca: Some(clients.ca.clone()),
        ..Default::default()
    });
    let url = gw.url("/healthz");

    let anonymous = client(&gw.pki.ca, None, true).get(&url).send().await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate was served"
    );
    let stranger = client(&gw.pki.ca, Some((&strangers.cert, &strangers.key)), true)
        .get(&url)
        .send()
        .await;
    assert!(
        stranger.is_err(),
        "a client with an untrusted certificate was served"
    );
    let trusted = client(&gw.pki.ca, Some((&clients.cert, &clients.key)), true)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(trusted.status(), 200);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_gateway_gets_nothing() {
    let gw = simple();
    let other = Pki::new(&["localhost"]);
    assert!(
        client(&other.ca, None, true)
            .get(gw.url("/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn sigterm_drains_requests_in_flight() {
    let mut gw = Gateway::start(&policy_file(&entry(
        "slow",
        "validator",
        "burn",
        "settings: {millis: 1000}",
    )));
    let pod = serde_json::to_vec(&review("pod-create.json")).unwrap();
    let in_flight = {
        let (client, url, body) = (gw.client(), gw.url("/validate"), pod.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight was answered");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["response"]["allowed"], true);
    let status = tokio::task::spawn_blocking(move || {
        let status = gw.wait(Duration::from_secs(10));
        (status, gw)
    })
    .await
    .unwrap();
    assert!(status.0.expect("exited after draining").success());
    let after = client(&status.1.pki.ca, None, true)
        .get(status.1.url("/healthz"))
        .send()
        .await;
    assert!(after.is_err(), "still accepting after SIGTERM");
}
