//! Owns hot reload: watching the policy file, the modules it names and the TLS files (and
//! SIGHUP), building a complete new snapshot off the request path, and swapping it in whole. A
//! snapshot that fails to build is rejected with its reason; the last good one keeps serving.
//! Must not mutate live state in place: it only ever swaps whole values.

mod watch;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use crate::server::TlsConfigHandle;
use crate::server::tls::{self, TlsFiles};
use crate::snapshot::Snapshot;

pub use watch::DEBOUNCE;

/// A re-scan even without events, for file systems that deliver none (NFS, some overlays).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(30);

/// Why a reload was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A watched file changed, first seen at this instant.
    FileChange(Instant),
    /// SIGHUP or an explicit request.
    Signal,
    /// The periodic re-scan.
    Rescan,
}

/// The outcome of the last reload attempt, for `/readyz` and `wasmgate status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// Reload attempts since start.
    pub attempts: u64,
    /// Attempts that swapped in a new snapshot.
    pub succeeded: u64,
    /// Attempts rejected; the previous snapshot kept serving. The same rejection seen again
    /// (the re-scan, a second watcher event for one change) is not counted again.
    pub failed: u64,
    /// Why the last attempt failed, with file and line; `None` once a later attempt succeeds.
    pub last_error: Option<String>,
    /// When the last attempt ended (seconds since the Unix epoch).
    pub last_attempt_unix: Option<u64>,
    /// Why the last certificate reload failed, if it did; new connections keep the old ones.
    pub last_tls_error: Option<String>,
}

/// Called on the reload's blocking thread with the serving and the new configuration just
/// before the new snapshot is swapped in (`serve --register` unregisters removed policies).
pub type BeforeSwap = Arc<dyn Fn(&Config, &Config) + Send + Sync>;

/// Everything a reload needs.
pub struct Reloader {
    before_swap: Option<BeforeSwap>,
    config_path: PathBuf,
    runtime: Arc<Runtime>,
    gateway: Arc<Gateway>,
    tls: Option<(TlsFiles, TlsConfigHandle)>,
    /// sha256 of the TLS files serving now, so that unchanged files are not reloaded.
    tls_fingerprint: ArcSwap<String>,
}

impl Reloader {
    /// A reloader for the gateway serving `config_path`; `tls` when certificates are to be
    /// watched too (not for generated development certificates).
    pub fn new(
        config_path: PathBuf,
        runtime: Arc<Runtime>,
        gateway: Arc<Gateway>,
        tls: Option<(TlsFiles, TlsConfigHandle)>,
    ) -> Self {
        let tls_fingerprint = ArcSwap::from_pointee(
            tls.as_ref()
                .map(|(files, _)| tls_fingerprint(files))
                .unwrap_or_default(),
        );
        Reloader {
            before_swap: None,
            config_path,
            runtime,
            gateway,
            tls,
            tls_fingerprint,
        }
    }

    /// Calls `hook` before every swap of a new snapshot.
    pub fn before_swap(mut self, hook: BeforeSwap) -> Self {
        self.before_swap = Some(hook);
        self
    }

