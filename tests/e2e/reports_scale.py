#!/usr/bin/env python3
"""Size and speed of background reports against a real kube-apiserver (BENCHMARKS.md, issue 16).

Starts etcd + kube-apiserver (cluster.py), installs the OpenReports CRDs (reports-api v0.2.1),
creates N ConfigMaps (default 10,000) across 100 namespaces, a share of them (--violating,
default every one) without the `team` label, then starts `wasmgate serve --kubeconfig` (no
--register: it writes) with `require-labels` in monitor mode and `background: true` on
ConfigMaps. Prints: time from start to every namespace's Report written, the first scan's
duration and objects (from /metrics), the number of Report objects and their size as the API
server returns them (JSON, with managedFields: what etcd holds, give or take its encoding), the
results per report; then one ConfigMap fixed: the time until its Report shows it, the scan's
duration (unchanged objects keep their result), and how many reports were rewritten (1).

  reports_scale.py [--objects N] [--violating FRACTION] [--work-dir D] [--wasmgate PATH]

Needs the plugins built (scripts/build-plugins), the k8s binaries (tests/e2e/build-tools), go.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import cluster  # noqa: E402
import harness  # noqa: E402
from context import Gateway  # noqa: E402
from harness import wasmgate_binary  # noqa: E402
from context_memory import NAMESPACES, create_all  # noqa: E402
from reports import CRDS, crd_dir  # noqa: E402


def policy() -> str:
    module = REPO / "plugins" / "dist" / "require-labels.wasm"
    return f"""\
apiVersion: wasmgate.io/v1alpha1
kind: PolicySet
policies:
  - name: require-team
    kind: validator
    module: {module}
    settings: {{labels: [team]}}
    rules:
      - {{operations: [CREATE, UPDATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}}
    mode: monitor
    background: true
"""


def metric(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--violating", type=float, default=1.0)
    ap.add_argument("--work-dir")
    ap.add_argument("--wasmgate")
    a = ap.parse_args()
    binary = wasmgate_binary(a.wasmgate)
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="wasmgate-reports-scale-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    gw_ca = cluster.make_ca(work / "gw-pki", "ca", "e2e-reports-gateway-ca")
    gw_crt, gw_key = cluster.make_cert(work / "gw-pki", "server", gw_ca, cn="wasmgate",
                                       ips=["127.0.0.1"], dns=["localhost"])
    gw_port, *ports = cluster.free_ports(4)
    ctx = ssl.create_default_context(cafile=str(gw_ca[0]))
    c = cluster.Cluster(work / "cluster", ports=ports,
                        extra_apiserver_args=["--max-requests-inflight=800"])
    every = max(1, round(1 / a.violating)) if a.violating > 0 else 0

    def configmap(ns: str, i: int) -> dict:
        labels = {} if every and i % every == 0 else {"team": "web"}
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i:05}", "namespace": ns, "labels": labels},
                "data": {"k": "v" * 64}}

    def get(path: str) -> tuple[int, str]:
        return harness.https_get(gw_port, ctx, path, timeout=10)

    def reports() -> list[dict]:
        cp = c.kubectl("get", "reports.openreports.io", "-A", "-o", "json", check=False,
                       timeout=120)
        return json.loads(cp.stdout)["items"] if cp.returncode == 0 else []

    gw = None
    try:
        c.start()
        for name in CRDS:
            c.kubectl("apply", "-f", str(crd_dir() / name))
        c.kubectl("wait", "--for=condition=established", "--timeout=30s",
                  "crd/reports.openreports.io", "crd/clusterreports.openreports.io")
        for i in range(NAMESPACES):
            c.kubectl("create", "namespace", f"bench-{i}")
        print(f"created {a.objects} ConfigMaps in {create_all(c, configmap, a.objects):.0f} s",
              flush=True)
        (work / "policies.yaml").write_text(policy())
        gw = Gateway(binary, work, gw_port, gw_crt, gw_key, c.kubeconfig, "wasmgate")
        t0 = time.monotonic()
        if not gw.start(timeout=120):
            raise RuntimeError(f"wasmgate exited: {gw.log.read_text()[-400:]}")
        while len(reports()) < NAMESPACES:
            if time.monotonic() - t0 > 600:
                raise RuntimeError("not every report after 600 s")
            time.sleep(0.5)
        written = time.monotonic() - t0
        _, m = get("/metrics")
        scans = metric(m, 'wasmgate_background_scan_seconds_count{policy="require-team"}')
        scan_s = metric(m, 'wasmgate_background_scan_seconds_sum{policy="require-team"}')
        objects = metric(m, 'wasmgate_background_scan_objects{policy="require-team"}')
        violations = metric(m, 'wasmgate_background_scan_violations{policy="require-team"}')
        items = reports()
        sizes = [len(json.dumps(r, separators=(",", ":"))) for r in items]
        results = [len(r.get("results") or []) for r in items]
        omitted = sum(int(r["metadata"]["annotations"].get("wasmgate.io/omitted-results", 0))
                      for r in items)
        print(f"reports written {written:.1f} s after start; scans {scans:.0f}, "
              f"{scan_s / max(scans, 1):.2f} s each; objects {objects:.0f}, violations "
              f"{violations:.0f}", flush=True)
        print(f"reports {len(items)}, total {sum(sizes) / 1024:.0f} KiB, largest "
              f"{max(sizes) / 1024:.1f} KiB, results per report {min(results)}-{max(results)}, "
              f"omitted {omitted}; load {os.getloadavg()[0]:.1f}", flush=True)
        # One object fixed: only its report changes.
        applied = metric(m, 'wasmgate_report_writes_total{reason="applied"}')
        c.kubectl("-n", "bench-0", "label", "configmap", "cm-00000", "team=ops")
        t1 = time.monotonic()
        while True:
            r = json.loads(c.kubectl("-n", "bench-0", "get", "reports.openreports.io",
                                     "wasmgate", "-o", "json").stdout)
            if all(x["resources"][0]["name"] != "cm-00000" for x in r.get("results") or []):
                break
            if time.monotonic() - t1 > 120:
                raise RuntimeError("the fix not reported after 120 s")
            time.sleep(0.2)
        seen = time.monotonic() - t1
        time.sleep(1)
        _, m2 = get("/metrics")
        scans2 = metric(m2, 'wasmgate_background_scan_seconds_count{policy="require-team"}')
        scan2_s = metric(m2, 'wasmgate_background_scan_seconds_sum{policy="require-team"}')
        applied2 = metric(m2, 'wasmgate_report_writes_total{reason="applied"}')
        print(f"one object fixed: in its report after {seen:.1f} s; later scans "
              f"{scans2 - scans:.0f}, {(scan2_s - scan_s) / max(scans2 - scans, 1) * 1000:.0f} ms "
              f"each; reports rewritten {applied2 - applied:.0f}; load {os.getloadavg()[0]:.1f}",
              flush=True)
    finally:
        if gw:
            gw.stop()
        c.stop()
    if not a.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
