//! Owns the wasmtime engine, the compile cache, the linker, and running one plugin call in a
//! fresh store and instance under a wall-clock deadline and a memory cap. Knows nothing of HTTP or of
//! admission semantics: it takes WIT values in and gives WIT values or a [`PluginFailure`] out.

pub mod bindings;
mod conversions;
mod counters;
mod engine;
mod host;
mod lane;
pub mod output;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wasmtime::component::{Component, Linker};
use wasmtime::{Store, Trap, UpdateDeadline};

pub use bindings::audit_types::{
    Emission, Event as AuditEvent, Level as AuditLevel, ObjectReference as AuditObjectReference,
    Stage as AuditStage,
};
pub use bindings::cluster::LookupError;
pub use bindings::types::{
    AdmissionRequest, Change, Decision, Denial, GroupVersionKind, GroupVersionResource, Mutation,
    Operation as WitOperation, Remarks, UserInfo, Verdict,
};
pub use engine::{
    EPOCH_TICK, MAX_WASM_STACK, POLICY_SLOTS, POOL_SLOTS, PREPARED_SLOTS, WARM_SLOTS,
};
pub use host::{PluginState, STDIO_CAPACITY};
pub use lane::{SLOW_AFTER, lower_priority};

use crate::config::PluginKind;
use bindings::v1;
use bindings::v2::audit_sink::{AuditSink, AuditSinkPre};
use bindings::v2::initializer::{Initializer, InitializerPre};
use bindings::v2::validator::{Validator, ValidatorPre};
pub use conversions::UnknownOperation;
use counters::PolicyCounters;
pub use counters::{Counters, PolicyCount};
use host::{HostData, Limiter, LogBudget};

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

/// The version of the plugin contract (the WIT package `wasmgate:plugin`) a component
/// implements. Every published version is served; the gateway speaks the newest and converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contract {
    /// `wasmgate:plugin@0.1.0`, frozen: no `validate-settings`, no `patched`, no `cluster`.
    V0_1_0,
    /// `wasmgate:plugin@0.2.0`.
    V0_2_0,
}

impl Contract {
    /// The WIT package, e.g. `wasmgate:plugin@0.2.0`.
    pub fn package(self) -> &'static str {
        match self {
            Contract::V0_1_0 => "wasmgate:plugin@0.1.0",
            Contract::V0_2_0 => "wasmgate:plugin@0.2.0",
        }
    }

    /// Whether plugins of this version check their settings at load (`validate-settings`).
    pub fn checks_settings(self) -> bool {
        self == Contract::V0_2_0
    }
}

/// Longest message of a plugin's settings refusal kept for the operator (the rest is cut): it
/// is logged and shown by `/readyz`, so a plugin cannot flood either.
pub const MAX_SETTINGS_MESSAGE: usize = 4096;

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
    /// It does not export the declared world's functions. Which contract version it was
    /// checked against follows from its exports (`validate-settings`: 0.2.0; none: 0.1.0).
    #[error(
        "module is not {} {world} (it does not export the `{world}` world of {contract}): {detail}",
        if world.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
    )]
    WrongWorld {
        /// The world the policy declared.
        world: &'static str,
        /// The contract version the component was checked against.
        contract: &'static str,
        /// wasmtime's explanation.
        detail: String,
    },
    /// It cannot even be instantiated under its limits.
    #[error("module fails to instantiate under its limits: {0}")]
    Instantiate(String),
    /// Its `validate-settings` refused the policy's settings; the plugin's message.
    #[error("settings refused by the plugin: {0}")]
    SettingsRefused(String),
    /// Its `validate-settings` did not answer: a trap, the deadline or the memory cap.
    #[error("the plugin's settings check failed: {0}")]
    SettingsCheck(PluginFailure),
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

/// How long after its end a call in the slow lane is answered for it, when it has not ended
/// itself (its lane thread got no CPU): a little past `end`, so that a call that can end itself
/// does (and writes what the plugin printed).
const LANE_GRACE: Duration = Duration::from_millis(2);

/// The budget for instantiating a plugin once at load (and reload) time, start functions
/// included: a module that does not instantiate within it is refused.
pub const LOAD_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The wasmtime side of wasmgate: one engine, one linker, bounded concurrency.
pub struct Runtime {
    engine: wasmtime::Engine,
    linker: Linker<PluginState>,
    slots: Arc<Semaphore>,
    prepare_slots: Arc<Semaphore>,
    counters: Arc<Counters>,
    ticker: engine::EpochTicker,
}

