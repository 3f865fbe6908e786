//! Owns the cluster state policies may read (`context:` grants in the policy file): one
//! in-memory cache per granted resource, fed by a kube-rs watcher against the API server
//! (`serve`) or by a file of objects (`check --cluster`, a suite's `cluster:`), its bound and
//! metrics, and answering a policy's `cluster` lookups from it within the policy's grants. A
//! lookup never calls the API server. Knows nothing of Wasm or HTTP: the runtime sees a policy's
//! share as a [`ClusterView`]; the caches are started and stopped by [`ClusterState::prepare`]
//! and [`ClusterState::retain`] around snapshot builds.

pub mod cache;
pub mod file;
pub mod selector;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

pub use cache::{Cache, CacheKey, DEFAULT_MAX_BYTES, DEFAULT_MAX_OBJECTS, Limits};
pub use selector::Selector;

use crate::config::{Config, ConfigError, ContextGrant};
use crate::runtime::{ClusterView, GroupVersionResource, LookupError};
use crate::telemetry::Metrics;

/// Objects one `list` answers at most; more is `too-large` (narrow the namespace or selector).
pub const MAX_LIST_OBJECTS: usize = 10_000;
/// Bytes of JSON one `list` answers at most.
pub const MAX_LIST_BYTES: usize = 16 << 20;

/// Where the caches' objects come from.
enum Source {
    /// No cluster access: a policy file with `context:` is refused.
    None,
    /// A file of objects, by (group, version, resource).
    File(BTreeMap<(String, String, String), Vec<Value>>),
    /// The API server.
    Live {
        client: kube::Client,
        handle: tokio::runtime::Handle,
    },
}

struct Running {
    cache: Arc<Cache>,
    task: Option<tokio::task::AbortHandle>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The caches of every granted resource, shared by all snapshots.
pub struct ClusterState {
    source: Source,
    limits: Limits,
    metrics: Arc<Metrics>,
    // Held to look up or change the set of caches, never across an await.
    #[allow(clippy::disallowed_types)]
    caches: std::sync::RwLock<BTreeMap<CacheKey, Running>>,
}

impl ClusterState {
    fn new(source: Source, limits: Limits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(ClusterState {
            source,
            limits,
            metrics,
            caches: Default::default(),
        })
    }

    /// No cluster access: every `context:` grant is refused at load.
    pub fn none(metrics: Arc<Metrics>) -> Arc<Self> {
        Self::new(Source::None, Limits::default(), metrics)
    }

    /// Caches fed from the API server through `client` (watch tasks run on the current
    /// runtime).
    pub fn live(client: kube::Client, limits: Limits, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::new(
            Source::Live {
                client,
                handle: tokio::runtime::Handle::current(),
            },
            limits,
            metrics,
        )
    }

    /// Caches holding the objects of a file (see [`file::load`]).
    pub fn from_objects(
        objects: file::Objects,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::new(Source::File(objects), limits, metrics)
    }

    /// The metrics the caches record into.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The API server client, when caches come from a live API server.
    pub fn client(&self) -> Option<kube::Client> {
        match &self.source {
            Source::Live { client, .. } => Some(client.clone()),
            _ => None,
        }
    }

    /// Whether caches come from a live API server.
    pub fn is_live(&self) -> bool {
        matches!(self.source, Source::Live { .. })
    }

    /// Starts a cache for every grant of `config` that has none yet. Refuses the file (with the
    /// line of the grant) when there is no cluster access, or the resource does not exist, or
    /// the gateway's identity may not list and watch it. Blocking (discovery and access reviews
    /// against the API server): call it off the request path, before building the snapshot.
    pub fn prepare(&self, config: &Config) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(&config.file).unwrap_or_default();
        for resolved in &config.entries {
            let context = resolved.entry.context.len();
            for (i, grant) in resolved.entry.watched().iter().enumerate() {
                let key = key_of(grant);
                if self.read().contains_key(&key) {
                    continue;
                }
                let refuse = |why: String| {
                    // Past the grants: a resource a background scan reads (from the rules).
                    let path = if i < context {
                        format!("context[{i}]")
                    } else {
                        "rules".to_owned()
                    };
                    ConfigError {
                        file: config.file.clone(),
                        line: crate::config::locate::field_line(&text, resolved.module.line, &path)
                            .or(resolved.module.line),
                        message: format!(
                            "policy {:?}: {path}: {}: {why}",
                            resolved.entry.name,
                            key.describe()
                        ),
                    }
                };
                let running = self.start(&key).map_err(refuse)?;
                self.write().insert(key, running);
            }
        }
        Ok(())
    }

