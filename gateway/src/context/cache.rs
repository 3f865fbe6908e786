//! Owns one resource's in-memory copy of cluster objects: the objects as projected JSON text
//! (managedFields stripped; only `apiVersion`, `kind` and `metadata` for a metadata-only cache),
//! indexed by namespace and name, with their labels for selectors, under a cap on objects and
//! bytes. Fed by a watcher or a file; read by lookups. No I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

/// Which cache: a resource, and whether it keeps metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey {
    /// The API group, `""` for core.
    pub group: String,
    /// The version.
    pub version: String,
    /// The resource (plural).
    pub resource: String,
    /// Only `apiVersion`, `kind` and `metadata`.
    pub metadata_only: bool,
}

impl CacheKey {
    /// `core/v1 pods`, `networking.k8s.io/v1 ingresses (metadata only)`: how messages and the
    /// `resource` label of metrics name it.
    pub fn describe(&self) -> String {
        format!(
            "{}/{} {}{}",
            if self.group.is_empty() {
                "core"
            } else {
                &self.group
            },
            self.version,
            self.resource,
            if self.metadata_only {
                " (metadata only)"
            } else {
                ""
            }
        )
    }
}

/// The bound on one cache's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Objects one cache may hold.
    pub max_objects: usize,
    /// Bytes of projected JSON (and labels) one cache may hold.
    pub max_bytes: usize,
}

/// Default objects per cache (`--context-max-objects`): a large cluster's Pods or RoleBindings.
pub const DEFAULT_MAX_OBJECTS: usize = 100_000;
/// Default bytes per cache (`--context-max-bytes`).
pub const DEFAULT_MAX_BYTES: usize = 512 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_objects: DEFAULT_MAX_OBJECTS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// One cached object.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The projected object as JSON text.
    pub json: Arc<str>,
    /// Its labels, for selectors.
    pub labels: BTreeMap<String, String>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.json.len()
            + self
                .labels
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// A cache's objects by (namespace, name).
pub type Objects = BTreeMap<(String, String), Entry>;

/// Why an object could not be kept.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    /// The cache would go over its cap.
    #[error(
        "the cache of {resource} is over its cap of {max_objects} objects or {max_bytes} bytes (--context-max-objects, --context-max-bytes): it would hold {objects} objects, {bytes} bytes"
    )]
    Overflow {
        /// The resource.
        resource: String,
        /// Objects it would hold.
        objects: usize,
        /// Bytes it would hold.
        bytes: usize,
        /// The cap on objects.
        max_objects: usize,
        /// The cap on bytes.
        max_bytes: usize,
    },
    /// Not an object with `metadata.name`.
    #[error("not a Kubernetes object with metadata.name: {0}")]
    NotAnObject(String),
}

/// The state a cache is in, behind its lock.
#[derive(Debug, Default)]
struct State {
    objects: Objects,
    bytes: usize,
    /// Set when the cache went over its cap: lookups are refused with this message until a
    /// fresh list fits.
    overflow: Option<String>,
}

/// One resource's cache.
pub struct Cache {
    key: CacheKey,
    /// `apiVersion` and `kind` of the objects, set on objects that arrive without them (list
    /// items, metadata-only projections).
    api_version: String,
    kind: String,
    limits: Limits,
    // Held for one lookup or one event, never across an await.
    #[allow(clippy::disallowed_types)]
    state: std::sync::RwLock<State>,
    synced: AtomicBool,
    synced_tx: tokio::sync::watch::Sender<bool>,
    /// Counts changes (a list swapped in, an object applied or deleted): background scans
    /// compare it to see whether to scan again.
    changes: std::sync::atomic::AtomicU64,
}

