#!/usr/bin/env python3
"""wasmgate as the audit webhook backend of a real kube-apiserver (v1.36, cluster.py).

1. Starts wasmgate (mTLS: it requires the apiserver's webhook client certificate) with three audit
   sinks: redact-secrets and exec-alert writing to files, and echo-sink writing one line per event.
2. Starts etcd + kube-apiserver whose --audit-webhook-config-file is the kubeconfig printed by
   `wasmgate manifests --kind audit-kubeconfig` (server URL, CA, client certificate).
3. kubectl: a namespace, a Secret with a password, a read of it, a ConfigMap with a credential,
   a ClusterRoleBinding to cluster-admin, a forbidden request by the ordinary user.
4. kill -9 of wasmgate; a namespace created while it is down (the apiserver retries); wasmgate
   restarted on the same spool; one more namespace.
5. Checks: every expected event reached the sinks, including those of the outage; no Secret or
   credential value anywhere in the outputs; the alerts; nothing delivered twice by echo-sink
   except what at-least-once allows (the batch in flight at the kill).

  audit.py [--work-dir D] [--keep] [--wasmgate PATH]

Needs the plugins built (scripts/build-plugins) and the k8s binaries (tests/e2e/build-tools).
Exit status 0 = all checks passed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import cluster  # noqa: E402
from harness import script  # noqa: E402

SECRET_VALUE = "hunter2-e2e-value"
CONFIGMAP_VALUE = "cm-e2e-credential"


# wasmgate's --audit-max-event-bytes in this test.
MAX_EVENT = 256 << 10


def policy(out: Path) -> str:
    dist = REPO / "plugins" / "dist"
    tests = REPO / "tests" / "plugins" / "dist"
    return f"""apiVersion: wasmgate.io/v1alpha1
kind: PolicySet
auditSinks:
  - name: redact-secrets
    module: {dist / 'redact-secrets.wasm'}
    settings: {{output: audit, keys: [password, token]}}
    rules:
      - level: RequestResponse
    outputs:
      - {{name: audit, type: file, path: {out / 'audit.jsonl'}}}
  - name: exec-alert
    module: {dist / 'exec-alert.wasm'}
    rules:
      - level: Request
        resources:
          - group: ""
            resources: [pods/exec, pods/attach, secrets]
          - group: rbac.authorization.k8s.io
            resources: [clusterrolebindings, rolebindings]
    outputs:
      - {{name: alerts, type: file, path: {out / 'alerts.jsonl'}}}
  - name: echo
    module: {tests / 'echo-sink.wasm'}
    rules:
      - level: RequestResponse
    outputs:
      - {{name: out, type: file, path: {out / 'echo.jsonl'}}}
