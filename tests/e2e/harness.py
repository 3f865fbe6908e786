"""What the e2e scripts share beyond the cluster (cluster.py): checks that print `ok`/`FAIL` and
are counted, HTTPS GETs to a gateway, and waiting for a condition."""

from __future__ import annotations

import argparse
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import cluster

REPO = Path(__file__).resolve().parent.parent.parent


class Checks:
    """`check(cond, what, detail)` prints `ok   what` or `FAIL what: detail`, counts the
    failures in `failures`, and returns `cond`."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def __call__(self, cond, what: str, detail: str = ""):
        print(("ok   " if cond else "FAIL ") + what + (f": {detail}" if detail and not cond else ""),
              flush=True)
        if not cond:
            self.failures.append(what)
        return cond


def https_get(port: int, ctx: ssl.SSLContext, path: str, timeout: float = 5) -> tuple[int, str]:
    """GET https://127.0.0.1:PORT/PATH: (status, body); (0, the error) when nothing answered."""
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx,
                                    timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def wait_until(what: str, pred, timeout: float = 20, every: float = 0.2):
    """pred()'s first truthy answer within `timeout` seconds; TimeoutError naming `what` if none."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"{what}: not after {timeout}s")


def wasmgate_binary(arg: str | None) -> Path:
    """--wasmgate PATH, or the release build in $CARGO_TARGET_DIR (default: the repo's target)."""
    if arg:
        return Path(arg)
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    return Path(target) / "release" / "wasmgate"


def script(doc: str, name: str) -> tuple[argparse.Namespace, Path, Path]:
    """A check script's usual start: its flags (--work-dir, --keep, --wasmgate) parsed, the
    wasmgate binary, and its work dir (made, and printed)."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--wasmgate", help="the wasmgate binary (default: the release build)")
    a = ap.parse_args()
    work = Path(a.work_dir or tempfile.mkdtemp(prefix=f"wasmgate-e2e-{name}-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}")
    return a, wasmgate_binary(a.wasmgate), work


def gateway_pki(work: Path, name: str):
    """A CA and a serving certificate for 127.0.0.1/localhost under work/gw-pki, and a client
    SSL context trusting that CA: (ca, crt, key, ctx)."""
    ca = cluster.make_ca(work / "gw-pki", "ca", f"e2e-{name}-gateway-ca")
    crt, key = cluster.make_cert(work / "gw-pki", "server", ca, cn="wasmgate",
                                 ips=["127.0.0.1"], dns=["localhost"])
    return ca, crt, key, ssl.create_default_context(cafile=str(ca[0]))
