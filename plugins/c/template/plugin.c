/* A wasmgate validator in C: copy this folder to plugins/c/<your-plugin>/ and edit
 * exports_validator_validate_settings and exports_validator_validate. See ../README.md for the
 * ownership rules and the build. */
#include <stdlib.h>
#include <string.h>

#include "json.h" /* plugins/c/common: a small JSON reader/writer, if you need one */
#include "validator.h"

/* The build embeds the WIT itself (see ../README.md); this satisfies the bindings' link anchor. */
void __component_type_object_force_link_validator(void) {}

/* Called once when the policy is loaded (start and every reload) with the policy entry's
 * `settings` as JSON text (`{}` when none). Return true to accept them; to refuse them, fill
 * *err (validator_string_dup(err, "why")) and return false: the gateway then refuses the policy
 * file (or the reload) with the file, the line of `settings` and your message. */
bool exports_validator_validate_settings(validator_string_t *settings, validator_string_t *err) {
    const char *error = NULL;
    json_value *parsed = json_parse((const char *)settings->ptr, settings->len, &error);
    bool ok = parsed && (parsed->type == JSON_OBJECT || parsed->type == JSON_NULL);
    if (!ok) validator_string_dup(err, "expected a map");
    /* Check your settings here (json_get(parsed, "key"), ...): a missing key, a wrong type, a
     * key you do not know. */
    json_free(parsed);
    validator_string_free(settings); /* the argument is ours to free */
    return ok;
}

bool exports_validator_validate(validator_admission_request_t *request, validator_verdict_t *ret,
                                validator_string_t *err) {
    (void)err; /* to fail: validator_string_dup(err, "why"); return false; */
    validator_string_t settings;
    wasmgate_plugin_host_settings(&settings); /* the same text, already checked at load; ours to free */

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
