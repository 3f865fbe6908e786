"""Pod Security through wasmgate against the API server's built-in PodSecurity admission
(issue 15), for tests/e2e/run.

A sample of upstream's own fixtures (k8s.io/pod-security-admission test/testdata, v1.35 = the
`latest` of Kubernetes 1.36, both levels, pass and fail; fetched by
tests/pod-security/fetch-fixtures) is created with server-side dry-run in namespaces labelled
`pod-security.kubernetes.io/enforce=<level>` (the built-in decides) and in unlabelled namespaces
where wasmgate's `pod-security` policy of the same level decides (through the webhook the API
server calls). The verdicts must agree one to one, and a denial must name the same checks with
the same details. Deployments built from some of them are admitted by both with the same
`would violate PodSecurity` warning, and `kubectl debug` (a `pods/ephemeralcontainers` UPDATE)
gets the same verdicts from both.
"""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LEVELS = ("baseline", "restricted")
BUILTIN = {level: f"pss-builtin-{level}" for level in LEVELS}
WASM = {level: f"pss-wasm-{level}" for level in LEVELS}
SAMPLE_PER_FOLDER = 15  # per level and pass/fail: 60 Pods

POLICY = """\
  # e2e only (tests/e2e/pod_security.py): pod-security at {level} in {ns}
  - name: pss-{level}
    kind: validator
    module: {module}
    settings: {{level: {level}}}
    rules:
      - operations: [CREATE, UPDATE]
        apiGroups: [""]
        apiVersions: [v1]
        resources: [pods, pods/ephemeralcontainers]
      - operations: [CREATE, UPDATE]
        apiGroups: [apps]
        apiVersions: [v1]
        resources: [deployments]
    namespaces: [{ns}]
    failurePolicy: Fail
    timeout: 2s
"""


def policies(module: Path) -> str:
    return "".join(POLICY.format(level=level, ns=WASM[level], module=module) for level in LEVELS)


def exclude_namespaces(policy_text: str) -> str:
    """The demo policies stay out of the Pod Security namespaces, so that only the levels decide
    there (a webhook's denial would hide the other's)."""
    extra = ", ".join([*BUILTIN.values(), *WASM.values()])
    return re.sub(r"^(\s*excludeNamespaces:\s*\[)([^\]]*)\]", lambda m: f"{m.group(1)}{m.group(2)}, {extra}]",
                  policy_text, flags=re.M)


LABEL = re.compile(r'violates PodSecurity "([^"]+)": (.*)$')


def verdict(cp: subprocess.CompletedProcess) -> tuple[bool, str | None, list[str]]:
    """(allowed, the denial's detail after `violates PodSecurity "...": `, warnings)."""
    warnings = [line[len("Warning: "):] for line in cp.stderr.splitlines()
                if line.startswith("Warning: ")]
    if cp.returncode == 0:
        return True, None, warnings
    errors = [line for line in cp.stderr.splitlines() if not line.startswith("Warning: ")]
    for line in errors:
        m = LABEL.search(line)
        if m:
            return False, m.group(0), warnings
    return False, "UNEXPECTED: " + " ".join(errors)[-400:], warnings


def reasons(detail: str | None) -> list[str]:
    """The reasons of a detail (`reason (detail), reason, ...`): the checks it names."""
    if not detail:
        return []
    body = LABEL.search(detail).group(2) if LABEL.search(detail) else detail
    out, depth, cur = [], 0, ""
    for ch in body:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        if depth == 0 and ch not in "()":
            cur += ch
    out.append(cur.strip())
    return [r for r in out if r]


