//! The file watcher: notify with its full debouncer, on directories (not files), so that editors'
//! write-and-rename and Kubernetes ConfigMap `..data` symlink swaps are seen.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Trigger, by_directory};

/// Events closer together than this are one change: a writer's create, writes and close, or a
/// `cp` of a large module, arrive as one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Watches directories and sends a [`Trigger::FileChange`] when a file that matters changes.
pub struct Watcher {
    debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    watched: HashSet<PathBuf>,
    interesting: Arc<ArcSwap<HashMap<PathBuf, BTreeSet<OsString>>>>,
}

impl Watcher {
    pub fn new(tx: mpsc::Sender<Trigger>) -> notify::Result<Self> {
        let interesting: Arc<ArcSwap<HashMap<PathBuf, BTreeSet<OsString>>>> = Arc::default();
        let filter = interesting.clone();
        let debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
            let events = match result {
                Ok(events) => events,
                Err(errors) => {
                    for e in errors {
                        tracing::warn!("file watch error: {e}");
                    }
                    return;
                }
            };
            let dirs = filter.load();
            // Only writes, creations, renames and removals: reading a module (as a reload
            // does) must not look like a change, or every reload would trigger the next.
            let relevant = events
                .iter()
                .filter(|e| is_change(&e.event.kind))
                .flat_map(|e| e.event.paths.iter())
                .any(|path| {
                    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                        return false;
                    };
                    // ConfigMap volumes swap a `..data` symlink; editors write temp files and rename.
                    let swap = name.to_string_lossy().starts_with("..");
                    // notify reports a directory in whatever form it resolved it to (relative,
                    // absolute with `..` in it, canonical): compare canonical directories.
                    dirs.get(&canonical_dir(dir))
                        .is_some_and(|names| swap || names.contains(name))
                });
            if relevant {
                // The debouncer waited DEBOUNCE after the last event; count from the change.
                let seen = Instant::now()
                    .checked_sub(DEBOUNCE)
                    .unwrap_or_else(Instant::now);
                let _ = tx.blocking_send(Trigger::FileChange(seen));
            }
        })?;
        Ok(Watcher {
            debouncer,
            watched: HashSet::new(),
            interesting,
        })
    }

    /// Makes sure every directory holding one of `files` is watched.
    pub fn watch(&mut self, files: &BTreeSet<PathBuf>) {
        let dirs = by_directory(files);
        for dir in dirs.keys() {
            if self.watched.contains(dir) {
                continue;
            }
            match self.debouncer.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir.clone());
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch directory: {e}"),
            }
        }
        // Keyed by canonical directory: `policies/../plugins/dist` (a module path relative to a
        // relative `--config`) and notify's own spelling of it must meet.
        let mut all: HashMap<PathBuf, BTreeSet<OsString>> = HashMap::new();
        for (dir, names) in dirs {
            all.entry(canonical_dir(&dir)).or_default().extend(names);
        }
        self.interesting.store(Arc::new(all));
    }
}

/// One spelling for a directory: canonical when it exists, else absolute with `.` and `..`
/// folded lexically (a directory that does not exist yet cannot have produced an event anyway).
fn canonical_dir(dir: &Path) -> PathBuf {
    if let Ok(canonical) = dir.canonicalize() {
        return canonical;
    }
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let mut folded = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                folded.pop();
            }
            other => folded.push(other),
        }
    }
    folded
}
