//! Owns the live gateway: the snapshot serving requests, the audit backend and the metrics, and
//! what each endpoint means (decode the review, decide on one snapshot, encode the answer in the
//! review's version; hand an audit batch to the audit backend and map its outcome to a status).
//! On shutdown it is told to drain: `/audit` answers 503 (the API server sends the batch to
//! another replica or again later) and `/readyz` reports not ready, while admission goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::StatusCode;
use tokio::time::Instant;

use crate::admission;
use crate::audit::{AuditService, BodySource, IntakeError, IntakeLimits, spool::AppendError};
use crate::config::{Config, ConfigError, PluginKind};
use crate::context::ClusterState;
use crate::reload::ReloadStatus;
use crate::server::{Answer, Body, BodyError, BodyTimeout, ConnEvent, Handler};
use crate::snapshot::Snapshot;
use crate::telemetry::Metrics;
use crate::wire::{AdmissionResponse, AdmissionReview};

/// The serving state.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    metrics: Arc<Metrics>,
    reload: ArcSwap<ReloadStatus>,
    audit: Option<(Arc<AuditService>, IntakeLimits)>,
    /// Shutdown has begun: `/audit` takes nothing more.
    draining: AtomicBool,
    /// The caches policies' `context:` grants read.
    cluster: Arc<ClusterState>,
}

