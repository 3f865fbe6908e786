//! Owns the audit webhook backend: intake (decode each event, deduplicate, append to the durable
//! spool, and only then acknowledge), routing each spooled event to each sink by the sink's
//! audit Policy rules, running sink plugins with retries, backoff and dead-lettering, and
//! writing their outputs. Must not make the HTTP answer wait on a sink: intake waits for the
//! spool only, and every sink follows the spool on its own task with its own cursor.

mod intake;
pub mod outputs;
pub mod route;
mod sink;
pub mod spool;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use intake::{
    BodySource, DEFAULT_MAX_EVENT, IntakeError, IntakeLimits, IntakeReport, MAX_BATCH_ITEMS,
    MAX_MALFORMED_LOGGED, MAX_RECORD_EVENTS,
};
pub use sink::{BACKOFF_INITIAL, BACKOFF_MAX, backoff};
pub use spool::{FsyncPolicy, Recovery, Spool, SpoolConfig, SpoolError};

use crate::policy::audit::SinkPolicy;
use crate::runtime::Plugin;
use crate::telemetry::Metrics;

/// How often the spool's size is copied into the metrics.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// The sinks of one configuration.
pub type Sinks = Vec<Arc<SinkPolicy<Plugin>>>;

/// What the sink tasks share.
pub(crate) struct Shared {
    spool: Arc<Spool>,
    sinks: ArcSwap<Sinks>,
    /// Bumped on every reconfiguration, so that a task whose sink is gone can wait for it.
    config: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn sink(&self, name: &str) -> Option<Arc<SinkPolicy<Plugin>>> {
        self.sinks.load().iter().find(|s| s.name == name).cloned()
    }
}

/// The running audit backend: the spool and one task per sink.
pub struct AuditService {
    shared: Arc<Shared>,
    /// Every sink a task was started for (a task outlives its sink's removal, idle, and takes
    /// up again if the sink comes back).
    started: ArcSwap<HashSet<String>>,
    runtime: tokio::runtime::Handle,
    stats_task: JoinHandle<()>,
    /// The spool's size when it last refused a batch as full (`u64::MAX`: not full), so that
    /// while nothing is freed, a batch is answered 503 before its body is read.
    full_at: std::sync::atomic::AtomicU64,
    /// The spool's size limit.
    spool_max: u64,
}

impl AuditService {
    /// Opens the spool (blocking: it checks every record) and starts a task per sink, each from
    /// its saved cursor. Needs the multi-threaded runtime.
    pub async fn start(
        config: &SpoolConfig,
        sinks: Sinks,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<AuditService>, SpoolError> {
        let (spool, recovery) = tokio::task::block_in_place(|| Spool::open(config))?;
        tracing::info!(
            spool = %config.dir.display(), records = recovery.records, events = recovery.events,
            dedup_keys = recovery.dedup_keys, truncated_bytes = recovery.truncated_bytes,
            corrupt_records = recovery.corrupt, fsync = ?config.fsync, max_bytes = config.max_bytes,
            "audit spool opened"
        );
        metrics.audit.spool_corrupt_records.inc_by(recovery.corrupt);
        let shared = Arc::new(Shared {
            spool: Arc::new(spool),
            sinks: ArcSwap::from_pointee(Vec::new()),
            config: watch::Sender::new(0),
            metrics,
        });
        let stats_task = tokio::spawn({
            let shared = shared.clone();
            async move {
                let mut tick = tokio::time::interval(STATS_INTERVAL);
                loop {
                    tick.tick().await;
                    publish_stats(&shared);
                }
            }
        });
        let service = Arc::new(AuditService {
            shared,
            started: ArcSwap::default(),
            runtime: tokio::runtime::Handle::current(),
            stats_task,
            full_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            spool_max: config.max_bytes,
        });
        tokio::task::block_in_place(|| service.reconfigure(sinks));
        Ok(service)
    }

    /// Applies a new set of sinks: new ones start at the end of the spool (they see what is
    /// accepted from now on), removed ones stop at their next batch (the spool no longer keeps
    /// events for them), and the others take the new configuration from their next batch on.
    /// Blocking: it reads the sinks' saved cursors.
    pub fn reconfigure(&self, sinks: Sinks) {
        let spool = &self.shared.spool;
        let names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
        // Every sink's saved position, so that the writer keeps what each still needs (a
        // saved cursor is never ahead of its sink, so this errs on the side of keeping).
        let positions = names
            .iter()
            .filter_map(|name| match spool.load_cursor(name) {
                Ok(cursor) => Some((name.clone(), cursor.at)),
                Err(e) => {
                    tracing::error!(sink = %name, "cannot load the audit cursor: {e}");
                    None
                }
            })
            .collect();
        self.shared.sinks.store(Arc::new(sinks));
        spool.set_sinks(positions);
        self.shared
            .config
            .send_modify(|generation| *generation += 1);
        let before = self.started.rcu(|started| {
            let mut all = HashSet::clone(started);
            all.extend(names.iter().cloned());
            all
        });
        for name in names.into_iter().filter(|n| !before.contains(n)) {
            self.runtime
                .spawn(sink::run(name.into(), self.shared.clone()));
        }
    }

    /// Takes one EventList body as it arrives: answered `Ok` only once its events are in the
    /// spool.
    pub async fn intake(
        &self,
        body: impl BodySource,
        limits: IntakeLimits,
        deadline: Instant,
    ) -> Result<IntakeReport, IntakeError> {
        let result = intake::take(
            &self.shared.spool,
            (&self.full_at, self.spool_max),
            &self.shared.metrics.audit,
            limits,
            body,
            deadline,
        )
        .await;
        publish_stats(&self.shared);
        result
    }

    /// The sinks' names, in configuration order.
    pub fn sink_names(&self) -> Vec<String> {
        self.shared
            .sinks
            .load()
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }
}

impl Drop for AuditService {
    fn drop(&mut self) {
        self.stats_task.abort();
    }
}

fn publish_stats(shared: &Shared) {
    let stats = shared.spool.stats();
    let audit = &shared.metrics.audit;
    audit
        .spool_bytes
        .set(i64::try_from(stats.bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    audit
        .spool_segments
        .set(i64::try_from(stats.segments.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
}
