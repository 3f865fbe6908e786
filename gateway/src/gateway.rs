//! Owns the live gateway: the snapshot serving requests and the metrics, and what each endpoint
//! means (decode the review, decide on one snapshot, encode the answer in the review's version).

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::StatusCode;
use tokio::time::Instant;

use crate::admission;
use crate::config::PluginKind;
use crate::reload::ReloadStatus;
use crate::server::{Answer, Handler};
use crate::snapshot::Snapshot;
use crate::telemetry::Metrics;
use crate::wire::{AdmissionResponse, AdmissionReview};

/// The serving state.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    metrics: Arc<Metrics>,
    reload: ArcSwap<ReloadStatus>,
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
            metrics,
            reload: ArcSwap::default(),
        }
    }

    /// Serves `snapshot` from now on. Requests in flight finish on the one they loaded.
    pub fn swap(&self, snapshot: Snapshot) {
        self.metrics.snapshot_serving(
            snapshot.generation,
            &snapshot.content_hash,
            snapshot.policies.len(),
        );
        self.snapshot.store(Arc::new(snapshot));
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

    fn ready(&self) -> Answer {
        let snapshot = self.snapshot.load();
        Answer::json(
            serde_json::json!({
                "ready": true,
                "generation": snapshot.generation,
                "contentHash": snapshot.content_hash,
                "policies": snapshot.policies.iter().map(|p| &p.name).collect::<Vec<_>>(),
                "reload": &**self.reload.load(),
            })
            .to_string()
            .into_bytes(),
        )
    }

    fn metrics(&self) -> Answer {
        Answer {
            status: StatusCode::OK,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: Bytes::from(self.metrics.encode()),
        }
    }
}