impl Gateway {
    /// A gateway serving `snapshot`.
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Self {
        metrics.snapshot_serving(
            snapshot.generation,
            &snapshot.content_hash,
            snapshot.policies.len(),
        );
        Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            reload: ArcSwap::default(),
            audit: None,
            draining: AtomicBool::new(false),
            cluster: ClusterState::none(metrics.clone()),
            metrics,
        }
    }

    /// Serves `context:` grants from `cluster` (the one the first snapshot was built with).
    pub fn with_cluster(mut self, cluster: Arc<ClusterState>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The caches policies' `context:` grants read.
    pub fn cluster(&self) -> &Arc<ClusterState> {
        &self.cluster
    }

    /// Serves `/audit` with `audit`, taking batches under `limits`. Without it, `/audit`
    /// answers 404.
    pub fn with_audit(mut self, audit: Arc<AuditService>, limits: IntakeLimits) -> Self {
        self.audit = Some((audit, limits));
        self
    }

    /// Serves `snapshot` from now on. Requests in flight finish on the one they loaded; audit
    /// sinks take the new configuration from their next batch. Blocking (it reads the sinks'
    /// cursors): call it off the request path, as reloads do.
    pub fn swap(&self, snapshot: Snapshot) {
        self.metrics.snapshot_serving(
            snapshot.generation,
            &snapshot.content_hash,
            snapshot.policies.len(),
        );
        match &self.audit {
            Some((audit, _)) => audit.reconfigure(snapshot.audit_sinks.clone()),
            None if !snapshot.audit_sinks.is_empty() => tracing::warn!(
                "the reloaded policy file has auditSinks, but this gateway started without any: /audit stays disabled until it restarts"
            ),
            None => {}
        }
        let config = snapshot.config.clone();
        self.snapshot.store(Arc::new(snapshot));
        // Caches only the previous file granted are not read any more.
        self.cluster.retain(&config);
    }

    /// Checks what a policy file may not do on this gateway, beyond the file itself: a file
    /// output inside the audit spool directory; a `context:` grant the gateway cannot serve
    /// (no cluster access, an unknown resource, one its identity may not list and watch). Starts
    /// the caches of new grants. Blocking.
    pub fn check_config(&self, config: &Config) -> Result<(), ConfigError> {
        if let Some((audit, _)) = &self.audit {
            config.check_outputs_outside(audit.spool_dir())?;
        }
        self.cluster.prepare(config)
    }

    /// Shutdown begins: from now on `/audit` answers 503 and `/readyz` not ready; admission
    /// requests are still served until the server stops.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The reload status shown by `/readyz`.
    pub fn reload_status(&self) -> Arc<ReloadStatus> {
        self.reload.load_full()
    }

    /// Updates the reload status shown by `/readyz`.
    pub fn update_status(&self, update: impl Fn(&mut ReloadStatus)) {
        self.reload.rcu(|current| {
            let mut next = ReloadStatus::clone(current);
            update(&mut next);
            next
        });
    }

    /// The snapshot serving requests now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The metrics.
    pub fn metrics_registry(&self) -> &Metrics {
        &self.metrics
    }

    /// Decides a review body exactly as the server does: the single code path behind both the
    /// HTTP endpoints and `wasmgate check`. `Err` is an answer for a request that cannot be
    /// decided (not an AdmissionReview, unknown policy).
    pub async fn review(
        &self,
        kind: PluginKind,
        policy: Option<&str>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(AdmissionReview, AdmissionResponse), Answer> {
        let review = AdmissionReview::decode(body)
            .map_err(|e| Answer::status(StatusCode::BAD_REQUEST, e))?;
        // One snapshot for the whole request: a reload meanwhile cannot mix two versions.
        let snapshot = self.snapshot.load_full();
        let response = admission::decide(
            &snapshot.policies,
            kind,
            policy,
            &review.request,
            deadline,
            &self.metrics,
        )
        .await
        .map_err(|e| Answer::status(StatusCode::NOT_FOUND, e))?;
        Ok((review, response))
    }
}

impl Handler for Gateway {
    async fn admission(
        &self,
        kind: PluginKind,
        policy: Option<&str>,
        body: Bytes,
        deadline: Instant,
    ) -> Answer {
        let started = Instant::now();
        let endpoint = match kind {
            PluginKind::Validator => "validate",
            PluginKind::Initializer => "mutate",
        };
        match self.review(kind, policy, &body, deadline).await {
            Ok((review, response)) => {
                let result = if response.allowed {
                    "allowed"
                } else {
                    "denied"
                };
                tracing::debug!(
                    uid = %review.request.uid, endpoint, kind = %review.request.kind.kind,
                    namespace = %review.request.namespace, operation = review.request.operation.as_str(),
                    allowed = response.allowed, "admission review answered"
                );
                self.metrics.request(endpoint, result, started.elapsed());
                Answer::json(response.into_review_json(review.version))
            }
            Err(answer) => {
                tracing::info!(endpoint, status = %answer.status, "admission request refused: {}", String::from_utf8_lossy(&answer.body));
                self.metrics.request(
                    endpoint,
                    if answer.status == StatusCode::NOT_FOUND {
                        "not_found"
                    } else {
                        "bad_request"
                    },
                    started.elapsed(),
                );
                answer
            }
        }
    }

    async fn audit(&self, body: Body, deadline: Instant) -> Answer {
        let started = Instant::now();
        // No sinks (none at start, or a reload removed them all): nothing would keep the events.
        let configured = !self.snapshot.load().audit_sinks.is_empty();
        let Some((audit, limits)) = self.audit.as_ref().filter(|_| configured) else {
            let answer = Answer::status(
                StatusCode::NOT_FOUND,
                "the audit webhook is disabled: the policy file has no auditSinks",
            );
            self.refused("audit", &answer, started.elapsed());
            return answer;
        };
        if self.draining.load(Ordering::Relaxed) {
            let answer = Answer::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "wasmgate is shutting down: send the batch to another replica",
            );
            self.metrics
                .audit
                .request("shutting_down", started.elapsed());
            return answer;
        }
        let mut source = Source { body, error: None };
        let taken = audit.intake(&mut source, *limits, deadline).await;
        if let (Err(IntakeError::Body(_)), Some(e)) = (&taken, source.error) {
            // The body stopped arriving (too slow, broken): its own status, not the decoder's.
            let answer = Answer::status(e.status, e);
            self.refused("audit", &answer, started.elapsed());
            return answer;
        }
        let (answer, result) = match taken {
            Ok(report) => {
                tracing::debug!(
                    received = report.received,
                    spooled = report.spooled,
                    duplicates = report.duplicates,
                    malformed = report.malformed,
                    "audit batch spooled"
                );
                // The API server ignores the body of a 2xx; this one is for people and tests.
                let body = serde_json::to_vec(&report).unwrap_or_default();
                (Answer::json(body), "accepted")
            }
            Err(e) => {
                let (status, result) = match &e {
                    IntakeError::NotAnEventList(_) | IntakeError::Refused(_) => {
                        (StatusCode::BAD_REQUEST, "bad_request")
                    }
                    IntakeError::ItemTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
                    IntakeError::Spool(AppendError::Full { .. }) | IntakeError::StillFull => {
                        (StatusCode::SERVICE_UNAVAILABLE, "spool_full")
                    }
                    IntakeError::Spool(AppendError::TooLarge { .. }) => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
                    }
                    IntakeError::Deadline => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
                    IntakeError::Spool(_) | IntakeError::Host(_) | IntakeError::Body(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "error")
                    }
                };
                if status.is_client_error() {
                    tracing::info!("audit batch refused: {e}");
                } else {
                    tracing::warn!(status = %status, "audit batch refused, the API server will re-send it: {e}");
                }
                (Answer::status(status, e), result)
            }
        };
        self.metrics.audit.request(result, started.elapsed());
        answer
    }

    fn connection(&self, event: ConnEvent) {
        let m = &self.metrics.connections;
        match event {
            ConnEvent::Opened => m.opened(),
            ConnEvent::Refused => m.refused(),
            ConnEvent::Closed(reason) => m.closed(reason.label()),
            ConnEvent::BodyTimedOut(BodyTimeout::MinRate) => m.body_timed_out("min_rate"),
            ConnEvent::BodyTimedOut(BodyTimeout::Deadline) => m.body_timed_out("deadline"),
        }
    }

    fn refused(&self, endpoint: &'static str, answer: &Answer, elapsed: std::time::Duration) {
        if matches!(
            answer.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            tracing::warn!(endpoint, status = %answer.status, "request refused: client certificate missing or not trusted for this route");
        }
        if endpoint != "audit" {
            return;
        }
        let result = match answer.status {
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "disabled",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::SERVICE_UNAVAILABLE => "busy",
            StatusCode::REQUEST_TIMEOUT => "timeout",
            _ => "bad_request",
        };
        self.metrics.audit.request(result, elapsed);
    }

    fn ready(&self) -> Answer {
        let snapshot = self.snapshot.load();
        // Per plugin: the contract version it implements and whether its settings were checked
        // at load (0.2.0) or could not be (0.1.0 has no validate-settings).
        // And, for an `oci://` module, the digest it was loaded at (a tag's resolution).
        let origin = |name: &str| {
            let config = &snapshot.config;
            config
                .entries
                .iter()
                .find(|e| e.entry.name == name)
                .map(|e| &e.module)
                .or_else(|| {
                    config
                        .sinks
                        .iter()
                        .find(|s| s.entry.name == name)
                        .map(|s| &s.module)
                })
                .and_then(|m| m.oci.as_ref())
                .map(|o| {
                    serde_json::json!({
                        "reference": o.reference,
                        "digest": o.digest,
                        "signedBy": o.signed_by.as_ref().map(|p| p.display().to_string()),
                    })
                })
        };
        let plugin = |name: &str, kind: &str, plugin: &crate::runtime::Plugin| {
            let contract = plugin.contract();
            let mut value = serde_json::json!({
                "name": name,
                "kind": kind,
                "contract": contract.package(),
                "settings": if contract.checks_settings() { "checked" } else { "skipped" },
            });
            if let Some(oci) = origin(name) {
                value["oci"] = oci;
            }
            value
        };
        let plugins: Vec<_> = snapshot
            .policies
            .iter()
            .map(|p| plugin(&p.name, p.kind.world(), &p.plugin))
            .chain(
                snapshot
                    .audit_sinks
                    .iter()
                    .map(|s| plugin(&s.name, "audit-sink", &s.plugin)),
            )
            .collect();
        let draining = self.draining.load(Ordering::Relaxed);
        // Not ready until every granted cache has its first complete list: a lookup before
        // it would answer `not-ready` to the plugin.
        let synced = self.cluster.synced();
        let sink_errors = self
            .audit
            .as_ref()
            .map(|(a, _)| a.sink_errors())
            .unwrap_or_default();
        let mut answer = Answer::json(
            serde_json::json!({
                "ready": !draining && synced,
                "contextCaches": self.cluster.status(),
                "draining": draining,
                "auditSinkErrors": &*sink_errors,
                "generation": snapshot.generation,
                "contentHash": snapshot.content_hash,
                "policies": snapshot.policies.iter().map(|p| &p.name).collect::<Vec<_>>(),
                "auditSinks": snapshot.audit_sinks.iter().map(|s| &s.name).collect::<Vec<_>>(),
                "plugins": plugins,
                "reload": &**self.reload.load(),
            })
            .to_string()
            .into_bytes(),
        );
        if draining || !synced {
            answer.status = StatusCode::SERVICE_UNAVAILABLE;
        }
        answer
    }

    fn metrics(&self) -> Answer {
        Answer {
            status: StatusCode::OK,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: Bytes::from(self.metrics.encode()),
        }
    }
}

/// The request body as the audit intake reads it, keeping the server's reason when it stops.
struct Source {
    body: Body,
    error: Option<BodyError>,
}

impl BodySource for &mut Source {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        self.body.chunk().await.map_err(|e| {
            let message = e.to_string();
            self.error = Some(e);
            message
        })
    }
}
