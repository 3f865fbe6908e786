//! The `wasmgate` binary: everything is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    wasmgate::cli::main()
}