    /// Starts watching now (so that a change made right after this returns is seen), then
    /// reloads on change, SIGHUP and periodically on a task of its own until `shutdown`
    /// resolves.
    pub fn start(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = mpsc::channel::<Trigger>(16);
        let this = Arc::new(self);
        let mut watcher = match watch::Watcher::new(tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(
                    "file watching is unavailable, reloading only on SIGHUP and every {RESCAN_INTERVAL:?}: {e}"
                );
                None
            }
        };
        if let Some(w) = watcher.as_mut() {
            w.watch(&this.watched_files());
        }
        spawn_sighup(tx);
        tokio::spawn(this.run(watcher, rx, shutdown))
    }

    async fn run(
        self: Arc<Self>,
        mut watcher: Option<watch::Watcher>,
        mut rx: mpsc::Receiver<Trigger>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let this = self;
        let mut rescan =
            tokio::time::interval_at(Instant::now() + RESCAN_INTERVAL, RESCAN_INTERVAL);
        tokio::pin!(shutdown);
        loop {
            let trigger = tokio::select! {
                Some(t) = rx.recv() => t,
                _ = rescan.tick() => Trigger::Rescan,
                () = &mut shutdown => break,
            };
            // Fold triggers that arrived meanwhile into this attempt.
            let mut trigger = trigger;
            while let Ok(next) = rx.try_recv() {
                if let (Trigger::FileChange(a), Trigger::FileChange(b)) = (trigger, next) {
                    trigger = Trigger::FileChange(a.min(b));
                } else if !matches!(trigger, Trigger::FileChange(_)) {
                    trigger = next;
                }
            }
            // On a thread of its own at the lowest priority (`SCHED_IDLE`): compiling and checking
            // modules must not take the CPU from the requests the serving snapshot answers.
            let worker = this.clone();
            let (done, result) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("wasmgate-reload".into())
                .spawn(move || {
                    crate::runtime::lower_priority();
                    worker.reload(trigger);
                    let _ = done.send(());
                });
            match spawned {
                Ok(_) => {
                    if result.await.is_err() {
                        tracing::error!("reload task failed: it panicked");
                    }
                }
                Err(e) => tracing::error!("cannot start the reload thread: {e}"),
            }
            if let Some(w) = watcher.as_mut() {
                // Modules may have moved to other directories with the new policy file.
                w.watch(&this.watched_files());
            }
        }
    }

    /// Every file whose change must trigger a reload: the policy file, the modules of the
    /// serving snapshot, and the TLS files.
    pub fn watched_files(&self) -> BTreeSet<PathBuf> {
        let mut files = BTreeSet::new();
        files.insert(self.config_path.clone());
        for path in self.gateway.snapshot().module_paths.iter() {
            files.insert(path.clone());
        }
        if let Some((tls, _)) = &self.tls {
            files.extend(tls.paths().cloned());
        }
        files
    }

    /// One reload attempt, blocking: policies first, then certificates.
    pub fn reload(&self, trigger: Trigger) {
        self.reload_policies(trigger);
        self.reload_tls();
    }

    fn reload_policies(&self, trigger: Trigger) {
        let metrics = self.gateway.metrics_registry();
        let current = self.gateway.snapshot();
        let config = match Config::load(&self.config_path)
            .and_then(|config| self.gateway.check_config(&config).map(|()| config))
        {
            Ok(config) => config,
            Err(e) => {
                // A grant refused after others started their caches: stop those.
                self.gateway.cluster().retain(&current.config);
                return self.rejected(trigger, e.to_string());
            }
        };
        if config.content_hash == current.content_hash {
            // Back to exactly what is serving after a rejected change: that is a successful
            // (empty) reload, and the rejection no longer describes the gateway.
            if self.gateway.reload_status().last_error.is_some() {
                metrics.reload_attempt();
                metrics.reload_succeeded(match trigger {
                    Trigger::FileChange(seen) => seen.elapsed(),
                    _ => Duration::ZERO,
                });
                self.gateway.update_status(|s| {
                    s.attempts += 1;
                    s.succeeded += 1;
                    s.last_error = None;
                    s.last_attempt_unix = unix_now();
                });
                tracing::info!(
                    generation = current.generation,
                    "reload: the files are back to the serving snapshot; the rejected change is gone"
                );
            } else {
                tracing::debug!(?trigger, "reload: nothing changed");
            }
            return;
        }
        metrics.reload_attempt();
        let started = Instant::now();
        match Snapshot::build_with(
            &config,
            &self.runtime,
            current.generation + 1,
            Some(&current),
            Some(self.gateway.cluster()),
        ) {
            Ok(snapshot) => {
                let generation = snapshot.generation;
                let hash = snapshot.content_hash.clone();
                // The cluster's webhook configurations first (`--register`), so that no request
                // meets a rule the user has not yet seen served.
                if let Some(hook) = &self.before_swap {
                    hook(&current.config, &config);
                }
                // Then the status: whoever sees the new snapshot answer must also see the
                // rejection it ends gone from `/readyz` (the counters lead the swap by the time
                // the audit sinks take their new configuration).
                self.gateway.update_status(|s| {
                    s.attempts += 1;
                    s.succeeded += 1;
                    s.last_error = None;
                    s.last_attempt_unix = unix_now();
                });
                self.gateway.swap(snapshot);
                let since_change = match trigger {
                    Trigger::FileChange(seen) => seen.elapsed(),
                    _ => started.elapsed(),
                };
                metrics.reload_succeeded(since_change);
                tracing::info!(generation, content_hash = %hash, ms = since_change.as_millis() as u64, "reload: new snapshot serving");
            }
            Err(e) => {
                // Caches the rejected file's new grants started are not needed by the serving one.
                self.gateway.cluster().retain(&current.config);
                self.rejected(trigger, e.to_string())
            }
        }
    }

    fn rejected(&self, trigger: Trigger, reason: String) {
        // The same rejection again is not a new attempt: the re-scan finding the broken files
        // again, or a second watcher event for one change (an in-place write is a truncate, some
        // writes and a close, which may arrive in more than one debounced batch; the re-scan may
        // read a change before its event arrives). Unchanged good files are not counted either
        // (`nothing changed` above). Only SIGHUP, an explicit request, counts every time.
        if trigger != Trigger::Signal
            && self.gateway.reload_status().last_error.as_deref() == Some(reason.as_str())
        {
            tracing::info!(
                ?trigger,
                "reload: the same rejection again, not counted as a new attempt"
            );
            return;
        }
        let metrics = self.gateway.metrics_registry();
        // A file that does not even parse was still an attempt to change the configuration.
        metrics.reload_attempt();
        metrics.reload_failed();
        tracing::error!("reload rejected, the previous snapshot keeps serving: {reason}");
        self.gateway.update_status(|s| {
            s.attempts += 1;
            s.failed += 1;
            s.last_error = Some(reason.clone());
            s.last_attempt_unix = unix_now();
        });
    }

    fn reload_tls(&self) {
        let Some((files, handle)) = &self.tls else {
            return;
        };
        let fingerprint = tls_fingerprint(files);
        if **self.tls_fingerprint.load() == fingerprint {
            return;
        }
        match tls::load(files) {
            Ok(config) => {
                handle.store(config);
                self.tls_fingerprint.store(Arc::new(fingerprint));
                self.gateway.update_status(|s| s.last_tls_error = None);
                tracing::info!("reload: new TLS certificate serving new connections");
            }
            Err(e) => {
                tracing::error!(
                    "certificate reload rejected, new connections keep the previous certificate: {e}"
                );
                self.gateway.metrics_registry().tls_reload_failed();
                self.gateway
                    .update_status(|s| s.last_tls_error = Some(e.to_string()));
            }
        }
    }
}

/// sha256 over the certificate, key and client CAs' files (unreadable files hash as empty, and
/// the reload then reports why).
fn tls_fingerprint(files: &TlsFiles) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for path in files.paths() {
        hasher.update(std::fs::read(path).unwrap_or_default());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

fn unix_now() -> Option<u64> {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

fn spawn_sighup(tx: mpsc::Sender<Trigger>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return tracing::warn!("cannot listen for SIGHUP");
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            if tx.send(Trigger::Signal).await.is_err() {
                return;
            }
        }
    });
}

/// The directories to watch for `files`, each with the file names in it that matter.
pub(crate) fn by_directory(
    files: &BTreeSet<PathBuf>,
) -> HashMap<PathBuf, BTreeSet<std::ffi::OsString>> {
    let mut dirs: HashMap<PathBuf, BTreeSet<std::ffi::OsString>> = HashMap::new();
    for file in files {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        if let Some(name) = file.file_name() {
            dirs.entry(dir).or_default().insert(name.to_owned());
        }
    }
    dirs
}
