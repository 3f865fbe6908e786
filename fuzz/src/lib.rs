//! Shared set-up of the fuzz targets: where the repository and its built plugins are.

use std::path::PathBuf;

/// The repository's root (the fuzz crate's parent).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the fuzz crate lives in the repository")
        .to_owned()
}

/// A first-party plugin built by `scripts/build-plugins`; exits with a clear message when it is
/// missing (the fuzz script builds the plugins first).
pub fn plugin(name: &str) -> PathBuf {
    let path = repo().join("plugins/dist").join(format!("{name}.wasm"));
    if !path.is_file() {
        eprintln!("{} is missing: run scripts/build-plugins", path.display());
        std::process::exit(2);
    }
    path
}
