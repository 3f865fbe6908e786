# Shared set-up for the repository's scripts: where caches live. Sourced, not run.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WASMGATE_CACHE="${WASMGATE_CACHE:-$HOME/.cache/wasmgate}"
# The host build lives outside the checkout so that a fresh clone (CI) reuses it: a cold build
# of wasmtime takes 10-20 minutes on two cores.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WASMGATE_CACHE/target}"
