//! Owns the store data of one plugin call and the `host` interface plugins import: `log` and
//! `settings`. The WASI context is empty: no files, environment, arguments or sockets; stdout and
//! stderr go to bounded memory pipes that are written to the log, with the plugin's name, after
//! the call.

use std::sync::Arc;

use wasmtime::component::{HasData, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::host::{self, Level};

/// Bytes of stdout (and, separately, stderr) kept per call. A plugin that writes more gets a
/// closed stream (Rust's `println!` then panics, which is a plugin failure): a plugin cannot
/// flood the gateway's memory or log through stdio.
pub const STDIO_CAPACITY: usize = 16 * 1024;
/// `log` calls honoured per plugin call; further ones are counted and dropped, so a plugin
/// in a logging loop costs the log at most this many lines.
pub const MAX_LOG_LINES_PER_CALL: u32 = 64;
/// Longest message a `log` call may write; the rest is cut.
pub const MAX_LOG_MESSAGE: usize = 4096;

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
}

impl PluginState {
    pub(super) fn new(plugin: Arc<str>, settings: Arc<str>, limiter: Limiter) -> Self {
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
            },
            stdout,
            stderr,
            logged: [0, 0],
        }
    }

    /// Resets what is counted per call, before a call on a reused instance.
    pub(super) fn begin_call(&mut self) {
        self.host.log_lines = 0;
        self.host.dropped_log_lines = 0;
        self.limiter.exceeded = None;
    }

    /// Whether the stdio pipes have room for another call's output (they cannot be emptied, so a
    /// reused instance whose pipes are half full is retired).
    pub(super) fn stdio_has_room(&self) -> bool {
        self.logged.iter().all(|&n| n < STDIO_CAPACITY / 2)
    }

    /// Writes what the plugin printed since the last flush to the log, one event per line.
    pub(super) fn flush_stdio(&mut self) {
        for (i, (stream, pipe)) in [("stdout", &self.stdout), ("stderr", &self.stderr)]
            .into_iter()
            .enumerate()
        {
            let bytes = pipe.contents();
            let new = bytes.get(self.logged[i]..).unwrap_or_default();
            self.logged[i] = bytes.len();
            for line in String::from_utf8_lossy(new)
                .lines()
                .filter(|l| !l.is_empty())
            {
                tracing::info!(plugin = %self.host.plugin, stream, "{line}");
            }
        }
        if self.host.dropped_log_lines > 0 {
            tracing::warn!(plugin = %self.host.plugin, dropped = self.host.dropped_log_lines, "plugin log lines over the per-call limit were dropped");
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
}

/// Marker that projects the store data onto [`HostCtx`] for the linker.
pub struct HostData;

impl HasData for HostData {
    type Data<'a> = &'a mut HostCtx;
}

impl host::Host for HostCtx {
    fn log(&mut self, level: Level, mut message: String) {
        if self.log_lines >= MAX_LOG_LINES_PER_CALL {
            self.dropped_log_lines += 1;
            return;
        }
        self.log_lines += 1;
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = &*self.plugin;
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

/// Caps what one call may allocate: linear memory per memory, table elements, and the number
/// of instances, tables and memories. Records when the memory cap was what stopped the plugin,
/// so the failure can say so.
pub struct Limiter {
    pub(super) memory_limit: usize,
    pub(super) exceeded: Option<usize>,
}

/// Table elements one table may hold; funcref tables of the largest measured guests
/// (Python/JS) stay well below.
pub const MAX_TABLE_ELEMENTS: usize = 200_000;
/// Core instances, tables and memories one component may create; componentize-py/js components
/// use tens of core instances.
pub const MAX_INSTANCES: usize = 100;

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.exceeded = Some(desired);
            wasmtime::bail!(
                "memory limit of {} bytes exceeded: the plugin asked for {desired}",
                self.memory_limit
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            wasmtime::bail!(
                "table limit of {MAX_TABLE_ELEMENTS} elements exceeded: the plugin asked for {desired}"
            );
        }
        Ok(true)
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
