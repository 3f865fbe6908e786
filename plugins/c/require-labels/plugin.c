/* require-labels: a wasmgate validator (world `validator` of wasmgate:plugin@0.1.0).
 *
 * Behaves exactly like plugins/rust/require-labels (see its README): denies an object whose
 * `metadata.labels` lacks any key listed in the settings `{"labels": ["team", "owner"]}` (a label
 * counts as present when its value is a string), with 403 Forbidden and
 * `missing required labels: team, owner` (the missing keys, in settings order). No settings, `{}`
 * or an empty list require nothing. DELETE (no object) is allowed. Invalid settings (including an
 * unknown key) and an unparseable object are plugin failures (`err`).
 */
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "validator.h"

/* The bindings are generated without wit-bindgen's type object: the build embeds the WIT with
 * `wasm-tools component embed` instead, so this link anchor has nothing to pull in. */
void __component_type_object_force_link_validator(void) {}

/* Fills *err with "<a><b><c>" (b and c may be NULL) and returns false. */
static bool fail3(validator_string_t *err, const char *a, const char *b, const char *c) {
    size_t la = strlen(a), lb = b ? strlen(b) : 0, lc = c ? strlen(c) : 0;
    char *msg = malloc(la + lb + lc + 1);
    if (!msg) abort();
    memcpy(msg, a, la);
    if (lb) memcpy(msg + la, b, lb);
    if (lc) memcpy(msg + la + lb, c, lc);
    msg[la + lb + lc] = '\0';
    err->ptr = (uint8_t *)msg;
    err->len = la + lb + lc;
    return false;
}

static bool fail(validator_string_t *err, const char *prefix, const char *detail) {
    return fail3(err, prefix, detail, NULL);
}

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') return false;
    return true;
}

static void allowed(validator_verdict_t *ret) {
    memset(ret, 0, sizeof *ret); /* decision allowed, no warnings, no annotations */
    ret->decision.tag = WASMGATE_PLUGIN_TYPES_DECISION_ALLOWED;
}

bool exports_validator_validate(validator_admission_request_t *request, validator_verdict_t *ret,
                                validator_string_t *err) {
    bool ok = false;
    const char *error = NULL;
    json_value *settings = NULL, *object = NULL;
    char *message = NULL;

    validator_string_t settings_text;
    wasmgate_plugin_host_settings(&settings_text);
    json_value *labels = NULL;
    if (!blank((const char *)settings_text.ptr, settings_text.len)) {
        settings = json_parse((const char *)settings_text.ptr, settings_text.len, &error);
        if (!settings) {
            ok = fail(err, "invalid settings: ", error);
            goto done;
        }
        if (settings->type != JSON_NULL && settings->type != JSON_OBJECT) {
            ok = fail(err, "invalid settings: expected an object", NULL);
            goto done;
        }
        for (size_t i = 0; settings->type == JSON_OBJECT && i < settings->len; i++) {
            json_member *m = &settings->members[i];
            size_t key_len;
            char *key = json_unescape(m->key, m->key_len, &key_len);
            if (!key) abort();
            bool is_labels = key_len == 6 && memcmp(key, "labels", 6) == 0;
            if (!is_labels) ok = fail3(err, "invalid settings: unknown field `", key, "`, expected `labels`");
            free(key);
            if (!is_labels) goto done;
            labels = m->value; /* the last duplicate wins */
        }
    }
    if (labels) {
        bool valid = labels->type == JSON_ARRAY;
        for (size_t i = 0; valid && i < labels->len; i++) valid = labels->items[i]->type == JSON_STRING;
        if (!valid) {
            ok = fail(err, "invalid settings: `labels` must be a list of strings", NULL);
            goto done;
        }
    }

    if (!request->object.is_some) {
        allowed(ret);
        ok = true;
        goto done;
    }
    object = json_parse((const char *)request->object.val.ptr, request->object.val.len, &error);
    if (!object) {
        ok = fail(err, "the request's object is not JSON: ", error);
        goto done;
    }
    json_value *present = json_get(json_get(object, "metadata"), "labels");

    /* "missing required labels: " followed by the missing keys, comma-separated, in settings order. */
    static const char prefix[] = "missing required labels: ";
    size_t len = sizeof prefix - 1, cap = len + 64, missing = 0;
    message = malloc(cap);
    if (!message) abort();
    memcpy(message, prefix, len);
    for (size_t i = 0; labels && i < labels->len; i++) {
        size_t key_len;
        char *key = json_unescape(labels->items[i]->text, labels->items[i]->text_len, &key_len);
        if (!key) abort();
        json_value *value = memchr(key, '\0', key_len) ? NULL : json_get(present, key);
        if (!value || value->type != JSON_STRING) { /* present means: a string value */
            while (len + key_len + 2 > cap) cap *= 2;
            message = realloc(message, cap);
            if (!message) abort();
            if (missing++) {
                memcpy(message + len, ", ", 2);
                len += 2;
            }
            memcpy(message + len, key, key_len);
            len += key_len;
        }
        free(key);
    }
    if (!missing) {
        allowed(ret);
        ok = true;
        goto done;
    }
    memset(ret, 0, sizeof *ret);
    ret->decision.tag = WASMGATE_PLUGIN_TYPES_DECISION_DENIED;
    ret->decision.val.denied.code = 403;
    validator_string_dup(&ret->decision.val.denied.reason, "Forbidden");
    ret->decision.val.denied.message = (validator_string_t){(uint8_t *)message, len};
    message = NULL; /* owned by the bindings now; freed after the host read it */
    ok = true;

done:
    free(message);
    json_free(object);
    json_free(settings);
    validator_string_free(&settings_text);
    validator_admission_request_free(request);
    return ok;
}
