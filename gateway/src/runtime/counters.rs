//! Owns the per-policy counts of what the runtime did with a plugin's calls: calls started on
//! the slow lane because the policy's previous call misbehaved, log lines dropped by the log
//! limits, and calls that found their fresh instance made ahead of them. Counts only; knows
//! nothing of metric formats or HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counts of every policy the runtime has loaded, by policy name. A policy reloaded under
/// the same name keeps counting where it was (the counts are monotonic, as counters must be).
#[derive(Debug, Default)]
pub struct Counters {
    by_policy: ByPolicy,
}

/// Held for a map lookup or copy only, at load and on a scrape: never across an `.await`.
#[allow(clippy::disallowed_types)]
type ByPolicy = std::sync::Mutex<BTreeMap<Arc<str>, Arc<PolicyCounters>>>;

/// One policy's counts.
#[derive(Debug, Default)]
pub(super) struct PolicyCounters {
    /// Calls started on the slow lane because the previous call was demoted.
    pub(super) slow_starts: AtomicU64,
    /// Log lines (host `log`, stdout, stderr) dropped by the per-call or per-second limit.
    pub(super) log_lines_dropped: AtomicU64,
    /// Calls that ran in a fresh instance made ahead of them.
    pub(super) prepared_calls: AtomicU64,
}

/// One policy's counts, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyCount {
    /// The policy's name.
    pub policy: String,
    /// Calls started on the slow lane because the policy's previous call misbehaved.
    pub slow_lane_starts: u64,
    /// Log lines dropped by the log limits.
    pub log_lines_dropped: u64,
    /// Calls that ran in a fresh instance made ahead of them, not on the request's path.
    pub prepared_instance_calls: u64,
}

impl Counters {
    /// The counts of `policy`, created at zero on first use.
    pub(super) fn policy(&self, policy: &Arc<str>) -> Arc<PolicyCounters> {
        let mut map = self.by_policy.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(policy.clone()).or_default().clone()
    }

    /// Every policy's counts, by name.
    pub fn read(&self) -> Vec<PolicyCount> {
        let map = self.by_policy.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(policy, c)| PolicyCount {
                policy: policy.to_string(),
                slow_lane_starts: c.slow_starts.load(Ordering::Relaxed),
                log_lines_dropped: c.log_lines_dropped.load(Ordering::Relaxed),
                prepared_instance_calls: c.prepared_calls.load(Ordering::Relaxed),
            })
            .collect()
    }
}
