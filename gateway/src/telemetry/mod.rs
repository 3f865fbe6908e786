//! Owns observability: the Prometheus registry and the metrics every module records into, and
//! log setup. Records; never decides.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    policy: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkReasonLabels {
    sink: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputLabels {
    sink: String,
    output: String,
}

fn batch_histogram() -> Histogram {
    // 100 µs to ~6.5 s: a spooled batch costs a write and usually an fsync (milliseconds).
    Histogram::new(exponential_buckets(0.000_1, 3.0, 11))
}

fn latency_histogram() -> Histogram {
    // 10 µs to ~2.6 s: plugin calls take microseconds, deadlines are seconds.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
}

/// The gateway's metrics. Cheap to share (`Arc`), lock-free to record.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    plugin_calls: Family<CallLabels, Counter>,
    plugin_seconds: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    snapshot_generation: Gauge,
    snapshot_info: Family<HashLabels, Gauge>,
    policies: Gauge,
    reload_attempts: Counter,
    reloads: Family<ReloadLabels, Counter>,
    reload_seconds: Histogram,
    tls_reload_failures: Counter,
    runtime: Arc<RuntimeCollector>,
    /// The connection metrics.
    pub connections: ConnMetrics,
    /// The audit metrics.
    pub audit: AuditMetrics,
    /// The context caches' metrics.
    pub context: ContextMetrics,
    /// The background scans' metrics.
    pub reports: ReportMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScanLabels {
    policy: String,
}

/// The background scans (policies with `background: true`): per policy, the objects the last
/// scan evaluated, the violations it found, how long it took; and report writes.
pub struct ReportMetrics {
    objects: Family<ScanLabels, Gauge>,
    violations: Family<ScanLabels, Gauge>,
    seconds: Family<ScanLabels, Histogram, fn() -> Histogram>,
    writes: Family<ReasonLabels, Counter>,
}

