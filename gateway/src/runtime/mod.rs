//! Owns the wasmtime engine, the compile cache, the linker, and running one plugin call in a
//! fresh store and instance under a deadline and a memory cap. Knows nothing of HTTP or of
//! admission semantics: it takes WIT values in and gives WIT values or a [`PluginFailure`] out.

pub mod bindings;
mod engine;
mod host;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use wasmtime::component::{Component, Linker};
use wasmtime::{Store, Trap};

pub use bindings::audit_types::{
    Emission, Event as AuditEvent, Level as AuditLevel, ObjectReference as AuditObjectReference,
    Stage as AuditStage,
};
pub use bindings::types::{
    AdmissionRequest, Change, Decision, Denial, GroupVersionKind, GroupVersionResource, Mutation,
    Operation as WitOperation, Remarks, UserInfo, Verdict,
};
pub use engine::{EPOCH_TICK, POOL_SLOTS, WARM_SLOTS};
pub use host::{PluginState, STDIO_CAPACITY};

use crate::config::PluginKind;
use bindings::audit_sink::{AuditSink, AuditSinkPre};
use bindings::initializer::{Initializer, InitializerPre};
use bindings::validator::{Validator, ValidatorPre};
use host::{HostData, Limiter};

/// The WIT world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `validator`: admission policies served on `/validate`.
    Validator,
    /// `initializer`: admission policies served on `/mutate`.
    Initializer,
    /// `audit-sink`: audit sinks fed from the spool.
    AuditSink,
}

impl World {
    /// The WIT world's name.
    pub fn name(self) -> &'static str {
        match self {
            World::Validator => "validator",
            World::Initializer => "initializer",
            World::AuditSink => "audit-sink",
        }
    }
}

impl From<PluginKind> for World {
    fn from(kind: PluginKind) -> Self {
        match kind {
            PluginKind::Validator => World::Validator,
            PluginKind::Initializer => World::Initializer,
        }
    }
}

/// How the runtime is set up.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

/// Why the runtime could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Wasm runtime: {0:#}")]
pub struct RuntimeError(#[source] wasmtime::Error);

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a component, or it does not compile.
    #[error("module does not compile as a WebAssembly component: {0}")]
    Compile(String),
    /// Its imports are not what wasmgate provides.
    #[error("module imports something wasmgate does not provide: {0}")]
    Imports(String),
    /// It does not export the declared world's function.
    #[error(
        "module is not {} {world} (it does not export the `{world}` world of wasmgate:plugin@0.1.0): {detail}",
        if world.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
    )]
    WrongWorld {
        /// The world the policy declared.
        world: &'static str,
        /// wasmtime's explanation.
        detail: String,
    },
    /// It cannot even be instantiated under its limits.
    #[error("module fails to instantiate under its limits: {0}")]
    Instantiate(String),
}

/// Why a plugin call produced no usable answer. Each is handled by the policy's failure policy.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginFailure {
    /// The call ran past its deadline and was interrupted.
    #[error("deadline of {0:?} exceeded")]
    Deadline(Duration),
    /// The call tried to grow memory past its cap.
    #[error("memory limit of {limit} bytes exceeded")]
    MemoryLimit {
        /// The cap.
        limit: usize,
    },
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin returned `err(..)`.
    #[error("returned an error: {0}")]
    Returned(String),
    /// The plugin's answer breaks the contract (e.g. a replaced object that is not JSON).
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// The host failed to run the call (a bug, or shutdown).
    #[error("could not be run: {0}")]
    Host(String),
}

impl PluginFailure {
    /// A short label for metrics: `deadline`, `memory_limit`, `trap`, `error`,
    /// `invalid_output`, `host_error`.
    pub fn label(&self) -> &'static str {
        match self {
            PluginFailure::Deadline(_) => "deadline",
            PluginFailure::MemoryLimit { .. } => "memory_limit",
            PluginFailure::Trap(_) => "trap",
            PluginFailure::Returned(_) => "error",
            PluginFailure::InvalidOutput(_) => "invalid_output",
            PluginFailure::Host(_) => "host_error",
        }
    }
}

