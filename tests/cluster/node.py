"""A throwaway single-node Kubernetes cluster on this machine, for tests/cluster/run.

Control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler. Node: containerd +
runc, the CNI bridge/host-local/loopback plugins, kubelet and kube-proxy (iptables mode). All
state lives in one work directory; `Node.stop()` kills every process it started (and the
containers' shims), undoes every mount under the work directory, removes the bridge, kube-proxy's
iptables rules and the cgroups it made, and restores the kernel settings it changed.

Must run as root. Only one such cluster at a time on a machine (a lock file says so): the bridge
name, the pod and service ranges are fixed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
import cluster as e2e  # noqa: E402  (PKI helpers, free ports, die-with-parent)

NODE_NAME = "wasmgate-node"
BRIDGE = "wgcluster0"
NODE_IP = "10.244.0.1"          # the bridge's address: the node's InternalIP and the API server's
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SVC_IP = "10.96.0.1"
CGROUP_ROOT = "/wasmgate-cluster"
LOCK = Path("/run/wasmgate-cluster.lock")
SHIM_SOCKETS = Path("/run/containerd/s")
# Kernel settings the node needs; the previous values are restored on stop.
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
}
# The kubelet sets these itself (protectKernelDefaults: false); restored on stop too.
KUBELET_SYSCTLS = ["vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"]

ADMIN_TOKEN = "cluster-admin-token"
TOKENS = {
    # token: (user, uid, groups)
    ADMIN_TOKEN: ("cluster-admin", "uid-admin", "system:masters"),
    "kcm-token": ("system:kube-controller-manager", "uid-kcm", ""),
    "scheduler-token": ("system:kube-scheduler", "uid-sched", ""),
    "proxy-token": ("system:kube-proxy", "uid-proxy", ""),
    "node-token": (f"system:node:{NODE_NAME}", "uid-node", "system:nodes"),
}


def log(msg: str) -> None:
    print(f"cluster: {msg}", file=sys.stderr, flush=True)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _kubeconfig(server: str, ca: Path, token: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }, indent=2) + "\n"


def _sysctl_read(key: str) -> str | None:
    try:
        return Path("/proc/sys", key).read_text().strip()
    except OSError:
        return None


def _sysctl_write(key: str, value: str) -> None:
    Path("/proc/sys", key).write_text(value + "\n")


class Node:
    def __init__(self, work: Path, *, k8s_bin: Path, node_dir: Path, apiserver_extra: list[str],
                 audit_policy: str | None = None, audit_webhook_kubeconfig: str | None = None,
                 admission_config: str | None = None, sandbox_image: str = "",
                 registry: Path | None = None):
        self.work = work
        self.k8s_bin = k8s_bin
        self.node_bin = node_dir / "bin"
        self.root = node_dir / "root"
        self.apiserver_extra = apiserver_extra
        self.audit_policy = audit_policy
        self.audit_webhook_kubeconfig = audit_webhook_kubeconfig
        self.admission_config = admission_config
        self.sandbox_image = sandbox_image
        self.registry = registry
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list = []
        self.saved_sysctls: dict[str, str] = {}
        self.lock_fd: int | None = None
        self.bridge_made = False
        self.timings: dict[str, float] = {}
        self.pki = work / "pki"
        self.kubeconfig = work / "admin.kubeconfig"
        (self.api_port, self.etcd_port, self.etcd_peer_port, self.kubelet_port,
         self.registry_port) = e2e.free_ports(5)
        self.server = f"https://{NODE_IP}:{self.api_port}"
        self.containerd_sock = work / "containerd" / "containerd.sock"
        self.iptables_dir = work / "iptables-bin"
        self.audit_log = work / "audit-log" / "audit.jsonl"

    # -- environment -----------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e["PATH"] = os.pathsep.join([str(self.iptables_dir), str(self.root / "usr/bin"),
                                     str(self.root / "usr/sbin"), str(self.k8s_bin),
                                     str(self.node_bin), e.get("PATH", "/usr/bin:/bin")])
        e["KUBECONFIG"] = str(self.kubeconfig)
        return e

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        cp = subprocess.run([str(self.k8s_bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                            input=input, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=timeout)
        if check and cp.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({cp.returncode}): {cp.stderr.strip()}")
        return cp

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        cp = subprocess.run([str(self.root / "usr/bin/ctr"), f"--address={self.containerd_sock}",
                             "-n", "k8s.io", *args], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=timeout, env=self.env())
        if check and cp.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({cp.returncode}): {cp.stderr.strip()}")
        return cp

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        logf = open(self.work / "logs" / f"{name}.log", "ab")
        self.logs.append(logf)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             cwd=self.work, env=env or self.env(), preexec_fn=e2e._die_with_parent)
        self.procs[name] = p
        return p

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.work / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {p.returncode}; log tail:\n{tail}")

    def _wait(self, what: str, probe, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                ok = probe()
                if ok:
                    return
                last = ok
            except Exception as exc:  # noqa: BLE001 (reported on timeout)
                last = exc
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {timeout:.0f}s: {last}")

    # -- host set-up -------------------------------------------------------------------------
    def _lock(self) -> None:
        self.lock_fd = os.open(LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another tests/cluster/run holds {LOCK}") from None

    def _host_setup(self) -> None:
        # containerd 1.6's shims put their sockets under /run/containerd/s whatever the config
        # says; what appears there while the cluster runs is removed on stop.
        self.run_containerd_existed = SHIM_SOCKETS.parent.exists()
        self.shim_sockets_before = set(SHIM_SOCKETS.iterdir()) if SHIM_SOCKETS.exists() else set()
        for key, value in SYSCTLS.items():
            old = _sysctl_read(key)
            if old is None:
                raise RuntimeError(f"/proc/sys/{key} is missing (kernel without bridge netfilter?)")
            self.saved_sysctls[key] = old
            _sysctl_write(key, value)
        for key in KUBELET_SYSCTLS:
            old = _sysctl_read(key)
            if old is not None:
                self.saved_sysctls[key] = old
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
            raise RuntimeError(f"bridge {BRIDGE} exists already (a previous run left it?): "
                               f"ip link del {BRIDGE}")
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        self.bridge_made = True
        subprocess.run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        # cgroup v1: the kubelet's --cgroup-root must exist in every hierarchy.
        for h in Path("/sys/fs/cgroup").iterdir():
            if h.is_dir() and not h.is_symlink() and (h / "cgroup.procs").exists():
                (h / CGROUP_ROOT.lstrip("/")).mkdir(exist_ok=True)
        # iptables for kube-proxy: Debian's binaries from the cache, with their libraries.
        self.iptables_dir.mkdir(parents=True, exist_ok=True)
        libdir = self.root / "usr/lib/x86_64-linux-gnu"
        multi = self.root / "usr/sbin/xtables-legacy-multi"
        for fam in ("iptables", "ip6tables"):
            for suffix in ("", "-save", "-restore"):
                name = fam + suffix
                w = self.iptables_dir / name
                w.write_text("#!/bin/sh\n"
                             f"LD_LIBRARY_PATH={libdir} XTABLES_LIBDIR={libdir}/xtables "
                             f"exec {multi} {name} \"$@\"\n")
                w.chmod(0o755)

    # -- configuration files -----------------------------------------------------------------
    def _pki(self) -> None:
        t0 = time.monotonic()
        ca = e2e.make_ca(self.pki, "ca", "wasmgate-cluster-ca")
        self.ca_crt = ca[0]
        self.apiserver_crt, self.apiserver_key = e2e.make_cert(
            self.pki, "apiserver", ca, cn="kube-apiserver", ips=[NODE_IP, KUBERNETES_SVC_IP, "127.0.0.1"],
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"])
        self.kubelet_crt, self.kubelet_key = e2e.make_cert(
            self.pki, "kubelet", ca, cn=NODE_NAME, ips=[NODE_IP], dns=[NODE_NAME])
        self.apiserver_kubelet_client = e2e.make_cert(
            self.pki, "apiserver-kubelet-client", ca, cn="kube-apiserver-kubelet-client",
            orgs=["system:masters"], server=False, client=True)
        self.sa_key, self.sa_pub = e2e.make_rsa_keypair(self.pki, "sa")
        self.timings["pki_s"] = round(time.monotonic() - t0, 2)
        lines = []
        for token, (user, uid, groups) in TOKENS.items():
            lines.append(f'{token},{user},{uid},"{groups}"' if groups else f"{token},{user},{uid}")
        _write(self.work / "tokens.csv", "\n".join(lines) + "\n")
        self.kubeconfig.write_text(_kubeconfig(self.server, self.ca_crt, ADMIN_TOKEN))
        for token, name in (("kcm-token", "kcm"), ("scheduler-token", "scheduler"),
                            ("proxy-token", "proxy"), ("node-token", "kubelet")):
            _write(self.work / f"{name}.kubeconfig", _kubeconfig(self.server, self.ca_crt, token))

    def _containerd_config(self) -> Path:
        c = self.work / "containerd"
        return _write(c / "config.toml", f"""\
