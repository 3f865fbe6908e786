//! The Kafka output against a real broker (issue 17): Apache Kafka in KRaft mode, one node on
//! loopback, run from its jars (`tests/e2e/fetch-kafka`, cached by version) with the machine's
//! Java, started and stopped here. Records are read back with librdkafka's consumer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::audit::{
    ALL, Dir, event, event_list, eventually, file_output, free_port, lines, metric_now, post, sink,
    sinks_file, start,
};
use crate::harness::{Gateway, repo};

/// The broker's jars, fetched (once, then cached) by `tests/e2e/fetch-kafka`.
fn libs() -> PathBuf {
    let out = Command::new(repo().join("tests/e2e/fetch-kafka"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/e2e/fetch-kafka");
    assert!(out.status.success(), "tests/e2e/fetch-kafka failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// One Kafka broker (and its KRaft controller) on loopback, killed when dropped.
pub(crate) struct Broker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    classpath: String,
    /// The TLS and SASL listeners, when started with [`Broker::start_secure`].
    secure: Option<Secure>,
}

/// A broker's TLS listeners and the files a client needs for them (all in the broker's
/// directory, made by the test: certificates by rcgen, PEM, which Kafka reads as keystore and
/// truststore of type PEM).
pub(crate) struct Secure {
    /// `SSL` listener: TLS with a client certificate required.
    pub(crate) ssl_port: u16,
    /// `SASL_SSL` listener: TLS (no client certificate), SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub(crate) sasl_port: u16,
    /// The CA that signed the broker's certificate.
    pub(crate) ca: PathBuf,
    /// A client certificate and key the broker trusts.
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    /// A CA that did not sign the broker's certificate.
    pub(crate) other_ca: PathBuf,
}

/// The SCRAM user the secure broker's storage is formatted with (credentials for SCRAM-SHA-256
/// and SCRAM-SHA-512), and the PLAIN one its JAAS configuration names.
pub(crate) const SCRAM_USER: (&str, &str) = ("scram-user", "scram-secret-1");
pub(crate) const PLAIN_USER: (&str, &str) = ("plain-user", "plain-secret-1");

impl Broker {
    /// Formats a fresh log directory and starts the broker; returns once it answers.
    pub(crate) fn start() -> Broker {
        Self::launch(false)
    }

    /// [`Broker::start`] with an `SSL` listener (client certificate required) and a `SASL_SSL`
    /// one (SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN) beside the plaintext one (which the tests' own admin and
    /// consumer use).
    pub(crate) fn start_secure() -> Broker {
        Self::launch(true)
    }

    fn launch(secure: bool) -> Broker {
        let classpath = format!("{}/*", libs().display());
        let dir = tempfile::tempdir().unwrap();
        let (port, controller) = (free_port(), free_port());
        let config = dir.path().join("server.properties");
        let mut properties = format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
             log.dirs={}\nnum.partitions=3\nauto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
            dir.path().join("logs").display()
        );
        let secure = secure.then(|| {
            let file = |name: &str, text: &str| {
                let path = dir.path().join(name);
                std::fs::write(&path, text).unwrap();
                path
            };
            let (ca, cert, key) = wasmgate::server::tls::generate(&["127.0.0.1"]).unwrap();
            let (client_ca, client_cert, client_key) =
                wasmgate::server::tls::generate_client("wasmgate").unwrap();
            let (other_ca, _, _) = wasmgate::server::tls::generate(&["127.0.0.1"]).unwrap();
            let secure = Secure {
                ssl_port: free_port(),
                sasl_port: free_port(),
                ca: file("ca.pem", &ca),
                client_cert: file("client.pem", &client_cert),
                client_key: file("client-key.pem", &client_key),
                other_ca: file("other-ca.pem", &other_ca),
            };
            let keystore = file("broker.pem", &format!("{key}{cert}"));
            let truststore = file("client-ca.pem", &client_ca);
            let (ssl, sasl) = (secure.ssl_port, secure.sasl_port);
            let (plain_name, plain_password) = PLAIN_USER;
            properties.push_str(&format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},\
                 SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl},\
                 SASL_SSL://127.0.0.1:{sasl}\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,\
                 SSL:SSL,SASL_SSL:SASL_SSL\n\
                 ssl.keystore.type=PEM\nssl.keystore.location={}\n\
                 ssl.truststore.type=PEM\nssl.truststore.location={}\n\
                 listener.name.ssl.ssl.client.auth=required\n\
                 sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN\n\
                 listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=\
                 org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
                 listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
                 org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
                 listener.name.sasl_ssl.plain.sasl.jaas.config=\
                 org.apache.kafka.common.security.plain.PlainLoginModule required \
                 user_{plain_name}=\"{plain_password}\";\n",
                keystore.display(),
                truststore.display(),
            ));
            secure
        });
        if secure.is_none() {
            properties.push_str(&format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
            ));
        }
        std::fs::write(&config, properties).unwrap();
        // A cluster id: 16 random bytes, base64url without padding (what `random-uuid` prints).
        let id = {
            use base64::Engine;
            let mut bytes = [0u8; 16];
            let seed = std::collections::hash_map::RandomState::new();
            for (i, chunk) in bytes.chunks_mut(8).enumerate() {
                use std::hash::{BuildHasher, Hasher};
                let mut h = seed.build_hasher();
                h.write_usize(i);
                h.write_u128(Instant::now().elapsed().as_nanos() + u128::from(port));
                chunk.copy_from_slice(&h.finish().to_le_bytes());
            }
            // Not starting with `-` (one id in 64 did: `-t -Ab…` is then read as an option and
            // the format fails, "argument --cluster-id/-t: expected one argument"); Kafka's own
            // `random-uuid` redraws such ids.
            bytes[0] &= 0x7f;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        let format = Command::new("java")
            .args([
                "-Xmx256m",
                "-cp",
                &classpath,
                "kafka.tools.StorageTool",
                "format",
            ])
            .args(["-t", &id, "-c"])
            .arg(&config)
            .args(secure.iter().flat_map(|_| {
                let (name, password) = SCRAM_USER;
                ["SCRAM-SHA-256", "SCRAM-SHA-512"]
                    .into_iter()
                    .flat_map(move |mechanism| {
                        [
                            "--add-scram".to_owned(),
                            format!("{mechanism}=[name={name},password={password}]"),
                        ]
                    })
            }))
            .output()
            .expect("run java");
        assert!(
            format.status.success(),
            "kafka storage format failed: {}{}",
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        );
        let mut broker = Broker {
            child: None,
            dir,
            port,
            classpath,
            secure,
        };
        broker.run();
        broker
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .unwrap();
        let child = Command::new("java")
            .args([
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-cp",
                &self.classpath,
            ])
            .arg("kafka.Kafka")
            .arg(self.dir.path().join("server.properties"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the kafka broker");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(90);
        let ports = [self.port]
            .into_iter()
            .chain(self.secure.iter().flat_map(|s| [s.ssl_port, s.sasl_port]));
        for port in ports {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < end,
                    "the broker did not listen on {port} in 90 s:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The TLS listeners of a broker started with [`Broker::start_secure`].
    pub(crate) fn secure(&self) -> &Secure {
        self.secure
            .as_ref()
            .expect("a broker started with start_secure")
    }

    /// A file in the broker's directory (credentials the tests write).
    pub(crate) fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// kill -9.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and log directory.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.run();
    }

    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub(crate) async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let result = admin.create_topics([&topic], &options).await;
            match result.as_deref() {
                Ok([Ok(_)]) => return,
                other if Instant::now() > end => {
                    panic!("cannot create topic {name}: {other:?}\n{}", self.log())
                }
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    /// Every record of `topic` (key, JSON value), reading until `want` are there or `limit`
    /// passes, then a moment longer for any extra (duplicates).
    pub(crate) fn records(
        &self,
        topic: &str,
        want: usize,
        limit: Duration,
    ) -> Vec<(Option<String>, Value)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "wasmgate-tests")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let mut records = Vec::new();
        let end = Instant::now() + limit;
        let mut extra_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now > end || extra_until.is_some_and(|t| now > t) {
                return records;
            }
            if records.len() >= want && extra_until.is_none() {
                extra_until = Some(now + Duration::from_secs(1));
            }
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.unwrap();
            let key = message
                .key()
                .map(|k| String::from_utf8(k.to_vec()).unwrap());
            let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
            records.push((key, value));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kafka_output(name: &str, broker: &Broker, topic: &str, key: &str) -> String {
    format!(
        "  - {{name: {name}, type: kafka, bootstrapServers: [\"{}\"], topic: {topic}, key: {key}}}\n",
        broker.bootstrap()
    )
}

/// A redact-secrets sink writing every event to one output.
fn redacting(name: &str, outputs: &str) -> String {
    sink(
        name,
        "redact-secrets",
        &format!("{ALL}settings: {{output: out}}\noutputs:\n{outputs}"),
    )
}

/// `n` events of batch `b`, from users and namespaces that vary.
fn batch(b: usize, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut e = event(&format!("b{b}-e{i}"), "get", "pods", "Metadata");
            e["user"]["username"] = json!(format!("user-{}", i % 5));
            e["objectRef"]["namespace"] = json!(format!("ns-{}", i % 7));
            e
        })
        .collect()
}

fn id_stage(value: &Value) -> (String, String) {
    (
        value["auditID"].as_str().unwrap_or_default().to_owned(),
        value["stage"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_records_arrive_keyed_by_audit_id_namespace_or_user() {
    let broker = Broker::start();
    for topic in ["by-id", "by-ns", "by-user"] {
        broker.create_topic(topic, 3).await;
    }
    let dir = Dir::new();
    let policy = sinks_file(&[
        redacting("by-id", &kafka_output("out", &broker, "by-id", "auditID")),
        redacting("by-ns", &kafka_output("out", &broker, "by-ns", "namespace")),
        redacting("by-user", &kafka_output("out", &broker, "by-user", "user")),
    ]);
    let spool = dir.at("spool");
    let gw = start(&policy, &["--spool-dir", spool.as_str()]);
    let mut sent = BTreeSet::new();
    for b in 0..5 {
        let events = batch(b, 40);
        sent.extend(events.iter().map(id_stage));
        let (status, body) = post(&gw, &event_list(&events)).await;
        assert_eq!(status, 200, "{body}");
    }
    for (topic, field) in [
        ("by-id", "/auditID"),
        ("by-ns", "/objectRef/namespace"),
        ("by-user", "/user/username"),
    ] {
        let records = broker.records(topic, sent.len(), Duration::from_secs(60));
        let got: BTreeSet<_> = records.iter().map(|(_, v)| id_stage(v)).collect();
        assert_eq!(got, sent, "topic {topic}\n{}", gw.logs().join("\n"));
        for (key, value) in &records {
            assert_eq!(
                key.as_deref(),
                value.pointer(field).and_then(Value::as_str),
                "topic {topic}: the key is the line's {field}"
            );
        }
    }
    assert_eq!(
        metric_now(
            &gw,
            "wasmgate_audit_sink_output_lines_total{sink=\"by-ns\",output=\"out\"}"
        ),
        Some(200.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_is_retried_counted_and_holds_back_no_other_sink() {
    let broker = Broker::start();
    let dir = Dir::new();
    let policy = sinks_file(&[
        redacting("to-kafka", &kafka_output("out", &broker, "late", "auditID")),
        redacting("to-file", &file_output("out", &dir.at("file.jsonl"))),
    ]);
    let spool = dir.at("spool");
    let gw = start(&policy, &["--spool-dir", spool.as_str()]);
    let events = batch(0, 50);
    let (status, body) = post(&gw, &event_list(&events)).await;
    assert_eq!(status, 200, "{body}");
    // The file sink is not held back by the Kafka one.
    eventually(
        Some(&gw),
        "the file sink delivers",
        Duration::from_secs(30),
        || lines(&dir.path("file.jsonl")).len() == 50,
    )
    .await;
    // The Kafka sink fails (no such topic), counted, and retried...
    eventually(
        Some(&gw),
        "a counted output failure",
        Duration::from_secs(90),
        || {
            metric_now(
                &gw,
                "wasmgate_audit_sink_output_failures_total{sink=\"to-kafka\",output=\"out\"}",
            )
            .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await;
    // ...until the topic exists.
    broker.create_topic("late", 3).await;
    let records = broker.records("late", 50, Duration::from_secs(120));
    let got: BTreeSet<_> = records.iter().map(|(_, v)| id_stage(v)).collect();
    let want: BTreeSet<_> = events.iter().map(id_stage).collect();
    assert_eq!(got, want, "{}", gw.logs().join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_killed_and_restarted_mid_delivery_loses_nothing_acknowledged() {
    let mut broker = Broker::start();
    broker.create_topic("audit", 3).await;
    let dir = Dir::new();
    let policy = sinks_file(&[redacting(
        "to-kafka",
        &kafka_output("out", &broker, "audit", "auditID"),
    )]);
    let spool = dir.at("spool");
    let gw = start(
        &policy,
        &["--spool-dir", spool.as_str(), "--fsync", "always"],
    );
    let mut sent = BTreeSet::new();
    for b in 0..30 {
        let events = batch(b, 50);
        sent.extend(events.iter().map(id_stage));
        let (status, body) = post(&gw, &event_list(&events)).await;
        assert_eq!(status, 200, "{body}");
        if b == 10 {
            broker.kill();
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    let records = broker.records("audit", sent.len(), Duration::from_secs(180));
    let got: BTreeSet<_> = records.iter().map(|(_, v)| id_stage(v)).collect();
    let missing: Vec<_> = sent.difference(&got).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events never reached Kafka (e.g. {missing:?})\n{}\n{}",
        sent.difference(&got).count(),
        sent.len(),
        gw.logs().join("\n"),
        broker.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_gateway_redelivers_at_most_the_batches_in_flight() {
    let broker = Broker::start();
    broker.create_topic("audit", 3).await;
    let dir = Dir::new();
    let in_flight = 2;
    let outputs = kafka_output("out", &broker, "audit", "auditID");
    let policy = sinks_file(&[sink(
        "to-kafka",
        "redact-secrets",
        &format!("{ALL}maxInFlight: {in_flight}\nsettings: {{output: out}}\noutputs:\n{outputs}"),
    )]);
    let spool = dir.at("spool");
    let args = ["--spool-dir", spool.as_str(), "--fsync", "always"];
    let gw = start(&policy, &args);
    let mut sent = BTreeSet::new();
    for b in 0..40 {
        let events = batch(b, 100);
        sent.extend(events.iter().map(id_stage));
        let (status, body) = post(&gw, &event_list(&events)).await;
        assert_eq!(status, 200, "{body}");
    }
    let delivered = |gw: &Gateway| {
        metric_now(
            gw,
            "wasmgate_audit_sink_output_lines_total{sink=\"to-kafka\",output=\"out\"}",
        )
        .unwrap_or(0.0)
    };
    eventually(
        Some(&gw),
        "some batches in Kafka",
        Duration::from_secs(60),
        || delivered(&gw) >= 500.0,
    )
    .await;
    drop(gw); // SIGKILL
    let gw = start(&policy, &args);
    let records = broker.records("audit", sent.len(), Duration::from_secs(120));
    drop(gw);
    let mut count = BTreeMap::<(String, String), usize>::new();
    for (_, value) in &records {
        *count.entry(id_stage(value)).or_default() += 1;
    }
    let got: BTreeSet<_> = count.keys().cloned().collect();
    assert_eq!(got, sent, "every acknowledged event reaches Kafka");
    let duplicates: usize = count.values().map(|n| n - 1).sum();
    eprintln!(
        "{} records, {duplicates} duplicates by (auditID, stage)",
        records.len()
    );
    // The batch being written, and the ones in flight behind it, at most: 100 events each.
    assert!(
        duplicates <= (in_flight + 1) * 100,
        "{duplicates} duplicates: more than the batches in flight at the kill"
    );
}

/// A `type: kafka` output to the secure broker's `port` with extra YAML fields.
fn secure_output(port: u16, topic: &str, extra: &str) -> String {
    format!(
        "  - {{name: out, type: kafka, bootstrapServers: [\"127.0.0.1:{port}\"], topic: {topic}, key: auditID, {extra}}}\n"
    )
}

/// `caFile`, `certFile`, `keyFile` of a TLS output.
fn tls_fields(ca: &std::path::Path, client: Option<&Secure>) -> String {
    let mut fields = format!("caFile: {:?}", ca.display().to_string());
    if let Some(s) = client {
        fields.push_str(&format!(
            ", certFile: {:?}, keyFile: {:?}",
            s.client_cert.display().to_string(),
            s.client_key.display().to_string()
        ));
    }
    fields
}

/// The `sasl` field of an output logging in as `user` with the password in `password_file`.
fn sasl_field(
    broker: &Broker,
    mechanism: &str,
    user: &str,
    password_file: &std::path::Path,
) -> String {
    let username_file = broker.file(&format!("{user}.name"), &format!("{user}\n"));
    format!(
        "sasl: {{mechanism: {mechanism}, usernameFile: {:?}, passwordFile: {:?}}}",
        username_file.display().to_string(),
        password_file.display().to_string()
    )
}

fn output_failures(gw: &Gateway, sink: &str) -> f64 {
    metric_now(
        gw,
        &format!("wasmgate_audit_sink_output_failures_total{{sink=\"{sink}\",output=\"out\"}}"),
    )
    .unwrap_or(0.0)
}

/// The (auditID, stage) of every record of `topic`, waiting for `want` of them.
fn arrived(broker: &Broker, topic: &str, want: usize) -> BTreeSet<(String, String)> {
    broker
        .records(topic, want, Duration::from_secs(120))
        .iter()
        .map(|(_, v)| id_stage(v))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_over_tls_with_a_client_certificate_and_over_sasl_scram_and_plain() {
    let broker = Broker::start_secure();
    let topics = ["tls", "scram", "scram256", "plain"];
    for topic in topics {
        broker.create_topic(topic, 3).await;
    }
    let s = broker.secure();
    let (scram_user, scram_password) = SCRAM_USER;
    let (plain_user, plain_password) = PLAIN_USER;
    let scram_password = broker.file("scram.password", scram_password);
    let scram = sasl_field(&broker, "SCRAM-SHA-512", scram_user, &scram_password);
    let scram256 = sasl_field(&broker, "SCRAM-SHA-256", scram_user, &scram_password);
    let plain = sasl_field(
        &broker,
        "PLAIN",
        plain_user,
        &broker.file("plain.password", &format!("{plain_password}\n")),
    );
    let ca_only = tls_fields(&s.ca, None);
    let policy = sinks_file(&[
        redacting(
            "tls",
            &secure_output(s.ssl_port, "tls", &tls_fields(&s.ca, Some(s))),
        ),
        redacting(
            "scram",
            &secure_output(s.sasl_port, "scram", &format!("{ca_only}, {scram}")),
        ),
        redacting(
            "scram256",
            &secure_output(s.sasl_port, "scram256", &format!("{ca_only}, {scram256}")),
        ),
        redacting(
            "plain",
            &secure_output(s.sasl_port, "plain", &format!("{ca_only}, {plain}")),
        ),
    ]);
    let spool = Dir::new().at("spool");
    let gw = start(&policy, &["--spool-dir", spool.as_str()]);
    let mut sent = BTreeSet::new();
    for b in 0..3 {
        let events = batch(b, 30);
        sent.extend(events.iter().map(id_stage));
        let (status, body) = post(&gw, &event_list(&events)).await;
        assert_eq!(status, 200, "{body}");
    }
    for topic in topics {
        assert_eq!(
            arrived(&broker, topic, sent.len()),
            sent,
            "topic {topic}\n{}\n{}",
            gw.logs().join("\n"),
            broker.log()
        );
        assert_eq!(output_failures(&gw, topic), 0.0, "sink {topic}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_a_wrong_ca_or_no_client_certificate_is_retried_counted_logged_and_fixed()
{
    let broker = Broker::start_secure();
    for topic in ["scram", "tls", "no-cert"] {
        broker.create_topic(topic, 3).await;
    }
    let s = broker.secure();
    let (user, password) = SCRAM_USER;
    let password_file = broker.file("scram.password", "not-the-password");
    let scram = format!(
        "{}, {}",
        tls_fields(&s.ca, None),
        sasl_field(&broker, "SCRAM-SHA-512", user, &password_file)
    );
    let policy = |tls_ca: &std::path::Path, client: Option<&Secure>| {
        sinks_file(&[
            redacting("scram", &secure_output(s.sasl_port, "scram", &scram)),
            redacting(
                "tls",
                &secure_output(s.ssl_port, "tls", &tls_fields(tls_ca, Some(s))),
            ),
            redacting(
                "no-cert",
                &secure_output(s.ssl_port, "no-cert", &tls_fields(&s.ca, client)),
            ),
        ])
    };
    let spool = Dir::new().at("spool");
    let gw = start(&policy(&s.other_ca, None), &["--spool-dir", spool.as_str()]);
    let events = batch(0, 40);
    let sent: BTreeSet<_> = events.iter().map(id_stage).collect();
    let (status, body) = post(&gw, &event_list(&events)).await;
    assert_eq!(status, 200, "{body}");
    // Each sink fails, is counted, and says why, more than once (it is retried).
    for sink in ["scram", "tls", "no-cert"] {
        eventually(
            Some(&gw),
            &format!("sink {sink} fails twice"),
            Duration::from_secs(90),
            || output_failures(&gw, sink) >= 2.0,
        )
        .await;
    }
    let logs = gw.logs().join("\n");
    let said = |sink: &str, words: &str| {
        gw.logs().iter().any(|l| {
            l.contains("audit output write failed, retrying")
                && l.contains(&format!("\"sink\":\"{sink}\""))
                && l.contains("authentication or TLS failed")
                && l.to_lowercase().contains(words)
        })
    };
    // librdkafka's reasons (OpenSSL's and the broker's words).
    assert!(said("scram", "invalid credentials"), "{logs}");
    assert!(said("tls", "certificate verify failed"), "{logs}");
    assert!(said("no-cert", "alert bad certificate"), "{logs}");
    for topic in ["scram", "tls", "no-cert"] {
        assert!(
            broker.records(topic, 1, Duration::from_secs(2)).is_empty(),
            "nothing reaches {topic} yet"
        );
    }
    // The password fixed in its file (read again at every retry); the CA and the client
    // certificate fixed by a reload of the policy file.
    std::fs::write(&password_file, password).unwrap();
    crate::harness::write_atomic(&gw.path("policies.yaml"), policy(&s.ca, Some(s)));
    for topic in ["scram", "tls", "no-cert"] {
        assert_eq!(
            arrived(&broker, topic, sent.len()),
            sent,
            "topic {topic}\n{}",
            gw.logs().join("\n")
        );
    }
}