/// The wasmtime side of wasmgate: one engine, one linker, bounded concurrency.
pub struct Runtime {
    engine: wasmtime::Engine,
    linker: Linker<PluginState>,
    slots: Arc<Semaphore>,
    _ticker: engine::EpochTicker,
}

impl Runtime {
    /// Creates the engine (pooling allocator, epoch interruption, compile cache) and the linker
    /// (WASI p2 with an empty context, and the `host` interface).
    pub fn new(config: &RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = engine::new_engine(config).map_err(RuntimeError)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(RuntimeError)?;
        bindings::host::add_to_linker::<PluginState, HostData>(&mut linker, |s| &mut s.host)
            .map_err(RuntimeError)?;
        let ticker = engine::EpochTicker::start(engine.clone());
        Ok(Runtime {
            engine,
            linker,
            slots: Arc::new(Semaphore::new(POOL_SLOTS as usize)),
            _ticker: ticker,
        })
    }

    /// Compiles (or loads from the cache) a component and checks it against `kind`'s world.
    /// Blocking and possibly slow (seconds for Python or JS components): call it off the
    /// request path.
    pub fn load(&self, spec: PluginSpec) -> Result<Plugin, LoadError> {
        let component = Component::new(&self.engine, spec.bytes.as_slice())
            .map_err(|e| LoadError::Compile(one_line(&e)))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports(one_line(&e)))?;
        let world = spec.kind.name();
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            world,
            detail: one_line(&e),
        };
        let pre = match spec.kind {
            World::Validator => PluginPre::Validator(ValidatorPre::new(pre).map_err(wrong_world)?),
            World::Initializer => {
                PluginPre::Initializer(InitializerPre::new(pre).map_err(wrong_world)?)
            }
            World::AuditSink => PluginPre::AuditSink(AuditSinkPre::new(pre).map_err(wrong_world)?),
        };
        let plugin = Plugin {
            name: spec.name.into(),
            settings: spec.settings.into(),
            memory_limit: usize::try_from(spec.memory_limit).unwrap_or(usize::MAX),
            pre,
            engine: self.engine.clone(),
            slots: self.slots.clone(),
            reuse: spec.reuse,
            idle: IdlePool::default(),
        };
        // Instantiate once now, so a module whose initial memory exceeds its cap, or that traps
        // in its start function, is refused at load time rather than failing every request.
        let mut store = plugin.store(Duration::from_secs(5));
        let instantiated = match &plugin.pre {
            PluginPre::Validator(p) => p.instantiate(&mut store).map(drop),
            PluginPre::Initializer(p) => p.instantiate(&mut store).map(drop),
            PluginPre::AuditSink(p) => p.instantiate(&mut store).map(drop),
        };
        instantiated.map_err(|e| LoadError::Instantiate(one_line(&e)))?;
        Ok(plugin)
    }
}

/// What to load.
pub struct PluginSpec {
    /// The policy's name, for logs and errors.
    pub name: String,
    /// The world the module must implement.
    pub kind: World,
    /// The component's bytes.
    pub bytes: Arc<Vec<u8>>,
    /// The settings, as JSON text.
    pub settings: String,
    /// The linear-memory cap in bytes.
    pub memory_limit: u64,
    /// Opt-in reuse of warm instances; `None` (the default) is a fresh instance per call.
    pub reuse: Option<Reuse>,
}

/// Reusing warm instances, opted into per policy (`instanceReuse`). It gives up isolation
/// between requests: a reused instance keeps its linear memory and globals, so one request can
/// see what an earlier one left behind. It buys heavy runtimes (Python, JavaScript) their
/// milliseconds of instantiation back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reuse {
    /// An instance is retired after this many calls.
    pub max_calls: u32,
    /// At most this many idle instances are kept.
    pub max_idle: usize,
}

