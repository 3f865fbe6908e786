//! The wasmtime engine configuration and the epoch ticker that enforces deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig,
};

use super::RuntimeConfig;
use crate::config::MAX_MEMORY_LIMIT;

/// Deadline resolution: the epoch advances this often. 1 ms makes a 2 s deadline precise to
/// 0.05 % for the cost of a thousand wake-ups a second while calls run (a fifth of that while
/// idle: see [`EpochTicker`]).
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Plugin calls that may be in flight at once (one pooled instance slot each). More wait for a
/// slot, under their deadline, instead of failing with a pool-exhausted error. 256 covers
/// 64 concurrent admission requests with four plugins each.
pub const POOL_SLOTS: u32 = 256;

/// Calls of one policy that may be in flight at once (a quarter of [`POOL_SLOTS`]); more queue
/// behind them under their own deadline. A policy whose calls are slow or hostile (a plugin
/// that sleeps to its deadline, a flood of requests for one policy) then holds at most this
/// many pool slots, and the other policies' calls still find one at once.
pub const POLICY_SLOTS: u32 = POOL_SLOTS / 4;

/// Pool slots for idle warm instances of policies with `instanceReuse`, beyond [`POOL_SLOTS`].
pub const WARM_SLOTS: u32 = 256;

/// Fresh instances made ahead of calls (at most one per policy or sink), beyond [`POOL_SLOTS`]
/// and [`WARM_SLOTS`]: with more policies than this, the calls of the others instantiate on
/// the request's path.
pub const PREPARED_SLOTS: u32 = 64;

/// The Wasm call stack a plugin may use. Deeper recursion is a contained trap
/// (`Trap::StackOverflow`), reported as a stack overflow.
pub const MAX_WASM_STACK: usize = 512 << 10;

/// The fiber stack every call runs on (calls are async). It must exceed [`MAX_WASM_STACK`]:
/// the difference is what host functions called from Wasm (WASI, `log`) have left.
const ASYNC_STACK_SIZE: usize = 2 << 20;

/// Linear memory kept resident (and reset in place) per pooled slot. With `pagemap_scan` only
/// the touched pages are reset; the first probe measured this as the largest single win
/// (30 µs → 13 µs for instantiate + call + teardown).
const KEEP_RESIDENT: usize = 1 << 20;

pub(super) fn new_engine(runtime: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(MAX_WASM_STACK);
    config.async_stack_size(ASYNC_STACK_SIZE);
    if let Some(dir) = &runtime.cache_dir {
        private_cache_dir(dir)?;
        let mut cache = CacheConfig::new();
        cache.with_directory(dir);
        config.cache(Some(Cache::new(cache)?));
    }
    let mut pool = PoolingAllocationConfig::new();
    // Instances in flight (POOL_SLOTS) plus warm ones kept by policies that opted into reuse
    // (at most 16 per policy; two snapshots' worth may be alive during a reload) plus those
    // made ahead of calls.
    let instances = POOL_SLOTS + WARM_SLOTS + PREPARED_SLOTS;
    pool.total_component_instances(instances)
        // Rust and C components have 1-3 core instances; componentize-py/js ones up to 14
        // (measured), 38 for componentize-py with stubbed WASI.
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        // Multi-memory modules are valid Wasm; the memory cap counts all of them together.
        .max_memories_per_module(8)
        .max_tables_per_component(16)
        .max_memory_size(MAX_MEMORY_LIMIT as usize)
        .table_elements(super::host::MAX_TABLE_ELEMENTS)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        // One fiber stack per call in flight (calls are async); their touched pages stay
        // resident between calls instead of being faulted in again.
        .total_stacks(instances)
        .async_stack_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Makes sure the compile cache directory is private: wasmtime maps the native code it finds
/// there and runs it, so anyone who can write to it can run code as the gateway. A missing
/// directory is created 0700 (its missing parents too); an existing one must be a directory,
/// not a symbolic link, owned by the gateway's user, and writable by no one else; otherwise
/// start-up stops with the reason. Its entries are not verified: the directory's privacy is
/// the guarantee.
pub(super) fn private_cache_dir(dir: &std::path::Path) -> wasmtime::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let refuse = |why: String| {
        wasmtime::Error::msg(format!(
            "compile cache {}: {why}; it must be a private directory (owner only, e.g. mode 0700), or choose another with --cache-dir",
            dir.display()
        ))
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| refuse(format!("cannot create it: {e}")))?;
        }
        Err(e) => return Err(refuse(format!("cannot read it: {e}"))),
        Ok(_) => {}
    }
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| refuse(format!("cannot read it: {e}")))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    // The process's effective user owns /proc/self.
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| refuse(format!("cannot tell which user this process runs as: {e}")))?
        .uid();
    if meta.uid() != me {
        return Err(refuse(format!(
            "it is owned by user {}, not by this process's user {me}",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "its mode {mode:04o} lets others write to it"
        )));
    }
    Ok(())
}