impl Runtime {
    /// Creates the engine (pooling allocator, epoch interruption, compile cache) and the linker
    /// (WASI p2 with an empty context, and the `host` interface).
    pub fn new(config: &RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = engine::new_engine(config).map_err(RuntimeError)?;
        let mut linker = Linker::new(&engine);
        // Async WASI: a plugin waiting in a host call (a sleep, a poll) waits on a tokio future,
        // which is dropped at the call's deadline like the rest of the call.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(RuntimeError)?;
        bindings::host::add_to_linker::<PluginState, HostData>(&mut linker, |s| &mut s.host)
            .map_err(RuntimeError)?;
        bindings::cluster::add_to_linker::<PluginState, HostData>(&mut linker, |s| &mut s.host)
            .map_err(RuntimeError)?;
        v1::host::add_to_linker::<PluginState, HostData>(&mut linker, |s| &mut s.host)
            .map_err(RuntimeError)?;
        let ticker = engine::EpochTicker::start(engine.clone());
        Ok(Runtime {
            engine,
            linker,
            slots: Arc::new(Semaphore::new(POOL_SLOTS as usize)),
            prepare_slots: Arc::new(Semaphore::new(PREPARED_SLOTS as usize)),
            counters: Arc::default(),
            ticker,
        })
    }

    /// What the runtime did to contain each policy's plugin (slow-lane starts, dropped log
    /// lines), for the metrics.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The world and contract version a component implements, without instantiating it (what
    /// `wasmgate push` records in the artifact's annotations).
    pub fn identify(&self, bytes: &[u8]) -> Result<(World, Contract), LoadError> {
        let component =
            Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile(one_line(&e)))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports(one_line(&e)))?;
        let v2 = component
            .component_type()
            .exports(&self.engine)
            .any(|(name, _)| name == "validate-settings");
        let contract = if v2 {
            Contract::V0_2_0
        } else {
            Contract::V0_1_0
        };
        let world = if v2 {
            if ValidatorPre::new(pre.clone()).is_ok() {
                Some(World::Validator)
            } else if InitializerPre::new(pre.clone()).is_ok() {
                Some(World::Initializer)
            } else if AuditSinkPre::new(pre).is_ok() {
                Some(World::AuditSink)
            } else {
                None
            }
        } else if v1::validator::ValidatorPre::new(pre.clone()).is_ok() {
            Some(World::Validator)
        } else if v1::initializer::InitializerPre::new(pre.clone()).is_ok() {
            Some(World::Initializer)
        } else if v1::audit_sink::AuditSinkPre::new(pre).is_ok() {
            Some(World::AuditSink)
        } else {
            None
        };
        let world = world.ok_or(LoadError::WrongWorld {
            world: "validator, initializer or audit-sink",
            contract: contract.package(),
            detail: "it implements none of them".into(),
        })?;
        Ok((world, contract))
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
        // `validate-settings` is what every 0.2.0 world exports and no 0.1.0 world does: it
        // says which version to type-check the component against (and the error names it).
        let contract = if component
            .component_type()
            .exports(&self.engine)
            .any(|(name, _)| name == "validate-settings")
        {
            Contract::V0_2_0
        } else {
            Contract::V0_1_0
        };
        let world = spec.kind.name();
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            world,
            contract: contract.package(),
            detail: one_line(&e),
        };
        let pre = match (contract, spec.kind) {
            (Contract::V0_2_0, World::Validator) => {
                PluginPre::Validator(ValidatorPre::new(pre).map_err(wrong_world)?)
            }
            (Contract::V0_2_0, World::Initializer) => {
                PluginPre::Initializer(InitializerPre::new(pre).map_err(wrong_world)?)
            }
            (Contract::V0_2_0, World::AuditSink) => {
                PluginPre::AuditSink(AuditSinkPre::new(pre).map_err(wrong_world)?)
            }
            (Contract::V0_1_0, World::Validator) => {
                PluginPre::V1Validator(v1::validator::ValidatorPre::new(pre).map_err(wrong_world)?)
            }
            (Contract::V0_1_0, World::Initializer) => PluginPre::V1Initializer(
                v1::initializer::InitializerPre::new(pre).map_err(wrong_world)?,
            ),
            (Contract::V0_1_0, World::AuditSink) => {
                PluginPre::V1AuditSink(v1::audit_sink::AuditSinkPre::new(pre).map_err(wrong_world)?)
            }
        };
        let name: Arc<str> = spec.name.into();
        let counters = self.counters.policy(&name);
        let plugin = Plugin {
            log: Arc::new(LogBudget::new(counters.clone())),
            counters,
            name,
            settings: spec.settings.into(),
            memory_limit: usize::try_from(spec.memory_limit).unwrap_or(usize::MAX),
            pre,
            contract,
            engine: self.engine.clone(),
            ticker: self.ticker.handle(),
            slots: self.slots.clone(),
            own_slots: Arc::new(Semaphore::new(POLICY_SLOTS as usize)),
            reuse: spec.reuse,
            idle: IdlePool::default(),
            prepared: PreparedSlot::default(),
            preparing: AtomicBool::new(false),
            last_start: AtomicU64::new(0),
            prepare_slots: self.prepare_slots.clone(),
            timeout: spec.timeout,
            demoted: AtomicBool::new(false),
            cluster: spec.cluster,
        };
        // Instantiate once now, so a module whose initial memory exceeds its cap, or that traps
        // (or never ends) in its start function, is refused at load time rather than failing
        // every request; and, in the same instance, have the plugin check its settings, so
        // settings it would refuse on every call refuse the policy instead.
        plugin.check_at_load(spec.timeout)?;
        Ok(plugin)
    }
}

