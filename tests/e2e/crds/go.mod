// The OpenReports CRDs the e2e installs (tests/e2e/reports.py): only downloaded, never built.
module wasmgate.io/e2e/crds

go 1.22

require github.com/openreports/reports-api v0.2.1
