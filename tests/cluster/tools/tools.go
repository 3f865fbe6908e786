//go:build tools

// Package tools keeps the node binaries' mains in go.mod so that
// `go build k8s.io/kubernetes/cmd/kubelet` (and the others) resolve.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