/// A Kubernetes object projected as the cache keeps it: managedFields stripped, and only
/// `apiVersion`, `kind` and `metadata` when `metadata_only`. Returns (namespace, name, entry).
pub fn project(
    mut object: Value,
    api_version: &str,
    kind: &str,
    metadata_only: bool,
) -> Result<((String, String), Entry), CacheError> {
    let Some(map) = object.as_object_mut() else {
        return Err(CacheError::NotAnObject("not a JSON object".into()));
    };
    let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Err(CacheError::NotAnObject("no metadata".into()));
    };
    metadata.remove("managedFields");
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| CacheError::NotAnObject("no metadata.name".into()))?
        .to_owned();
    let namespace = metadata
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let labels = metadata
        .get("labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if metadata_only {
        map.retain(|k, _| k == "metadata");
    }
    if metadata_only || !map.get("apiVersion").is_some_and(Value::is_string) {
        map.insert("apiVersion".into(), Value::String(api_version.to_owned()));
    }
    if metadata_only || !map.get("kind").is_some_and(Value::is_string) {
        map.insert("kind".into(), Value::String(kind.to_owned()));
    }
    let json: Arc<str> = object.to_string().into();
    Ok(((namespace, name), Entry { json, labels }))
}

impl Cache {
    /// An empty cache, not yet synced.
    pub fn new(key: CacheKey, api_version: String, kind: String, limits: Limits) -> Self {
        Cache {
            key,
            api_version,
            kind,
            limits,
            state: Default::default(),
            synced: AtomicBool::new(false),
            synced_tx: tokio::sync::watch::Sender::new(false),
            changes: Default::default(),
        }
    }

    /// Which cache this is.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Projects an object for this cache.
    pub fn project(&self, object: Value) -> Result<((String, String), Entry), CacheError> {
        project(
            object,
            &self.api_version,
            &self.kind,
            self.key.metadata_only,
        )
    }

    fn overflow(&self, objects: usize, bytes: usize) -> CacheError {
        CacheError::Overflow {
            resource: self.key.describe(),
            objects,
            bytes,
            max_objects: self.limits.max_objects,
            max_bytes: self.limits.max_bytes,
        }
    }

    /// Starts a fresh list: a builder that checks the cap as objects are added, so a list
    /// that does not fit stops at the cap instead of holding it all.
    pub fn builder(&self) -> Builder<'_> {
        Builder {
            cache: self,
            objects: Objects::new(),
            bytes: 0,
        }
    }

    /// Replaces every object with a complete list, and marks the cache synced.
    fn replace(&self, objects: Objects, bytes: usize) {
        let mut state = self.write();
        state.objects = objects;
        state.bytes = bytes;
        state.overflow = None;
        drop(state);
        self.changed();
        self.mark_synced();
    }

    /// How many changes the cache has seen: equal counts mean equal objects.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
        self.synced_tx.send_replace(true);
    }

    /// Adds or replaces one object. Over the cap, the cache is emptied and refuses lookups
    /// (with the error) until a fresh list fits.
    pub fn apply(&self, object: Value) -> Result<(), CacheError> {
        let (id, entry) = self.project(object)?;
        let mut state = self.write();
        if state.overflow.is_some() {
            return Ok(());
        }
        let old = state.objects.get(&id).map_or(0, Entry::bytes);
        let objects = state.objects.len() + usize::from(old == 0);
        let bytes = state.bytes - old + entry.bytes();
        if objects > self.limits.max_objects || bytes > self.limits.max_bytes {
            let e = self.overflow(objects, bytes);
            state.objects = Objects::new();
            state.bytes = 0;
            state.overflow = Some(e.to_string());
            return Err(e);
        }
        state.bytes = bytes;
        state.objects.insert(id, entry);
        drop(state);
        self.changed();
        Ok(())
    }

    /// Removes one object.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut state = self.write();
        if let Some(old) = state
            .objects
            .remove(&(namespace.to_owned(), name.to_owned()))
        {
            state.bytes -= old.bytes();
            drop(state);
            self.changed();
        }
    }

    /// Marks the cache over its cap (a list did not fit): emptied, lookups refused.
    pub fn set_overflow(&self, error: &CacheError) {
        let mut state = self.write();
        state.objects = Objects::new();
        state.bytes = 0;
        state.overflow = Some(error.to_string());
        drop(state);
        self.changed();
        // Synced, in the sense that readiness does not wait for it: it will not fit by waiting.
        self.mark_synced();
    }

    /// Whether the first complete list has arrived.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Waits until the first complete list has arrived.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced_tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Objects and bytes held, and the overflow message if any.
    pub fn size(&self) -> (usize, usize, Option<String>) {
        let state = self.read();
        (state.objects.len(), state.bytes, state.overflow.clone())
    }

    /// Runs `f` on the objects (under the read lock: `f` must be quick), or the overflow
    /// message.
    pub fn with_objects<R>(&self, f: impl FnOnce(&Objects) -> R) -> Result<R, String> {
        let state = self.read();
        match &state.overflow {
            Some(message) => Err(message.clone()),
            None => Ok(f(&state.objects)),
        }
    }

    #[allow(clippy::disallowed_types)]
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    #[allow(clippy::disallowed_types)]
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A complete list being assembled (a watcher's initial list, a file's objects).
pub struct Builder<'a> {
    cache: &'a Cache,
    objects: Objects,
    bytes: usize,
}