impl ReportMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = ReportMetrics {
            objects: Family::default(),
            violations: Family::default(),
            seconds: Family::new_with_constructor(|| {
                // 1 ms to ~4.6 min: a scan calls the plugin once per object.
                Histogram::new(exponential_buckets(0.001, 4.0, 10))
            }),
            writes: Family::default(),
        };
        registry.register(
            "background_scan_objects",
            "Objects the latest background scan of a policy evaluated",
            m.objects.clone(),
        );
        registry.register(
            "background_scan_violations",
            "Objects the latest background scan of a policy found failing (fail, warn or error)",
            m.violations.clone(),
        );
        registry.register(
            "background_scan_seconds",
            "Duration of a policy's background scans",
            m.seconds.clone(),
        );
        registry.register(
            "report_writes",
            "OpenReports objects written (applied, deleted), left unchanged, or failed",
            m.writes.clone(),
        );
        m
    }

    /// A policy's scan ended.
    pub fn scanned(&self, policy: &str, objects: usize, violations: usize, elapsed: Duration) {
        let labels = ScanLabels {
            policy: policy.to_owned(),
        };
        self.objects.get_or_create(&labels).set(objects as i64);
        self.violations
            .get_or_create(&labels)
            .set(violations as i64);
        self.seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A policy no longer scans.
    pub fn remove(&self, policy: &str) {
        let labels = ScanLabels {
            policy: policy.to_owned(),
        };
        self.objects.remove(&labels);
        self.violations.remove(&labels);
        self.seconds.remove(&labels);
    }

    /// A report was `applied`, `deleted`, `unchanged` or `failed`.
    pub fn write(&self, reason: &'static str) {
        self.writes.get_or_create(&ReasonLabels { reason }).inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

/// The context caches: objects and bytes each holds, and how often one went over its cap.
pub struct ContextMetrics {
    objects: Family<ResourceLabels, Gauge>,
    bytes: Family<ResourceLabels, Gauge>,
    overflows: Family<ResourceLabels, Counter>,
}

impl ContextMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = ContextMetrics {
            objects: Family::default(),
            bytes: Family::default(),
            overflows: Family::default(),
        };
        registry.register(
            "context_cache_objects",
            "Objects held by the context cache of a resource",
            m.objects.clone(),
        );
        registry.register(
            "context_cache_bytes",
            "Bytes of projected JSON (and labels) held by the context cache of a resource",
            m.bytes.clone(),
        );
        registry.register(
            "context_cache_overflows",
            "Times the context cache of a resource went over its cap (--context-max-objects, --context-max-bytes) and was emptied",
            m.overflows.clone(),
        );
        m
    }

    /// A cache's size now.
    pub fn size(&self, resource: &str, objects: usize, bytes: usize) {
        let labels = ResourceLabels {
            resource: resource.to_owned(),
        };
        self.objects.get_or_create(&labels).set(objects as i64);
        self.bytes.get_or_create(&labels).set(bytes as i64);
    }

    /// A cache went over its cap.
    pub fn overflowed(&self, resource: &str) {
        self.overflows
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .inc();
    }

    /// A cache was stopped.
    pub fn remove(&self, resource: &str) {
        let labels = ResourceLabels {
            resource: resource.to_owned(),
        };
        self.objects.remove(&labels);
        self.bytes.remove(&labels);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The edge's metrics: connections open, refused at the cap, closed and why (each timeout
/// apart), and request bodies cut off by a timeout.
pub struct ConnMetrics {
    open: Gauge,
    refused: Counter,
    closed: Family<ReasonLabels, Counter>,
    body_timeouts: Family<ReasonLabels, Counter>,
}

impl ConnMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = ConnMetrics {
            open: Gauge::default(),
            refused: Counter::default(),
            closed: Family::default(),
            body_timeouts: Family::default(),
        };
        registry.register(
            "connections_open",
            "Client connections open (TLS handshake included)",
            m.open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at accept because --max-connections were open",
            m.refused.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed, by reason (handshake_timeout, handshake_failed, first_bytes_timeout, header_timeout, idle_timeout, max_age, cancelled_requests, shutdown, client, error)",
            m.closed.clone(),
        );
        registry.register(
            "request_body_timeouts",
            "Request bodies cut off with 408, by reason (min_rate: slower than the minimum body rate; deadline: not all there by the request's deadline)",
            m.body_timeouts.clone(),
        );
        m
    }

    /// A connection was accepted.
    pub fn opened(&self) {
        self.open.inc();
    }

    /// A connection was refused at the cap.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// An accepted connection closed, for `reason`.
    pub fn closed(&self, reason: &'static str) {
        self.open.dec();
        self.closed.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A request body was cut off by a timeout.
    pub fn body_timed_out(&self, reason: &'static str) {
        self.body_timeouts
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabels {
    content_hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// The audit webhook's metrics: intake, spool, and per sink.
pub struct AuditMetrics {
    requests: Family<ResultLabels, Counter>,
    request_seconds: Histogram,
    /// Events in the EventLists received (well-formed or not).
    pub events_received: Counter,
    /// Events written to the spool.
    pub events_spooled: Counter,
    /// Events dropped because the same event was already spooled (a re-sent batch).
    pub events_deduplicated: Counter,
    /// Events that could not be decoded and were skipped (the rest of their batch was kept).
    pub events_malformed: Counter,
    /// Bytes in spool segments.
    pub spool_bytes: Gauge,
    /// Spool segment files.
    pub spool_segments: Gauge,
    /// Spool records found corrupt (on disk) and skipped.
    pub spool_corrupt_records: Counter,
    /// Bytes in dead-letter files.
    pub dead_letter_bytes: Gauge,
    cursor_errors: Family<SinkLabels, Counter>,
    dead_letter_dropped: Family<SinkLabels, Counter>,
    delivered: Family<SinkLabels, Counter>,
    filtered: Family<SinkLabels, Counter>,
    failures: Family<SinkReasonLabels, Counter>,
    dead_lettered: Family<SinkLabels, Counter>,
    lag: Family<SinkLabels, Gauge>,
    output_lines: Family<OutputLabels, Counter>,
    output_failures: Family<OutputLabels, Counter>,
}

impl AuditMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = AuditMetrics {
            requests: Family::default(),
            request_seconds: batch_histogram(),
            events_received: Counter::default(),
            events_spooled: Counter::default(),
            events_deduplicated: Counter::default(),
            events_malformed: Counter::default(),
            spool_bytes: Gauge::default(),
            spool_segments: Gauge::default(),
            spool_corrupt_records: Counter::default(),
            dead_letter_bytes: Gauge::default(),
            cursor_errors: Family::default(),
            dead_letter_dropped: Family::default(),
            delivered: Family::default(),
            filtered: Family::default(),
            failures: Family::default(),
            dead_lettered: Family::default(),
            lag: Family::default(),
            output_lines: Family::default(),
            output_failures: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("audit");
        r.register(
            "requests",
            "Audit batches answered, by result (accepted; spool_full, timeout, busy, error and shutting_down are 503s; bad_request, too_large, disabled; unauthenticated (401) and forbidden (403) without the audit client certificate)",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer an audit batch, spool write and sync included",
            m.request_seconds.clone(),
        );
        r.register(
            "events_received",
            "Audit events received",
            m.events_received.clone(),
        );
        r.register(
            "events_spooled",
            "Audit events written to the spool",
            m.events_spooled.clone(),
        );
        r.register(
            "events_deduplicated",
            "Audit events dropped because the same event was already spooled (re-sent batches)",
            m.events_deduplicated.clone(),
        );
        r.register(
            "events_malformed",
            "Audit events that could not be decoded and were skipped",
            m.events_malformed.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes in audit spool segments",
            m.spool_bytes.clone(),
        );
        r.register(
            "spool_segments",
            "Audit spool segment files",
            m.spool_segments.clone(),
        );
        r.register(
            "spool_corrupt_records",
            "Audit spool records found corrupt on disk and skipped",
            m.spool_corrupt_records.clone(),
        );
        r.register(
            "dead_letter_bytes",
            "Bytes in dead-letter files (counted against --spool-max-bytes)",
            m.dead_letter_bytes.clone(),
        );
        r.register(
            "sink_cursor_errors",
            "Sink cursors that could not be read (the sink delivered again from the oldest retained event)",
            m.cursor_errors.clone(),
        );
        r.register(
            "sink_events_dead_letter_dropped",
            "Events of failed batches dropped because the dead-letter budget was full (each one logged)",
            m.dead_letter_dropped.clone(),
        );
        r.register(
            "sink_events_delivered",
            "Events a sink's plugin took and whose lines reached the outputs",
            m.delivered.clone(),
        );
        r.register(
            "sink_events_filtered",
            "Events a sink's rules did not route to it (level None or an omitted stage)",
            m.filtered.clone(),
        );
        r.register(
            "sink_delivery_failures",
            "Failed sink calls and output writes, by reason (deadline, memory_limit, trap, error, invalid_output, host_error, output)",
            m.failures.clone(),
        );
        r.register(
            "sink_events_dead_lettered",
            "Events moved to a sink's dead-letter file after maxAttempts failures",
            m.dead_lettered.clone(),
        );
        r.register(
            "sink_lag_events",
            "Events spooled that a sink has not delivered yet",
            m.lag.clone(),
        );
        r.register(
            "sink_output_lines",
            "Lines written to a sink's output",
            m.output_lines.clone(),
        );
        r.register(
            "sink_output_failures",
            "Failed writes to a sink's output (each is retried)",
            m.output_failures.clone(),
        );
        m
    }

    /// One audit batch answered with `result`.
    pub fn request(&self, result: &'static str, elapsed: Duration) {
        self.requests.get_or_create(&ResultLabels { result }).inc();
        self.request_seconds.observe(elapsed.as_secs_f64());
    }

    /// `n` events of `sink` delivered.
    pub fn delivered(&self, sink: &str, n: u64) {
        self.delivered.get_or_create(&sink_labels(sink)).inc_by(n);
    }

    /// `n` events not routed to `sink`.
    pub fn filtered(&self, sink: &str, n: u64) {
        self.filtered.get_or_create(&sink_labels(sink)).inc_by(n);
    }

    /// One failed call or write of `sink`.
    pub fn failure(&self, sink: &str, reason: &'static str) {
        self.failures
            .get_or_create(&SinkReasonLabels {
                sink: sink.to_owned(),
                reason,
            })
            .inc();
    }

    /// `n` events of `sink` dead-lettered.
    pub fn dead_lettered(&self, sink: &str, n: u64) {
        self.dead_lettered
            .get_or_create(&sink_labels(sink))
            .inc_by(n);
    }

    /// A cursor of `sink` that could not be read.
    pub fn cursor_error(&self, sink: &str) {
        self.cursor_errors.get_or_create(&sink_labels(sink)).inc();
    }

    /// `n` events of `sink` not dead-lettered because the dead-letter budget is full.
    pub fn dead_letter_dropped(&self, sink: &str, n: u64) {
        self.dead_letter_dropped
            .get_or_create(&sink_labels(sink))
            .inc_by(n);
    }

    /// How far `sink` is behind.
    pub fn lag(&self, sink: &str, events: u64) {
        self.lag
            .get_or_create(&sink_labels(sink))
            .set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    /// `n` lines written to `output` of `sink`.
    pub fn output_lines(&self, sink: &str, output: &str, n: u64) {
        self.output_lines
            .get_or_create(&output_labels(sink, output))
            .inc_by(n);
    }

    /// A failed write to `output` of `sink`.
    pub fn output_failure(&self, sink: &str, output: &str) {
        self.output_failures
            .get_or_create(&output_labels(sink, output))
            .inc();
    }
}

fn sink_labels(sink: &str) -> SinkLabels {
    SinkLabels {
        sink: sink.to_owned(),
    }
}

fn output_labels(sink: &str, output: &str) -> OutputLabels {
    OutputLabels {
        sink: sink.to_owned(),
        output: output.to_owned(),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every wasmgate metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wasmgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let plugin_calls = Family::<CallLabels, Counter>::default();
        let plugin_seconds =
            Family::<PolicyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let snapshot_generation = Gauge::default();
        let snapshot_info = Family::<HashLabels, Gauge>::default();
        let policies = Gauge::default();
        let reload_attempts = Counter::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        // 1 ms to ~16 s: a Rust plugin swaps in milliseconds, a Python one compiles for seconds.
        let reload_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let tls_reload_failures = Counter::default();
        registry.register(
            "snapshot_info",
            "The serving snapshot's content hash (policy file and modules), as a label",
            snapshot_info.clone(),
        );
        registry.register(
            "reload_attempts",
            "Reloads attempted (a changed policy file, module or SIGHUP)",
            reload_attempts.clone(),
        );
        registry.register(
            "reloads",
            "Reload attempts by result (succeeded, failed)",
            reloads.clone(),
        );
        registry.register(
            "reload_to_serving_seconds",
            "Time from a file change to the new snapshot serving",
            reload_seconds.clone(),
        );
        registry.register(
            "tls_reload_failures",
            "Certificate reloads rejected (new connections keep the previous certificate)",
            tls_reload_failures.clone(),
        );
        registry.register(
            "admission_requests",
            "Admission reviews answered, by endpoint and result",
            requests.clone(),
        );
        registry.register(
            "admission_request_duration_seconds",
            "Time to answer an admission review",
            request_seconds.clone(),
        );
        registry.register("plugin_calls", "Plugin calls, by policy and outcome (ok, deadline, memory_limit, trap, error, invalid_output, host_error)", plugin_calls.clone());
        registry.register(
            "plugin_call_duration_seconds",
            "Fresh instance + call time of one plugin call",
            plugin_seconds.clone(),
        );
        registry.register(
            "snapshot_generation",
            "Generation of the policy snapshot serving requests",
            snapshot_generation.clone(),
        );
        registry.register(
            "policies",
            "Policies in the serving snapshot",
            policies.clone(),
        );
        let runtime = Arc::new(RuntimeCollector::default());
        registry.register_collector(Box::new(runtime.clone()));
        let audit = AuditMetrics::register(&mut registry);
        let connections = ConnMetrics::register(&mut registry);
        let context = ContextMetrics::register(&mut registry);
        let reports = ReportMetrics::register(&mut registry);
        Metrics {
            context,
            reports,
            audit,
            connections,
            registry,
            requests,
            request_seconds,
            plugin_calls,
            plugin_seconds,
            snapshot_generation,
            snapshot_info,
            policies,
            reload_attempts,
            reloads,
            reload_seconds,
            tls_reload_failures,
            runtime,
        }
    }

    /// Reports `counters` (the runtime's containment counts) on every scrape from now on.
    pub fn observe_runtime(&self, counters: Arc<crate::runtime::Counters>) {
        let _ = self.runtime.0.set(counters);
    }

    /// A snapshot started serving.
    pub fn snapshot_serving(&self, generation: u64, content_hash: &str, policies: usize) {
        self.snapshot_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.policies
            .set(i64::try_from(policies).unwrap_or(i64::MAX));
        self.snapshot_info.clear();
        self.snapshot_info
            .get_or_create(&HashLabels {
                content_hash: content_hash.to_owned(),
            })
            .set(1);
    }

    /// A reload was attempted.
    pub fn reload_attempt(&self) {
        self.reload_attempts.inc();
    }

    /// A reload swapped in a new snapshot, `since_change` after the change that caused it.
    pub fn reload_succeeded(&self, since_change: Duration) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: "succeeded",
            })
            .inc();
        self.reload_seconds.observe(since_change.as_secs_f64());
    }

    /// A reload was rejected.
    pub fn reload_failed(&self) {
        self.reloads
            .get_or_create(&ReloadLabels { result: "failed" })
            .inc();
    }

    /// A certificate reload was rejected.
    pub fn tls_reload_failed(&self) {
        self.tls_reload_failures.inc();
    }

    /// One admission review answered on `endpoint` (`validate`, `mutate`) with `result`
    /// (`allowed`, `denied`, `bad_request`, ...).
    pub fn request(&self, endpoint: &'static str, result: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, result })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    /// One plugin call of `policy` ended with `outcome`.
    pub fn plugin_call(&self, policy: &str, outcome: &'static str, elapsed: Duration) {
        self.plugin_calls
            .get_or_create(&CallLabels {
                policy: policy.to_owned(),
                outcome,
            })
            .inc();
        self.plugin_seconds
            .get_or_create(&PolicyLabels {
                policy: policy.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Sets up `tracing`: `RUST_LOG`-style filter (default `info`), JSON lines when `json` is set.
pub fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    init_with(filter, json);
}

/// Logs to stderr as text at `directives` (e.g. `warn`), whatever `RUST_LOG` says: for
/// commands whose output is their own report (`wasmgate test`).
pub fn init_logging_filtered(directives: &str) {
    init_with(tracing_subscriber::EnvFilter::new(directives), false);
}

fn init_with(filter: tracing_subscriber::EnvFilter, json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The runtime's per-policy counts, read on each scrape:
/// `wasmgate_plugin_slow_lane_starts_total`, `wasmgate_plugin_log_lines_dropped_total` and
/// `wasmgate_plugin_prepared_instance_calls_total`.
#[derive(Debug, Default)]
struct RuntimeCollector(OnceLock<Arc<crate::runtime::Counters>>);

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(counters) = self.0.get() else {
            return Ok(());
        };
        let counts = counters.read();
        type Value = fn(&crate::runtime::PolicyCount) -> u64;
        let families: [(&str, &str, Value); 3] = [
            (
                "plugin_slow_lane_starts",
                "Plugin calls started on the slow lane (low-priority threads) because the policy's previous call misbehaved (a trap, the memory cap, an invalid output, the per-call log limit) or ran long",
                |c| c.slow_lane_starts,
            ),
            (
                "plugin_log_lines_dropped",
                "Plugin log lines (host log, stdout, stderr) dropped by the per-call or per-policy-per-second limit",
                |c| c.log_lines_dropped,
            ),
            (
                "plugin_prepared_instance_calls",
                "Plugin calls that ran in a fresh instance made ahead of them, after the policy's previous call (the others instantiated on the request's path)",
                |c| c.prepared_instance_calls,
            ),
        ];
        for (name, help, value) in families {
            let metric = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            for count in &counts {
                let labels = PolicyLabels {
                    policy: count.policy.clone(),
                };
                ConstCounter::new(value(count)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
