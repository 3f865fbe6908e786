"""require-labels: a wasmgate validator (world `validator` of wasmgate:plugin@0.1.0).

Behaves exactly like plugins/rust/require-labels (see its README): denies an object whose
`metadata.labels` lacks any key listed in the settings `{"labels": ["team", "owner"]}` (a label
counts as present when its value is a string), with 403 Forbidden and
`missing required labels: team, owner` (the missing keys, in settings order). No settings, `{}`
or an empty list require nothing. DELETE (no object) is allowed. Invalid settings (including an
unknown key) and an unparseable object are plugin failures (`err`).
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str):
    """Strict JSON, like serde_json: no NaN or Infinity."""
    return json.loads(text, parse_constant=_reject_constant)

NO_REMARKS = types.Remarks(warnings=[], audit_annotations=[])


def required_labels() -> list:
    text = host.settings()
    if not text.strip():
        return []
    try:
        settings = parse_json(text)
    except ValueError as e:
        raise Err(f"invalid settings: {e}")
    if settings is None:
        return []
    if not isinstance(settings, dict):
        raise Err("invalid settings: expected an object")
    for key in settings:
        if key != "labels":
            raise Err(f"invalid settings: unknown field `{key}`, expected `labels`")
    labels = settings.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise Err("invalid settings: `labels` must be a list of strings")
    return labels


def present_labels(obj) -> dict:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return labels if isinstance(labels, dict) else {}


class WitWorld(wit_world.WitWorld):
    def validate(self, request: types.AdmissionRequest) -> types.Verdict:
        required = required_labels()
        if request.object is None:  # DELETE: nothing to label
            return types.Verdict(types.Decision_Allowed(), NO_REMARKS)
        try:
            obj = parse_json(request.object)
        except ValueError as e:
            raise Err(f"the request's object is not JSON: {e}")
        present = present_labels(obj)
        missing = [key for key in required if not isinstance(present.get(key), str)]
        if not missing:
            return types.Verdict(types.Decision_Allowed(), NO_REMARKS)
        denial = types.Denial(
            code=403,
            reason="Forbidden",
            message="missing required labels: " + ", ".join(missing),
        )
        return types.Verdict(types.Decision_Denied(denial), NO_REMARKS)