impl Builder<'_> {
    /// Adds one object; over the cap, the error (the list is abandoned by the caller).
    pub fn add(&mut self, object: Value) -> Result<(), CacheError> {
        let (id, entry) = self.cache.project(object)?;
        let size = entry.bytes();
        if let Some(old) = self.objects.insert(id, entry) {
            self.bytes -= old.bytes();
        }
        self.bytes += size;
        if self.objects.len() > self.cache.limits.max_objects
            || self.bytes > self.cache.limits.max_bytes
        {
            return Err(self.cache.overflow(self.objects.len(), self.bytes));
        }
        Ok(())
    }

    /// Swaps the list in: the cache now holds exactly these objects, and is synced.
    pub fn finish(self) {
        self.cache.replace(self.objects, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> CacheKey {
        CacheKey {
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            metadata_only: false,
        }
    }

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "a", "labels": {"app": "web"},
            "managedFields": [{"manager": "kubectl"}]}, "spec": {"containers": []}})
    }

    #[test]
    fn projection_strips_managed_fields_and_fills_the_type() {
        let (id, entry) = project(pod("p"), "v1", "Pod", false).unwrap();
        assert_eq!(id, ("a".into(), "p".into()));
        let v: Value = serde_json::from_str(&entry.json).unwrap();
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["apiVersion"], "v1");
        assert!(v["metadata"].get("managedFields").is_none(), "{v}");
        assert_eq!(v["spec"], json!({"containers": []}));
        let (_, entry) = project(pod("p"), "v1", "Pod", true).unwrap();
        let v: Value = serde_json::from_str(&entry.json).unwrap();
        assert!(v.get("spec").is_none(), "{v}");
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert!(project(json!({"metadata": {}}), "v1", "Pod", false).is_err());
    }

    #[test]
    fn the_cap_on_objects_empties_the_cache_and_refuses_lookups() {
        let cache = Cache::new(
            key(),
            "v1".into(),
            "Pod".into(),
            Limits {
                max_objects: 2,
                max_bytes: 1 << 20,
            },
        );
        let mut list = cache.builder();
        list.add(pod("a")).unwrap();
        list.add(pod("b")).unwrap();
        list.finish();
        assert_eq!(cache.size().0, 2);
        cache.apply(pod("a")).unwrap(); // a replacement is not one more
        let e = cache.apply(pod("c")).unwrap_err();
        assert!(e.to_string().contains("over its cap of 2 objects"), "{e}");
        assert_eq!(cache.size().0, 0);
        assert!(cache.with_objects(|o| o.len()).is_err());
        // A fresh list that fits lifts it.
        let mut list = cache.builder();
        list.add(pod("a")).unwrap();
        list.finish();
        assert_eq!(cache.with_objects(|o| o.len()), Ok(1));
        cache.delete("a", "a");
        assert_eq!(cache.size(), (0, 0, None));
    }

    #[test]
    fn the_cap_on_bytes_stops_a_list() {
        let cache = Cache::new(
            key(),
            "v1".into(),
            "Pod".into(),
            Limits {
                max_objects: 100,
                max_bytes: 300,
            },
        );
        let mut list = cache.builder();
        let e = (0..10)
            .map(|i| list.add(pod(&format!("p{i}"))))
            .find_map(Result::err)
            .unwrap();
        assert!(e.to_string().contains("300 bytes"), "{e}");
    }
}
