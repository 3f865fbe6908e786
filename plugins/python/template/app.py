"""A wasmgate validator in Python: copy this folder to plugins/python/<your-plugin>/ and edit
`validate`. See ../README.md for the types and the build."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

NO_REMARKS = types.Remarks(warnings=[], audit_annotations=[])


class WitWorld(wit_world.WitWorld):
    def validate(self, request: types.AdmissionRequest) -> types.Verdict:
        settings = json.loads(host.settings() or "{}")  # this plugin's settings, `{}` when none
        if request.object is not None:  # the object as JSON text (None on DELETE)
            pass
        # To deny: types.Verdict(types.Decision_Denied(types.Denial(403, "Forbidden", "why")), NO_REMARKS)
        # To fail (the policy's failurePolicy decides): raise Err("why")
        return types.Verdict(types.Decision_Allowed(), NO_REMARKS)
