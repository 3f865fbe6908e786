#!/usr/bin/env python3
"""Which HTTP version does kube-apiserver use towards loopback webhooks? (PROTOCOL.md 1.5, 3.3)

Two TLS listeners on 127.0.0.1 offer ALPN ["h2", "http/1.1"], record what was negotiated and
the first bytes the client sends, then hang up. One is the audit webhook, the other a
ValidatingWebhookConfiguration URL webhook (failurePolicy Ignore, so requests still succeed).
Prints one line per connection: (audit|admission, negotiated ALPN, first bytes).

Result with kube-apiserver v1.36.3: both negotiate h2 and send the HTTP/2 preface.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster  # noqa: E402


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="wasmgate-e2e-alpn-"))
    ca = cluster.make_ca(work / "gw", "ca", "alpn-probe-ca")
    crt, key = cluster.make_cert(work / "gw", "server", ca, cn="probe", ips=["127.0.0.1"])
    adm_port, audit_port, *ports = cluster.free_ports(5)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    seen: list[tuple] = []
    listeners = []

    def serve(ls: socket.socket, tag: str) -> None:
        while True:
            try:
                conn, _ = ls.accept()
            except OSError:
                return
            try:
                s = ctx.wrap_socket(conn, server_side=True)
                s.settimeout(2)
                try:
                    first = s.recv(24)
                except OSError as e:
                    first = repr(e).encode()
                seen.append((tag, s.selected_alpn_protocol(), first))
                s.close()
            except (OSError, ssl.SSLError) as e:
                seen.append((tag, "handshake-error", repr(e)))

    for port, tag in ((adm_port, "admission"), (audit_port, "audit")):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port))
        ls.listen(50)
        listeners.append(ls)
        threading.Thread(target=serve, args=(ls, tag), daemon=True).start()

    try:
        with cluster.Cluster(work / "cluster", audit_url=f"https://127.0.0.1:{audit_port}/audit",
                             audit_ca=ca[0], ports=ports) as c:
            c.apply({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "alpn-probe"},
                "webhooks": [{
                    "name": "alpn-probe.e2e.wasmgate.io",
                    "clientConfig": {"url": f"https://127.0.0.1:{adm_port}/validate",
                                     "caBundle": cluster.ca_bundle_b64(ca[0])},
                    "rules": [{"operations": ["CREATE"], "apiGroups": [""],
                               "apiVersions": ["v1"], "resources": ["configmaps"]}],
                    "sideEffects": "None", "admissionReviewVersions": ["v1"],
                    "failurePolicy": "Ignore", "timeoutSeconds": 2}]})
            time.sleep(2)
            for i in range(3):
                c.kubectl("create", "configmap", f"p{i}", "--dry-run=server", check=False)
            time.sleep(3)
    finally:
        for ls in listeners:
            ls.close()
        shutil.rmtree(work, ignore_errors=True)
    for row in seen:
        print(row)
    tags = {t for t, alpn, _ in seen if alpn == "h2"}
    print("h2 negotiated by:", sorted(tags) or "nobody")
    return 0


if __name__ == "__main__":
    sys.exit(main())
