//go:build tools

// Package tools keeps the kube-apiserver and kubectl mains in go.mod so that
// `go build k8s.io/kubernetes/cmd/kube-apiserver` (and cmd/kubectl) resolve.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