"""


class Gateway:
    """A `wasmgate serve` process; its JSON log lines are kept."""

    def __init__(self, binary: Path, work: Path, port: int, crt: Path, key: Path, client_ca: Path):
        self.argv = [str(binary), "serve", "--log-json", "--listen", f"127.0.0.1:{port}",
                     "--config", str(work / "policies.yaml"), "--tls-cert", str(crt),
                     "--tls-key", str(key), "--client-ca", str(client_ca),
                     "--spool-dir", str(work / "spool"),
                     # Events over 256 KiB are truncated, as the API server's truncate backend
                     # would (the 'big' ConfigMap below).
                     "--audit-max-event-bytes", str(MAX_EVENT)]
        self.log = work / "wasmgate.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        ready = threading.Event()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "RUST_LOG": "info"})

        def pump(proc, log):
            with open(log, "ab") as f:
                for line in proc.stderr:
                    f.write(line)
                    f.flush()
                    if b"wasmgate is serving" in line:
                        ready.set()

        threading.Thread(target=pump, args=(self.proc, self.log), daemon=True).start()
        if not ready.wait(60):
            raise RuntimeError(f"wasmgate did not start; see {self.log}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def find(events, *, verb, resource, name=None, stage="ResponseComplete", user=None):
    for e in events:
        ref = e.get("objectRef") or {}
        if (e.get("verb") == verb and ref.get("resource") == resource
                and (name is None or ref.get("name") == name) and e.get("stage") == stage
                and (user is None or e.get("user", {}).get("username") == user)):
            return e
    return None


def main() -> int:
    a, binary, work = script(__doc__, "audit")
    out = work / "out"
    failures: list[str] = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    # PKI: the gateway's serving certificate, and the cluster's CA and webhook client certificate
    # made before the cluster starts (cluster.py reuses them), so that wasmgate can require it.
    gw_ca = cluster.make_ca(work / "gw-pki", "ca", "e2e-audit-gateway-ca")
    gw_crt, gw_key = cluster.make_cert(work / "gw-pki", "server", gw_ca, cn="wasmgate",
                                       ips=["127.0.0.1"], dns=["localhost"])
    cpki = work / "cluster" / "pki"
    cluster_ca = cluster.make_ca(cpki, "ca", "wasmgate-e2e-cluster-ca")
    client_crt, client_key = cluster.make_cert(cpki, "webhook-client", cluster_ca,
                                               cn="kube-apiserver-webhook-client",
                                               orgs=["wasmgate-e2e"], server=False, client=True)
    gw_port, *ports = cluster.free_ports(4)
    (work / "policies.yaml").write_text(policy(out))

    kubeconfig = subprocess.run(
        [str(binary), "manifests", "--kind", "audit-kubeconfig",
         "--url", f"https://127.0.0.1:{gw_port}", "--ca-file", str(gw_ca[0]),
         "--client-cert", str(client_crt), "--client-key", str(client_key),
         "--embed-client-cert"],
        check=True, capture_output=True, text=True).stdout
    (work / "wasmgate-audit.kubeconfig").write_text(kubeconfig)

    gw = Gateway(binary, work, gw_port, gw_crt, gw_key, cluster_ca[0])
    c = cluster.Cluster(work / "cluster", audit_url=f"https://127.0.0.1:{gw_port}/audit",
                        audit_ca=gw_ca[0], ports=ports, audit_initial_backoff="1s",
                        extra_apiserver_args=[
                            f"--audit-webhook-config-file={work / 'wasmgate-audit.kubeconfig'}"])
    try:
        gw.start()
        c.start()
        print(f"cluster ready {c.timings}")

        c.kubectl("create", "namespace", "audit-e2e")
        c.kubectl("-n", "audit-e2e", "create", "secret", "generic", "db",
                  f"--from-literal=password={SECRET_VALUE}")
        c.kubectl("-n", "audit-e2e", "get", "secret", "db", "-o", "json")
        c.kubectl("-n", "audit-e2e", "create", "configmap", "app",
                  f"--from-literal=DB_PASSWORD={CONFIGMAP_VALUE}", "--from-literal=mode=fast")
        c.kubectl("create", "clusterrolebinding", "e2e-root", "--clusterrole=cluster-admin",
                  "--user=mallory")
        # Its RequestResponse event carries the object twice (request and response): over
        # MAX_EVENT, so it arrives truncated, while the rest of its batch arrives whole.
        big = work / "big.txt"
        big.write_text("x" * (200 << 10))
        c.kubectl("-n", "audit-e2e", "create", "configmap", "big", f"--from-file=blob={big}")
        denied = c.kubectl("-n", "audit-e2e", "get", "secrets", user=True, check=False)
        check(denied.returncode != 0, "the ordinary user may not list secrets")
        time.sleep(2)  # batch max-wait is 1s: let these batches go out

        # An outage: events produced meanwhile are retried by the apiserver (1 s backoff).
        gw.kill9()
        c.kubectl("create", "namespace", "during-outage")
        time.sleep(1.5)
        gw.start()
        c.kubectl("create", "namespace", "after-restart")

        expected = [("create", "namespaces", "audit-e2e"), ("create", "secrets", "db"),
                    ("get", "secrets", "db"), ("create", "configmaps", "app"),
                    ("create", "clusterrolebindings", "e2e-root"),
                    ("create", "configmaps", "big"),
                    ("create", "namespaces", "during-outage"),
                    ("create", "namespaces", "after-restart")]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            echoed = lines(out / "audit.jsonl")
            if all(find(echoed, verb=v, resource=r, name=n) for v, r, n in expected) and \
                    len(lines(out / "alerts.jsonl")) >= 3:
                break
            time.sleep(0.5)
        audit = lines(out / "audit.jsonl")
        for verb, resource, name in expected:
            check(find(audit, verb=verb, resource=resource, name=name) is not None,
                  f"{verb} {resource}/{name} reached redact-secrets")
        cut = find(audit, verb="create", resource="configmaps", name="big")
        check(cut is not None
              and (cut.get("annotations") or {}).get("audit.k8s.io/truncated") == "true"
              and "requestObject" not in cut and "responseObject" not in cut
              and cut["objectRef"]["name"] == "big" and cut["responseStatus"]["code"] == 201,
              "an event over --audit-max-event-bytes arrives truncated (objects dropped, "
              "audit.k8s.io/truncated), its metadata and the rest of its batch intact")
        whole = find(audit, verb="create", resource="configmaps", name="app")
        check(whole is not None and "requestObject" in whole
              and "audit.k8s.io/truncated" not in (whole.get("annotations") or {}),
              "events under the limit keep their objects")
        forbidden = find(audit, verb="list", resource="secrets", user=cluster.USER_NAME)
        check(forbidden is not None and forbidden["responseStatus"]["code"] == 403,
              "the forbidden list by the ordinary user is audited with 403")

        # No secret value anywhere in the outputs (raw or base64).
        needles = [SECRET_VALUE, base64.b64encode(SECRET_VALUE.encode()).decode(), CONFIGMAP_VALUE]
        for f in sorted(out.iterdir()):
            text = f.read_text()
            for needle in needles:
                check(needle not in text, f"{needle!r} absent from {f.name}")
        secret = find(audit, verb="create", resource="secrets", name="db")
        check(secret is not None and secret["requestObject"]["data"]["password"] == "[REDACTED]",
              "the Secret's data key is kept, its value redacted")

        alerts = [(x["alert"], x["user"], x.get("responseCode")) for x in lines(out / "alerts.jsonl")]
        check(("secret-read", cluster.ADMIN_USER, 200) in alerts,
              "exec-alert: secret-read by the admin (system:masters is not a system identity)")
        check(("secret-read", cluster.USER_NAME, 403) in alerts,
              "exec-alert: the ordinary user's refused secret list")
        check(("cluster-admin-binding", cluster.ADMIN_USER, 201) in alerts,
              "exec-alert: cluster-admin-binding")

        # echo-sink sees every (auditID, stage) once, but for what was in flight at the kill.
        echo = [(e["auditID"], e["stage"]) for e in lines(out / "echo.jsonl")]
        dupes = len(echo) - len(set(echo))
        print(f"     echo-sink: {len(echo)} lines, {dupes} delivered twice (at-least-once)")
        check(dupes <= 200, "at most the batch in flight at the kill is delivered twice")
        log = (work / "wasmgate.log").read_text()
        check('"message":"audit batch refused' not in log, "no batch was refused")
    finally:
        c.stop()  # flushes the apiserver's audit buffer while wasmgate still runs
        gw.stop()
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failures")
    if not a.keep and not failures and not a.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
