#!/usr/bin/env python3
"""Cluster-aware policies against a real kube-apiserver (v1.36, cluster.py): `context:` grants
served from wasmgate's watch caches.

1. Starts etcd + kube-apiserver (no audit).
2. `wasmgate serve --kubeconfig` as the ordinary user (no RBAC): refused at load, the access
   review says it may not list Ingresses.
3. Applies `wasmgate manifests --kind deploy` for the policy file (its ServiceAccount and RBAC:
   get/list/watch on exactly the granted resources, checked with `kubectl auth can-i`), then
   `wasmgate serve --kubeconfig` with a token of that ServiceAccount, with `unique-ingress-host`
   (grant: Ingresses) and `namespace-labels` (grant: Namespaces, metadata only): the access
   review passes; /readyz lists both caches synced.
4. Registers the webhooks that `wasmgate manifests --kind webhooks` prints, then with kubectl:
   an Ingress in ctx-a claims a host; a second Ingress in ctx-b with the same host is refused
   with a message naming ctx-a/first; a Pod in a Namespace labelled team=payments is stored
   with team=payments; /metrics has the caches' sizes.

  context.py [--work-dir D] [--keep] [--wasmgate PATH]

Needs the plugins built (scripts/build-plugins) and the k8s binaries (tests/e2e/build-tools).
Prints `ok   <check>` or `FAIL <check>`; exit status 0 = all checks passed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import cluster  # noqa: E402
import harness  # noqa: E402

HOST = "shop.e2e.example"
# Where `manifests --kind deploy` puts the gateway whose ServiceAccount the gateway runs as.
SA_NS, SA_NAME = "ctx-gw", "wasmgate"


def policy() -> str:
    dist = REPO / "plugins" / "dist"
    return f"""\
apiVersion: wasmgate.io/v1alpha1
kind: PolicySet
policies:
  - name: unique-ingress-host
    kind: validator
    module: {dist / "unique-ingress-host.wasm"}
    rules:
      - {{operations: [CREATE, UPDATE], apiGroups: [networking.k8s.io], apiVersions: [v1], resources: [ingresses]}}
    context:
      - {{apiGroup: networking.k8s.io, version: v1, resource: ingresses}}
  - name: namespace-labels
    kind: initializer
    module: {dist / "namespace-labels.wasm"}
    settings: {{labels: [team]}}
    rules:
      - {{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}}
    namespaces: [ctx-labels]
    context:
      - {{apiGroup: "", version: v1, resource: namespaces, metadataOnly: true}}
