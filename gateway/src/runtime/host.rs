//! Owns the store data of one plugin call and the interfaces plugins import: `host` (`log` and
//! `settings`, in both contract versions) and `cluster` (0.2.0). The WASI context is empty: no
//! files, environment, arguments or sockets; stdout and stderr go to bounded memory pipes that
//! are written to the log, with the plugin's name, after the call. Everything a plugin writes reaches the log escaped (one plugin line is one log
//! line) and under a per-call and a per-policy limit, checked before any work on the line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::counters::PolicyCounters;

use tokio::time::Instant;

use wasmtime::component::{HasData, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::cluster::{self, LookupError};
use super::bindings::host::{self, Level};
use super::bindings::types::GroupVersionResource;
use super::bindings::v1;

/// Bytes of stdout (and, separately, stderr) kept per call. A plugin that writes more gets a
/// closed stream (Rust's `println!` then panics, which is a plugin failure): a plugin cannot
/// flood the gateway's memory or log through stdio.
pub const STDIO_CAPACITY: usize = 16 * 1024;
/// Lines (host `log` calls, then stdout and stderr lines) honoured per plugin call; further
/// ones are counted and dropped, so a plugin in a logging loop costs the log at most this many
/// lines. A call that goes over it marks its policy as misbehaving (see `Plugin::demoted`).
pub const MAX_LOG_LINES_PER_CALL: u32 = 64;
/// Longest message a `log` call may write; the rest is cut.
pub const MAX_LOG_MESSAGE: usize = 4096;
/// Lines (host `log`, stdout and stderr together) one policy may write to the log per second,
/// across all its calls: a plugin called at 10,000 requests a second that logs on every call
/// costs the log at most this many lines a second. The rest are counted, and the count is
/// logged once per second.
pub const LOG_LINES_PER_SECOND: u32 = 100;

/// Everything one call's `Store` holds.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) host: HostCtx,
    pub(super) stdout: MemoryOutputPipe,
    pub(super) stderr: MemoryOutputPipe,
    /// Bytes of stdout and stderr already written to the log (a reused instance keeps its pipes).
    logged: [usize; 2],
    /// When the current call's budget ends; the epoch callback interrupts Wasm past it.
    call_end: Instant,
}

