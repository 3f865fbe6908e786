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
}

impl Broker {
    /// Formats a fresh log directory and starts the broker; returns once it answers.
    pub(crate) fn start() -> Broker {
        let classpath = format!("{}/*", libs().display());
        let dir = tempfile::tempdir().unwrap();
        let (port, controller) = (free_port(), free_port());
        let config = dir.path().join("server.properties");
        std::fs::write(
            &config,
            format!(
                "process.roles=broker,controller\nnode.id=1\n\
                 controller.quorum.voters=1@127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={}\nnum.partitions=3\nauto.create.topics.enable=false\n\
                 offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
                dir.path().join("logs").display()
            ),
        )
        .unwrap();
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
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "the broker did not listen in 90 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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
