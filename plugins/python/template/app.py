"""A wasmgate validator in Python: copy this folder to plugins/python/<your-plugin>/ and edit
`validate_settings` and `validate`. See ../README.md for the types and the build."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

NO_REMARKS = types.Remarks(warnings=[], audit_annotations=[])


def parse_settings(text: str) -> dict:
    """This plugin's settings (the policy entry's `settings` as JSON text, `{}` when none)."""
    try:
        settings = json.loads(text or "{}")
    except ValueError as e:
        raise Err(f"not JSON: {e}")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise Err("expected a map")
    # Check your settings here: raise Err("why") for a missing key, a wrong type, a key you do
    # not know. The gateway then refuses the policy file (or the reload) with the file, the line
    # of `settings` and your message, before any request.
    return settings


class WitWorld(wit_world.WitWorld):
    def validate_settings(self, settings: str) -> None:
        """Called once when the policy is loaded (start and every reload); return = `ok`."""
        parse_settings(settings)

    def validate(self, request: types.AdmissionRequest) -> types.Verdict:
        settings = parse_settings(host.settings())  # the same text, already checked at load
        if request.object is not None:  # the object as JSON text (None on DELETE)
            pass
        # To deny: types.Verdict(types.Decision_Denied(types.Denial(403, "Forbidden", "why")), NO_REMARKS)
        # To fail (the policy's failurePolicy decides): raise Err("why")
        return types.Verdict(types.Decision_Allowed(), NO_REMARKS)