"""


def ingress(namespace: str, name: str, host: str) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"rules": [{"host": host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}


def pod(namespace: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]}}


class Gateway:
    """A `wasmgate serve` process; its log goes to a file."""

    def __init__(self, binary: Path, work: Path, port: int, crt: Path, key: Path,
                 kubeconfig: Path, name: str, extra: tuple[str, ...] = ()):
        self.argv = [str(binary), "serve", "--log-json", "--listen", f"127.0.0.1:{port}",
                     "--config", str(work / "policies.yaml"), "--tls-cert", str(crt),
                     "--tls-key", str(key), "--kubeconfig", str(kubeconfig),
                     "--state-dir", str(work / name), *extra]
        self.log = work / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> bool:
        """True once serving; False when it exited first (its log says why)."""
        ready, serving = threading.Event(), threading.Event()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "RUST_LOG": "info"})

        def pump(proc, log):
            with open(log, "ab") as f:
                for line in proc.stderr:
                    f.write(line)
                    f.flush()
                    if b"wasmgate is serving" in line:
                        serving.set()
                        ready.set()
            ready.set()  # stderr closed: it exited

        threading.Thread(target=pump, args=(self.proc, self.log), daemon=True).start()
        if not ready.wait(timeout):
            raise RuntimeError(f"wasmgate did not start; see {self.log}")
        if not serving.is_set():
            self.proc.wait(10)
        return serving.is_set()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> int:
    a, binary, work = harness.script(__doc__, "context")
    check = harness.Checks()
    failures = check.failures

    gw_ca, gw_crt, gw_key, ctx = harness.gateway_pki(work, "context")
    gw_port, *ports = cluster.free_ports(4)
    (work / "policies.yaml").write_text(policy())
    c = cluster.Cluster(work / "cluster", ports=ports)
    gateways: list[Gateway] = []

    def get(path: str) -> tuple[int, str]:
        return harness.https_get(gw_port, ctx, path)

    def wait_until(what: str, pred, timeout: float = 20, every: float = 0.2):
        return harness.wait_until(what, pred, timeout, every)

    def create(obj: dict, *extra: str) -> subprocess.CompletedProcess:
        return c.kubectl("create", "-f", "-", "-o", "json", *extra, input=json.dumps(obj),
                         check=False)

    try:
        c.start()
        print(f"cluster ready {c.timings}", flush=True)

        # The ordinary user may not list Ingresses: the policy file is refused at load.
        denied = Gateway(binary, work, gw_port, gw_crt, gw_key, c.user_kubeconfig, "wasmgate-user")
        gateways.append(denied)
        started = denied.start()
        log = denied.log.read_text()
        check(not started and "may not list it in all namespaces" in log
              and 'context[0]: networking.k8s.io/v1 ingresses' in log,
              "a ServiceAccount that may not list+watch a granted resource: the policy file is "
              "refused at load (SelfSubjectAccessReview)", log[-400:])

        # The ServiceAccount and RBAC that `manifests --kind deploy` renders for this policy
        # file: the gateway runs as that identity (a token of it) from here on.
        deploy = subprocess.run([str(binary), "manifests", "--kind", "deploy", "--config",
                                 str(work / "policies.yaml"), "--service", f"{SA_NS}/{SA_NAME}"],
                                check=True, capture_output=True, text=True).stdout
        c.apply(deploy)
        sa = f"system:serviceaccount:{SA_NS}:{SA_NAME}"
        can = {what: c.kubectl("auth", "can-i", *what.split(), f"--as={sa}",
                               check=False).stdout.strip()
               for what in ("list ingresses.networking.k8s.io", "watch namespaces",
                            "get ingresses.networking.k8s.io -n ctx-a", "list secrets",
                            "list pods", "create ingresses.networking.k8s.io")}
        check([can[w] for w in can] == ["yes", "yes", "yes", "no", "no", "no"],
              "the rendered RBAC grants get/list/watch on exactly the granted resources", can)
        token = c.kubectl("create", "token", SA_NAME, "-n", SA_NS, "--duration=1h").stdout.strip()
        sa_kubeconfig = work / "sa-kubeconfig.json"
        sa_kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "c", "cluster": {"server": c.server,
                                                   "certificate-authority": str(c.ca_crt)}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "u"}}]}))

        gw = Gateway(binary, work, gw_port, gw_crt, gw_key, sa_kubeconfig, "wasmgate")
        gateways.append(gw)
        check(gw.start(), "wasmgate serves as the ServiceAccount of `manifests --kind deploy` "
              "(its access review passes with the rendered RBAC)", gw.log.read_text()[-400:])
        status, body = wait_until("readyz 200", lambda: (lambda r: r if r[0] == 200 else None)(
            get("/readyz")))
        caches = {x["resource"]: x for x in json.loads(body)["contextCaches"]}
        check(set(caches) == {"networking.k8s.io/v1 ingresses", "core/v1 namespaces (metadata only)"}
              and all(x["synced"] for x in caches.values()),
              "/readyz is ready with both granted caches synced", body)

        hooks = subprocess.run([str(binary), "manifests", "--kind", "webhooks", "--config",
                                str(work / "policies.yaml"), "--url",
                                f"https://127.0.0.1:{gw_port}", "--ca-file", str(gw_ca[0])],
                               check=True, capture_output=True, text=True).stdout
        c.apply(hooks)
        for ns in ("ctx-a", "ctx-b"):
            c.kubectl("create", "namespace", ns)
        c.kubectl("create", "namespace", "ctx-labels")
        c.kubectl("label", "namespace", "ctx-labels", "team=payments", "tier=gold")

        first = create(ingress("ctx-a", "first", HOST))
        check(first.returncode == 0, "an Ingress claiming a new host is stored", first.stderr)

        # The webhook goes live 0-1 s after it is stored, and the cache sees `first` within
        # milliseconds of the watch event: a dry-run probe until it is refused.
        def refused():
            cp = create(ingress("ctx-b", "second", HOST), "--dry-run=server")
            return cp if cp.returncode != 0 else None
        try:
            wait_until("the second Ingress refused", refused, timeout=20)
        except TimeoutError:
            pass
        second = create(ingress("ctx-b", "second", HOST))
        want = f'host "{HOST}" is already claimed by Ingress ctx-a/first'
        check(second.returncode != 0 and "unique-ingress-host" in second.stderr
              and want in second.stderr,
              "a second Ingress with a taken host is refused, naming the first",
              second.stderr or second.stdout[:300])
        stored = c.kubectl("-n", "ctx-b", "get", "ingress", "second", check=False)
        check(stored.returncode != 0, "the refused Ingress is not stored")
        other = create(ingress("ctx-b", "third", "other.e2e.example"))
        check(other.returncode == 0, "an Ingress with another host is stored", other.stderr)

        def labelled():
            cp = create(pod("ctx-labels", "probe"), "--dry-run=server")
            if cp.returncode != 0:
                return None
            labels = json.loads(cp.stdout)["metadata"].get("labels") or {}
            return labels if labels.get("team") == "payments" else None
        try:
            wait_until("a dry-run Pod labelled", labelled, timeout=20)
        except TimeoutError:
            pass
        web = create(pod("ctx-labels", "web"))
        got = c.kubectl("-n", "ctx-labels", "get", "pod", "web", "-o", "json", check=False)
        labels = json.loads(got.stdout)["metadata"].get("labels", {}) if got.returncode == 0 else {}
        check(web.returncode == 0 and labels == {"team": "payments"},
              "a Pod is stored with its Namespace's chosen label (team, not tier)",
              f"{web.stderr} {labels}")

        _, metrics = get("/metrics")
        sizes = [line for line in metrics.splitlines()
                 if line.startswith("wasmgate_context_cache_")]
        ingresses = [line for line in sizes if 'objects{resource="networking.k8s.io/v1 ingresses"}'
                     in line]
        check(ingresses and ingresses[0].endswith(" 2")
              and any(line.startswith("wasmgate_context_cache_bytes") for line in sizes),
              "/metrics gives each cache's objects and bytes (2 Ingresses stored)",
              "; ".join(sizes))

        # Hot reload: a file without namespace-labels stops the Namespace cache; a grant of a
        # resource the API server does not serve is rejected (the old file keeps serving); the
        # file back as it was starts the Namespace cache again.
        def caches():
            code, body = get("/readyz")
            doc = json.loads(body)
            return code, doc, sorted(x["resource"] for x in doc["contextCaches"]
                                     if x["synced"])
        only_validator = policy().split("  - name: namespace-labels")[0]
        (work / "policies.yaml").write_text(only_validator)
        try:
            wait_until("the Namespace cache stopped", lambda: caches()[2] == [
                "networking.k8s.io/v1 ingresses"], timeout=15)
            check(True, "a reload that removes the last grant of a resource stops its cache")
        except TimeoutError:
            check(False, "a reload that removes the last grant of a resource stops its cache",
                  json.dumps(caches()[1]))
        (work / "policies.yaml").write_text(only_validator.replace(
            "resource: ingresses}\n", "resource: ingresses}\n      - {apiGroup: example.com, "
            "version: v1, resource: widgets}\n"))
        try:
            doc = wait_until("the reload rejected", lambda: (lambda d: d if (d["reload"] or {})
                             .get("lastError") else None)(caches()[1]), timeout=15)
            why = doc["reload"]["lastError"]
            check("context[1]: example.com/v1 widgets" in why and "discovery" in why,
                  "a reload granting a resource the API server does not serve is rejected "
                  "with the grant's line", why)
        except TimeoutError:
            check(False, "a reload granting a resource the API server does not serve is "
                  "rejected", json.dumps(caches()[1]))
        (work / "policies.yaml").write_text(policy())
        try:
            wait_until("the Namespace cache back", lambda: caches()[2] == [
                "core/v1 namespaces (metadata only)", "networking.k8s.io/v1 ingresses"],
                timeout=15)
            check(True, "a reload that adds a grant starts its cache (synced)")
        except TimeoutError:
            check(False, "a reload that adds a grant starts its cache",
                  json.dumps(caches()[1]))

        # The cap: restarted with room for one Ingress while two are stored, the cache is
        # emptied, lookups are refused with the reason (unique-ingress-host fails, and its
        # failurePolicy Fail refuses), and the overflow is counted.
        gw.stop()
        capped = Gateway(binary, work, gw_port, gw_crt, gw_key, sa_kubeconfig, "wasmgate-capped",
                         ("--context-max-objects", "1"))
        gateways.append(capped)
        check(capped.start(), "wasmgate serves with --context-max-objects 1",
              capped.log.read_text()[-400:])
        status, body = wait_until("readyz 200", lambda: (lambda r: r if r[0] == 200 else None)(
            get("/readyz")))
        over = [x for x in json.loads(body)["contextCaches"]
                if x["overflow"] and x["resource"] == "networking.k8s.io/v1 ingresses"]
        check(len(over) == 1 and "over its cap of 1 objects" in over[0]["overflow"]
              and over[0]["objects"] == 0,
              "a cache over --context-max-objects is emptied and says why in /readyz", body)
        refused_over = wait_until("the capped cache refuses", lambda: (
            lambda cp: cp if cp.returncode != 0 else None)(
                create(ingress("ctx-b", "fourth", "fourth.e2e.example"), "--dry-run=server")),
            timeout=15)
        check("over its cap of 1 objects" in refused_over.stderr,
              "a lookup of a cache over its cap is refused with the cap (the policy fails)",
              refused_over.stderr)
        _, metrics = get("/metrics")
        check('wasmgate_context_cache_overflows_total{resource="networking.k8s.io/v1 ingresses"} 1'
              in metrics, "the overflow is counted in /metrics",
              "; ".join(x for x in metrics.splitlines() if "overflow" in x))
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
