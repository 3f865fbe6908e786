"""require-labels: a wasmgate validator (world `validator` of wasmgate:plugin@0.2.0).

Behaves exactly like plugins/rust/require-labels (see its README): denies an object whose
`metadata.labels` lacks any key listed in the settings `{"labels": ["team", "owner"]}` (a label
counts as present when its value is a string), with 403 Forbidden and
`missing required labels: team, owner` (the missing keys, in settings order). An empty list
requires nothing. DELETE (no object) is allowed. An unparseable object is a plugin failure (`err`).

Settings are checked when the policy is loaded (`validate_settings`): `labels` is required and
must be a list of strings, and any other key is refused, with the Rust plugin's messages (serde's
wording), e.g. `invalid settings: unknown field `label`, expected `labels``.
"""

import decimal
import json
import math

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str):
    """Strict JSON, like serde_json: no NaN or Infinity."""
    return json.loads(text, parse_constant=_reject_constant)


NO_REMARKS = types.Remarks(warnings=[], audit_annotations=[])


def _rust_str(s: str) -> str:
    """A string as Rust's `{:?}` shows it (serde and the label checks quote strings that way);
    of the characters Rust escapes, only the control characters are (a rarer one, such as a
    zero-width space, is shown as itself)."""
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0:
            out.append(f"\\u{{{ord(c):x}}}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _rust_float(x: float) -> str:
    """A float as serde_json prints it: the shortest digits that read back, in fixed notation
    for decimal exponents -5..=15 (with `.0` when whole), else as `1.5e+20` or `1e-7`."""
    if x == 0:
        return "-0.0" if math.copysign(1, x) < 0 else "0.0"
    sign, digits, exponent = decimal.Decimal(repr(x)).as_tuple()
    sig = "".join(map(str, digits)).rstrip("0")
    e = len(digits) + exponent - 1  # the decimal exponent of the first digit
    out = "-" if sign else ""
    if -5 <= e <= 15:
        if e >= 0:
            return out + sig[: e + 1].ljust(e + 1, "0") + "." + (sig[e + 1 :] or "0")
        return out + "0." + "0" * (-e - 1) + sig
    return out + sig[0] + ("." + sig[1:] if len(sig) > 1 else "") + f"e{'+' if e >= 0 else '-'}{abs(e)}"


class _Object(list):
    """A JSON object as its (key, value) pairs in order, duplicates kept, as serde reads it."""


def unexpected(value) -> str:
    """How serde_json names a JSON value it did not expect."""
    if isinstance(value, _Object):
        return "map"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{_rust_float(value)}`"
    if isinstance(value, str):
        return "string " + _rust_str(value)
    if isinstance(value, list):
        return "sequence"
    return "map"


def _json_int(text: str):
    """serde_json's integers: what fits u64 (or i64 when negative), except `-0`; else a float."""
    value = int(text)
    if (value == 0 and text.startswith("-")) or not -(2**63) <= value < 2**64:
        return float(text)
    return value


def _label_key(key: str):
    """Why `key` is not a label key the API server accepts (an optional lowercase DNS
    subdomain prefix and `/`, then a name of 1-63 characters of `[A-Za-z0-9._-]`, alphanumeric
    at both ends), or None. Lengths are in UTF-8 bytes, as the Rust plugin counts them."""
    prefix, slash, name = key.partition("/")
    if not slash:
        prefix, name = None, key

    def alnum(c):
        return c.isascii() and c.isalnum()

    def alnum_ends(s):
        return bool(s) and alnum(s[0]) and alnum(s[-1])

    if not name or len(name.encode()) > 63:
        return "is not a label key: the name must be 1-63 characters"
    if not alnum_ends(name) or not all(alnum(c) or c in "-_." for c in name):
        return "is not a label key: the name must be alphanumerics, '-', '_' or '.', alphanumeric at both ends"
    if prefix is not None:
        dns = (
            prefix != ""
            and len(prefix.encode()) <= 253
            and all(
                part != ""
                and len(part.encode()) <= 63
                and alnum_ends(part)
                and all(c.isascii() and (c.islower() or c.isdigit() or c == "-") for c in part)
                for part in prefix.split(".")
            )
        )
        if not dns:
            return "is not a label key: the prefix must be a lowercase DNS subdomain"
    return None


def _labels(value, path: str) -> list:
    """`labels` (a list of strings) at `path`, as serde reads a `Vec<String>`."""
    if not isinstance(value, list) or isinstance(value, _Object):
        raise Err(f"{path}: invalid type: {unexpected(value)}, expected a sequence")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Err(f"{path}[{i}]: invalid type: {unexpected(item)}, expected a string")
    return value


def parse_settings(text: str, check: bool = True) -> list:
    """The required labels, or `Err(why)` with the Rust plugin's message for settings it refuses
    (serde's, with the path of the bad value; then, with `check`, the label key checks, which the
    Rust plugin runs at load only)."""
    text = text.strip()
    if text in ("", "null"):
        text = "{}"
    try:
        settings = json.loads(text, parse_constant=_reject_constant, parse_int=_json_int, object_pairs_hook=_Object)
    except ValueError as e:
        raise Err(f"not JSON: {e}")
    labels = None
    if isinstance(settings, _Object):
        # serde reads the keys in order and stops at the first bad one.
        for key, value in settings:
            if key != "labels":
                raise Err(f"{key + ': ' if key else ''}unknown field `{key}`, expected `labels`")
            if labels is not None:
                raise Err("duplicate field `labels`")
            labels = _labels(value, "labels")
        if labels is None:
            raise Err("missing field `labels`")
    elif isinstance(settings, list):  # serde also reads a struct from a list of its fields
        if not settings:
            raise Err("invalid length 0, expected struct Settings with 1 element")
        labels = _labels(settings[0], "[0]")
        if len(settings) > 1:
            raise Err("trailing characters")
    else:
        raise Err(f"invalid type: {unexpected(settings)}, expected struct Settings")
    if not check:
        return labels
    if not labels:
        raise Err("labels: list at least one label key")
    for i, key in enumerate(labels):
        why = _label_key(key)
        if why:
            raise Err(f"labels[{i}]: {_rust_str(key)} {why}")
    return labels


def present_labels(obj) -> dict:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return labels if isinstance(labels, dict) else {}


class WitWorld(wit_world.WitWorld):
    def validate_settings(self, settings: str) -> None:
        parse_settings(settings)

    def validate(self, request: types.AdmissionRequest) -> types.Verdict:
        try:
            required = parse_settings(host.settings(), check=False)
        except Err as e:  # checked at load, so only if the host skipped the check
            raise Err(f"invalid settings: {e.value}")
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
