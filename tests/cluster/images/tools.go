//go:build tools

// Package tools keeps the registry's main in go.mod so that
// `go build github.com/distribution/distribution/v3/cmd/registry` resolves.
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
