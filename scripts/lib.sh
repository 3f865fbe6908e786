# Shared set-up for the repository's scripts: where caches live. Sourced, not run.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WASMGATE_CACHE="${WASMGATE_CACHE:-$HOME/.cache/wasmgate}"
# The host build lives outside the checkout so that a fresh clone (CI) reuses it: a cold build
# of wasmtime takes 10-20 minutes on two cores.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WASMGATE_CACHE/target}"

# The Kafka output links librdkafka, built from its bundled source (rdkafka-sys) against the
# system's OpenSSL, found with pkg-config: its headers come from Debian's libssl-dev, pinned
# here and installed with apt-get when missing (as root; otherwise the step says what to run).
LIBSSL_DEV_VERSION="3.0.19-1~deb12u2"
PKG_CONFIG_VERSION="1.8.1-1"
# build_static_binary PROFILE [CARGO-ARGS...]: the image's static binary, the package static/
# (gateway/src/main.rs again) with only its final link static (`+crt-static`: glibc, OpenSSL's
# archives for librdkafka, libgcc_eh), in the caller's CARGO_TARGET_DIR and with its RUSTFLAGS.
# Used by scripts/build-image and scripts/build-dist.
build_static_binary() {
    local profile="$1"
    shift
    need_openssl_headers
    cargo rustc --profile "$profile" --locked "$@" -p wasmgate-static --bin wasmgate-static \
        -- -C target-feature=+crt-static >&2
}

need_openssl_headers() {
    if [[ -f /usr/include/openssl/ssl.h ]] && command -v pkg-config >/dev/null; then
        return 0
    fi
    local want=("libssl-dev=$LIBSSL_DEV_VERSION" "pkg-config=$PKG_CONFIG_VERSION")
    if [[ $(id -u) == 0 ]]; then
        echo "installing ${want[*]} (OpenSSL headers for librdkafka)" >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >&2
    else
        echo "the Kafka output's librdkafka needs OpenSSL headers: sudo apt-get install ${want[*]}" >&2
        return 1
    fi
}
