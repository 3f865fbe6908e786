#!/usr/bin/env python3
"""`/validate` req/s with `unique-ingress-host` against the demo policies (BENCHMARKS.md, issue 16).

Starts etcd + kube-apiserver (cluster.py), creates N Ingresses (default 1,000; --ingresses)
across 100 namespaces, and runs `cargo bench --bench context` with BENCH_KUBECONFIG set: the
real `wasmgate serve --kubeconfig` on the demo policies and on the demo policies plus
`unique-ingress-host`, each driven with an Ingress CREATE review (a free host) at
concurrency 16, side by side.

  validate_context.py [--ingresses N] [--seconds S] [--work-dir D]

Needs the plugins built (scripts/build-plugins) and the k8s binaries (tests/e2e/build-tools).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import cluster  # noqa: E402
from context_memory import create_all  # noqa: E402


def ingress(ns: str, i: int) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": f"ing-{i:05}", "namespace": ns},
            "spec": {"rules": [{"host": f"h{i}.example.com", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ingresses", type=int, default=1_000)
    ap.add_argument("--seconds", default="4")
    ap.add_argument("--work-dir")
    a = ap.parse_args()
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="wasmgate-validate-context-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ports = cluster.free_ports(3)
    c = cluster.Cluster(work / "cluster", ports=ports,
                        extra_apiserver_args=["--max-requests-inflight=800"])
    try:
        c.start()
        for i in range(100):
            c.kubectl("create", "namespace", f"bench-{i}")
        print(f"created {a.ingresses} Ingresses in {create_all(c, ingress, a.ingresses):.0f} s; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        # BENCH_EXE: the bench executable `cargo bench --bench context --no-run` built.
        exe = os.environ.get("BENCH_EXE")
        argv = ([exe, "--bench"] if exe else
                ["cargo", "bench", "--locked", "--bench", "context", "--"])
        rc = subprocess.run([*argv, "--seconds", a.seconds], cwd=REPO,
                            env={**os.environ, "BENCH_KUBECONFIG": str(c.kubeconfig)}).returncode
        print(f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        c.stop()
    if not a.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
