#!/usr/bin/env python3
"""Background reports against a real kube-apiserver (v1.36, cluster.py): OpenReports written by
wasmgate for policies with `background: true`.

1. Starts etcd + kube-apiserver; installs the OpenReports CRDs from the upstream files
   (github.com/openreports/reports-api v0.2.1, fetched with `go mod download` from the pinned
   tests/e2e/crds/go.mod).
2. Applies `wasmgate manifests --kind deploy` for the policy file (ServiceAccount, the context
   ClusterRole now also covering what the background scans read, the reports ClusterRole) and
   runs `wasmgate serve --register` as that ServiceAccount: it registers its webhooks and holds
   the Lease, so it is the one that writes reports.
3. `require-team` (require-labels on ConfigMaps, mode monitor, background): violating
   ConfigMaps are admitted (with a warning), and within 30 s the namespace's Report lists them
   (summary and results); labelling them clears them; a report whose content did not change
   keeps its resourceVersion while another namespace's changes; Namespaces lacking the label
   are in the ClusterReport (`namespace-team`, cluster-scoped); /metrics has the scan metrics.

  reports.py [--work-dir D] [--keep] [--wasmgate PATH]

Needs the plugins built (scripts/build-plugins), the k8s binaries (tests/e2e/build-tools) and go.
Prints `ok   <check>` or `FAIL <check>`; exit status 0 = all checks passed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import cluster  # noqa: E402
import harness  # noqa: E402
from context import Gateway  # noqa: E402

SA_NS, SA_NAME = "rep-gw", "wasmgate"
CRDS = ("openreports.io_reports.yaml", "openreports.io_clusterreports.yaml")


def crd_dir() -> Path:
    """The reports-api module directory, downloaded (and cached by go) from the pinned go.mod."""
    out = subprocess.run(["go", "mod", "download", "-json", "github.com/openreports/reports-api"],
                         cwd=HERE / "crds", check=True, capture_output=True, text=True).stdout
    return Path(json.loads(out)["Dir"]) / "config" / "crd"


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
    namespaces: [rep-a, rep-b]
    mode: monitor
    background: true
  - name: namespace-team
    kind: validator
    module: {module}
    settings: {{labels: [team]}}
    rules:
      - {{operations: [CREATE, UPDATE], apiGroups: [""], apiVersions: [v1], resources: [namespaces]}}
    mode: monitor
    background: true
"""


def configmap(namespace: str, name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "data": {"k": "v"}}


