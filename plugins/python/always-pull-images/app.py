"""always-pull-images: a wasmgate initializer (world `initializer` of wasmgate:plugin@0.2.0).

Behaves exactly like plugins/rust/always-pull-images (see its README): sets
`imagePullPolicy: "Always"` on every container, init container and ephemeral container of the
pod spec of a Pod, PodTemplate, ReplicationController, Deployment, StatefulSet, DaemonSet,
ReplicaSet, Job or CronJob, taken as the request's `kind` says (else `requestKind`, else the
object's own apiVersion and kind: the object's `kind` is the client's word and may be missing).
Returns `unchanged` when nothing changes, else `patched`: one RFC 6902 `add` of
`imagePullPolicy: "Always"` per container that lacks it, so the whole object is never written back
(the host applies the operations and computes the JSONPatch). An unparseable object, or a container that is not a JSON object, is a plugin
failure (`err`).

It takes no settings: `validate_settings` (called when the policy is loaded) accepts none, `{}`
or `null` and refuses any key, with the Rust plugin's message
(`unknown field `x`, there are no fields`).
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str):
    """Strict JSON, like serde_json: no NaN or Infinity."""
    return json.loads(text, parse_constant=_reject_constant)

POD = ("spec",)
TEMPLATE = ("spec", "template", "spec")


def pod_spec_path(group: str, kind: str):
    """Where the pod spec sits for an object of `group` and `kind`, or None."""
    if group == "":
        return {"Pod": POD, "PodTemplate": ("template", "spec"), "ReplicationController": TEMPLATE}.get(kind)
    if group in ("apps", "extensions") and kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        return TEMPLATE
    if group == "batch":
        return {"Job": TEMPLATE, "CronJob": ("spec", "jobTemplate", "spec", "template", "spec")}.get(kind)
    return None


CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
NO_REMARKS = types.Remarks(warnings=[], audit_annotations=[])


def string_field(obj: dict, key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def kind_of(request: types.AdmissionRequest, obj) -> tuple:
    """The group and kind to treat `obj` as: the request's `kind`, else its `requestKind` (the
    API server's word), else the object's own apiVersion and kind (as the Rust SDK's `kind_of`)."""
    for gvk in (request.kind, request.request_kind):
        if gvk is not None and gvk.kind:
            return gvk.group, gvk.kind
    if not isinstance(obj, dict):
        return "", ""
    api_version = string_field(obj, "apiVersion")
    return api_version.rsplit("/", 1)[0] if "/" in api_version else "", string_field(obj, "kind")


def always_pull(obj, group: str, kind: str) -> list:
    """One RFC 6902 `add` of `imagePullPolicy: "Always"` per container of `obj` taken as a
    `group`/`kind` whose policy is not `Always` yet (an `add` of a member that exists replaces
    it), in Rust's order; empty when nothing needs changing."""
    if not isinstance(obj, dict):
        return []
    path = pod_spec_path(group, kind)
    if path is None:
        return []
    spec = obj
    for key in path:
        spec = spec.get(key) if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        return []
    operations = []
    for field in CONTAINER_LISTS:
        containers = spec.get(field)
        if not isinstance(containers, list):
            continue
        for index, container in enumerate(containers):
            if not isinstance(container, dict):
                raise Err(f"{'.'.join(path)}.{field}[{index}] is not a JSON object")
            if container.get("imagePullPolicy") != "Always":
                pointer = "".join(f"/{key}" for key in (*path, field, str(index), "imagePullPolicy"))
                operations.append({"op": "add", "path": pointer, "value": "Always"})
    return operations


class _Object(list):
    """A JSON object as its (key, value) pairs, in order."""


def check_no_settings(text: str) -> None:
    """Refuses any settings (`Err(why)`), as the Rust plugin's `NoSettings` does."""
    text = text.strip()
    if text in ("", "null"):
        return
    try:
        settings = json.loads(text, object_pairs_hook=_Object)
    except ValueError as e:
        raise Err(f"not JSON: {e}")
    if isinstance(settings, _Object):
        if settings:
            raise Err(f"unknown field `{settings[0][0]}`, there are no fields")
        return
    if isinstance(settings, list):
        kind = "sequence"
    elif isinstance(settings, bool):
        kind = f"boolean `{'true' if settings else 'false'}`"
    elif isinstance(settings, str):
        kind = "string " + json.dumps(settings, ensure_ascii=False)
    elif isinstance(settings, int):
        kind = f"integer `{settings}`"
    else:
        kind = f"floating point `{settings}`"
    raise Err(f"invalid type: {kind}, expected no settings (an empty map)")


class WitWorld(wit_world.WitWorld):
    def validate_settings(self, settings: str) -> None:
        check_no_settings(settings)

    def initialize(self, request: types.AdmissionRequest) -> types.Mutation:
        if request.object is None:  # DELETE
            return types.Mutation(types.Change_Unchanged(), NO_REMARKS)
        try:
            obj = parse_json(request.object)
        except ValueError as e:
            raise Err(f"the request's object is not JSON: {e}")
        group, kind = kind_of(request, obj)
        operations = always_pull(obj, group, kind)
        if not operations:
            return types.Mutation(types.Change_Unchanged(), NO_REMARKS)
        patch = json.dumps(operations, separators=(",", ":"))
        return types.Mutation(types.Change_Patched(patch), NO_REMARKS)