impl PluginState {
    pub(super) fn new(
        plugin: Arc<str>,
        settings: Arc<str>,
        limiter: Limiter,
        log: Arc<LogBudget>,
        cluster: Option<Arc<dyn super::ClusterView>>,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        // WasiCtxBuilder's defaults are the sandbox: no env, args or preopens, stdin closed,
        // every socket address denied. We only redirect stdout and stderr.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        PluginState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            host: HostCtx {
                plugin,
                settings,
                log_lines: 0,
                dropped_log_lines: 0,
                limited: false,
                log,
                cluster,
            },
            stdout,
            stderr,
            logged: [0, 0],
            call_end: Instant::now(),
        }
    }

    /// Starts a call that must end by `end`: resets what is counted per call (a reused
    /// instance keeps its store).
    pub(super) fn begin_call(&mut self, end: Instant) {
        self.host.log_lines = 0;
        self.host.dropped_log_lines = 0;
        self.host.limited = false;
        self.limiter.exceeded = None;
        self.call_end = end;
    }

    /// When the current call's budget ends.
    pub(super) fn call_end(&self) -> Instant {
        self.call_end
    }

    /// Whether the stdio pipes have room for another call's output (they cannot be emptied, so a
    /// reused instance whose pipes are half full is retired).
    pub(super) fn stdio_has_room(&self) -> bool {
        self.logged.iter().all(|&n| n < STDIO_CAPACITY / 2)
    }

    /// Whether the current call went over [`MAX_LOG_LINES_PER_CALL`].
    pub(super) fn log_limited(&self) -> bool {
        self.host.limited
    }

    /// Writes what the plugin printed since the last flush to the log, one event per line,
    /// under the same limits as `log` (a dropped line is only counted: not decoded or escaped).
    pub(super) fn flush_stdio(&mut self) {
        for (i, stream) in ["stdout", "stderr"].into_iter().enumerate() {
            let bytes = if i == 0 {
                self.stdout.contents()
            } else {
                self.stderr.contents()
            };
            let new = bytes.get(self.logged[i]..).unwrap_or_default();
            self.logged[i] = bytes.len();
            for line in new.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if self.host.take_line() {
                    let line = String::from_utf8_lossy(line);
                    tracing::info!(plugin = %self.host.plugin, stream, "{}", escaped(&line));
                }
            }
        }
        if self.host.dropped_log_lines > 0 {
            self.host.log.dropped(self.host.dropped_log_lines);
            self.host.dropped_log_lines = 0;
        }
    }

    /// The last meaningful line the plugin wrote to stderr: for a Rust panic, its message
    /// (std prints `thread .. panicked at FILE:LINE:`, the message, then a backtrace hint).
    pub(super) fn last_stderr_line(&self) -> Option<String> {
        let bytes = self.stderr.contents();
        String::from_utf8_lossy(&bytes)
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .map(str::to_owned)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The part of the store the `host` interface sees.
pub struct HostCtx {
    plugin: Arc<str>,
    settings: Arc<str>,
    log_lines: u32,
    dropped_log_lines: u32,
    /// Whether this call went over [`MAX_LOG_LINES_PER_CALL`].
    limited: bool,
    log: Arc<LogBudget>,
    cluster: Option<Arc<dyn super::ClusterView>>,
}

/// A policy's log rate limit, shared by all its calls: at most [`LOG_LINES_PER_SECOND`] lines
/// in each one-second window; the lines dropped in a window (by this limit or the per-call
/// one) are reported in one line when the policy next logs in a later window, and counted in
/// the policy's counters.
pub struct LogBudget {
    /// The current window: seconds since the budget was created.
    window: AtomicU64,
    /// Lines admitted in the current window.
    lines: AtomicU32,
    /// Lines refused in the current window.
    dropped: AtomicU32,
    origin: std::sync::OnceLock<Instant>,
    counters: Arc<PolicyCounters>,
}

impl LogBudget {
    pub(super) fn new(counters: Arc<PolicyCounters>) -> Self {
        LogBudget {
            window: AtomicU64::new(0),
            lines: AtomicU32::new(0),
            dropped: AtomicU32::new(0),
            origin: std::sync::OnceLock::new(),
            counters,
        }
    }

    /// Whether another line may be logged now.
    pub(super) fn admit(&self, plugin: &str) -> bool {
        let origin = *self.origin.get_or_init(Instant::now);
        let now = origin.elapsed().as_secs();
        let window = self.window.load(Ordering::Relaxed);
        if now != window
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.lines.store(0, Ordering::Relaxed);
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    plugin,
                    dropped,
                    "plugin log lines were dropped (over {MAX_LOG_LINES_PER_CALL} a call or {LOG_LINES_PER_SECOND} a second)"
                );
            }
        }
        if self.lines.fetch_add(1, Ordering::Relaxed) < LOG_LINES_PER_SECOND {
            true
        } else {
            self.dropped(1);
            false
        }
    }

    /// Counts lines dropped, to be reported when the next window opens.
    pub(super) fn dropped(&self, lines: u32) {
        self.dropped.fetch_add(lines, Ordering::Relaxed);
        self.counters
            .log_lines_dropped
            .fetch_add(u64::from(lines), Ordering::Relaxed);
    }
}

/// A plugin's text as one log line: line breaks, tabs and every other control character are
/// written as escapes (`\n`, `\u{1b}`), so a plugin cannot forge log lines or terminal
/// sequences.
pub fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

/// Marker that projects the store data onto [`HostCtx`] for the linker.
pub struct HostData;

impl HasData for HostData {
    type Data<'a> = &'a mut HostCtx;
}

