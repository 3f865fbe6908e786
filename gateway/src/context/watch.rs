//! Owns feeding caches from the API server: discovery of a granted resource, the
//! SelfSubjectAccessReview that the ServiceAccount may list and watch it, and one kube-rs
//! watcher per cache (its initial list swapped in whole, then every change applied). Lookups
//! never come here: they read the caches.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, metadata_watcher, watcher};

use super::cache::{Builder, Cache, CacheKey};
use crate::telemetry::Metrics;

/// How long a cache that went over its cap waits before listing again (in case it shrank).
pub const OVERFLOW_RETRY: Duration = Duration::from_secs(30);

/// What discovery says about a granted resource.
pub struct Discovered {
    /// Its `apiVersion`, kind and plural.
    pub api_resource: ApiResource,
}

/// Finds `key`'s resource by discovery and checks that this client may list and watch it in
/// every namespace. The error says which.
pub async fn check(client: &kube::Client, key: &CacheKey) -> Result<Discovered, String> {
    let gv = kube::core::GroupVersion::gv(&key.group, &key.version);
    let group = kube::discovery::pinned_group(client, &gv)
        .await
        .map_err(|e| format!("discovery of {}: {e}", gv.api_version()))?;
    let (api_resource, caps) = group
        .versioned_resources(&key.version)
        .into_iter()
        .find(|(r, _)| r.plural == key.resource)
        .ok_or_else(|| {
            format!(
                "the API server serves no resource {:?} in {}",
                key.resource,
                gv.api_version()
            )
        })?;
    for verb in ["list", "watch"] {
        if !caps.supports_operation(verb) {
            return Err(format!("the API server does not allow {verb} on it"));
        }
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(key.group.clone()),
                    version: Some(key.version.clone()),
                    resource: Some(key.resource.clone()),
                    verb: Some(verb.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("SelfSubjectAccessReview for {verb}: {e}"))?;
        let status = answer.status.unwrap_or_default();
        if !status.allowed {
            return Err(format!(
                "wasmgate's ServiceAccount (or --kubeconfig user) may not {verb} it in all namespaces{}: grant it with a ClusterRole",
                status
                    .reason
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(Discovered { api_resource })
}

/// Feeds `cache` from a watch of its resource in every namespace until aborted: each initial
/// list (and re-list after the watch expires) is built aside and swapped in whole; changes
/// are applied one by one. Going over the cap empties the cache (lookups refused with the
/// reason) and lists again after [`OVERFLOW_RETRY`].
pub async fn run(
    client: kube::Client,
    api_resource: ApiResource,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
) {
    let label = cache.key().describe();
    let api = Api::<DynamicObject>::all_with(client, &api_resource);
    // Large lists arrive in pages; the watch restarts with backoff on errors.
    let config = watcher::Config::default().page_size(500);
    loop {
        let overflowed = if cache.key().metadata_only {
            let stream = metadata_watcher(api.clone(), config.clone()).default_backoff();
            feed(stream, &cache, &metrics, &label, |m| {
                serde_json::to_value(m).map_err(|e| e.to_string())
            })
            .await
        } else {
            let stream = watcher(api.clone(), config.clone()).default_backoff();
            feed(stream, &cache, &metrics, &label, |o| {
                serde_json::to_value(o).map_err(|e| e.to_string())
            })
            .await
        };
        if !overflowed {
            return;
        }
        tokio::time::sleep(OVERFLOW_RETRY).await;
    }
}

/// Applies a watcher's events to `cache`. Returns `true` when the cache went over its cap.
async fn feed<K, S>(
    stream: S,
    cache: &Cache,
    metrics: &Metrics,
    label: &str,
    to_json: impl Fn(K) -> Result<serde_json::Value, String>,
) -> bool
where
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    K: kube::Resource,
{
    let mut stream = std::pin::pin!(stream);
    let mut building: Option<Builder<'_>> = None;
    let mut synced_before = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(
                    resource = label,
                    "context cache watch failed, retrying: {e}"
                );
                continue;
            }
        };
        let result = match event {
            watcher::Event::Init => {
                building = Some(cache.builder());
                Ok(())
            }
            watcher::Event::InitApply(object) => match (&mut building, to_json(object)) {
                (Some(list), Ok(json)) => list.add(json),
                (None, Ok(json)) => cache.apply(json),
                (_, Err(e)) => {
                    tracing::warn!(resource = label, "context cache: object skipped: {e}");
                    Ok(())
                }
            },
            watcher::Event::InitDone => {
                if let Some(list) = building.take() {
                    list.finish();
                }
                if !synced_before {
                    synced_before = true;
                    tracing::info!(resource = label, "context cache synced");
                }
                Ok(())
            }
            watcher::Event::Apply(object) => match to_json(object) {
                Ok(json) => cache.apply(json),
                Err(e) => {
                    tracing::warn!(resource = label, "context cache: object skipped: {e}");
                    Ok(())
                }
            },
            watcher::Event::Delete(object) => {
                let meta = object.meta();
                cache.delete(
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default(),
                );
                Ok(())
            }
        };
        match result {
            Ok(()) => {}
            Err(e @ super::cache::CacheError::Overflow { .. }) => {
                drop(building.take());
                cache.set_overflow(&e);
                metrics.context.overflowed(label);
                metrics.context.size(label, 0, 0);
                tracing::error!(resource = label, retry_in = ?OVERFLOW_RETRY, "{e}; lookups of it are refused until it fits");
                return true;
            }
            Err(e) => tracing::warn!(resource = label, "context cache: object skipped: {e}"),
        }
        let (objects, bytes, _) = cache.size();
        metrics.context.size(label, objects, bytes);
    }
    false
}