/// What a plugin's `cluster` lookups are answered from: the cluster state granted to its policy.
/// The runtime forwards each `get` and `list` here as it came and knows nothing of where the
/// objects come from; an implementation must answer from memory (a lookup runs inside the
/// plugin's call, on its deadline) and say `denied` for what the policy is not granted.
pub trait ClusterView: Send + Sync {
    /// One object as JSON text, `None` when there is no such object.
    fn get(
        &self,
        resource: &GroupVersionResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, LookupError>;

    /// The objects matching `label_selector` (the API server's string form), as JSON text,
    /// ordered by namespace and name.
    fn list(
        &self,
        resource: &GroupVersionResource,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<String>, LookupError>;
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
    /// The cap in bytes on all the linear memories and tables of one instance together.
    pub memory_limit: u64,
    /// The policy's per-call deadline, which the settings check at load runs under too.
    pub timeout: Duration,
    /// Opt-in reuse of warm instances; `None` (the default) is a fresh instance per call.
    pub reuse: Option<Reuse>,
    /// What the plugin's `cluster` lookups read; `None`: every lookup is `denied` (the policy
    /// has no `context:` grant).
    pub cluster: Option<Arc<dyn ClusterView>>,
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

/// What one call asks a plugin to do: one variant per exported function.
/// It owns what it passes, so that a long call can move to the slow lane.
enum Call {
    Validate(Arc<AdmissionRequest>),
    Initialize(Arc<AdmissionRequest>),
    Deliver(Arc<[AuditEvent]>),
    ValidateSettings(Arc<str>),
}

/// What a plugin answered, per exported function.
enum Answer {
    Verdict(Verdict),
    Mutation(Mutation),
    Emissions(Vec<Emission>),
    SettingsAccepted,
}

/// An instance of a plugin's world, in the contract version it implements.
enum Instance {
    Validator(Validator),
    Initializer(Initializer),
    AuditSink(AuditSink),
    V1Validator(v1::validator::Validator),
    V1Initializer(v1::initializer::Initializer),
    V1AuditSink(v1::audit_sink::AuditSink),
}

impl Instance {
    async fn invoke(
        &self,
        store: &mut Store<PluginState>,
        call: &Call,
    ) -> wasmtime::Result<Result<Answer, String>> {
        Ok(match (self, call) {
            (Instance::Validator(v), Call::Validate(r)) => {
                v.call_validate(store, r).await?.map(Answer::Verdict)
            }
            (Instance::Initializer(i), Call::Initialize(r)) => {
                i.call_initialize(store, r).await?.map(Answer::Mutation)
            }
            (Instance::AuditSink(s), Call::Deliver(batch)) => {
                s.call_deliver(store, batch).await?.map(Answer::Emissions)
            }
            (Instance::Validator(v), Call::ValidateSettings(settings)) => v
                .call_validate_settings(store, settings)
                .await?
                .map(|()| Answer::SettingsAccepted),
            (Instance::Initializer(i), Call::ValidateSettings(settings)) => i
                .call_validate_settings(store, settings)
                .await?
                .map(|()| Answer::SettingsAccepted),
            (Instance::AuditSink(s), Call::ValidateSettings(settings)) => s
                .call_validate_settings(store, settings)
                .await?
                .map(|()| Answer::SettingsAccepted),
            // 0.1.0: the request converted down, the answer up.
            (Instance::V1Validator(v), Call::Validate(r)) => v
                .call_validate(store, &v1_request(r)?)
                .await?
                .map(|verdict| Answer::Verdict(verdict.into())),
            (Instance::V1Initializer(i), Call::Initialize(r)) => i
                .call_initialize(store, &v1_request(r)?)
                .await?
                .map(|mutation| Answer::Mutation(mutation.into())),
            (Instance::V1AuditSink(s), Call::Deliver(batch)) => {
                let batch: Vec<v1::audit_types::Event> = batch.iter().map(Into::into).collect();
                s.call_deliver(store, &batch)
                    .await?
                    .map(|lines| Answer::Emissions(lines.into_iter().map(Into::into).collect()))
            }
            _ => {
                return Err(wasmtime::Error::msg(
                    "internal error: a call for another world",
                ));
            }
        })
    }
}

/// An idle instance with its store, ready for another call.
struct Warm {
    store: Store<PluginState>,
    instance: Instance,
    calls: u32,
}

// Locked for one push or pop, never across an await.
#[allow(clippy::disallowed_types)]
type IdlePool = std::sync::Mutex<Vec<Warm>>;

/// A fresh instance, never called, made ahead of the call that will use it: after a call, off
/// its answer's path, so that the next call does not wait for instantiation. It is what the
/// call would have instantiated itself (same store, same limits, start functions run under the
/// policy's deadline): isolation is the same, only the time it is made moves.
struct Prepared {
    store: Store<PluginState>,
    instance: Instance,
    /// Its share of [`PREPARED_SLOTS`].
    _slot: OwnedSemaphorePermit,
}

// Locked for one take or put, never across an await.
#[allow(clippy::disallowed_types)]
type PreparedSlot = std::sync::Mutex<Option<Prepared>>;

/// A policy's calls that start at least this far apart get their next instance made ahead of
/// them: one review at a time, where the request waits for instantiation and the CPU is
/// otherwise idle (through the API server, reviews come milliseconds apart). Calls that come
/// closer together, under load, instantiate themselves as before: there every CPU is busy, and
/// an instance made on another worker thread and used on this one was measured to cost more
/// CPU per request than it saved (`/validate` at c=16, 0.49-0.56x of the floor against
/// 0.58-0.59x without).
pub const PREPARE_SPACING: Duration = Duration::from_millis(1);

/// The origin of the calls' start times (`Plugin::last_start`).
fn clock_origin() -> std::time::Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

/// The right to make a policy's next instance: a share of [`PREPARED_SLOTS`], and the policy's
/// `preparing` flag, cleared when this is dropped (made, failed, or dropped with its task).
struct Preparation {
    plugin: Arc<Plugin>,
    slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Preparation {
    fn drop(&mut self) {
        self.plugin.preparing.store(false, Ordering::Release);
    }
}

/// A 0.1.0 plugin's request: what the gateway holds, converted down. An operation 0.1.0 has no
/// name for cannot be given to it (the host fails the call, it is no answer of the plugin's).
fn v1_request(request: &AdmissionRequest) -> wasmtime::Result<v1::types::AdmissionRequest> {
    v1::types::AdmissionRequest::try_from(request).map_err(wasmtime::Error::new)
}

enum PluginPre {
    Validator(ValidatorPre<PluginState>),
    Initializer(InitializerPre<PluginState>),
    AuditSink(AuditSinkPre<PluginState>),
    V1Validator(v1::validator::ValidatorPre<PluginState>),
    V1Initializer(v1::initializer::InitializerPre<PluginState>),
    V1AuditSink(v1::audit_sink::AuditSinkPre<PluginState>),
}

impl PluginPre {
    async fn instantiate(&self, store: &mut Store<PluginState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            PluginPre::Validator(p) => Instance::Validator(p.instantiate_async(store).await?),
            PluginPre::Initializer(p) => Instance::Initializer(p.instantiate_async(store).await?),
            PluginPre::AuditSink(p) => Instance::AuditSink(p.instantiate_async(store).await?),
            PluginPre::V1Validator(p) => Instance::V1Validator(p.instantiate_async(store).await?),
            PluginPre::V1Initializer(p) => {
                Instance::V1Initializer(p.instantiate_async(store).await?)
            }
            PluginPre::V1AuditSink(p) => Instance::V1AuditSink(p.instantiate_async(store).await?),
        })
    }
}

/// A compiled, type-checked plugin. Every call gets a fresh store and instance (or a warm one,
/// for policies that opted into reuse). The fresh instance is made ahead of the call when the
/// policy's calls come [`PREPARE_SPACING`] apart or more: after each call, off its answer's
/// path, the next call's instance is instantiated ([`Prepared`]), so that a request does not
/// wait for instantiation (tens of microseconds for Rust, milliseconds for Python or
/// JavaScript).
pub struct Plugin {
    name: Arc<str>,
    settings: Arc<str>,
    memory_limit: usize,
    pre: PluginPre,
    contract: Contract,
    engine: wasmtime::Engine,
    /// Keeps the epoch advancing while this plugin's Wasm may run.
    ticker: engine::TickerHandle,
    slots: Arc<Semaphore>,
    /// This policy's share of `slots` (see [`POLICY_SLOTS`]).
    own_slots: Arc<Semaphore>,
    reuse: Option<Reuse>,
    idle: IdlePool,
    /// A fresh instance made after the previous call, for the next one (see [`Prepared`]).
    prepared: PreparedSlot,
    /// Whether a task is making the next one now.
    preparing: AtomicBool,
    /// When this policy's latest call started, in nanoseconds since [`clock_origin`].
    last_start: AtomicU64,
    /// The runtime's budget of prepared instances (see [`PREPARED_SLOTS`]).
    prepare_slots: Arc<Semaphore>,
    /// The policy's per-call deadline: what making a prepared instance may take.
    timeout: Duration,
    log: Arc<LogBudget>,
    counters: Arc<PolicyCounters>,
    /// Whether this policy's latest call ran past its allowance (`lane::allowance`), went over
    /// the per-call log limit, or failed as only a broken or hostile plugin does (a trap, the
    /// memory cap, an invalid output): its next call then starts in the slow lane (counted in
    /// `counters`). A call that ends well on its own clears it.
    demoted: AtomicBool,
    cluster: Option<Arc<dyn ClusterView>>,
}

impl Plugin {
    /// The policy name this plugin was loaded for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The contract version the plugin implements (and so whether its settings were checked).
    pub fn contract(&self) -> Contract {
        self.contract
    }

    /// A store for one call (or, with reuse, for an instance's life). Its epoch callback yields
    /// to tokio at every tick, so that the call's future can be dropped at its deadline, and
    /// interrupts the plugin itself once the call's end has passed.
    fn store(&self) -> Store<PluginState> {
        let limiter = Limiter::new(self.memory_limit);
        let mut store = Store::new(
            &self.engine,
            PluginState::new(
                self.name.clone(),
                self.settings.clone(),
                limiter,
                self.log.clone(),
                self.cluster.clone(),
            ),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().call_end() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
        store
    }

    /// A fresh store and its instance, made (start functions run) under the memory cap before
    /// `end`; the store is returned either way, with what the failure left in it.
    async fn instantiate_until(
        &self,
        end: Instant,
    ) -> (Store<PluginState>, wasmtime::Result<Instance>) {
        let mut store = self.store();
        store.data_mut().begin_call(end);
        let instance = match tokio::time::timeout_at(end, self.pre.instantiate(&mut store)).await {
            Ok(instance) => instance,
            Err(_elapsed) => Err(wasmtime::Error::new(Trap::Interrupt)),
        };
        (store, instance)
    }

    /// Runs `validate` under the time left until `deadline`, at most `timeout`: in a fresh
    /// instance, or a warm one when the policy opted into reuse.
    pub async fn validate(
        self: &Arc<Self>,
        request: &Arc<AdmissionRequest>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Verdict, PluginFailure> {
        self.validate_on(request, deadline, timeout, false).await
    }

    /// [`Self::validate`] for a background scan: the same limits, but on the slow lane's
    /// low-priority threads from the start, so that scans never take a CPU from admission, and
    /// without moving the policy's admission calls there.
    pub async fn validate_background(
        self: &Arc<Self>,
        request: &Arc<AdmissionRequest>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Verdict, PluginFailure> {
        self.validate_on(request, deadline, timeout, true).await
    }

    async fn validate_on(
        self: &Arc<Self>,
        request: &Arc<AdmissionRequest>,
        deadline: Instant,
        timeout: Duration,
        background: bool,
    ) -> Result<Verdict, PluginFailure> {
        match self
            .call(
                Call::Validate(request.clone()),
                deadline,
                timeout,
                background,
            )
            .await?
        {
            Answer::Verdict(v) => Ok(v),
            _ => Err(self.not_a("validator")),
        }
    }

    /// Runs `initialize`, like [`Self::validate`].
    pub async fn initialize(
        self: &Arc<Self>,
        request: &Arc<AdmissionRequest>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Mutation, PluginFailure> {
        match self
            .call(Call::Initialize(request.clone()), deadline, timeout, false)
            .await?
        {
            Answer::Mutation(m) => Ok(m),
            _ => Err(self.not_a("initializer")),
        }
    }

    /// Runs `deliver`, always in a fresh instance (a sink sees one batch and nothing of the
    /// previous one), like [`Self::validate`].
    pub async fn deliver(
        self: &Arc<Self>,
        batch: &Arc<[AuditEvent]>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<Emission>, PluginFailure> {
        match self
            .call(Call::Deliver(batch.clone()), deadline, timeout, false)
            .await?
        {
            Answer::Emissions(e) => Ok(e),
            _ => Err(self.not_a("audit sink")),
        }
    }

    fn not_a(&self, world: &str) -> PluginFailure {
        PluginFailure::Host(format!("plugin {} is not a {world}", self.name))
    }

    /// One call, start to end under one wall-clock budget: waiting for one of the policy's
    /// [`POLICY_SLOTS`], then for a pool slot, counts against `deadline`; then instantiation
    /// (start functions included) and the call run within the time left, at most `timeout`.
    /// A call that has run for [`SLOW_AFTER`] (a sink's: plus [`lane::SLOW_PER_EVENT`] per
    /// event of its batch) goes on in the slow lane (see `lane`), as does
    /// every call of a policy whose latest call went there or failed as a hostile plugin's
    /// would (see `demoted`), with
    /// its slots, which it gives back when its store is dropped. At the end of the budget the
    /// call is dropped wherever it is (in Wasm, or waiting in a host call), which drops its
    /// store and gives its pool slot back.
    async fn call(
        self: &Arc<Self>,
        call: Call,
        deadline: Instant,
        timeout: Duration,
        background: bool,
    ) -> Result<Answer, PluginFailure> {
        let slots = async {
            let own = self.own_slots.clone().acquire_owned().await?;
            Ok::<_, tokio::sync::AcquireError>((own, self.slots.clone().acquire_owned().await?))
        };
        let permits = match tokio::time::timeout_at(deadline, slots).await {
            Ok(Ok(permits)) => permits,
            Ok(Err(_closed)) => {
                return Err(PluginFailure::Host("the runtime is shutting down".into()));
            }
            Err(_elapsed) => return Err(PluginFailure::Deadline(timeout)),
        };
        let now = Instant::now();
        let budget = deadline.saturating_duration_since(now).min(timeout);
        if budget.is_zero() {
            return Err(PluginFailure::Deadline(timeout));
        }
        let end = now + budget;
        let demoted = self.demoted.load(Ordering::Relaxed);
        // A sink's call is allowed time per event of its batch (see `lane::SLOW_PER_EVENT`).
        let slow_after = lane::allowance(match &call {
            Call::Deliver(batch) => batch.len(),
            _ => 0,
        });
        // An audit sink's batch must be delivered however busy the machine: its calls never
        // go where they could be starved (`lane::Class`).
        let class = match &call {
            Call::Deliver(_) => lane::Class::Nice,
            _ => lane::Class::Idle,
        };
        let run = lane::run(
            self.clone().run(call, permits, end, budget),
            demoted || background,
            slow_after,
            class,
        );
        if run.on_lane() && !background {
            self.counters.slow_starts.fetch_add(1, Ordering::Relaxed);
        }
        // The call ends itself at `end` (and writes what the plugin printed); this is for a
        // call in the slow lane whose thread does not get a CPU in time: it is answered now and
        // dropped when a lane thread gets to it.
        let (outcome, demote) = match tokio::time::timeout_at(end + LANE_GRACE, run).await {
            Ok(Ok(((outcome, log_limited), ran))) => {
                let demote = ran >= slow_after
                    || log_limited
                    || matches!(
                        outcome,
                        Err(PluginFailure::Trap(_)
                            | PluginFailure::MemoryLimit { .. }
                            | PluginFailure::InvalidOutput(_))
                    );
                (outcome, demote)
            }
            Ok(Err(dropped)) => (Err(PluginFailure::Host(dropped.to_string())), demoted),
            Err(_elapsed) => (Err(PluginFailure::Deadline(budget)), true),
        };
        if demote != demoted && !background {
            self.demoted.store(demote, Ordering::Relaxed);
        }
        outcome
    }

    /// The call itself, holding its slots: in a fresh instance or a warm one, until `end`; its
    /// answer checked against the output bounds, and whether it went over the per-call log
    /// limit. A warm instance is kept for reuse only if its call did not fail, it has calls
    /// left and the idle pool has room.
    async fn run(
        self: Arc<Self>,
        call: Call,
        permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
        end: Instant,
        budget: Duration,
    ) -> (Result<Answer, PluginFailure>, bool) {
        let reuse = match call {
            Call::Deliver(_) => None,
            _ => self.reuse,
        };
        // Whether this call came at least PREPARE_SPACING after the policy's previous one.
        let now = u64::try_from(clock_origin().elapsed().as_nanos()).unwrap_or(u64::MAX);
        let spaced = now.saturating_sub(self.last_start.swap(now, Ordering::Relaxed))
            >= PREPARE_SPACING.as_nanos() as u64;
        // Deadlines in Wasm need the epoch to advance: from before the store's deadline is set
        // until the call is done with it.
        let _ticking = self.ticker.ticking();
        let warm = match reuse {
            Some(_) => self.idle.lock().ok().and_then(|mut idle| idle.pop()),
            None => self.take_prepared(),
        };
        let (mut store, warm_instance, calls) = match warm {
            Some(warm) => (warm.store, Some(warm.instance), warm.calls),
            None => (self.store(), None, 0),
        };
        store.data_mut().begin_call(end);
        store.set_epoch_deadline(1);
        let pre = &self.pre;
        let work = async {
            let instance = match warm_instance {
                Some(instance) => instance,
                None => match pre.instantiate(&mut store).await {
                    Ok(instance) => instance,
                    Err(e) => return (None, Err(e)),
                },
            };
            let result = instance.invoke(&mut store, &call).await;
            (Some(instance), result)
        };
        // The epoch callback interrupts Wasm that runs past `end`; the timeout covers a call
        // waiting in a host call, where no Wasm runs to see the epoch.
        let (instance, result) = match tokio::time::timeout_at(end, work).await {
            Ok(done) => done,
            Err(_elapsed) => (None, Err(wasmtime::Error::new(Trap::Interrupt))),
        };
        let failed = !matches!(result, Ok(Ok(_)));
        let outcome = finish(store.data_mut(), result, budget)
            .and_then(|answer| output::check(&answer, &call).map(|()| answer));
        let log_limited = store.data().log_limited();
        if let (Some(reuse), Some(instance)) = (reuse, instance)
            && !failed
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
        } else if reuse.is_none()
            && spaced
            && let Some(preparation) = self.claim_preparation()
        {
            // Off this answer's path and off the CPUs that serve requests: on the slow lane's
            // `SCHED_IDLE` threads, which run only when a CPU has nothing else to do, the used
            // store is dropped (its pool slot reset) and the next call's instance made. At one
            // review at a time that is the idle time between reviews; a task on the request
            // workers instead woke the other worker before the answer was written and took its
            // CPU while the API server, on the same machine, was reading the answer (measured:
            // the 46 µs the made instance saved the handler did not reach the API server). The
            // preparation's share of `PREPARED_SLOTS` covers the used store until it is
            // dropped, so the call's slots are given back now.
            drop(permits);
            let prepare = async move {
                drop(store);
                Self::prepare(preparation).await;
            };
            if let Err(prepare) = lane::spawn(prepare, lane::Class::Idle) {
                // No slow lane: a task of its own that runs once this one has given its
                // worker back.
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    prepare.await
                });
            }
        }
        (outcome, log_limited)
    }

    /// The instance made ahead for this call, if there is one, as a warm instance that has
    /// served no call.
    fn take_prepared(&self) -> Option<Warm> {
        let prepared = self.prepared.lock().ok()?.take()?;
        self.counters.prepared_calls.fetch_add(1, Ordering::Relaxed);
        Some(Warm {
            store: prepared.store,
            instance: prepared.instance,
            calls: 0,
        })
    }

    /// Claims the making of the next call's fresh instance, unless one is ready or being made,
    /// the policy is demoted (its calls start in the slow lane, instantiation included) or the
    /// runtime's budget of prepared instances is spent. Under load, calls come faster than
    /// instances are made: one at a time per policy means none is made for nothing.
    fn claim_preparation(self: &Arc<Self>) -> Option<Preparation> {
        if self.demoted.load(Ordering::Relaxed)
            || self.prepared.lock().map_or(true, |p| p.is_some())
        {
            return None;
        }
        self.preparing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        // From here the Preparation's drop clears `preparing`, also when no slot is free.
        let mut preparation = Preparation {
            plugin: self.clone(),
            slot: None,
        };
        preparation.slot = Some(self.prepare_slots.clone().try_acquire_owned().ok()?);
        Some(preparation)
    }

    /// Makes the next call's fresh instance under the policy's deadline, the memory cap and
    /// the slow lane's rules, like an instantiation inside a call. A failure is dropped: the
    /// next call instantiates itself and reports it. One that runs past [`SLOW_AFTER`] demotes
    /// the policy.
    async fn prepare(mut preparation: Preparation) {
        let end = Instant::now() + preparation.plugin.timeout;
        // The slow lane may run the work on a thread of its own: it owns its handle.
        let plugin = preparation.plugin.clone();
        let work = async move {
            let _ticking = plugin.ticker.ticking();
            match plugin.instantiate_until(end).await {
                (store, Ok(instance)) => Some((store, instance)),
                (_, Err(_)) => None,
            }
        };
        let made = lane::run(work, false, SLOW_AFTER, lane::Class::Idle);
        match tokio::time::timeout_at(end + LANE_GRACE, made).await {
            Ok(Ok((Some((store, instance)), ran))) if ran < SLOW_AFTER => {
                if let (Ok(mut prepared), Some(slot)) =
                    (preparation.plugin.prepared.lock(), preparation.slot.take())
                {
                    *prepared = Some(Prepared {
                        store,
                        instance,
                        _slot: slot,
                    });
                }
            }
            Ok(Ok((_, ran))) if ran >= SLOW_AFTER => {
                preparation.plugin.demoted.store(true, Ordering::Relaxed)
            }
            _ => {}
        }
    }

    /// Instantiates once, under [`LOAD_CHECK_TIMEOUT`] and the memory cap, then (0.2.0) calls
    /// `validate-settings` with the policy's settings in that instance, under the policy's
    /// `timeout` and the same memory cap; on a thread of its own with its own tokio runtime
    /// (WASI's host calls need one, and the caller may be on an async runtime's thread already).
    fn check_at_load(&self, timeout: Duration) -> Result<(), LoadError> {
        let check = || -> Result<(), LoadError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| LoadError::Instantiate(format!("cannot start the check: {e}")))?;
            let _ticking = self.ticker.ticking();
            runtime.block_on(async {
                let (mut store, instance) = self
                    .instantiate_until(Instant::now() + LOAD_CHECK_TIMEOUT)
                    .await;
                let instance = finish(store.data_mut(), instance.map(Ok), LOAD_CHECK_TIMEOUT)
                    .map_err(|failure| LoadError::Instantiate(failure.to_string()))?;
                if !self.contract.checks_settings() {
                    return Ok(());
                }
                let end = Instant::now() + timeout;
                store.data_mut().begin_call(end);
                store.set_epoch_deadline(1);
                let call = Call::ValidateSettings(self.settings.clone());
                let result =
                    match tokio::time::timeout_at(end, instance.invoke(&mut store, &call)).await {
                        Ok(result) => result,
                        Err(_elapsed) => Err(wasmtime::Error::new(Trap::Interrupt)),
                    };
                match finish(store.data_mut(), result, timeout) {
                    Ok(_) => Ok(()),
                    Err(PluginFailure::Returned(mut why)) => {
                        if why.len() > MAX_SETTINGS_MESSAGE {
                            let mut cut = MAX_SETTINGS_MESSAGE;
                            while !why.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            why.truncate(cut);
                            why.push_str("...");
                        }
                        Err(LoadError::SettingsRefused(why))
                    }
                    Err(failure) => Err(LoadError::SettingsCheck(failure)),
                }
            })
        };
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("wasmgate-load-check".into())
                .spawn_scoped(scope, check)
                .map_err(|e| LoadError::Instantiate(format!("cannot start the check: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(LoadError::Instantiate("the check panicked".into())))
        })
    }

    /// Drops every idle instance (on reload: a new snapshot starts with fresh instances).
    pub fn discard_warm(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        if let Ok(mut prepared) = self.prepared.lock() {
            prepared.take();
        }
    }
}

/// wasmtime's error chain on one line (some causes print arrays over several lines).
fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
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
        // Not the plugin's doing: the host could not express the request in its contract.
        Err(e) if e.downcast_ref::<UnknownOperation>().is_some() => {
            Err(PluginFailure::Host(e.to_string()))
        }
        Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::StackOverflow) => {
            Err(PluginFailure::Trap(format!(
                "stack overflow: the plugin used more than its {} KiB of call stack (deep or endless recursion)",
                MAX_WASM_STACK / 1024
            )))
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
