#!/usr/bin/env python3
"""Memory of wasmgate's context caches against a real kube-apiserver (BENCHMARKS.md, issue 16).

Starts etcd + kube-apiserver (cluster.py), creates N RoleBindings and N Pods (default 10,000
each) across 100 namespaces, then starts `wasmgate serve --kubeconfig` once per scenario: no
grant (the baseline), RoleBindings full and metadata-only, Pods full and metadata-only. For each
it prints the time from start to `/readyz` 200 (every cache synced), the cache's objects and
bytes from `/metrics`, and the process's resident memory (VmRSS, and VmHWM: the peak, which the
initial list's pages reach) minus nothing: the baseline row is there to subtract.

  context_memory.py [--objects N] [--work-dir D] [--wasmgate PATH]

Needs the plugins built (scripts/build-plugins) and the k8s binaries (tests/e2e/build-tools).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import cluster  # noqa: E402
import harness  # noqa: E402
from context import Gateway  # noqa: E402
from harness import wasmgate_binary  # noqa: E402

NAMESPACES = 100


def policy(grant: str | None) -> str:
    text = f"""\
apiVersion: wasmgate.io/v1alpha1
kind: PolicySet
policies:
  - name: require-labels
    kind: validator
    module: {REPO / "plugins" / "dist" / "require-labels.wasm"}
    settings: {{labels: [team]}}
    rules:
      - {{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}}
"""
    if grant:
        text += f"    context:\n      - {grant}\n"
    return text


def rolebinding(ns: str, i: int) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": f"rb-{i}", "namespace": ns, "labels": {"team": f"t{i % 10}"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "view"},
            "subjects": [{"kind": "User", "name": f"user-{i}",
                          "apiGroup": "rbac.authorization.k8s.io"},
                         {"kind": "ServiceAccount", "name": "default", "namespace": ns}]}


def pod(ns: str, i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"web-{i}", "namespace": ns,
                         "labels": {"app": f"web-{i % 10}", "team": f"t{i % 10}"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                                     "ports": [{"containerPort": 80}],
                                     "resources": {"requests": {"cpu": "10m",
                                                                "memory": "16Mi"}}}]}}


def create_all(c: cluster.Cluster, make, n: int, workers: int = 4) -> float:
    """Creates n objects (n / NAMESPACES per namespace) with `workers` kubectl processes."""
    t0 = time.monotonic()
    objects = [make(f"bench-{i % NAMESPACES}", i) for i in range(n)]
    chunks = [objects[k::workers] for k in range(workers)]
    errors: list[str] = []

    def run(chunk):
        for start in range(0, len(chunk), 500):
            items = {"apiVersion": "v1", "kind": "List", "items": chunk[start:start + 500]}
            cp = c.kubectl("create", "-f", "-", "-o", "name", input=json.dumps(items),
                           check=False, timeout=600)
            if cp.returncode != 0:
                errors.append(cp.stderr[-300:])

    threads = [threading.Thread(target=run, args=(ch,)) for ch in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    return time.monotonic() - t0


def status_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--work-dir")
    ap.add_argument("--wasmgate")
    a = ap.parse_args()
    binary = wasmgate_binary(a.wasmgate)
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="wasmgate-context-memory-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    gw_ca = cluster.make_ca(work / "gw-pki", "ca", "e2e-context-gateway-ca")
    gw_crt, gw_key = cluster.make_cert(work / "gw-pki", "server", gw_ca, cn="wasmgate",
                                       ips=["127.0.0.1"], dns=["localhost"])
    gw_port, *ports = cluster.free_ports(4)
    ctx = ssl.create_default_context(cafile=str(gw_ca[0]))
    c = cluster.Cluster(work / "cluster", ports=ports,
                        extra_apiserver_args=["--max-requests-inflight=800"])

    def get(path: str) -> tuple[int, str]:
        return harness.https_get(gw_port, ctx, path, timeout=10)

    try:
        c.start()
        for i in range(NAMESPACES):
            c.kubectl("create", "namespace", f"bench-{i}")
        print(f"created {a.objects} RoleBindings in "
              f"{create_all(c, rolebinding, a.objects):.0f} s", flush=True)
        print(f"created {a.objects} Pods in {create_all(c, pod, a.objects):.0f} s", flush=True)
        rows = []
        for name, grant in [
            ("no grant (baseline)", None),
            ("RoleBindings", "{apiGroup: rbac.authorization.k8s.io, version: v1, resource: rolebindings}"),
            ("RoleBindings, metadataOnly", "{apiGroup: rbac.authorization.k8s.io, version: v1, resource: rolebindings, metadataOnly: true}"),
            ("Pods", "{apiGroup: '', version: v1, resource: pods}"),
            ("Pods, metadataOnly", "{apiGroup: '', version: v1, resource: pods, metadataOnly: true}"),
        ]:
            (work / "policies.yaml").write_text(policy(grant))
            gw = Gateway(binary, work, gw_port, gw_crt, gw_key, c.kubeconfig,
                         "wasmgate-" + name.split()[0].lower())
            t0 = time.monotonic()
            if not gw.start(timeout=120):
                raise RuntimeError(f"{name}: wasmgate exited: {gw.log.read_text()[-400:]}")
            try:
                while get("/readyz")[0] != 200:
                    if time.monotonic() - t0 > 120:
                        raise RuntimeError(f"{name}: not ready in 120 s")
                    time.sleep(0.05)
                ready = time.monotonic() - t0
                time.sleep(2)  # let the allocator settle after the list
                mem = status_kib(gw.proc.pid)
                _, metrics = get("/metrics")
                objects = bytes_ = 0
                for line in metrics.splitlines():
                    if line.startswith("wasmgate_context_cache_objects{"):
                        objects = int(float(line.rsplit(" ", 1)[1]))
                    if line.startswith("wasmgate_context_cache_bytes{"):
                        bytes_ = int(float(line.rsplit(" ", 1)[1]))
                rows.append((name, ready, objects, bytes_, mem["VmRSS"], mem["VmHWM"]))
                print(f"{name:28} ready {ready:5.2f} s  objects {objects:6}  cache "
                      f"{bytes_ / 2**20:6.1f} MiB  RSS {mem['VmRSS'] / 1024:6.1f} MiB  "
                      f"peak {mem['VmHWM'] / 1024:6.1f} MiB", flush=True)
            finally:
                gw.stop()
        print("\n| grant | ready after start | objects | cache bytes (metric) | RSS | peak RSS |")
        print("|---|---|---|---|---|---|")
        for name, ready, objects, b, rss, hwm in rows:
            print(f"| {name} | {ready:.2f} s | {objects} | {b / 2**20:.1f} MiB | "
                  f"{rss / 1024:.1f} MiB | {hwm / 1024:.1f} MiB |")
    finally:
        c.stop()
    if not a.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