def sample(fixtures: Path) -> list[tuple[str, bool, Path]]:
    picked = []
    for level in LEVELS:
        for folder in ("pass", "fail"):
            files = sorted((fixtures / level / "v1.35" / folder).glob("*.yaml"))
            stride = max(1, len(files) // SAMPLE_PER_FOLDER)
            picked += [(level, folder == "pass", f) for f in files[::stride][:SAMPLE_PER_FOLDER]]
    return picked


def valid_name(pod_yaml: str) -> str:
    """A fixture with its `metadata.name` (e.g. `capabilities_baseline0`) made a valid object
    name (`capabilities-baseline0`); nothing else changes."""
    # The only two-space-indented `name:` of a Pod is metadata's (a PodSpec has no `name`).
    return re.sub(r"^(  name: )(\S+)$", lambda m: m.group(1) + m.group(2).replace("_", "-"),
                  pod_yaml, count=1, flags=re.M)


def deployment(pod: dict, name: str) -> dict:
    meta = pod.get("metadata") or {}
    template_meta = {"labels": {"app": name}}
    if meta.get("annotations"):
        template_meta["annotations"] = meta["annotations"]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": template_meta, "spec": pod["spec"]}}}


def run(e2e, repo: Path, domain: str) -> str:
    out = subprocess.run([str(repo / "tests" / "pod-security" / "fetch-fixtures")],
                         stdout=subprocess.PIPE, text=True, check=True)
    fixtures = Path(out.stdout.strip().splitlines()[-1])
    kubectl = e2e.kubectl
    for level in LEVELS:
        kubectl("create", "namespace", BUILTIN[level], user=False, check=True)
        kubectl("label", "namespace", BUILTIN[level],
                f"pod-security.kubernetes.io/enforce={level}", user=False, check=True)
        kubectl("create", "namespace", WASM[level], user=False, check=True)

    # The new webhooks are live once the API server's informer has them.
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pss-probe"},
             "spec": {"hostPID": True, "containers": [{"name": "c", "image": "registry.invalid/c"}]}}
    for level in LEVELS:
        e2e.wait_until(f"webhook pss-{level} live", lambda level=level: f'"pss-{level}.{domain}"' in
                       kubectl("create", "-f", "-", "-n", WASM[level], "--dry-run=server",
                               user=False, input=probe).stderr)

    def create(path_or_obj, ns: str) -> subprocess.CompletedProcess:
        if isinstance(path_or_obj, Path):
            path_or_obj = valid_name(path_or_obj.read_text())
        return kubectl("create", "-f", "-", "-n", ns, "--dry-run=server", "-o", "name",
                       user=False, input=path_or_obj)

    pods = sample(fixtures)

    def both(item):
        level, expect_pass, path = item
        return (item, verdict(create(path, BUILTIN[level])), verdict(create(path, WASM[level])))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(both, pods))
    problems = []
    denied = 0
    for (level, expect_pass, path), (b_ok, b_detail, _), (w_ok, w_detail, _) in results:
        name = f"{level}/{'pass' if expect_pass else 'fail'}/{path.name}"
        if b_ok != expect_pass:
            problems.append(f"{name}: the built-in says allowed={b_ok} ({b_detail}), "
                            f"upstream's folder says {expect_pass}")
        if w_ok != b_ok:
            problems.append(f"{name}: built-in allowed={b_ok}, wasmgate allowed={w_ok}: "
                            f"{b_detail} | {w_detail}")
        elif not b_ok:
            denied += 1
            if reasons(b_detail) != reasons(w_detail):
                problems.append(f"{name}: checks differ: built-in {reasons(b_detail)}, "
                                f"wasmgate {reasons(w_detail)}")
            elif b_detail != w_detail:
                problems.append(f"{name}: details differ: built-in {b_detail!r}, "
                                f"wasmgate {w_detail!r}")

    # Deployments of some of the same Pods: both admit, with the same warning.
    chosen = [item for level in LEVELS for passing, count in ((True, 2), (False, 3))
              for item in [p for p in pods if p[0] == level and p[1] == passing][::4][:count]]

    def deploy(item):
        level, _, path = item
        pod = json.loads(kubectl("create", "-f", "-", "--dry-run=client", "-o", "json",
                                 user=False, check=True, input=path.read_text()).stdout)
        obj = json.dumps(deployment(pod, "d-" + path.stem.replace("_", "-")))
        return item, verdict(create(obj, BUILTIN[level])), verdict(create(obj, WASM[level]))

    with ThreadPoolExecutor(4) as pool:
        deployed = list(pool.map(deploy, chosen))
    warned = 0
    for (level, _, path), (b_ok, b_detail, b_warn), (w_ok, w_detail, w_warn) in deployed:
        name = f"Deployment of {level}/{path.name}"
        if not (b_ok and w_ok):
            problems.append(f"{name}: built-in allowed={b_ok} ({b_detail}), wasmgate "
                            f"allowed={w_ok} ({w_detail}); the built-in never denies a workload")
            continue
        b_pss = [w for w in b_warn if "PodSecurity" in w]
        w_pss = [w for w in w_warn if "PodSecurity" in w]
        warned += bool(b_pss)
        if b_pss != w_pss:
            problems.append(f"{name}: warnings differ: built-in {b_pss}, wasmgate {w_pss}")
    # kubectl debug: an UPDATE of pods/ephemeralcontainers on a stored restricted Pod. A
    # privileged debug container is refused by both with the same details; a restricted one
    # is admitted by both.
    target = valid_name((fixtures / "restricted" / "v1.35" / "pass" / "base.yaml").read_text())
    target = re.sub(r"^(  name: )\S+$", r"\1debug-target", target, count=1, flags=re.M)
    debugged = 0
    for ns in (BUILTIN["restricted"], WASM["restricted"]):
        kubectl("create", "-f", "-", "-n", ns, user=False, check=True, input=target)
    for profile, allowed in (("sysadmin", False), ("restricted", True)):
        got = [verdict(kubectl("debug", "debug-target", "-n", ns, f"--profile={profile}",
                               "--image=registry.invalid/busybox:1", "-c", f"debug-{profile}",
                               user=False))
               for ns in (BUILTIN["restricted"], WASM["restricted"])]
        (b_ok, b_detail, _), (w_ok, w_detail, _) = got
        if (b_ok, w_ok) != (allowed, allowed) or b_detail != w_detail:
            problems.append(f"kubectl debug --profile={profile}: built-in allowed={b_ok} "
                            f"({b_detail}), wasmgate allowed={w_ok} ({w_detail})")
        debugged += 1

    assert warned >= 6, f"only {warned} Deployments of failing Pods warned about by the built-in"
    assert not problems, f"{len(problems)} disagreements: " + " || ".join(problems[:8])
    return (f"{len(results)} Pods agree one to one ({denied} denied with the same checks and "
            f"details), {len(deployed)} Deployments admitted with the same warnings ({warned} "
            f"warned); kubectl debug: the privileged ephemeral container refused by both with "
            f"the same details, a restricted one admitted by both")
