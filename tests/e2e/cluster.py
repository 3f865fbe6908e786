#!/usr/bin/env python3
"""A throwaway single-node control plane (etcd + kube-apiserver) on loopback, for e2e tests.

Standard library only (plus the `openssl` CLI for certificates). Binaries come from
`tests/e2e/build-tools` (kube-apiserver, kubectl, etcd in one bin dir).

Python API::

    import cluster
    ports = cluster.free_ports(3)
    with cluster.Cluster(work_dir, audit_url="https://127.0.0.1:8443/audit",
                         audit_ca="/path/ca.crt", ports=ports) as c:
        c.kubectl("create", "namespace", "x")
        c.apply(obj_or_yaml)          # kubectl apply -f -
        c.info                        # dict: kubeconfig paths, tokens, ports, ca ...

CLI (see --help of each)::

    cluster.py up   --work-dir D --audit-url U --audit-ca F [...]   # foreground; SIGTERM/SIGINT stops
    cluster.py wait --work-dir D [--pid P] [--timeout S]             # until D/cluster.json says ready
    cluster.py down --work-dir D                                     # SIGTERM the `up` supervisor
    cluster.py run  --work-dir D --audit-url U --audit-ca F [...] -- CMD ARGS...
    cluster.py pki  --dir D --name NAME [--ca-dir C] --ip 127.0.0.1 [--dns ...]  # CA / leaf certs

`run` starts the cluster, runs CMD with KUBECONFIG, E2E_* variables set (see `Cluster.env()`),
stops the cluster, and exits with CMD's status.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent

ADMIN_TOKEN = "e2e-admin-token"
ADMIN_USER = "e2e-admin"
USER_TOKEN = "e2e-user-token"
USER_NAME = "e2e-user"
USER_GROUP = "e2e:users"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first IP of SERVICE_CIDR; only a SAN, never dialled
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Everything at RequestResponse except the noisy control-plane traffic.
DEFAULT_AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  # The apiserver's own loopback client (bootstrap controllers, APF config, lease renewals).
  - level: None
    users: ["system:apiserver"]
  - level: None
    resources:
      - group: coordination.k8s.io
        resources: ["leases"]
  - level: None
    resources:
      - group: ""
        resources: ["events"]
      - group: events.k8s.io
        resources: ["events"]
  # Health probes (cluster.py polls /readyz while starting).
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
  - level: RequestResponse
"""


# ------------------------------------------------------------------------------------------------
# small helpers

def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (free at the time of the call)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def default_bin_dir() -> Path:
    """The bin dir of tests/e2e/build-tools (error if not built yet)."""
    env = os.environ.get("WASMGATE_K8S_BIN")
    if env:
        return Path(env)
    out = subprocess.run([str(HERE / "build-tools"), "--print"], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise RuntimeError("kube-apiserver/etcd not built: run tests/e2e/build-tools first")
    return Path(out.stdout.strip())


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child if the Python process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _openssl(*args: str, cwd: Path | None = None) -> None:
    if not shutil.which("openssl"):
        raise RuntimeError("the openssl CLI is needed for certificates (apt-get install openssl)")
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# ------------------------------------------------------------------------------------------------
# PKI (openssl CLI): ECDSA P-256 CA and leaf certificates, SHA-256, with SANs.

def make_ca(out_dir: Path, name: str = "ca", cn: str = "wasmgate-e2e-ca") -> tuple[Path, Path]:
    """Create out_dir/{name}.crt,{name}.key (self-signed CA) unless present. Returns (crt, key)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    crt, key = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    if crt.exists() and key.exists():
        return crt, key
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "3650", "-sha256",
             "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    return crt, key


def make_cert(out_dir: Path, name: str, ca: tuple[Path, Path], *, cn: str,
              ips: list[str] = (), dns: list[str] = (), orgs: list[str] = (),
              server: bool = True, client: bool = False) -> tuple[Path, Path]:
    """Create out_dir/{name}.crt,{name}.key signed by ca=(crt,key) unless present."""
    out_dir.mkdir(parents=True, exist_ok=True)
    crt, key, csr = out_dir / f"{name}.crt", out_dir / f"{name}.key", out_dir / f"{name}.csr"
    if crt.exists() and key.exists():
        return crt, key
    subj = "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subj)
    eku = [u for u, on in (("serverAuth", server), ("clientAuth", client)) if on]
    ext = ["basicConstraints=critical,CA:FALSE",
           "keyUsage=critical,digitalSignature,keyEncipherment",
           "extendedKeyUsage=" + ",".join(eku)]
    sans = [f"IP:{i}" for i in ips] + [f"DNS:{d}" for d in dns]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    extfile = out_dir / f"{name}.ext"
    extfile.write_text("\n".join(ext) + "\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", str(crt), "-days", "3650", "-sha256",
             "-extfile", str(extfile))
    csr.unlink()
    extfile.unlink()
    return crt, key


def make_rsa_keypair(out_dir: Path, name: str) -> tuple[Path, Path]:
    """out_dir/{name}.key (RSA 2048, PKCS#8) and {name}.pub. Returns (key, pub)."""
    key, pub = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    if not (key.exists() and pub.exists()):
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", str(key))
        _openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    return key, pub


def ca_bundle_b64(ca_crt: Path) -> str:
    """The value for a webhook's clientConfig.caBundle."""
    return base64.b64encode(Path(ca_crt).read_bytes()).decode()


def _kubeconfig(server: str, ca: Path, *, token: str | None = None,
                client_cert: Path | None = None, client_key: Path | None = None,
                name: str = "e2e") -> str:
    # JSON is valid YAML; client-go reads both.
    user: dict = {}
    if token:
        user["token"] = token
    if client_cert:
        user["client-certificate"] = str(client_cert)
        user["client-key"] = str(client_key)
    return json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server,
                                                 "certificate-authority": str(ca)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }, indent=2) + "\n"


