//! The wasmtime engine configuration and the epoch ticker that enforces deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig,
};

use super::RuntimeConfig;
use crate::config::MAX_MEMORY_LIMIT;

/// Deadline resolution: the epoch advances this often. 1 ms makes a 2 s deadline precise to
/// 0.05 % for the cost of a thousand wake-ups a second.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Plugin calls that may be in flight at once (one pooled instance slot each). More wait for a
/// slot, under their deadline, instead of failing with a pool-exhausted error. 256 covers
/// 64 concurrent admission requests with four plugins each.
pub const POOL_SLOTS: u32 = 256;

/// Pool slots for idle warm instances of policies with `instanceReuse`, beyond [`POOL_SLOTS`].
pub const WARM_SLOTS: u32 = 256;

/// Linear memory kept resident (and reset in place) per pooled slot. With `pagemap_scan` only
/// the touched pages are reset; the first probe measured this as the largest single win
/// (30 µs → 13 µs for instantiate + call + teardown).
const KEEP_RESIDENT: usize = 1 << 20;

pub(super) fn new_engine(runtime: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if let Some(dir) = &runtime.cache_dir {
        std::fs::create_dir_all(dir)?;
        let mut cache = CacheConfig::new();
        cache.with_directory(dir);
        config.cache(Some(Cache::new(cache)?));
    }
    let mut pool = PoolingAllocationConfig::new();
    // Instances in flight (POOL_SLOTS) plus warm ones kept by policies that opted into reuse
    // (at most 16 per policy; two snapshots' worth may be alive during a reload).
    let instances = POOL_SLOTS + WARM_SLOTS;
    pool.total_component_instances(instances)
        // Rust and C components have 1-3 core instances; componentize-py/js ones up to 14
        // (measured), 38 for componentize-py with stubbed WASI.
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_memory_size(MAX_MEMORY_LIMIT as usize)
        .table_elements(super::host::MAX_TABLE_ELEMENTS)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(super) fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map(drop)
            .unwrap_or_else(|e| {
                tracing::error!(
                    "cannot start the epoch ticker, deadlines will not be enforced: {e}"
                )
            });
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
