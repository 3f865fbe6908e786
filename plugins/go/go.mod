// The Go module every wasmgate Go plugin is built in. scripts/build-polyglot-plugins assembles it
// per plugin: this file, the world's generated bindings (bindings/<world>/) at its root, the
// plugin's own files as package export_wit_world, and the runtime package as ./go-pkg.
module wit_component

go 1.25

require go.bytecodealliance.org/pkg v0.4.0

// go.bytecodealliance.org/pkg v0.4.0 (the runtime the wit-bindgen 0.63.0 Go bindings call) is
// not served by the Go module proxy; the build script copies it from the crates.io package
// wit-bindgen-go 0.63.0 (src/pkg), checked against a pinned sha256.
replace go.bytecodealliance.org/pkg => ./go-pkg
