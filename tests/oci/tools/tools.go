//go:build tools

// Package tools pins the Go programs the OCI tests run: the CNCF distribution registry,
// oras and cosign. tests/oci/build-tools builds all three with one `go build`.
package tools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
	_ "github.com/sigstore/cosign/v2/cmd/cosign"
	_ "oras.land/oras/cmd/oras"
)
