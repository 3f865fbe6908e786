/* A wasmgate validator in C: copy this folder to plugins/c/<your-plugin>/ and edit
 * exports_validator_validate. See ../README.md for the ownership rules and the build. */
#include <string.h>

#include "json.h" /* plugins/c/common: a small JSON reader/writer, if you need one */
#include "validator.h"

/* The build embeds the WIT itself (see ../README.md); this satisfies the bindings' link anchor. */
void __component_type_object_force_link_validator(void) {}

bool exports_validator_validate(validator_admission_request_t *request, validator_verdict_t *ret,
                                validator_string_t *err) {
    (void)err; /* to fail: validator_string_dup(err, "why"); return false; */
    validator_string_t settings;
    wasmgate_plugin_host_settings(&settings); /* JSON text, `{}` when none; ours to free */

    memset(ret, 0, sizeof *ret); /* no warnings, no annotations */
    ret->decision.tag = WASMGATE_PLUGIN_TYPES_DECISION_ALLOWED;
    /* To deny: ret->decision.tag = WASMGATE_PLUGIN_TYPES_DECISION_DENIED;
     *          ret->decision.val.denied.code = 403;
     *          validator_string_dup(&ret->decision.val.denied.reason, "Forbidden");
     *          validator_string_dup(&ret->decision.val.denied.message, "why");
     * Every string you return must be malloc'd (validator_string_dup): the bindings free them. */

    validator_string_free(&settings);
    validator_admission_request_free(request); /* the request is ours to free */
    return true;
}
