//! The `wasmgate` binary: everything is in the library's `cli` module.

/// mimalloc rather than glibc's malloc: the request path allocates and frees many small
/// objects on two threads (JSON values, WIT strings, wasmtime's per-call store), where glibc
/// spent a quarter of /mutate's CPU (BENCHMARKS.md, Admission).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wasmgate::cli::main()
}