impl host::Host for HostCtx {
    fn log(&mut self, level: Level, mut message: String) {
        if !self.take_line() {
            return;
        }
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = &*self.plugin;
        let message = escaped(&message);
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn settings(&mut self) -> String {
        self.settings.to_string()
    }
}

/// The `host` interface of wasmgate:plugin@0.1.0: the same two functions, served by the 0.2.0
/// implementation.
impl v1::host::Host for HostCtx {
    fn log(&mut self, level: v1::host::Level, message: String) {
        host::Host::log(self, level.into(), message);
    }

    fn settings(&mut self) -> String {
        host::Host::settings(self)
    }
}

/// The `cluster` interface (0.2.0): served by the policy's [`super::ClusterView`], which
/// answers only what the policy's `context:` grants; a policy without grants has none, and
/// every lookup is `denied` with a message naming the policy and the resource asked for.
impl cluster::Host for HostCtx {
    fn get(
        &mut self,
        resource: GroupVersionResource,
        namespace: String,
        name: String,
    ) -> Result<Option<String>, LookupError> {
        match &self.cluster {
            Some(view) => view.get(&resource, &namespace, &name),
            None => Err(self.not_granted(&resource)),
        }
    }

    fn list(
        &mut self,
        resource: GroupVersionResource,
        namespace: String,
        label_selector: String,
    ) -> Result<Vec<String>, LookupError> {
        match &self.cluster {
            Some(view) => view.list(&resource, &namespace, &label_selector),
            None => Err(self.not_granted(&resource)),
        }
    }
}

impl HostCtx {
    /// Whether one more line of this call may be logged: under the per-call limit (a line over
    /// it is counted, and marks the call) and the policy's per-second budget. Nothing is done
    /// on a refused line but counting it.
    fn take_line(&mut self) -> bool {
        if self.log_lines >= MAX_LOG_LINES_PER_CALL {
            self.dropped_log_lines += 1;
            self.limited = true;
            return false;
        }
        self.log_lines += 1;
        self.log.admit(&self.plugin)
    }

    fn not_granted(&self, resource: &GroupVersionResource) -> LookupError {
        let group = if resource.group.is_empty() {
            "core"
        } else {
            resource.group.as_str()
        };
        LookupError::Denied(format!(
            "policy {:?} has no `context:` grant for {}/{} {}: it has no `context:` in the policy file, so nothing is granted",
            &*self.plugin, group, resource.version, resource.resource
        ))
    }
}

/// Caps what one instance may allocate: all its linear memories and tables together (a
/// component with eight memories gets the cap once, not eight times), table elements, and the
/// number of instances, tables and memories. Initial sizes count (the limiter is asked when
/// each memory and table is created, start functions run under it), and a reused instance
/// keeps its account. Records when the cap was what stopped the plugin, so the failure can
/// say so.
pub struct Limiter {
    pub(super) memory_limit: usize,
    pub(super) exceeded: Option<usize>,
    /// Bytes held by all memories and tables so far.
    used: usize,
}

impl Limiter {
    pub(super) fn new(memory_limit: usize) -> Self {
        Limiter {
            memory_limit,
            exceeded: None,
            used: 0,
        }
    }

    /// Accounts for one memory or table going from `current` to `desired` bytes.
    fn grow(&mut self, what: &str, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory_limit {
            self.exceeded = Some(total);
            wasmtime::bail!(
                "memory limit of {} bytes exceeded: growing a {what} would take the instance's memories and tables to {total}",
                self.memory_limit
            );
        }
        self.used = total;
        Ok(true)
    }
}

/// Bytes a table element counts for against the memory cap (a function reference is a
/// pointer).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Table elements one table may hold; funcref tables of the largest measured guests
/// (Python/JS) stay well below.
pub const MAX_TABLE_ELEMENTS: usize = 200_000;
/// Core instances, tables and memories one component may create; componentize-py/js components
/// use tens of core instances.
pub const MAX_INSTANCES: usize = 100;

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow("memory", current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            wasmtime::bail!(
                "table limit of {MAX_TABLE_ELEMENTS} elements exceeded: the plugin asked for {desired}"
            );
        }
        self.grow(
            "table",
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_INSTANCES
    }
}
