//! The Kafka output: each line becomes one record of a topic, produced by librdkafka (through
//! `rdkafka`) with `acks=all` and idempotence, keyed by the event's auditID, namespace or user.
//! A write returns once the broker has acknowledged every record of it, or fails with the first
//! line it did not acknowledge (the sink retries from there: at least once). Owns the producer
//! and its settings; knows nothing of sinks, the spool or cursors.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use tokio::sync::Notify;

use super::OutputError;
use crate::config::{KafkaKey, KafkaSpec};

/// How long librdkafka keeps trying one record (broker down, topic missing, leader moving)
/// before it reports it failed; the sink then waits its backoff and writes the batch again.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write waits for room in the producer's queue before it gives up for now.
const QUEUE_WAIT: Duration = Duration::from_millis(5);

/// A Kafka output: the producer is made on first write, and made again (credentials, CA and
/// client certificate read from their files again) after a write that failed.
pub struct KafkaOutput {
    spec: KafkaSpec,
    producer: Option<(FutureProducer<Context>, Arc<Errors>)>,
}

/// What librdkafka reported outside any one record (a refused login, a failed TLS handshake, a
/// broker down): logged, kept for the error of the write it fails, and, for an authentication
/// or TLS failure, which no retry of librdkafka's own can fix, ending that write at once.
#[derive(Default)]
struct Errors {
    last: ArcSwapOption<String>,
    fatal: Notify,
}

/// The producer's context: it reports librdkafka's errors with the output's topic.
struct Context {
    topic: String,
    errors: Arc<Errors>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        // A TLS alert after the handshake (TLS 1.3: the broker refusing the client certificate)
        // comes as a transport error with OpenSSL's text.
        let fatal = matches!(
            code,
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
            )
        ) || reason.contains("SSL routines");
        let what = if fatal {
            "authentication or TLS failed"
        } else {
            "broker error"
        };
        let message = format!("{what}: {reason}");
        tracing::warn!(topic = %self.topic, "kafka output: {message}");
        // "1/1 brokers are down" follows every failed connection: it must not hide why.
        let vague = code == Some(RDKafkaErrorCode::AllBrokersDown);
        if !(vague && self.errors.last.load().is_some()) {
            self.errors.last.store(Some(Arc::new(message)));
        }
        if fatal {
            self.errors.fatal.notify_one();
        }
    }
}

impl Errors {
    /// The last error reported, for the message of a failed write.
    fn last(&self) -> String {
        match &*self.last.load() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        }
    }
}

impl KafkaOutput {
    pub fn new(spec: KafkaSpec) -> KafkaOutput {
        KafkaOutput {
            spec,
            producer: None,
        }
    }

    /// Produces `lines[*done..]`, advancing `done` past the lines the broker acknowledged, in
    /// order: on failure, `done` is the first line not known to be acknowledged.
    pub async fn write(&mut self, lines: &[String], done: &mut usize) -> Result<(), OutputError> {
        let written = self.produce(lines, done).await;
        if written.is_err() {
            // Made again for the retry, with the credential and certificate files as they are
            // then: fixing a file is enough.
            self.producer = None;
        }
        written
    }

    async fn produce(&mut self, lines: &[String], done: &mut usize) -> Result<(), OutputError> {
        let (producer, errors) = match &self.producer {
            Some(p) => p,
            None => self
                .producer
                .insert(producer(&self.spec).map_err(OutputError::transient)?),
        };
        let errors = errors.clone();
        let topic = self.spec.topic.as_str();
        let mut deliveries = Vec::with_capacity(lines.len() - *done);
        for line in &lines[*done..] {
            let key = key(self.spec.key, line);
            let mut record = FutureRecord::to(topic).payload(line.as_bytes());
            if let Some(key) = &key {
                record = record.key(key.as_bytes());
            }
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(QUEUE_WAIT).await;
                    }
                    Err((e, _)) => {
                        // Wait for what was queued, so `done` counts what the broker took.
                        wait(deliveries, done, &errors, topic).await?;
                        return Err(OutputError::transient(format!(
                            "kafka {topic}: {e}{}",
                            errors.last()
                        )));
                    }
                }
            }
        }
        wait(deliveries, done, &errors, topic).await
    }
}

/// Waits for the deliveries (in order), advancing `done` past each acknowledged one until the
/// first failure; or until librdkafka reports an authentication or TLS failure (see
/// [`Errors`]): records it has not acknowledged by then are written again.
async fn wait(
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
    done: &mut usize,
    errors: &Errors,
    topic: &str,
) -> Result<(), OutputError> {
    tokio::select! {
        biased;
        waited = wait_all(deliveries, done) => waited.map_err(|e| {
            OutputError::transient(format!("kafka {topic}: {e}{}", errors.last()))
        }),
        () = errors.fatal.notified() => Err(OutputError::transient(format!(
            "kafka {topic}: not delivered{}",
            errors.last()
        ))),
    }
}