    fn start(&self, key: &CacheKey) -> Result<Running, String> {
        let api_version = if key.group.is_empty() {
            key.version.clone()
        } else {
            format!("{}/{}", key.group, key.version)
        };
        match &self.source {
            Source::None => Err("the gateway has no cluster access to serve `context:` from: give serve --kubeconfig (or run it in a cluster); give check --cluster FILE, or a test suite `cluster:`".into()),
            Source::File(objects) => {
                let list = objects
                    .get(&(key.group.clone(), key.version.clone(), key.resource.clone()))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let kind = list
                    .first()
                    .and_then(|o| o["kind"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                let cache = Arc::new(Cache::new(key.clone(), api_version, kind, self.limits));
                let mut builder = cache.builder();
                for object in list {
                    builder.add(object.clone()).map_err(|e| e.to_string())?;
                }
                builder.finish();
                let (objects, bytes, _) = cache.size();
                self.metrics.context.size(&key.describe(), objects, bytes);
                Ok(Running { cache, task: None })
            }
            Source::Live { client, handle } => {
                let discovered = handle.block_on(watch::check(client, key))?;
                let ar = discovered.api_resource;
                let cache = Arc::new(Cache::new(
                    key.clone(),
                    ar.api_version.clone(),
                    ar.kind.clone(),
                    self.limits,
                ));
                self.metrics.context.size(&key.describe(), 0, 0);
                let task = handle.spawn(watch::run(
                    client.clone(),
                    ar,
                    cache.clone(),
                    self.metrics.clone(),
                ));
                tracing::info!(resource = %key.describe(), "context cache started");
                Ok(Running {
                    cache,
                    task: Some(task.abort_handle()),
                })
            }
        }
    }

    /// Stops the caches no grant of `config` (the serving file) uses any more.
    pub fn retain(&self, config: &Config) {
        let wanted: std::collections::BTreeSet<CacheKey> = config
            .entries
            .iter()
            .flat_map(|e| e.entry.watched().iter().map(key_of).collect::<Vec<_>>())
            .collect();
        let mut caches = self.write();
        let gone: Vec<CacheKey> = caches
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for key in gone {
            caches.remove(&key);
            self.metrics.context.remove(&key.describe());
            tracing::info!(resource = %key.describe(), "context cache stopped: no policy grants it any more");
        }
    }

    /// The view a policy with `grants` reads through; `None` without grants.
    pub fn view(
        self: &Arc<Self>,
        policy: &str,
        grants: &[ContextGrant],
    ) -> Option<Arc<dyn ClusterView>> {
        if grants.is_empty() {
            return None;
        }
        Some(Arc::new(PolicyView {
            state: self.clone(),
            policy: policy.into(),
            grants: grants.to_vec(),
        }))
    }

    /// The cache of `key`, if started.
    pub fn cache(&self, key: &CacheKey) -> Option<Arc<Cache>> {
        self.read().get(key).map(|r| r.cache.clone())
    }

    /// Every cache: its resource, objects, bytes, whether synced, and its overflow message.
    pub fn status(&self) -> Vec<Value> {
        self.read()
            .values()
            .map(|r| {
                let (objects, bytes, overflow) = r.cache.size();
                serde_json::json!({
                    "resource": r.cache.key().describe(),
                    "synced": r.cache.is_synced(),
                    "objects": objects,
                    "bytes": bytes,
                    "overflow": overflow,
                })
            })
            .collect()
    }

    /// Whether every cache has had its first complete list.
    pub fn synced(&self) -> bool {
        self.read().values().all(|r| r.cache.is_synced())
    }

    /// Waits until every cache started so far has synced.
    pub async fn wait_synced(&self) {
        let caches: Vec<Arc<Cache>> = self.read().values().map(|r| r.cache.clone()).collect();
        for cache in caches {
            cache.wait_synced().await;
        }
    }

    #[allow(clippy::disallowed_types)]
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<CacheKey, Running>> {
        self.caches.read().unwrap_or_else(|e| e.into_inner())
    }

    #[allow(clippy::disallowed_types)]
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<CacheKey, Running>> {
        self.caches.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The cache that serves `grant`.
pub fn key_of(grant: &ContextGrant) -> CacheKey {
    CacheKey {
        group: grant.api_group.clone(),
        version: grant.version.clone(),
        resource: grant.resource.clone(),
        metadata_only: grant.metadata_only,
    }
}

/// One policy's share of the caches: exactly its grants.
struct PolicyView {
    state: Arc<ClusterState>,
    policy: Arc<str>,
    grants: Vec<ContextGrant>,
}

fn describe(r: &GroupVersionResource) -> String {
    format!(
        "{}/{} {}",
        if r.group.is_empty() { "core" } else { &r.group },
        r.version,
        r.resource
    )
}

impl PolicyView {
    /// The grant for `r`, or `denied` saying what is granted.
    fn grant(&self, r: &GroupVersionResource) -> Result<&ContextGrant, LookupError> {
        self.grants
            .iter()
            .find(|g| g.api_group == r.group && g.version == r.version && g.resource == r.resource)
            .ok_or_else(|| {
                LookupError::Denied(format!(
                    "policy {:?} is not granted {}; its `context:` grants {}",
                    &*self.policy,
                    describe(r),
                    self.grants
                        .iter()
                        .map(ContextGrant::describe)
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            })
    }

    fn namespace_allowed(&self, grant: &ContextGrant, namespace: &str) -> Result<(), LookupError> {
        if grant.namespaces.is_empty() || grant.namespaces.iter().any(|n| n == namespace) {
            Ok(())
        } else {
            Err(LookupError::Denied(format!(
                "policy {:?} is granted {} only in namespaces {}, not in {namespace:?}",
                &*self.policy,
                describe_grant(grant),
                grant.namespaces.join(", ")
            )))
        }
    }

    fn cache(&self, grant: &ContextGrant) -> Result<Arc<Cache>, LookupError> {
        match self.state.cache(&key_of(grant)) {
            Some(cache) if cache.is_synced() => Ok(cache),
            _ => Err(LookupError::NotReady),
        }
    }
}

fn describe_grant(g: &ContextGrant) -> String {
    format!(
        "{}/{} {}",
        if g.api_group.is_empty() {
            "core"
        } else {
            &g.api_group
        },
        g.version,
        g.resource
    )
}

impl ClusterView for PolicyView {
    fn get(
        &self,
        resource: &GroupVersionResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, LookupError> {
        let grant = self.grant(resource)?;
        self.namespace_allowed(grant, namespace)?;
        let cache = self.cache(grant)?;
        cache
            .with_objects(|objects| {
                objects
                    .get(&(namespace.to_owned(), name.to_owned()))
                    .map(|e| e.json.to_string())
            })
            .map_err(LookupError::TooLarge)
    }

    fn list(
        &self,
        resource: &GroupVersionResource,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<String>, LookupError> {
        let grant = self.grant(resource)?;
        if !namespace.is_empty() {
            self.namespace_allowed(grant, namespace)?;
        }
        let selector = Selector::parse(label_selector)
            .map_err(|e| LookupError::Invalid(format!("label selector {label_selector:?}: {e}")))?;
        let cache = self.cache(grant)?;
        let namespaces: Option<Vec<&str>> = if !namespace.is_empty() {
            Some(vec![namespace])
        } else if !grant.namespaces.is_empty() {
            let mut n: Vec<&str> = grant.namespaces.iter().map(String::as_str).collect();
            n.sort_unstable();
            Some(n)
        } else {
            None
        };
        cache
            .with_objects(|objects| {
                let mut out = Vec::new();
                let mut bytes = 0usize;
                let mut take = |entry: &cache::Entry| -> Result<(), LookupError> {
                    if !selector.matches(&entry.labels) {
                        return Ok(());
                    }
                    bytes += entry.json.len();
                    if out.len() == MAX_LIST_OBJECTS || bytes > MAX_LIST_BYTES {
                        return Err(LookupError::TooLarge(format!(
                            "a list answers at most {MAX_LIST_OBJECTS} objects and {MAX_LIST_BYTES} bytes; narrow the namespace or the label selector"
                        )));
                    }
                    out.push(entry.json.to_string());
                    Ok(())
                };
                match &namespaces {
                    None => {
                        for entry in objects.values() {
                            take(entry)?;
                        }
                    }
                    Some(namespaces) => {
                        for ns in namespaces {
                            let from = ((*ns).to_owned(), String::new());
                            for ((entry_ns, _), entry) in objects.range(from..) {
                                if entry_ns != ns {
                                    break;
                                }
                                take(entry)?;
                            }
                        }
                    }
                }
                Ok(out)
            })
            .map_err(LookupError::TooLarge)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods(n: usize, bytes: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("p{i:05}"), "namespace": format!("ns{}", i % 3),
                        "labels": {"app": if i % 2 == 0 { "web" } else { "db" }}},
                    "data": "x".repeat(bytes)})
            })
            .collect()
    }

    fn view(objects: Vec<Value>, grant: ContextGrant) -> Arc<dyn ClusterView> {
        let state = ClusterState::from_objects(
            file::group(objects).unwrap(),
            Limits::default(),
            Arc::new(Metrics::new()),
        );
        let key = key_of(&grant);
        let running = state.start(&key).unwrap();
        state.write().insert(key, running);
        state.view("p", &[grant]).unwrap()
    }

    fn grant(namespaces: &[&str]) -> ContextGrant {
        ContextGrant {
            api_group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            metadata_only: false,
        }
    }

    fn pods_gvr() -> GroupVersionResource {
        GroupVersionResource {
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
        }
    }

    #[test]
    fn list_is_ordered_filtered_and_bounded_by_the_grant() {
        let v = view(pods(9, 1), grant(&["ns2", "ns0"]));
        let names = |list: Vec<String>| -> Vec<String> {
            list.iter()
                .map(|t| {
                    let o: Value = serde_json::from_str(t).unwrap();
                    format!(
                        "{}/{}",
                        o["metadata"]["namespace"].as_str().unwrap(),
                        o["metadata"]["name"].as_str().unwrap()
                    )
                })
                .collect()
        };
        // Every granted namespace, ordered by namespace and name; ns1 is not granted.
        assert_eq!(
            names(v.list(&pods_gvr(), "", "").unwrap()),
            [
                "ns0/p00000",
                "ns0/p00003",
                "ns0/p00006",
                "ns2/p00002",
                "ns2/p00005",
                "ns2/p00008"
            ]
        );
        assert_eq!(
            names(v.list(&pods_gvr(), "ns0", "app=web").unwrap()),
            ["ns0/p00000", "ns0/p00006"]
        );
        assert!(matches!(
            v.list(&pods_gvr(), "ns1", ""),
            Err(LookupError::Denied(_))
        ));
        assert!(matches!(
            v.list(&pods_gvr(), "ns0", "app in web"),
            Err(LookupError::Invalid(m)) if m.contains("expected '(' after in")
        ));
        assert!(v.get(&pods_gvr(), "ns0", "p00003").unwrap().is_some());
        assert_eq!(v.get(&pods_gvr(), "ns0", "p00004").unwrap(), None);
    }

    #[test]
    fn a_list_over_the_per_call_bound_is_too_large() {
        // Objects: one over the bound.
        let v = view(pods(MAX_LIST_OBJECTS + 1, 1), grant(&[]));
        match v.list(&pods_gvr(), "", "") {
            Err(LookupError::TooLarge(m)) => assert!(m.contains("at most 10000 objects"), "{m}"),
            other => panic!("{:?}", other.map(|l| l.len())),
        }
        // The selector narrows it under the bound.
        assert_eq!(v.list(&pods_gvr(), "", "app=web").unwrap().len(), 5001);
        // Bytes: 20 objects of 1 MiB pass 16 MiB.
        let v = view(pods(20, 1 << 20), grant(&[]));
        assert!(matches!(
            v.list(&pods_gvr(), "", ""),
            Err(LookupError::TooLarge(_))
        ));
        assert_eq!(v.list(&pods_gvr(), "ns0", "").unwrap().len(), 7);
    }
}
