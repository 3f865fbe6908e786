#!/usr/bin/env python3
"""Proves the e2e infrastructure against a real kube-apiserver, with no wasmgate involved.

1. Starts etcd + kube-apiserver (cluster.py) whose audit webhook points at a loopback HTTPS port
   where nothing listens yet, and checks the apiserver is ready and serves requests anyway.
2. Starts capture_server.py on that port (its own CA, IP SAN 127.0.0.1).
3. Registers a Validating- and a MutatingWebhookConfiguration (URL webhooks on the capture
   server, caBundle, sideEffects None, admissionReviewVersions [v1]).
4. kubectl: create namespace, ConfigMap, `create --dry-run=server` of a Pod, a forbidden request
   as the ordinary user.
5. Checks AdmissionReviews and audit EventLists arrive (including the batch that was generated
   before the audit endpoint existed, delivered by the apiserver's retry).

  smoke.py [--work-dir D] [--save-fixtures] [--keep]

--save-fixtures writes pretty-printed bodies (and the request metadata: path with ?timeout=,
headers) to tests/fixtures/apiserver/smoke/. Exit status 0 = all checks passed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cluster  # noqa: E402
from capture_server import CaptureServer  # noqa: E402

POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web", "namespace": "x", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1.0"}]},
}
CONFIGMAP = {
    "apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "settings", "namespace": "x", "labels": {"app": "web"}},
    "data": {"mode": "e2e"},
}


def webhook_configs(port: int, ca_b64: str) -> list[dict]:
    def hook(name, path, resources):
        return {
            "name": name,
            "clientConfig": {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_b64},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                       "apiVersions": ["v1"], "resources": resources}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
        }
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1",
         "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "e2e-capture"},
         "webhooks": [hook("validate.capture.e2e.wasmgate.io", "/validate",
                           ["configmaps", "pods", "namespaces"])]},
        {"apiVersion": "admissionregistration.k8s.io/v1",
         "kind": "MutatingWebhookConfiguration", "metadata": {"name": "e2e-capture"},
         "webhooks": [hook("mutate.capture.e2e.wasmgate.io", "/mutate", ["pods"])]},
    ]


def events_of(received) -> list[dict]:
    out = []
    for kind, _meta, body in received:
        if kind == "audit":
            out.extend(json.loads(body).get("items", []))
    return out


def find_event(events, *, verb, resource, name=None, namespace=None, stage="ResponseComplete",
               user=None):
    for e in events:
        ref = e.get("objectRef") or {}
        if (e.get("verb") == verb and ref.get("resource") == resource
                and (name is None or ref.get("name") == name)
                and (namespace is None or ref.get("namespace") == namespace)
                and e.get("stage") == stage
                and (user is None or e.get("user", {}).get("username") == user)):
            return e
    return None


def reviews_of(received, kind: str) -> list[tuple[dict, dict]]:
    return [(json.loads(b), m) for k, m, b in received if k == kind]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir")
    ap.add_argument("--save-fixtures", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    a = ap.parse_args()

    work = Path(a.work_dir or tempfile.mkdtemp(prefix="wasmgate-e2e-smoke-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}")
    # The "gateway" side: its own CA and a serving cert with IP SAN 127.0.0.1.
    gw_ca = cluster.make_ca(work / "gw-pki", "ca", "smoke-gateway-ca")
    gw_crt, gw_key = cluster.make_cert(work / "gw-pki", "server", gw_ca, cn="smoke-gateway",
                                       ips=["127.0.0.1"], dns=["localhost"])
    gw_port, *ports = cluster.free_ports(4)
    failures: list[str] = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    t0 = time.monotonic()
    c = cluster.Cluster(work / "cluster", audit_url=f"https://127.0.0.1:{gw_port}/audit",
                        audit_ca=gw_ca[0], ports=ports)
    cap = None
    try:
        c.start()
        print(f"cluster ready in {time.monotonic() - t0:.1f}s {c.timings}")

        # 1. The audit endpoint is down: the apiserver must still serve.
        t_early = time.time()
        c.kubectl("create", "namespace", "early")
        check(True, "apiserver serves while the audit webhook is down (namespace early created)")
        time.sleep(2)  # let the batch (max-wait 1s) fail its first attempt

        # 2. Endpoint comes up on the port the apiserver is configured with.
        cap = CaptureServer(work / "captured", gw_crt, gw_key, port=gw_port,
                            client_ca=c.ca_crt).start()

        # 3. Webhook configurations; wait until the apiserver's informer sees them.
        for obj in webhook_configs(gw_port, cluster.ca_bundle_b64(gw_ca[0])):
            c.apply(obj)
        deadline = time.monotonic() + 30
        while not reviews_of(cap.received, "validate"):
            if time.monotonic() > deadline:
                raise TimeoutError("validating webhook never called")
            c.kubectl("create", "configmap", "probe", "-n", "default", "--dry-run=server",
                      check=False)
            time.sleep(0.5)

        # 4. The requests.
        c.kubectl("create", "namespace", "x")
        c.apply(CONFIGMAP)
        c.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(POD))
        denied = c.kubectl("create", "configmap", "nope", "-n", "x", user=True, check=False)
        check(denied.returncode != 0 and "forbidden" in denied.stderr,
              "ordinary user is forbidden by RBAC")
        c.kubectl("get", "configmap", "settings", "-n", "x", "-o", "name")

        # 5. Wait for the audit events (the early one arrives via the retry, ~10s backoff).
        want = [
            dict(verb="create", resource="namespaces", name="early"),
            dict(verb="create", resource="namespaces", name="x"),
            dict(verb="create", resource="configmaps", name="settings", namespace="x"),
            dict(verb="create", resource="pods", name="web", namespace="x"),
            dict(verb="create", resource="configmaps", namespace="x", user=cluster.USER_NAME),
            dict(verb="get", resource="configmaps", name="settings", namespace="x"),
        ]
        try:
            cap.wait_for(lambda r: all(find_event(events_of(r), **w) for w in want), 90)
        except TimeoutError:
            pass
        events = events_of(cap.received)
        for w in want:
            check(find_event(events, **w) is not None, f"audit event {w}")
        early = find_event(events, verb="create", resource="namespaces", name="early")
        x_ns = find_event(events, verb="create", resource="namespaces", name="x")
        early_rr = [e for e in events if early and e.get("auditID") == early.get("auditID")
                    and e.get("stage") == "RequestReceived"]
        early_at = [m["received_at"] for k, m, b in cap.received if k == "audit" and early
                    and early["auditID"].encode() in b]
        check(early is not None and bool(early_rr),
              "batch produced while the audit webhook was down was retried and delivered"
              + (f" ({early_at[0] - t_early:.1f}s after the request)" if early_at else ""))
        pod_ev = find_event(events, verb="create", resource="pods", name="web")
        check(pod_ev is not None and pod_ev.get("level") == "RequestResponse"
              and "requestObject" in pod_ev and "responseObject" in pod_ev,
              "pod dry-run event at RequestResponse with request/response objects")
        check(all((e.get("user") or {}).get("username") != "system:apiserver" for e in events),
              "no system:apiserver events (policy)")
        check(not any((e.get("objectRef") or {}).get("resource") in ("leases", "events")
                      for e in events), "no leases/events (policy)")

        validate = reviews_of(cap.received, "validate")
        mutate = reviews_of(cap.received, "mutate")
        pod_v = [(r, m) for r, m in validate
                 if r["request"]["kind"]["kind"] == "Pod" and r["request"].get("dryRun")]
        cm_v = [(r, m) for r, m in validate
                if r["request"]["kind"]["kind"] == "ConfigMap"
                and r["request"].get("name") == "settings"]
        ns_v = [(r, m) for r, m in validate
                if r["request"]["kind"]["kind"] == "Namespace"
                and r["request"].get("name") == "x"]
        check(bool(pod_v), "AdmissionReview for the dry-run Pod (dryRun=true)")
        check(bool(cm_v), "AdmissionReview for ConfigMap settings")
        check(bool(ns_v), "AdmissionReview for Namespace x")
        check(any(r["request"]["kind"]["kind"] == "Pod" for r, _ in mutate),
              "mutating AdmissionReview for the Pod")
        if pod_v:
            r, m = pod_v[0]
            check(r["request"]["userInfo"]["username"] == cluster.ADMIN_USER,
                  "userInfo.username is the token user")
            check("?timeout=" in m["path"], f"request path carries ?timeout= ({m['path']})")
            print(f"     admission headers: {m['headers']}")
            print(f"     admission client cert: {m['client_cert_subject']}, tls {m['tls_version']}")
        audit_meta = [m for k, m, _ in cap.received if k == "audit"]
        if audit_meta:
            print(f"     audit path: {audit_meta[0]['path']} headers: {audit_meta[0]['headers']}")
            print(f"     audit client cert: {audit_meta[0]['client_cert_subject']}")

        if a.save_fixtures:
            save_fixtures(cap, pod_v, cm_v, mutate, events, early, x_ns)
    finally:
        t1 = time.monotonic()
        c.stop()
        print(f"cluster stopped in {time.monotonic() - t1:.1f}s")
        if cap:
            cap.stop()
        if not a.keep and not failures:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")

    print(f"{len(failures)} failed" if failures else "all smoke checks passed")
    return 1 if failures else 0


def save_fixtures(cap, pod_v, cm_v, mutate, events, early, x_ns) -> None:
    dest = HERE.parent / "fixtures" / "apiserver" / "smoke"
    dest.mkdir(exist_ok=True)

    def write(name, obj):
        (dest / name).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
        print(f"     wrote tests/fixtures/apiserver/smoke/{name}")

    def meta(m):
        return {"path": m["path"], "http_version": m["http_version"],
                "tls_version": m["tls_version"],
                "client_cert_subject": m["client_cert_subject"],
                "headers": {k: v for k, v in m["headers"].items()
                            if k.lower() not in ("traceparent",)}}

    if pod_v:
        write("admission-validating-pod-dryrun-create.json", pod_v[0][0])
        write("admission-validating-pod-dryrun-create.meta.json", meta(pod_v[0][1]))
    if cm_v:
        write("admission-validating-configmap-create.json", cm_v[0][0])
    pod_m = [(r, m) for r, m in mutate if r["request"]["kind"]["kind"] == "Pod"]
    if pod_m:
        write("admission-mutating-pod-dryrun-create.json", pod_m[0][0])
        write("admission-mutating-pod-dryrun-create.meta.json", meta(pod_m[0][1]))
    # One whole EventList as received: the one holding the ConfigMap create's ResponseComplete.
    for kind, m, body in cap.received:
        if kind != "audit":
            continue
        items = json.loads(body).get("items", [])
        if find_event(items, verb="create", resource="configmaps", name="settings"):
            write("audit-eventlist.json", json.loads(body))
            write("audit-eventlist.meta.json", meta(m))
            break


if __name__ == "__main__":
    sys.exit(main())