async fn wait_all(
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
    done: &mut usize,
) -> Result<(), String> {
    let mut failure = None;
    for delivery in deliveries {
        let result = match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e.to_string()),
            Err(_canceled) => Err("the producer went away".to_owned()),
        };
        match (result, &failure) {
            (Ok(()), None) => *done += 1,
            (Err(e), None) => failure = Some(e),
            _ => {}
        }
    }
    match failure {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// The fields a key may come from, borrowed from the line.
#[derive(Deserialize)]
struct Keys<'a> {
    #[serde(rename = "auditID", borrow, default)]
    audit_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "objectRef", borrow, default)]
    object_ref: Option<Namespace<'a>>,
    #[serde(borrow, default)]
    user: Option<User<'a>>,
}

#[derive(Deserialize)]
struct Namespace<'a> {
    #[serde(borrow, default)]
    namespace: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct User<'a> {
    #[serde(borrow, default)]
    username: Option<std::borrow::Cow<'a, str>>,
}

/// The record key of `line` (an `audit.k8s.io/v1` Event as the sink wrote it): `None` (no key,
/// any partition) when the line is not such an event or has no such field.
pub fn key(which: KafkaKey, line: &str) -> Option<String> {
    let keys: Keys<'_> = serde_json::from_str(line).ok()?;
    let value = match which {
        KafkaKey::AuditId => keys.audit_id,
        KafkaKey::Namespace => keys.object_ref.and_then(|o| o.namespace),
        KafkaKey::User => keys.user.and_then(|u| u.username),
    }?;
    (!value.is_empty()).then(|| value.into_owned())
}

/// A file's contents without the trailing line break, for credentials.
fn secret(path: &Path, what: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return Err(format!("{what} {} is empty", path.display()));
    }
    Ok(text.to_owned())
}

/// The producer for `spec`: idempotent, `acks=all`, TLS and SASL as configured (credentials read
/// from their files now).
fn producer(spec: &KafkaSpec) -> Result<(FutureProducer<Context>, Arc<Errors>), String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", spec.bootstrap_servers.join(","))
        .set("client.id", "wasmgate")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set(
            "message.timeout.ms",
            MESSAGE_TIMEOUT.as_millis().to_string(),
        )
        // A batch is a few hundred records of a few KB: send it without lingering.
        .set("linger.ms", "5")
        // No topic is created by writing to it: a missing topic is an error, retried (after
        // 10 s without it, rather than librdkafka's 30).
        .set("allow.auto.create.topics", "false")
        .set("topic.metadata.propagation.max.ms", "10000");
    let tls = spec.ca_file.is_some() || spec.cert_file.is_some();
    let protocol = match (tls, spec.sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if let Some(ca) = &spec.ca_file {
        config.set("ssl.ca.location", ca.display().to_string());
    }
    if let (Some(cert), Some(key)) = (&spec.cert_file, &spec.key_file) {
        config
            .set("ssl.certificate.location", cert.display().to_string())
            .set("ssl.key.location", key.display().to_string());
    }
    if let Some(sasl) = &spec.sasl {
        config
            .set("sasl.mechanism", sasl.mechanism.as_str())
            .set(
                "sasl.username",
                secret(&sasl.username_file, "sasl.usernameFile")?,
            )
            .set(
                "sasl.password",
                secret(&sasl.password_file, "sasl.passwordFile")?,
            );
    }
    let errors = Arc::<Errors>::default();
    let context = Context {
        topic: spec.topic.clone(),
        errors: errors.clone(),
    };
    let producer = config
        .create_with_context(context)
        .map_err(|e| format!("kafka producer for {}: {e}", spec.topic))?;
    Ok((producer, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_event_line() {
        let line = r#"{"kind":"Event","auditID":"a-1","user":{"username":"alice","groups":["g"]},"objectRef":{"resource":"pods","namespace":"team-a"},"requestObject":{"x":"y"}}"#;
        assert_eq!(key(KafkaKey::AuditId, line).as_deref(), Some("a-1"));
        assert_eq!(key(KafkaKey::Namespace, line).as_deref(), Some("team-a"));
        assert_eq!(key(KafkaKey::User, line).as_deref(), Some("alice"));
        let cluster = r#"{"auditID":"a-2","objectRef":{"resource":"nodes"}}"#;
        assert_eq!(key(KafkaKey::Namespace, cluster), None);
        assert_eq!(key(KafkaKey::User, cluster), None);
        assert_eq!(key(KafkaKey::AuditId, "not json"), None);
        let escaped = r#"{"auditID":"a\"3"}"#;
        assert_eq!(key(KafkaKey::AuditId, escaped).as_deref(), Some("a\"3"));
    }
}