/// How often the epoch ticker looks for calls while none holds it: the first tick a call that
/// starts on an idle gateway sees comes at most this late (then one every [`EPOCH_TICK`]).
pub const IDLE_TICK: Duration = Duration::from_millis(5);

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread while a call holds a
/// [`Ticking`] guard, until dropped. With no call in flight it wakes only every [`IDLE_TICK`]
/// and leaves the epoch alone: an idle gateway does not wake a thousand times a second
/// (measured: a third of the process's CPU at one review at a time through the API server).
/// A call does not wake the ticker when it starts: waking a parked thread put a futex wake and
/// often a preemption by the woken ticker on every review's path (+20-40 µs in the handler,
/// measured), while a call that runs long enough to need its deadline enforced sees its first
/// tick within [`IDLE_TICK`]. The epoch only has to advance while Wasm runs: a store's
/// deadline is set relative to the epoch when its call starts, and a call waiting in a host
/// call is bounded by its tokio timeout.
pub(crate) struct EpochTicker {
    shared: Arc<Shared>,
}

struct Shared {
    /// Calls that hold a [`Ticking`] guard.
    active: AtomicUsize,
    stop: AtomicBool,
    /// Epoch increments so far.
    ticks: AtomicU64,
}

/// Held while Wasm of a call may run: keeps the epoch ticker ticking.
pub(crate) struct Ticking {
    shared: Arc<Shared>,
}

impl EpochTicker {
    pub(super) fn start(engine: Engine) -> Self {
        let shared = Arc::new(Shared {
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
        });
        let state = shared.clone();
        std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn(move || {
                while !state.stop.load(Ordering::Acquire) {
                    let busy = state.active.load(Ordering::Acquire) > 0;
                    std::thread::sleep(if busy { EPOCH_TICK } else { IDLE_TICK });
                    // A call that started during an idle pause gets its first tick now.
                    if busy || state.active.load(Ordering::Acquire) > 0 {
                        engine.increment_epoch();
                        state.ticks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .map(drop)
            .unwrap_or_else(|e| {
                tracing::error!(
                    "cannot start the epoch ticker, deadlines will not be enforced: {e}"
                )
            });
        EpochTicker { shared }
    }

    /// A handle for calls to take [`Ticking`] guards from.
    pub(super) fn handle(&self) -> TickerHandle {
        TickerHandle {
            shared: self.shared.clone(),
        }
    }
}

/// Hands out [`Ticking`] guards.
#[derive(Clone)]
pub(crate) struct TickerHandle {
    shared: Arc<Shared>,
}

impl TickerHandle {
    /// Keeps the epoch advancing until the guard is dropped.
    pub(super) fn ticking(&self) -> Ticking {
        self.shared.active.fetch_add(1, Ordering::AcqRel);
        Ticking {
            shared: self.shared.clone(),
        }
    }

    /// Epoch increments so far.
    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        // The ticker goes back to its idle pace after its current tick once none are left.
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_ticker_ticks_only_while_a_call_holds_it() {
        let ticker = EpochTicker::start(Engine::default());
        let handle = ticker.handle();
        let pause = Duration::from_millis(30);
        std::thread::sleep(pause);
        assert_eq!(handle.ticks(), 0, "an idle ticker must not tick");
        let first = handle.ticking();
        let second = handle.ticking();
        std::thread::sleep(pause);
        drop(first);
        let running = handle.ticks();
        // 30 a quiet machine; a loaded one (the test command runs tests in parallel) may
        // delay a 1 ms sleep by several.
        assert!(
            running >= 2,
            "a ticker held by calls must tick: {running} ticks in {pause:?}"
        );
        std::thread::sleep(pause);
        assert!(handle.ticks() > running, "one guard is still held");
        drop(second);
        // At most the tick under way when the last guard went.
        std::thread::sleep(Duration::from_millis(5));
        let parked = handle.ticks();
        std::thread::sleep(pause);
        assert!(
            handle.ticks() <= parked + 1,
            "the ticker must park when no call holds it"
        );
        // And it starts again for the next call.
        let again = handle.ticking();
        std::thread::sleep(pause);
        assert!(
            handle.ticks() >= parked + 5,
            "the next call must wake the ticker"
        );
        drop(again);
    }
}
