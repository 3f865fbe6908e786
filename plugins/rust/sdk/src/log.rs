//! Lines in the gateway's log, attributed to this plugin (the `host.log` import).
//!
//! `println!`/`eprintln!` also reach the log when the gateway captures stdio, but these carry a
//! level and cost no WASI stream round trip.

use crate::host::{self, Level};

/// Log `message` at `level`.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Log at `trace`.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Log at `debug`.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Log at `info`.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Log at `warn`.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Log at `error`.
pub fn error(message: &str) {
    log(Level::Error, message);
}
