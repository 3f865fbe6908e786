//! Owns the audit webhook backend: intake (decode each event, deduplicate, append to the durable
//! spool, and only then acknowledge), routing each spooled event to each sink by the sink's
//! audit Policy rules, running sink plugins with retries, backoff and dead-lettering, and
//! writing their outputs. Must not make the HTTP answer wait on a sink: intake waits for the
//! spool only, and every sink follows the spool on its own task with its own cursor. On
//! shutdown, [`AuditService::drain`] lets the sinks catch up for a bounded time and then stops
//! them between deliveries; what is left is resumed from the spool at the next start.

mod intake;
pub mod outputs;
pub mod route;
mod sink;
pub mod spool;

use std::collections::{BTreeMap, HashMap, HashSet};
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
pub use sink::{BACKOFF_INITIAL, BACKOFF_MAX, Emitted, backoff, offline};
pub use spool::{
    FsyncPolicy, Position, Recovery, Spool, SpoolConfig, SpoolError, default_dead_letter_max_bytes,
};

use crate::policy::audit::SinkPolicy;
use crate::runtime::Plugin;
use crate::telemetry::Metrics;

/// How often the spool's size is copied into the metrics (and the dead-letter files re-read).
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the drain looks at the sinks' progress when no new event arrives.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long the drain waits for stopped sinks to finish (an output write or plugin call that
/// is cut short is delivered again at restart).
const STOP_WAIT: Duration = Duration::from_secs(1);

/// Counts a sink task as running while it lives.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The sinks of one configuration.
pub type Sinks = Vec<Arc<SinkPolicy<Plugin>>>;

/// What the sink tasks share.
pub(crate) struct Shared {
    spool: Arc<Spool>,
    sinks: ArcSwap<Sinks>,
    /// Bumped on every reconfiguration, so that a task whose sink is gone can wait for it.
    config: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    /// Set when the sinks must stop (shutdown): each stops before its next delivery.
    stop: watch::Sender<bool>,
    /// Each sink's saved position, for the drain to see who has caught up.
    positions: ArcSwap<HashMap<String, Position>>,
    /// Problems a sink has had that people must see (`/readyz`): a cursor that could not be
    /// read, with what was done about it.
    errors: ArcSwap<BTreeMap<String, String>>,
    /// Sink tasks running, for the drain to wait until they have stopped.
    running: watch::Sender<usize>,
    /// Sinks whose last cursor save failed (logged once per streak).
    save_failing: ArcSwap<HashSet<String>>,
}

impl Shared {
    fn sink(&self, name: &str) -> Option<Arc<SinkPolicy<Plugin>>> {
        self.sinks.load().iter().find(|s| s.name == name).cloned()
    }

    fn saved(&self, name: &str, at: Position) {
        self.positions.rcu(|positions| {
            let mut next = HashMap::clone(positions);
            next.insert(name.to_owned(), at);
            next
        });
    }

    /// Records whether `name`'s last cursor save failed; returns whether the one before did.
    fn save_failing(&self, name: &str, failing: bool) -> bool {
        let before = self.save_failing.load().contains(name);
        if before != failing {
            self.save_failing.rcu(|set| {
                let mut next = HashSet::clone(set);
                if failing {
                    next.insert(name.to_owned());
                } else {
                    next.remove(name);
                }
                next
            });
        }
        before
    }

    fn sink_error(&self, name: &str, message: String) {
        self.errors.rcu(|errors| {
            let mut next = BTreeMap::clone(errors);
            next.insert(name.to_owned(), message.clone());
            next
        });
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
            stop: watch::Sender::new(false),
            positions: ArcSwap::default(),
            errors: ArcSwap::default(),
            running: watch::Sender::new(0),
            save_failing: ArcSwap::default(),
        });
        let stats_task = tokio::spawn({
            let shared = shared.clone();
            async move {
                let mut tick = tokio::time::interval(STATS_INTERVAL);
                loop {
                    tick.tick().await;
                    // Dead-letter files someone moved away free their budget.
                    let spool = shared.spool.clone();
                    let _ = tokio::task::spawn_blocking(move || spool.rescan_dead_letters()).await;
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
            .map(|name| match spool.load_cursor(name) {
                Ok(cursor) => (name.clone(), cursor.at),
                // Its task reports it; the spool keeps what the sink will deliver again.
                Err(e) => (name.clone(), e.fallback.at),
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
            let shared = self.shared.clone();
            shared.running.send_modify(|n| *n += 1);
            self.runtime.spawn(async move {
                let _running = Running(shared.clone());
                let mut stop = shared.stop.subscribe();
                let name: Arc<str> = name.into();
                tokio::select! {
                    () = sink::run(name.clone(), shared.clone()) => {}
                    // Between deliveries or in the middle of one: its cursor is saved after
                    // every piece, so at worst that piece is delivered again at restart.
                    _ = stop.wait_for(|stop| *stop) => {
                        tracing::info!(sink = %name, "audit sink stopped for shutdown");
                    }
                }
            });
        }
    }

    /// Shutdown, first part: lets every sink deliver until it has caught up with the spool or
    /// `timeout` has passed, then stops them all (waiting a moment for them to). Returns the
    /// events left undelivered per sink; they are resumed from the spool at the next start.
    pub async fn drain(&self, timeout: Duration) -> BTreeMap<String, u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.undelivered();
            if left.values().all(|&n| n == 0) || Instant::now() >= deadline {
                break;
            }
            // Progress shows in the saved positions; a short poll keeps this simple.
            tokio::time::sleep_until(deadline.min(Instant::now() + DRAIN_POLL)).await;
        }
        self.shared.stop.send_replace(true);
        let mut running = self.shared.running.subscribe();
        if tokio::time::timeout(STOP_WAIT, running.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!("audit sinks did not stop within {STOP_WAIT:?}");
        }
        let left = self.undelivered();
        for (sink, events) in &left {
            if *events > 0 {
                tracing::warn!(sink = %sink, events, "audit sink stopped with events left; they are delivered after the restart");
            }
        }
        left
    }

    /// Events spooled that each configured sink has not saved past yet.
    fn undelivered(&self) -> BTreeMap<String, u64> {
        let end = *self.shared.spool.committed().borrow();
        let positions = self.shared.positions.load();
        self.shared
            .sinks
            .load()
            .iter()
            .map(|sink| {
                let left = match positions.get(&sink.name) {
                    Some(at) if (at.segment, at.offset) >= (end.segment, end.offset) => 0,
                    Some(at) => end.event_seq.saturating_sub(at.event_seq).max(1),
                    None => end.event_seq.max(1),
                };
                (sink.name.clone(), left)
            })
            .collect()
    }

    /// Problems of sinks that people must see, by sink (shown by `/readyz`).
    pub fn sink_errors(&self) -> Arc<BTreeMap<String, String>> {
        self.shared.errors.load_full()
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

    /// The spool directory.
    pub fn spool_dir(&self) -> &std::path::Path {
        self.shared.spool.dir()
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
    audit
        .dead_letter_bytes
        .set(i64::try_from(stats.dead_letter_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
}