# ------------------------------------------------------------------------------------------------

class Cluster:
    """etcd + kube-apiserver on 127.0.0.1.

    work_dir: everything goes there (pki/, etcd-data/, *.log, kubeconfigs, cluster.json).
    audit_url / audit_ca: the audit webhook endpoint and the CA that signed its serving cert.
        audit_url=None runs without an audit webhook (the policy file is still loaded only if
        audit_url is set).
    ports: (apiserver, etcd client, etcd peer); default: free_ports(3).
    audit_policy: Policy text (YAML/JSON); default DEFAULT_AUDIT_POLICY.
    audit_initial_backoff: e.g. "1s" (upstream default 10s) for --audit-webhook-initial-backoff.
    extra_apiserver_args: appended last (string flags: last wins; list flags append).
    service_account_admission: keep the ServiceAccount admission plugin (default: disabled,
        because without kube-controller-manager no "default" ServiceAccount exists and the
        plugin then rejects every Pod; with it on, create the ServiceAccount yourself).
    """

    def __init__(self, work_dir: str | Path, *, audit_url: str | None = None,
                 audit_ca: str | Path | None = None, ports: list[int] | None = None,
                 bin_dir: str | Path | None = None, audit_policy: str | None = None,
                 audit_batch_max_wait: str = "1s", audit_initial_backoff: str | None = None,
                 extra_apiserver_args: list[str] = (), start_timeout: float = 180.0,
                 die_with_parent: bool = True, service_account_admission: bool = False,
                 apiserver_env: dict[str, str] | None = None):
        self.work = Path(work_dir).resolve()
        self.audit_url = audit_url
        self.audit_ca = Path(audit_ca).resolve() if audit_ca else None
        if audit_url and audit_url.startswith("https://") and not self.audit_ca:
            raise ValueError("audit_ca is required for an https audit_url")
        self.ports = list(ports) if ports else free_ports(3)
        self.api_port, self.etcd_port, self.etcd_peer_port = self.ports
        self.bin = Path(bin_dir) if bin_dir else default_bin_dir()
        self.audit_policy = audit_policy or DEFAULT_AUDIT_POLICY
        self.audit_batch_max_wait = audit_batch_max_wait
        self.audit_initial_backoff = audit_initial_backoff
        self.extra_apiserver_args = list(extra_apiserver_args)
        # Variables added to kube-apiserver's environment (e.g. its Go runtime's GOGC).
        self.apiserver_env = dict(apiserver_env or {})
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.service_account_admission = service_account_admission
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: list = []
        self.server = f"https://127.0.0.1:{self.api_port}"
        self.pki = self.work / "pki"
        self.kubeconfig = self.work / "kubeconfig"            # admin (system:masters)
        self.user_kubeconfig = self.work / "kubeconfig-user"  # ordinary user, no RBAC grants
        self.timings: dict[str, float] = {}

    # -- setup ------------------------------------------------------------------------------
    def _write_files(self) -> list[str]:
        w, pki = self.work, self.pki
        w.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        ca = make_ca(pki, "ca", "wasmgate-e2e-cluster-ca")
        self.ca_crt = ca[0]
        self.apiserver_crt, self.apiserver_key = make_cert(
            pki, "apiserver", ca, cn="kube-apiserver", ips=["127.0.0.1", SERVICE_IP],
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"])
        # Client cert kube-apiserver presents to the audit webhook and to admission webhooks
        # (only sent when the server asks for one). Verify it against pki/ca.crt.
        self.webhook_client_crt, self.webhook_client_key = make_cert(
            pki, "webhook-client", ca, cn="kube-apiserver-webhook-client",
            orgs=["wasmgate-e2e"], server=False, client=True)
        self.sa_key, self.sa_pub = make_rsa_keypair(pki, "sa")
        self.timings["pki_s"] = round(time.monotonic() - t0, 2)

        (w / "tokens.csv").write_text(
            f'{ADMIN_TOKEN},{ADMIN_USER},uid-{ADMIN_USER},"system:masters"\n'
            f'{USER_TOKEN},{USER_NAME},uid-{USER_NAME},"{USER_GROUP}"\n')
        self.kubeconfig.write_text(_kubeconfig(self.server, self.ca_crt, token=ADMIN_TOKEN))
        self.user_kubeconfig.write_text(_kubeconfig(self.server, self.ca_crt, token=USER_TOKEN))

        # Admission webhooks: present webhook-client.crt to any host ("*").
        (w / "admission-kubeconfig.yaml").write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "users": [{"name": "*", "user": {
                "client-certificate": str(self.webhook_client_crt),
                "client-key": str(self.webhook_client_key)}}],
        }, indent=2) + "\n")
        (w / "admission-config.yaml").write_text(json.dumps({
            "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration",
            "plugins": [{"name": n, "configuration": {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "WebhookAdmissionConfiguration",
                "kubeConfigFile": str(w / "admission-kubeconfig.yaml")}}
                for n in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")],
        }, indent=2) + "\n")

        args = [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", f"--secure-port={self.api_port}",
            "--advertise-address=127.0.0.1",
            # The "kubernetes" Service endpoint would be 127.0.0.1, which Endpoints validation
            # rejects (loopback); don't reconcile it.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={w / 'apiserver-certs'}",
            f"--tls-cert-file={self.apiserver_crt}", f"--tls-private-key-file={self.apiserver_key}",
            f"--client-ca-file={self.ca_crt}",
            f"--token-auth-file={w / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=true",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={self.sa_pub}",
            f"--service-account-signing-key-file={self.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--admission-control-config-file={w / 'admission-config.yaml'}",
            "--profiling=false",
            "--v=1",
        ]
        if not self.service_account_admission:
            # No kube-controller-manager => no "default" ServiceAccount; don't require it.
            args.append("--disable-admission-plugins=ServiceAccount")
        if self.audit_url:
            (w / "audit-policy.yaml").write_text(self.audit_policy)
            (w / "audit-webhook.kubeconfig").write_text(_kubeconfig(
                self.audit_url, self.audit_ca, client_cert=self.webhook_client_crt,
                client_key=self.webhook_client_key, name="audit"))
            args += [
                f"--audit-policy-file={w / 'audit-policy.yaml'}",
                f"--audit-webhook-config-file={w / 'audit-webhook.kubeconfig'}",
                f"--audit-webhook-batch-max-wait={self.audit_batch_max_wait}",
            ]
            if self.audit_initial_backoff:
                args.append(f"--audit-webhook-initial-backoff={self.audit_initial_backoff}")
        return args + self.extra_apiserver_args

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "ab")
        self._logs.append(log)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             cwd=self.work, env={**os.environ, **env} if env else None,
                             preexec_fn=_die_with_parent if self.die_with_parent else None)
        self.procs[name] = p
        return p

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.work / f"{name}.log").read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{name} exited with {p.returncode}; log tail:\n{tail}")

    def _wait_http(self, url: str, ctx: ssl.SSLContext | None, headers: dict, deadline: float,
                   want: bytes) -> None:
        last = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                req = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                    body = r.read()
                    if r.status == 200 and want in body:
                        return
                    last = body[:200]
            except (urllib.error.URLError, OSError) as e:  # includes HTTPError (503)
                last = e
            time.sleep(0.25)
        raise TimeoutError(f"{url} not ready: {last}")

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Cluster":
        t0 = time.monotonic()
        api_args = self._write_files()
        deadline = t0 + self.start_timeout
        try:
            etcd_data = self.work / "etcd-data"
            shutil.rmtree(etcd_data, ignore_errors=True)
            etcd_url = f"http://127.0.0.1:{self.etcd_port}"
            peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
            self._spawn("etcd", [
                str(self.bin / "etcd"), "--name=e2e", f"--data-dir={etcd_data}",
                f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}", "--initial-cluster-state=new",
                "--unsafe-no-fsync", "--log-level=warn"])
            self._wait_http(f"{etcd_url}/health", None, {}, deadline, b'"health":"true"')
            self.timings["etcd_ready_s"] = round(time.monotonic() - t0, 2)

            self._spawn("kube-apiserver", [str(self.bin / "kube-apiserver"), *api_args],
                        self.apiserver_env)
            ctx = ssl.create_default_context(cafile=str(self.ca_crt))
            self._wait_http(f"{self.server}/readyz", ctx,
                            {"Authorization": f"Bearer {ADMIN_TOKEN}"}, deadline, b"ok")
            self.timings["apiserver_ready_s"] = round(time.monotonic() - t0, 2)
        except BaseException:
            self.stop()
            raise
        self._write_info(ready=True)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM kube-apiserver (it drains and flushes the audit buffer), then etcd."""
        for name in ("kube-apiserver", "etcd"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self._logs:
            f.close()
        self._logs.clear()
        if self.procs:
            self._write_info(ready=False)

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- info / helpers ---------------------------------------------------------------------
    @property
    def info(self) -> dict:
        return {
            "server": self.server,
            "ports": {"apiserver": self.api_port, "etcd": self.etcd_port,
                      "etcd_peer": self.etcd_peer_port},
            "kubeconfig": str(self.kubeconfig),
            "user_kubeconfig": str(self.user_kubeconfig),
            "ca": str(self.ca_crt),
            "webhook_client_cert": str(self.webhook_client_crt),
            "webhook_client_key": str(self.webhook_client_key),
            "admin": {"user": ADMIN_USER, "token": ADMIN_TOKEN, "groups": ["system:masters"]},
            "user": {"user": USER_NAME, "token": USER_TOKEN, "groups": [USER_GROUP]},
            "audit_url": self.audit_url,
            "kubectl": str(self.bin / "kubectl"),
            "bin_dir": str(self.bin),
            "work_dir": str(self.work),
            "pids": {n: p.pid for n, p in self.procs.items()},
            "timings": self.timings,
        }

    def _write_info(self, ready: bool) -> None:
        info = dict(self.info, ready=ready, supervisor_pid=os.getpid())
        tmp = self.work / "cluster.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(self.work / "cluster.json")

    def env(self) -> dict[str, str]:
        """Environment for child commands: KUBECONFIG and E2E_* variables, kubectl on PATH."""
        e = dict(os.environ)
        e.update({
            "KUBECONFIG": str(self.kubeconfig),
            "E2E_KUBECONFIG": str(self.kubeconfig),
            "E2E_USER_KUBECONFIG": str(self.user_kubeconfig),
            "E2E_SERVER": self.server,
            "E2E_CA": str(self.ca_crt),
            "E2E_WORK_DIR": str(self.work),
            "E2E_KUBECTL": str(self.bin / "kubectl"),
            "E2E_WEBHOOK_CLIENT_CERT": str(self.webhook_client_crt),
            "E2E_WEBHOOK_CLIENT_KEY": str(self.webhook_client_key),
            "PATH": f"{self.bin}{os.pathsep}{e.get('PATH', '')}",
        })
        return e

    def kubectl(self, *args: str, user: bool = False, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        kc = self.user_kubeconfig if user else self.kubeconfig
        cp = subprocess.run([str(self.bin / "kubectl"), f"--kubeconfig={kc}", *args],
                            input=input, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=timeout)
        if check and cp.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({cp.returncode}):\n"
                               f"{cp.stdout}{cp.stderr}")
        return cp

    def apply(self, obj: dict | str, **kw) -> subprocess.CompletedProcess:
        """kubectl apply -f - with a dict (sent as JSON) or YAML/JSON text."""
        text = obj if isinstance(obj, str) else json.dumps(obj)
        return self.kubectl("apply", "-f", "-", input=text, **kw)


# ------------------------------------------------------------------------------------------------
# CLI

def _cluster_from_args(a) -> Cluster:
    ports = [int(p) for p in a.ports.split(",")] if a.ports else None
    policy = Path(a.audit_policy).read_text() if a.audit_policy else None
    return Cluster(a.work_dir, audit_url=a.audit_url, audit_ca=a.audit_ca, ports=ports,
                   bin_dir=a.bin_dir, audit_policy=policy,
                   audit_batch_max_wait=a.audit_batch_max_wait,
                   audit_initial_backoff=a.audit_initial_backoff,
                   extra_apiserver_args=a.apiserver_arg or [], start_timeout=a.timeout)


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work-dir", required=True)
    p.add_argument("--audit-url", help="e.g. https://127.0.0.1:8443/audit (omit: no audit)")
    p.add_argument("--audit-ca", help="CA file that signed the audit webhook's serving cert")
    p.add_argument("--ports", help="APISERVER,ETCD,ETCD_PEER (default: free ports)")
    p.add_argument("--bin-dir", help="default: tests/e2e/build-tools --print / $WASMGATE_K8S_BIN")
    p.add_argument("--audit-policy", help="Policy file (default: the built-in one)")
    p.add_argument("--audit-batch-max-wait", default="1s")
    p.add_argument("--audit-initial-backoff", help="default: apiserver's (10s)")
    p.add_argument("--apiserver-arg", action="append", help="extra flag (repeatable)")
    p.add_argument("--timeout", type=float, default=180.0, help="start timeout, seconds")


def _read_info(work_dir: str) -> dict | None:
    try:
        return json.loads((Path(work_dir) / "cluster.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start; block until SIGTERM/SIGINT; then stop")
    _add_cluster_args(up)
    run = sub.add_parser("run", help="start, run a command, stop")
    _add_cluster_args(run)
    run.add_argument("command", nargs=argparse.REMAINDER)
    wt = sub.add_parser("wait", help="wait until an `up` in this work dir is ready")
    wt.add_argument("--work-dir", required=True)
    wt.add_argument("--timeout", type=float, default=180.0)
    wt.add_argument("--pid", type=int, help="pid of the `up` process: fail at once if it died")
    dn = sub.add_parser("down", help="stop an `up` running in this work dir")
    dn.add_argument("--work-dir", required=True)
    dn.add_argument("--timeout", type=float, default=30.0)
    pk = sub.add_parser("pki", help="make a CA (no --ca-dir) or a leaf cert signed by it")
    pk.add_argument("--dir", required=True)
    pk.add_argument("--name", required=True)
    pk.add_argument("--ca-dir", help="dir holding ca.crt/ca.key (creates it if missing)")
    pk.add_argument("--cn")
    pk.add_argument("--ip", action="append", default=[])
    pk.add_argument("--dns", action="append", default=[])
    pk.add_argument("--client", action="store_true", help="clientAuth EKU too")
    a = ap.parse_args(argv)

    if a.cmd == "pki":
        if a.ca_dir:
            ca = make_ca(Path(a.ca_dir))
            crt, key = make_cert(Path(a.dir), a.name, ca, cn=a.cn or a.name, ips=a.ip,
                                 dns=a.dns, client=a.client)
        else:
            crt, key = make_ca(Path(a.dir), a.name, a.cn or a.name)
        print(json.dumps({"crt": str(crt), "key": str(key)}))
        return 0

    if a.cmd == "wait":
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline:
            info = _read_info(a.work_dir)
            if info and info.get("ready") and _pid_alive(info["supervisor_pid"]):
                print(json.dumps(info, indent=2))
                return 0
            if a.pid and not _pid_alive(a.pid):
                print(f"cluster `up` (pid {a.pid}) exited before it was ready", file=sys.stderr)
                return 1
            time.sleep(0.25)
        print(f"cluster in {a.work_dir} not ready after {a.timeout}s", file=sys.stderr)
        return 1

    if a.cmd == "down":
        info = _read_info(a.work_dir)
        if not info or not _pid_alive(info["supervisor_pid"]):
            return 0
        os.kill(info["supervisor_pid"], signal.SIGTERM)
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline and _pid_alive(info["supervisor_pid"]):
            time.sleep(0.1)
        return 0 if not _pid_alive(info["supervisor_pid"]) else 1

    if a.cmd == "run" and a.command and a.command[0] == "--":
        a.command = a.command[1:]
    if a.cmd == "run" and not a.command:
        ap.error("run needs a command after --")

    c = _cluster_from_args(a)
    stopping = {"flag": False}

    def on_signal(signum, _frame):
        stopping["flag"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The children die with us (PR_SET_PDEATHSIG) even on SIGKILL; normally `finally` stops
    # them in order (apiserver first, so it flushes its audit buffer).
    try:
        c.start()
        print(json.dumps(dict(c.info, ready=True), indent=2), flush=True)
        if a.cmd == "up":
            while True:
                c._check_alive()
                time.sleep(0.5)
        rc = subprocess.run(a.command, env=c.env()).returncode
        return rc
    except KeyboardInterrupt:
        return 0 if stopping["flag"] else 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        c.stop()


if __name__ == "__main__":
    sys.exit(main())
