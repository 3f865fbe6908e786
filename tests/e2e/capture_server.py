#!/usr/bin/env python3
"""A throwaway HTTPS webhook endpoint on loopback that records what kube-apiserver sends.

Standard library only. Every POST is saved as <out>/NNNN-<path>.json (the raw body) plus
<out>/NNNN-<path>.meta.json (method, path with query, headers, TLS version, client cert subject).

  POST /audit*     -> 200 {}            (audit EventList)
  POST /validate*  -> AdmissionReview   allowed: true, uid echoed
  POST /mutate*    -> AdmissionReview   allowed: true, uid echoed, no patch
  anything else    -> 404

Python API: `with CaptureServer(out_dir, cert, key) as s: s.port ...` (port 0 = pick one).
CLI: capture_server.py --out D --cert C --key K [--port P] [--client-ca CA]
"""

from __future__ import annotations

import argparse
import itertools
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _reply(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        path = self.path.split("?", 1)[0]
        kind = path.strip("/").split("/")[0] or "root"
        seq = next(self.server.seq)
        cert = None
        try:
            peer = self.connection.getpeercert()
            if peer:
                cert = peer.get("subject")
        except (AttributeError, ValueError):
            pass
        meta = {"seq": seq, "received_at": time.time(), "method": self.command,
                "path": self.path,
                "http_version": self.request_version,
                "headers": dict(self.headers.items()),
                "tls_version": getattr(self.connection, "version", lambda: None)(),
                "client_cert_subject": cert}
        out = self.server.out
        (out / f"{seq:04d}-{kind}.json").write_bytes(body)
        (out / f"{seq:04d}-{kind}.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        with self.server.lock:
            self.server.received.append((kind, meta, body))
            self.server.cond.notify_all()

        if kind == "audit":
            return self._reply(200, {})
        if kind in ("validate", "mutate"):
            try:
                review = json.loads(body)
                uid = review["request"]["uid"]
            except (ValueError, KeyError, TypeError):
                return self._reply(400, {"error": "not an AdmissionReview"})
            return self._reply(200, {
                "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
                "kind": review.get("kind", "AdmissionReview"),
                "response": {"uid": uid, "allowed": True},
            })
        return self._reply(404, {"error": "unknown path"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class CaptureServer:
    def __init__(self, out_dir: str | Path, cert: str | Path, key: str | Path, port: int = 0,
                 client_ca: str | Path | None = None):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca:
            ctx.load_verify_locations(str(client_ca))
            ctx.verify_mode = ssl.CERT_OPTIONAL
        self.httpd = _Server(("127.0.0.1", port), _Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.out = self.out
        self.httpd.seq = itertools.count(1)
        self.httpd.lock = threading.Lock()
        self.httpd.cond = threading.Condition(self.httpd.lock)
        self.httpd.received = []
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def received(self) -> list:
        """[(kind, meta, body bytes)] in arrival order."""
        with self.httpd.lock:
            return list(self.httpd.received)

    def wait_for(self, pred, timeout: float) -> list:
        """Wait until pred(received list) is truthy; returns the list (raises on timeout)."""
        with self.httpd.cond:
            ok = self.httpd.cond.wait_for(lambda: pred(self.httpd.received), timeout)
            if not ok:
                raise TimeoutError("capture server: condition not met")
            return list(self.httpd.received)

    def start(self) -> "CaptureServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--client-ca")
    a = ap.parse_args()
    s = CaptureServer(a.out, a.cert, a.key, a.port, a.client_ca)
    print(json.dumps({"port": s.port}), flush=True)
    try:
        s.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
