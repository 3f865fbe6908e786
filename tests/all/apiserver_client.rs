//! The API server's client certificate from an operator's own CA (`wasmgate manifests --kind
//! apiserver-client --apiserver-client-ca ...`): signed with the operator's CA key, or the
//! operator's certificate as is; the rendered audit kubeconfig, used as the API server uses it
//! over real TLS, is accepted on `/audit` by a gateway trusting only that CA, and a certificate
//! from another CA is refused. Bad CA material is refused with the reason.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use rcgen::ExtendedKeyUsagePurpose;
use serde_json::Value;

use crate::audit::{
    ALL, Dir, event, event_list, eventually, file_output, lines, sink, sinks_file, start,
};
use crate::harness::{client, repo};

/// An operator's CA made here, as `openssl req -x509 -newkey ec` makes one: (certificate PEM,
/// PKCS#8 key PEM).
fn operator_ca(common_name: &str) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example Ops");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A client certificate for `common_name` signed by `ca` (certificate PEM, key PEM): (certificate
/// PEM, key PEM).
fn client_signed_by(ca: &(String, String), common_name: &str) -> (String, String) {
    client_signed_by_for(ca, common_name, ExtendedKeyUsagePurpose::ClientAuth)
}

/// A certificate for `common_name` and the one extended key usage `usage`, signed by `ca`.
fn client_signed_by_for(
    ca: &(String, String),
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
    let issuer = Issuer::from_ca_cert_pem(&ca.0, KeyPair::from_pem(&ca.1).unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// `wasmgate manifests ARGS`: its stdout on success, its stderr (and exit code) otherwise.
fn manifests(args: &[&str]) -> Result<String, (Option<i32>, String)> {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .arg("manifests")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err((
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }
}

/// The rendered Secret's data, decoded.
fn secret_data(stream: &str) -> serde_json::Map<String, Value> {
    let doc = stream
        .split("\n---\n")
        .find(|doc| doc.contains("kind: Secret"))
        .unwrap_or_else(|| panic!("no Secret in {stream}"));
    let secret: Value = serde_yaml_ng::from_str(doc).unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls", "{secret}");
    let b64 = &base64::engine::general_purpose::STANDARD;
    secret["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let text = String::from_utf8(b64.decode(v.as_str().unwrap()).unwrap()).unwrap();
            (k.clone(), Value::String(text))
        })
        .collect()
}

/// What a kubeconfig tells a client: (server, CA PEM, client certificate PEM, client key PEM).
fn kubeconfig_client(text: &str) -> (String, String, String, String) {
    let config: Value = serde_yaml_ng::from_str(text).unwrap();
    let b64 = &base64::engine::general_purpose::STANDARD;
    let decode = |v: &Value| {
        String::from_utf8(
            b64.decode(v.as_str().unwrap_or_else(|| panic!("{v} in {config}")))
                .unwrap(),
        )
        .unwrap()
    };
    let cluster = &config["clusters"][0]["cluster"];
    let user = &config["users"][0]["user"];
    (
        cluster["server"].as_str().unwrap().to_owned(),
        decode(&cluster["certificate-authority-data"]),
        decode(&user["client-certificate-data"]),
        decode(&user["client-key-data"]),
    )
}

/// POSTs `body` to `url` as `client`: the status, or `None` when the handshake was refused.
async fn post(client: &reqwest::Client, url: &str, body: &[u8]) -> Option<u16> {
    let response = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    response.bytes().await.ok()?;
    Some(status)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operators_ca_signs_the_apiserver_client_certificate_and_only_it_reaches_audit() {
    let dir = Dir::new();
    let ca = operator_ca("Example Ops API server clients");
    let other_ca = operator_ca("Another CA");
    std::fs::write(dir.path("ca.crt"), &ca.0).unwrap();
    std::fs::write(dir.path("ca.key"), &ca.1).unwrap();
    let policy = sinks_file(&[sink(
        "echo",
        "echo-sink",
        &format!(
            "{ALL}outputs:\n{}",
            file_output("out", &dir.at("echo.jsonl"))
        ),
    )]);
    let gw = start(&policy, &["--audit-client-ca", &dir.at("ca.crt")]);
    let gw_ca = dir.path("gateway-ca.crt");
    std::fs::write(&gw_ca, &gw.pki.ca).unwrap();
    let base_url = gw.url("");
    let base = [
        "--kind",
        "config,apiserver-client",
        "--config",
        "policies/demo.yaml",
        "--url",
        &base_url,
        "--ca-file",
        gw_ca.to_str().unwrap(),
        "--apiserver-client-ca",
        &dir.at("ca.crt"),
    ];

    // 1. Signed now with the operator's CA key.
    let signed =
        manifests(&[&base[..], &["--apiserver-client-ca-key", &dir.at("ca.key")]].concat())
            .unwrap_or_else(|e| panic!("{e:?}"));
    // 2. The operator's own certificate (signed by the same CA), as is.
    let own = client_signed_by(&ca, "kube-apiserver");
    std::fs::write(dir.path("own.crt"), &own.0).unwrap();
    std::fs::write(dir.path("own.key"), &own.1).unwrap();
    let given = manifests(
        &[
            &base[..],
            &[
                "--client-cert",
                &dir.at("own.crt"),
                "--client-key",
                &dir.at("own.key"),
            ],
        ]
        .concat(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let given_data = secret_data(&given);
    assert_eq!(
        given_data["tls.crt"],
        own.0.as_str(),
        "the certificate as given"
    );
    assert_eq!(given_data["tls.key"], own.1.as_str(), "the key as given");

    let batch = serde_json::to_vec(&event_list(&[event("a1", "get", "pods", "Metadata")])).unwrap();
    for (how, stream) in [("signed", &signed), ("given", &given)] {
        // The Pods trust exactly the operator's CA: config's <svc>-client-ca and the Secret's
        // ca.crt are it, not a generated one.
        let data = secret_data(stream);
        assert_eq!(data["ca.crt"], ca.0.as_str(), "{how}: the Secret's ca.crt");
        let configmap = stream
            .split("\n---\n")
            .find(|doc| doc.contains("name: wasmgate-client-ca"))
            .unwrap_or_else(|| panic!("{how}: no client-ca ConfigMap in {stream}"));
        let configmap: Value = serde_yaml_ng::from_str(configmap).unwrap();
        // (The ConfigMap's text is the PEM without its final newline.)
        assert_eq!(
            configmap["data"]["ca.crt"].as_str().map(str::trim_end),
            Some(ca.0.trim_end()),
            "{how}"
        );
        // The audit kubeconfig, used as the API server uses it: its server, its CA, its
        // client certificate.
        let (server, server_ca, cert, key) =
            kubeconfig_client(data["audit-webhook.kubeconfig"].as_str().unwrap());
        assert_eq!(server, gw.url("/audit"));
        assert_eq!(cert, data["tls.crt"].as_str().unwrap(), "{how}");
        let webhook: Value =
            serde_yaml_ng::from_str(data["webhook.kubeconfig"].as_str().unwrap()).unwrap();
        let webhook_cert = webhook["users"][0]["user"]["client-certificate-data"]
            .as_str()
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap());
        assert_eq!(
            webhook_cert.as_deref(),
            Some(cert.as_bytes()),
            "{how}: the webhook kubeconfig's certificate"
        );
        let as_apiserver = client(&server_ca, Some((&cert, &key)), true);
        // One event per way (the spool keeps an (auditID, stage) once).
        let own_batch =
            serde_json::to_vec(&event_list(&[event(how, "get", "pods", "Metadata")])).unwrap();
        assert_eq!(
            post(&as_apiserver, &format!("{server}?timeout=30s"), &own_batch).await,
            Some(200),
            "{how}: the rendered audit kubeconfig on /audit\n{}",
            gw.logs().join("\n")
        );
    }
    let out = dir.path("echo.jsonl");
    eventually(
        Some(&gw),
        "both batches at the sink",
        Duration::from_secs(20),
        || lines(&out).len() == 2,
    )
    .await;

    // A certificate from another CA (even with CN kube-apiserver): refused on /audit, and
    // refused by manifests with the reason.
    let intruder = client_signed_by(&other_ca, "kube-apiserver");
    let as_intruder = client(&gw.pki.ca, Some((&intruder.0, &intruder.1)), true);
    assert_eq!(
        post(&as_intruder, &gw.url("/audit"), &batch).await,
        None,
        "a certificate from another CA reached /audit"
    );
    let anonymous = client(&gw.pki.ca, None, true);
    assert_eq!(post(&anonymous, &gw.url("/audit"), &batch).await, Some(401));
    std::fs::write(dir.path("intruder.crt"), &intruder.0).unwrap();
    std::fs::write(dir.path("intruder.key"), &intruder.1).unwrap();
    let (code, stderr) = manifests(
        &[
            &base[..],
            &[
                "--client-cert",
                &dir.at("intruder.crt"),
                "--client-key",
                &dir.at("intruder.key"),
            ],
        ]
        .concat(),
    )
    .unwrap_err();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("intruder.crt") && stderr.contains("not one the CA accepts"),
        "{stderr}"
    );
    // The operator's certificate with another key.
    let (code, stderr) = manifests(
        &[
            &base[..],
            &[
                "--client-cert",
                &dir.at("own.crt"),
                "--client-key",
                &dir.at("intruder.key"),
            ],
        ]
        .concat(),
    )
    .unwrap_err();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("does not belong to the client certificate"),
        "{stderr}"
    );
    // A CA key that is not the CA certificate's.
    std::fs::write(dir.path("other.key"), &other_ca.1).unwrap();
    let (code, stderr) = manifests(
        &[
            &base[..],
            &["--apiserver-client-ca-key", &dir.at("other.key")],
        ]
        .concat(),
    )
    .unwrap_err();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("the CA key does not belong to the CA certificate"),
        "{stderr}"
    );
    // A serving-only certificate of the right CA is no client certificate.
    let serving = client_signed_by_for(&ca, "kube-apiserver", ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.path("serving.crt"), &serving.0).unwrap();
    std::fs::write(dir.path("serving.key"), &serving.1).unwrap();
    let (code, stderr) = manifests(
        &[
            &base[..],
            &[
                "--client-cert",
                &dir.at("serving.crt"),
                "--client-key",
                &dir.at("serving.key"),
            ],
        ]
        .concat(),
    )
    .unwrap_err();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not one the CA accepts"), "{stderr}");
    // The CA without its key or a certificate: what to pass.
    let (code, stderr) = manifests(&base).unwrap_err();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--apiserver-client-ca-key"), "{stderr}");
    // A certificate without the CA that signed it.
    let (code, stderr) = manifests(&[
        "--kind",
        "apiserver-client",
        "--client-cert",
        &dir.at("own.crt"),
        "--client-key",
        &dir.at("own.key"),
    ])
    .unwrap_err();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("needs --apiserver-client-ca"), "{stderr}");
}