def main() -> int:
    a, binary, work = harness.script(__doc__, "reports")
    check = harness.Checks()
    failures = check.failures

    gw_ca, gw_crt, gw_key, ctx = harness.gateway_pki(work, "reports")
    gw_port, *ports = cluster.free_ports(4)
    (work / "policies.yaml").write_text(policy())
    c = cluster.Cluster(work / "cluster", ports=ports)
    gateways: list[Gateway] = []

    def get(path: str) -> tuple[int, str]:
        return harness.https_get(gw_port, ctx, path)

    def wait_until(what: str, pred, timeout: float = 30, every: float = 0.5):
        return harness.wait_until(what, pred, timeout, every)

    def report(namespace: str | None) -> dict | None:
        args = (["-n", namespace, "get", "reports.openreports.io"] if namespace
                else ["get", "clusterreports.openreports.io"])
        cp = c.kubectl(*args, "wasmgate", "-o", "json", check=False)
        return json.loads(cp.stdout) if cp.returncode == 0 else None

    def failing(rep: dict | None) -> list[str]:
        return sorted(r["resources"][0]["name"] for r in (rep or {}).get("results") or []
                      if r["result"] == "fail")

    try:
        c.start()
        print(f"cluster ready {c.timings}", flush=True)
        crds = crd_dir()
        for name in CRDS:
            c.kubectl("apply", "-f", str(crds / name))
        c.kubectl("wait", "--for=condition=established", "--timeout=30s",
                  "crd/reports.openreports.io", "crd/clusterreports.openreports.io")
        check(True, "the upstream OpenReports CRDs (reports-api v0.2.1) are installed")

        deploy = subprocess.run([str(binary), "manifests", "--kind", "deploy", "--config",
                                 str(work / "policies.yaml"), "--service", f"{SA_NS}/{SA_NAME}"],
                                check=True, capture_output=True, text=True).stdout
        c.apply(deploy)
        sa = f"system:serviceaccount:{SA_NS}:{SA_NAME}"
        can = {what: c.kubectl("auth", "can-i", *what.split(), f"--as={sa}",
                               check=False).stdout.strip()
               for what in ("watch configmaps", "list namespaces",
                            "patch reports.openreports.io -n rep-a",
                            "delete clusterreports.openreports.io", "list secrets",
                            "patch configmaps -n rep-a")}
        check(list(can.values()) == ["yes", "yes", "yes", "yes", "no", "no"],
              "the rendered RBAC grants watching what the scans read and writing reports, "
              "nothing else", can)
        token = c.kubectl("create", "token", SA_NAME, "-n", SA_NS, "--duration=1h").stdout.strip()
        sa_kubeconfig = work / "sa-kubeconfig.json"
        sa_kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "c", "cluster": {"server": c.server,
                                                   "certificate-authority": str(c.ca_crt)}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "u"}}]}))
        for ns in ("rep-a", "rep-b"):
            c.kubectl("create", "namespace", ns)
        c.kubectl("label", "namespace", "rep-b", "team=web")
        c.apply(configmap("rep-a", "before", {}))
        c.apply(configmap("rep-b", "labelled", {"team": "web"}))

        gw = Gateway(binary, work, gw_port, gw_crt, gw_key, sa_kubeconfig, "wasmgate",
                     ("--register", "--register-url", f"https://127.0.0.1:{gw_port}",
                      "--register-service", f"{SA_NS}/{SA_NAME}",
                      "--register-ca-file", str(gw_ca[0])))
        gateways.append(gw)
        check(gw.start(), "wasmgate serves --register as the ServiceAccount of "
              "`manifests --kind deploy`", gw.log.read_text()[-400:])
        wait_until("the webhook registered", lambda: c.kubectl(
            "get", "validatingwebhookconfiguration", "wasmgate", check=False).returncode == 0)

        # A ConfigMap that existed before the gateway started is reported.
        try:
            rep = wait_until("rep-a's report lists the old ConfigMap",
                             lambda: (lambda r: r if failing(r) == ["before"] else None)(
                                 report("rep-a")))
            check(rep["summary"]["fail"] == 1 and rep["source"] == "wasmgate"
                  and "team" in rep["results"][0]["message"]
                  and rep["results"][0]["policy"] == "require-team",
                  "an object stored before the gateway started is in its namespace's Report",
                  json.dumps(rep)[:600])
        except TimeoutError as e:
            check(False, "an object stored before the gateway started is in its namespace's "
                  "Report", f"{e}: {json.dumps(report('rep-a'))[:600]}")

        # In monitor mode a violating object is admitted (with a warning) and reported.
        time.sleep(1.5)  # the webhook goes live 0-1 s after it is stored
        created = c.kubectl("create", "-f", "-", input=json.dumps(configmap("rep-a", "new")),
                            check=False)
        check(created.returncode == 0 and "team" in created.stderr,
              "monitor mode: a violating ConfigMap is admitted with a warning",
              created.stderr)
        started = time.monotonic()
        try:
            rep = wait_until("rep-a's report lists both", lambda: (
                lambda r: r if failing(r) == ["before", "new"] else None)(report("rep-a")))
            check(rep["summary"]["fail"] == 2,
                  f"a violating object is in its namespace's Report within 30 s "
                  f"({time.monotonic() - started:.1f} s)", json.dumps(rep)[:600])
        except TimeoutError as e:
            check(False, "a violating object is in its namespace's Report within 30 s",
                  f"{e}: {json.dumps(report('rep-a'))[:600]}")
        rep_b = report("rep-b")
        check(rep_b is not None and rep_b["summary"]["pass"] == 1 and not rep_b.get("results"),
              "a namespace whose objects pass has a Report with the summary and no results",
              json.dumps(rep_b)[:400])
        cluster_report = report(None)
        failing_ns = failing(cluster_report)
        check(cluster_report is not None and "rep-a" in failing_ns
              and "rep-b" not in failing_ns and cluster_report["kind"] == "ClusterReport",
              "Namespaces without the label are in the ClusterReport (rep-a, not rep-b)",
              json.dumps(cluster_report)[:400])

        # Fixing them clears them; rep-b's report, unchanged, is not rewritten.
        rv_b = rep_b["metadata"]["resourceVersion"] if rep_b else None
        rv_cluster = cluster_report["metadata"]["resourceVersion"] if cluster_report else None
        for name in ("before", "new"):
            c.kubectl("-n", "rep-a", "label", "configmap", name, "team=ops")
        started = time.monotonic()
        try:
            rep = wait_until("rep-a's report cleared", lambda: (
                lambda r: r if r and not failing(r) and r["summary"]["pass"] == 2 else None)(
                    report("rep-a")))
            check(True, f"fixing the objects clears them from the Report within 30 s "
                  f"({time.monotonic() - started:.1f} s)")
        except TimeoutError as e:
            check(False, "fixing the objects clears them from the Report",
                  f"{e}: {json.dumps(report('rep-a'))[:600]}")
        time.sleep(4)  # another debounced scan's worth
        rep_b2, cluster2 = report("rep-b"), report(None)
        check(rv_b is not None and rep_b2["metadata"]["resourceVersion"] == rv_b
              and cluster2["metadata"]["resourceVersion"] == rv_cluster,
              "reports whose content did not change are not rewritten (resourceVersion stays)",
              f"{rv_b} -> {(rep_b2 or {}).get('metadata', {}).get('resourceVersion')}, "
              f"{rv_cluster} -> {(cluster2 or {}).get('metadata', {}).get('resourceVersion')}")

        # A namespace with nothing scanned any more loses its report.
        c.kubectl("-n", "rep-b", "delete", "configmap", "labelled")
        try:
            wait_until("rep-b's report deleted", lambda: report("rep-b") is None)
            check(True, "a namespace with nothing scanned any more loses its Report")
        except TimeoutError:
            check(False, "a namespace with nothing scanned any more loses its Report",
                  json.dumps(report("rep-b"))[:300])

        _, metrics = get("/metrics")
        lines = [x for x in metrics.splitlines()
                 if x.startswith(("wasmgate_background_scan", "wasmgate_report_writes"))]
        check(any(x == 'wasmgate_background_scan_objects{policy="require-team"} 2' for x in lines)
              and any(x.startswith('wasmgate_background_scan_seconds_count{policy="namespace-team"}')
                      for x in lines)
              and any(x.startswith('wasmgate_report_writes_total{reason="unchanged"}')
                      for x in lines),
              "/metrics has objects scanned, violations and scan duration per policy, and "
              "report writes", "; ".join(lines))
    except Exception as e:  # noqa: BLE001 - reported as a failure, cleanup below
        check(False, f"the run completes ({type(e).__name__}: {e})")
    finally:
        for g in gateways:
            g.stop()
        c.stop()
    print(f"{'all passed' if not failures else f'{len(failures)} failed'}", flush=True)
    if not failures and not a.keep and not a.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
