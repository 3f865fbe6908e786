//go:build tools

// Package tools keeps the etcd main (go.etcd.io/etcd/server/v3, package main) in go.mod.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