enum Instance {
    Validator(Validator),
    Initializer(Initializer),
}

/// An idle instance with its store, ready for another call.
struct Warm {
    store: Store<PluginState>,
    instance: Instance,
    calls: u32,
}

// Locked only on blocking-pool threads, for one push or pop, never across an await.
#[allow(clippy::disallowed_types)]
type IdlePool = std::sync::Mutex<Vec<Warm>>;

enum PluginPre {
    Validator(ValidatorPre<PluginState>),
    Initializer(InitializerPre<PluginState>),
    AuditSink(AuditSinkPre<PluginState>),
}

/// A compiled, type-checked plugin. Every call gets a fresh store and instance.
pub struct Plugin {
    name: Arc<str>,
    settings: Arc<str>,
    memory_limit: usize,
    pre: PluginPre,
    engine: wasmtime::Engine,
    slots: Arc<Semaphore>,
    reuse: Option<Reuse>,
    idle: IdlePool,
}

impl Plugin {
    /// The policy name this plugin was loaded for.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn store(&self, budget: Duration) -> Store<PluginState> {
        let limiter = Limiter {
            memory_limit: self.memory_limit,
            exceeded: None,
        };
        let mut store = Store::new(
            &self.engine,
            PluginState::new(self.name.clone(), self.settings.clone(), limiter),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(ticks(budget));
        store
    }

    /// Runs `validate`, blocking, under `budget`: in a fresh instance, or a warm one when the
    /// policy opted into reuse.
    pub fn validate_blocking(
        &self,
        request: &AdmissionRequest,
        budget: Duration,
    ) -> Result<Verdict, PluginFailure> {
        let PluginPre::Validator(pre) = &self.pre else {
            return Err(PluginFailure::Host(format!(
                "plugin {} is not a validator",
                self.name
            )));
        };
        self.call(
            budget,
            |store| pre.instantiate(store).map(Instance::Validator),
            |instance, store| match instance {
                Instance::Validator(v) => v.call_validate(store, request),
                Instance::Initializer(_) => unreachable_world(),
            },
        )
    }

    /// Runs `initialize`, blocking, under `budget`, like [`Self::validate_blocking`].
    pub fn initialize_blocking(
        &self,
        request: &AdmissionRequest,
        budget: Duration,
    ) -> Result<Mutation, PluginFailure> {
        let PluginPre::Initializer(pre) = &self.pre else {
            return Err(PluginFailure::Host(format!(
                "plugin {} is not an initializer",
                self.name
            )));
        };
        self.call(
            budget,
            |store| pre.instantiate(store).map(Instance::Initializer),
            |instance, store| match instance {
                Instance::Initializer(i) => i.call_initialize(store, request),
                Instance::Validator(_) => unreachable_world(),
            },
        )
    }

