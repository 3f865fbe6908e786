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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use intake::{IntakeError, IntakeReport, MAX_MALFORMED_LOGGED};
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
    tasks: tokio::sync::Mutex<HashMap<String, JoinHandle<()>>>,
    stats_task: JoinHandle<()>,
}

impl AuditService {
    /// Opens the spool (blocking: it checks every record; call it off the async workers, e.g.
    /// in `block_in_place`) and starts a task per sink, each from its saved cursor.
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
            tasks: tokio::sync::Mutex::new(HashMap::new()),
            stats_task,
        });
        service.reconfigure(sinks).await;
        Ok(service)
    }

    /// Applies a new set of sinks: new ones start at the end of the spool (they see what is
    /// accepted from now on), removed ones stop, and the others take the new configuration from
    /// their next record on.
    pub async fn reconfigure(&self, sinks: Sinks) {
        let mut tasks = self.tasks.lock().await;
        let spool = self.shared.spool.clone();
        let names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
        // Every sink's saved position, so that the writer keeps what each still needs (a
        // saved cursor is never ahead of the sink, so this errs on the side of keeping).
        let positions = tokio::task::block_in_place(|| {
            names
                .iter()
                .filter_map(|name| match spool.load_cursor(name) {
                    Ok(cursor) => Some((name.clone(), cursor.at)),
                    Err(e) => {
                        tracing::error!(sink = %name, "cannot load the audit cursor: {e}");
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        self.shared.sinks.store(Arc::new(sinks));
        spool.set_sinks(positions);
        tasks.retain(|name, task| {
            let keep = names.contains(name);
            if !keep {
                task.abort();
            }
            keep
        });
        for name in names {
            tasks
                .entry(name.clone())
                .or_insert_with(|| tokio::spawn(sink::run(name.into(), self.shared.clone())));
        }
    }

    /// Takes one EventList body: answered `Ok` only once its events are in the spool.
    pub async fn intake(
        &self,
        body: Bytes,
        deadline: Instant,
    ) -> Result<IntakeReport, IntakeError> {
        let result = intake::take(
            &self.shared.spool,
            &self.shared.metrics.audit,
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
        if let Ok(tasks) = self.tasks.try_lock() {
            for task in tasks.values() {
                task.abort();
            }
        }
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