version = 2
root = "{c}/root"
state = "{c}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.containerd_sock}"
[ttrpc]
  address = "{self.containerd_sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.sandbox_image}"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  # This machine's root lacks CAP_SYS_RESOURCE, so runc cannot lower a process's oom_score_adj
  # (the sandbox's -998 fails with EACCES): clamp to containerd's own score, as rootless does.
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{self.root}/usr/sbin/runc"
        SystemdCgroup = false
        Root = "{c}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{self.root}/usr/lib/cni"
    conf_dir = "{self.work}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{c}/certs.d"
""")

    def _registry_config(self) -> None:
        """The node's image registry (distribution) on the bridge address, plain HTTP, and
        containerd's hosts.toml that sends every `wasmgate.invalid/...` reference there."""
        reg = f"{NODE_IP}:{self.registry_port}"
        _write(self.work / "registry/config.yml", f"""\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {self.work}/registry/data
  delete:
    enabled: false
http:
  addr: {reg}
""")
        _write(self.work / "containerd/certs.d/wasmgate.invalid/hosts.toml", f"""\
server = "http://{reg}"
[host."http://{reg}"]
  capabilities = ["pull", "resolve", "push"]
""")

    def push(self, ref: str) -> None:
        """Push an image imported into containerd to the node's registry."""
        self.ctr("images", "push", f"--hosts-dir={self.work}/containerd/certs.d", ref)

    def _cni_config(self) -> None:
        _write(self.work / "cni/net.d/10-bridge.conflist", json.dumps({
            "cniVersion": "1.0.0", "name": "wasmgate-cluster",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": str(self.work / "cni/ipam"),
                          "ranges": [[{"subnet": POD_CIDR, "rangeStart": "10.244.0.10",
                                       "gateway": NODE_IP}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
            ]}, indent=2) + "\n")
        _write(self.work / "cni/net.d/99-loopback.conf", json.dumps(
            {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}) + "\n")

    def _apiserver_args(self) -> list[str]:
        w = self.work
        args = [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--bind-address={NODE_IP}", f"--secure-port={self.api_port}",
            f"--advertise-address={NODE_IP}",
            f"--cert-dir={w / 'apiserver-certs'}",
            f"--tls-cert-file={self.apiserver_crt}", f"--tls-private-key-file={self.apiserver_key}",
            f"--client-ca-file={self.ca_crt}",
            f"--token-auth-file={w / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--kubelet-client-certificate={self.apiserver_kubelet_client[0]}",
            f"--kubelet-client-key={self.apiserver_kubelet_client[1]}",
            f"--kubelet-certificate-authority={self.ca_crt}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.sa_pub}",
            f"--service-account-signing-key-file={self.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Webhooks and the aggregator dial a Service's endpoints (pod IPs) directly.
            "--enable-aggregator-routing=true",
            "--profiling=false",
            "--v=1",
        ]
        if self.admission_config:
            args.append(f"--admission-control-config-file={_write(w / 'admission-config.yaml', self.admission_config)}")
        if self.audit_policy:
            args += [f"--audit-policy-file={_write(w / 'audit-policy.yaml', self.audit_policy)}",
                     # The second backend: every event the API server emits, to count against.
                     f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
                     "--audit-log-mode=blocking", "--audit-log-maxsize=0"]
            self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        if self.audit_webhook_kubeconfig:
            args += [f"--audit-webhook-config-file={_write(w / 'audit-webhook.kubeconfig', self.audit_webhook_kubeconfig)}",
                     "--audit-webhook-batch-max-wait=1s", "--audit-webhook-initial-backoff=1s"]
        return args + self.apiserver_extra

    def _kubelet_config(self) -> Path:
        return _write(self.work / "kubelet/config.json", json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": CGROUP_ROOT,
            "failSwapOn": False,
            "address": NODE_IP,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "tlsCertFile": str(self.kubelet_crt), "tlsPrivateKeyFile": str(self.kubelet_key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.ca_crt)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_sock}",
            "podLogsDir": str(self.work / "pod-logs"),
            "podCIDR": POD_CIDR,
            "clusterDomain": "cluster.local",
            "resolvConf": str(_write(self.work / "resolv.conf", "nameserver 127.0.0.1\n")),
            "maxPods": 40,
            "serializeImagePulls": False,
            "registerNode": True,
            "protectKernelDefaults": False,
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "staticPodPath": "",
            "shutdownGracePeriod": "0s",
            # How often the kubelet re-syncs each Pod, which is when a ConfigMap volume gets the
            # ConfigMap's new content (upstream default 1m, plus jitter): the hot-reload check
            # must see an edit enforced within 60 s.
            "syncFrequency": "20s",
            "localStorageCapacityIsolation": True,
        }, indent=2) + "\n")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Node":
        t0 = time.monotonic()
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._pki()
            self._host_setup()
            self._cni_config()
            self._registry_config()
            self._start_processes(t0)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_processes(self, t0: float) -> None:
        w = self.work
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn("etcd", [
            str(self.k8s_bin / "etcd"), "--name=node", f"--data-dir={w / 'etcd-data'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=node={peer_url}", "--initial-cluster-state=new",
            "--unsafe-no-fsync", "--log-level=warn", "--listen-metrics-urls="])
        self._spawn("containerd", [str(self.root / "usr/bin/containerd"),
                                   f"--config={self._containerd_config()}", "--log-level=warn"])
        if self.registry:
            self._spawn("registry", [str(self.registry), "serve", str(self.work / "registry/config.yml")])
        self._spawn("kube-apiserver", [str(self.k8s_bin / "kube-apiserver"), *self._apiserver_args()])
        ctx = ssl.create_default_context(cafile=str(self.ca_crt))

        def ready() -> bool:
            req = urllib.request.Request(f"{self.server}/readyz",
                                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                return r.status == 200
        self._wait("kube-apiserver", ready, 180)
        self.timings["apiserver_ready_s"] = round(time.monotonic() - t0, 2)

        self._spawn("kube-controller-manager", [
            str(self.node_bin / "kube-controller-manager"),
            f"--kubeconfig={w / 'kcm.kubeconfig'}",
            f"--authentication-kubeconfig={w / 'kcm.kubeconfig'}",
            f"--authorization-kubeconfig={w / 'kcm.kubeconfig'}",
            "--bind-address=127.0.0.1", "--secure-port=0",
            f"--service-account-private-key-file={self.sa_key}",
            f"--root-ca-file={self.ca_crt}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false", "--v=1"])
        self._spawn("kube-scheduler", [
            str(self.node_bin / "kube-scheduler"),
            f"--kubeconfig={w / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={w / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={w / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1", "--secure-port=0",
            "--leader-elect=false", "--v=1"])
        _write(w / "kube-proxy.json", json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(w / "proxy.kubeconfig")},
            "mode": "iptables",
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_CIDR,
            "bindAddress": NODE_IP,
            "healthzBindAddress": "",
            "metricsBindAddress": "",
            # Leave the host's conntrack table size alone.
            "conntrack": {"maxPerCore": 0, "min": 0},
            "iptables": {"masqueradeAll": False},
        }, indent=2) + "\n")
        self._spawn("kube-proxy", [str(self.node_bin / "kube-proxy"),
                                   f"--config={w / 'kube-proxy.json'}", "--v=1"])

        def containerd_up() -> bool:
            return self.ctr("version", check=False, timeout=10).returncode == 0
        self._wait("containerd", containerd_up, 60)
        self.timings["containerd_ready_s"] = round(time.monotonic() - t0, 2)

    def start_kubelet(self) -> None:
        w = self.work
        self._spawn("kubelet", [
            str(self.node_bin / "kubelet"),
            f"--config={self._kubelet_config()}",
            f"--kubeconfig={w / 'kubelet.kubeconfig'}",
            f"--root-dir={w / 'kubelet/root'}",
            f"--cert-dir={w / 'kubelet/pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--v=1"])

    def stop(self) -> None:
        """Kill everything, undo mounts, bridge, iptables rules, cgroups and sysctls."""
        errors = []
        for name in ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager"):
            self._terminate(name, 10)
        # The containers: every process of the kubelet's cgroups, then the shims (their command
        # line names our containerd socket).
        self._kill_cgroup_procs()
        sock = str(self.containerd_sock).encode()
        for pid in self._pids_with_cmdline(sock):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._terminate("containerd", 10)
        self._terminate("registry", 5)
        self._terminate("kube-apiserver", 20)
        self._terminate("etcd", 10)
        for f in self.logs:
            f.close()
        self.logs.clear()
        # kube-proxy's rules.
        if self.iptables_dir.exists() and (self.node_bin / "kube-proxy").exists():
            cp = subprocess.run([str(self.node_bin / "kube-proxy"), "--cleanup"], env=self.env(),
                                capture_output=True, text=True)
            if cp.returncode != 0:
                errors.append(f"kube-proxy --cleanup: {cp.stderr.strip()[-400:]}")
        # The kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) and any
        # other KUBE-* chain left.
        if self.iptables_dir.exists():
            errors += self._remove_kube_chains()
        # Mounts under the work dir (kubelet volumes, overlay rootfs, netns, shm), deepest first.
        for _ in range(3):
            mounts = [m for m in self._mounts() if m == str(self.work) or m.startswith(str(self.work) + "/")]
            if not mounts:
                break
            for m in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", m], capture_output=True)
        left = [m for m in self._mounts() if m.startswith(str(self.work) + "/")]
        if left:
            errors.append(f"mounts left: {left[:5]}")
        if self.bridge_made:
            subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        if hasattr(self, "shim_sockets_before") and SHIM_SOCKETS.exists():
            for sock in set(SHIM_SOCKETS.iterdir()) - self.shim_sockets_before:
                sock.unlink(missing_ok=True)
            if not self.run_containerd_existed:
                shutil.rmtree(SHIM_SOCKETS.parent, ignore_errors=True)
        self._remove_cgroups()
        for key, value in self.saved_sysctls.items():
            try:
                if _sysctl_read(key) != value:
                    _sysctl_write(key, value)
            except OSError as exc:
                errors.append(f"sysctl {key}: {exc}")
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        for e in errors:
            log(f"teardown: {e}")

    def _remove_kube_chains(self) -> list[str]:
        errors = []
        for fam in ("iptables", "ip6tables"):
            ipt = str(self.iptables_dir / fam)
            cp = subprocess.run([str(self.iptables_dir / f"{fam}-save")], capture_output=True, text=True)
            if cp.returncode != 0:
                continue
            table, chains = None, []
            for line in cp.stdout.splitlines():
                if line.startswith("*"):
                    table = line[1:]
                elif line.startswith(":KUBE-"):
                    chains.append((table, line[1:].split()[0]))
                elif line.startswith("-A ") and not line.startswith("-A KUBE-") and " -j KUBE-" in line:
                    rule = line[3:]
                    r = subprocess.run(f"{ipt} -t {table} -D {rule}", shell=True, capture_output=True, text=True)
                    if r.returncode != 0:
                        errors.append(f"{fam} -t {table} -D {rule}: {r.stderr.strip()}")
            for table, chain in chains:
                subprocess.run([ipt, "-t", table, "-F", chain], capture_output=True)
            for table, chain in chains:
                r = subprocess.run([ipt, "-t", table, "-X", chain], capture_output=True, text=True)
                if r.returncode != 0:
                    errors.append(f"{fam} -t {table} -X {chain}: {r.stderr.strip()}")
        return errors

    def _terminate(self, name: str, timeout: float) -> None:
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    @staticmethod
    def _mounts() -> list[str]:
        out = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mp = line.split()[4]
            out.append(mp.encode().decode("unicode_escape"))
        return out

    @staticmethod
    def _pids_with_cmdline(needle: bytes) -> list[int]:
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                if needle in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
        return pids

    @staticmethod
    def _cgroup_dirs() -> list[Path]:
        dirs = []
        for h in Path("/sys/fs/cgroup").iterdir():
            d = h / CGROUP_ROOT.lstrip("/")
            if d.is_dir():
                dirs.append(d)
        return dirs

    def _kill_cgroup_procs(self) -> None:
        for _ in range(5):
            found = False
            for d in self._cgroup_dirs():
                for procs in d.rglob("cgroup.procs"):
                    try:
                        for pid in procs.read_text().split():
                            found = True
                            try:
                                os.kill(int(pid), signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                    except OSError:
                        pass
            if not found:
                return
            time.sleep(0.5)

    def _remove_cgroups(self) -> None:
        for d in self._cgroup_dirs():
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                              reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                d.rmdir()
            except OSError as exc:
                log(f"teardown: cannot remove cgroup {d}: {exc}")