    /// One call: takes a warm instance if reuse is on and one is idle, else instantiates; runs
    /// `invoke` under `budget`; keeps the instance for reuse only if the call did not trap, it
    /// has calls left and the idle pool has room.
    fn call<T>(
        &self,
        budget: Duration,
        instantiate: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<Instance>,
        invoke: impl FnOnce(&Instance, &mut Store<PluginState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, PluginFailure> {
        let warm = self.reuse.and_then(|_| self.idle.lock().ok()?.pop());
        let (mut store, instance, calls) = match warm {
            Some(warm) => (warm.store, warm.instance, warm.calls),
            None => {
                let mut store = self.store(budget);
                match instantiate(&mut store) {
                    Ok(instance) => (store, instance, 0),
                    Err(e) => return finish(store.data_mut(), Err(e), budget),
                }
            }
        };
        store.set_epoch_deadline(ticks(budget));
        store.data_mut().begin_call();
        let result = invoke(&instance, &mut store);
        let trapped = result.is_err();
        let outcome = finish(store.data_mut(), result, budget);
        if let Some(reuse) = self.reuse
            && !trapped
            && calls + 1 < reuse.max_calls
            && store.data().stdio_has_room()
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < reuse.max_idle
        {
            idle.push(Warm {
                store,
                instance,
                calls: calls + 1,
            });
        }
        outcome
    }

    /// Drops every idle instance (on reload: a new snapshot starts with fresh instances).
    pub fn discard_warm(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Runs `deliver` in a fresh instance, blocking, under `budget`.
    pub fn deliver_blocking(
        &self,
        batch: &[AuditEvent],
        budget: Duration,
    ) -> Result<Vec<Emission>, PluginFailure> {
        let PluginPre::AuditSink(pre) = &self.pre else {
            return Err(PluginFailure::Host(format!(
                "plugin {} is not an audit sink",
                self.name
            )));
        };
        // Never a warm instance: a sink sees one batch and nothing of the previous one.
        let mut store = self.store(budget);
        let result = pre
            .instantiate(&mut store)
            .and_then(|instance: AuditSink| instance.call_deliver(&mut store, batch));
        finish(store.data_mut(), result, budget)
    }

    /// Runs `call` on the blocking pool once a pool slot is free, with the time left until
    /// `deadline` capped by `timeout` as its budget. Waiting for a slot counts against the
    /// deadline; a call whose budget is gone fails with [`PluginFailure::Deadline`] unrun.
    pub async fn run<R, F>(
        self: &Arc<Self>,
        deadline: Instant,
        timeout: Duration,
        call: F,
    ) -> Result<R, PluginFailure>
    where
        R: Send + 'static,
        F: FnOnce(&Plugin, Duration) -> Result<R, PluginFailure> + Send + 'static,
    {
        let permit =
            match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => {
                    return Err(PluginFailure::Host("the runtime is shutting down".into()));
                }
                Err(_elapsed) => return Err(PluginFailure::Deadline(timeout)),
            };
        let plugin = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PluginFailure::Deadline(timeout));
            }
            call(&plugin, left.min(timeout))
        })
        .await;
        joined.unwrap_or_else(|e| {
            Err(PluginFailure::Host(format!(
                "plugin call panicked in the host: {e}"
            )))
        })
    }
}

/// A warm instance of the other world: cannot happen, an instance comes from this plugin's pre.
fn unreachable_world<T>() -> wasmtime::Result<T> {
    Err(wasmtime::Error::msg(
        "internal error: instance of another world",
    ))
}

/// wasmtime's error chain on one line (some causes print arrays over several lines).
fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Epoch ticks for `budget`, rounded up, at least one.
fn ticks(budget: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    u64::try_from(budget.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Turns the outcome of one call into the plugin's answer or a classified failure, and writes
/// what the plugin printed to the log.
fn finish<T>(
    state: &mut PluginState,
    result: wasmtime::Result<Result<T, String>>,
    budget: Duration,
) -> Result<T, PluginFailure> {
    state.flush_stdio();
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(PluginFailure::Returned(message)),
        Err(_) if state.limiter.exceeded.is_some() => Err(PluginFailure::MemoryLimit {
            limit: state.limiter.memory_limit,
        }),
        Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
            Err(PluginFailure::Deadline(budget))
        }
        Err(e) => {
            let trap = e
                .downcast_ref::<Trap>()
                .map(|t| t.to_string())
                .unwrap_or_else(|| format!("{:#}", e.root_cause()));
            Err(PluginFailure::Trap(match state.last_stderr_line() {
                Some(line) => format!("{trap} ({line})"),
                None => trap,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks(Duration::ZERO), 1);
        assert_eq!(ticks(Duration::from_micros(10)), 1);
        assert_eq!(ticks(EPOCH_TICK * 3), 3);
        assert_eq!(ticks(EPOCH_TICK * 3 + Duration::from_nanos(1)), 4);
    }
}
