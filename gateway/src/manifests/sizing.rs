//! Owns sizing: the memory, CPU, ephemeral-storage and spool-volume figures of a wasmgate Pod,
//! derived from the policy file (plugins' memory limits, module sizes, sinks' file outputs) and
//! the serve limits the deploy renders. Must not render objects: [`super::deploy`] does.

use crate::config::{Config, OutputKind};

const MI: u64 = 1 << 20;

/// The process without any plugin call or audit batch in flight: the runtime, wasmtime's engine
/// and compiled code, TLS, the HTTP stacks, the spool's buffers, and the binary's machine code
/// when `--huge-text` moved it into private memory (24-30 MiB; the
/// demo serves in 45 MiB of RSS).
pub const BASE_MEMORY: u64 = 128 * MI;
/// The CPU a replica asks for; no CPU limit is set (a throttled webhook misses the API server's
/// deadline, which is worse than sharing the node).
pub const CPU_REQUEST: &str = "250m";
/// Compiled native code is several times its component's size; this factor has room to spare.
pub const COMPILE_CACHE_FACTOR: u64 = 10;
/// The compile cache's fixed part (wasmtime's cache index and the smallest modules).
pub const COMPILE_CACHE_BASE: u64 = 64 * MI;
/// `/tmp`: nothing writes there but libraries that need a scratch file.
pub const TMP_SIZE: u64 = 16 * MI;
/// Room in the outputs volume beyond the file outputs' rotation bounds.
pub const OUTPUTS_BASE: u64 = 16 * MI;
/// The spool volume holds `--spool-max-bytes` and this fraction more, for the segment being
/// written when the limit is reached, cursors and the filesystem's own overhead.
pub const SPOOL_HEADROOM_PERCENT: u64 = 25;
/// Plugin calls that run at once in a typical moment (the request's figure; the limit's is
/// [`super::Options::plugin_calls`]).
pub const TYPICAL_CALLS: u64 = 2;

/// The figures of one replica, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// Memory request: base + one audit body + every sink's call + [`TYPICAL_CALLS`] of the
    /// largest policy.
    pub memory_request: u64,
    /// Memory limit: base + audit bodies in flight × body limit + every sink's call + plugin
    /// calls × the largest policy's memory limit + one instance made ahead per policy and sink.
    pub memory_limit: u64,
    /// The compile cache's `emptyDir` size limit.
    pub cache: u64,
    /// The sinks' file outputs' `emptyDir` size limit: every file output's `maxSize` × (rotated
    /// files + the live one).
    pub outputs: u64,
    /// `/tmp`'s `emptyDir` size limit.
    pub tmp: u64,
    /// The spool's PersistentVolumeClaim request.
    pub spool_volume: u64,
}

impl Sizing {
    /// Derives the figures from `config` and the limits `gateway serve` is given:
    /// `audit_max_body` per batch, `audit_in_flight` batches at once, `spool_max_bytes`, and
    /// `plugin_calls` policy calls at once.
    pub fn derive(
        config: &Config,
        audit_max_body: u64,
        audit_in_flight: u64,
        spool_max_bytes: u64,
        plugin_calls: u64,
    ) -> Sizing {
        let largest_policy = config
            .entries
            .iter()
            .map(|e| e.module.memory_limit)
            .max()
            .unwrap_or(0);
        // One instance per sink at rest; up to `maxInFlight` of them while it catches up.
        let sinks: u64 = config.sinks.iter().map(|s| s.module.memory_limit).sum();
        let sinks_busy: u64 = config
            .sinks
            .iter()
            .map(|s| s.module.memory_limit.saturating_mul(u64::from(s.in_flight)))
            .sum();
        // Every policy and sink keeps one fresh instance made ahead of its next call, each at
        // most at its memory limit, and the runtime at most `PREPARED_SLOTS` of them.
        let mut limits: Vec<u64> = config
            .entries
            .iter()
            .map(|e| e.module.memory_limit)
            .chain(config.sinks.iter().map(|s| s.module.memory_limit))
            .collect();
        limits.sort_unstable_by(|a, b| b.cmp(a));
        let prepared: u64 = limits
            .iter()
            .take(crate::runtime::PREPARED_SLOTS as usize)
            .sum();
        let audit = !config.sinks.is_empty();
        let audit_body = if audit { audit_max_body } else { 0 };
        let audit_in_flight = if audit {
            audit_in_flight.saturating_mul(audit_max_body)
        } else {
            0
        };
        let modules: u64 = config
            .entries
            .iter()
            .map(|e| e.module.bytes.len() as u64)
            .chain(config.sinks.iter().map(|s| s.module.bytes.len() as u64))
            .sum();
        let outputs: u64 = config
            .sinks
            .iter()
            .flat_map(|s| &s.outputs)
            .map(|o| match o.kind {
                OutputKind::File {
                    max_size,
                    max_files,
                    ..
                } => max_size.saturating_mul(u64::from(max_files) + 1),
                _ => 0,
            })
            .sum();
        Sizing {
            memory_request: round_mi(
                BASE_MEMORY + audit_body + sinks + TYPICAL_CALLS.min(plugin_calls) * largest_policy,
            ),
            memory_limit: round_mi(
                BASE_MEMORY
                    + audit_in_flight
                    + sinks_busy
                    + plugin_calls.saturating_mul(largest_policy)
                    + prepared,
            ),
            cache: round_mi(COMPILE_CACHE_BASE + COMPILE_CACHE_FACTOR * modules),
            outputs: round_mi(OUTPUTS_BASE + outputs),
            tmp: TMP_SIZE,
            spool_volume: round_mi(
                spool_max_bytes + spool_max_bytes * SPOOL_HEADROOM_PERCENT / 100,
            ),
        }
    }

    /// The ephemeral storage the Pod's `emptyDir`s may use together (request and limit).
    pub fn ephemeral_storage(&self) -> u64 {
        self.cache + self.outputs + self.tmp
    }
}

/// Rounds up to a whole MiB.
fn round_mi(bytes: u64) -> u64 {
    bytes.div_ceil(MI) * MI
}

/// A byte count as a Kubernetes quantity in whole `Mi` (or `Gi` when exact).
pub fn quantity(bytes: u64) -> String {
    let mi = bytes.div_ceil(MI);
    if mi > 0 && mi.is_multiple_of(1024) {
        format!("{}Gi", mi / 1024)
    } else {
        format!("{mi}Mi")
    }
}
