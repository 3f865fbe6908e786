/* require-labels: a wasmgate validator (world `validator` of wasmgate:plugin@0.2.0).
 *
 * Behaves exactly like plugins/rust/require-labels (see its README): denies an object whose
 * `metadata.labels` lacks any key listed in the settings `{"labels": ["team", "owner"]}` (a label
 * counts as present when its value is a string), with 403 Forbidden and
 * `missing required labels: team, owner` (the missing keys, in settings order). An empty list
 * requires nothing. DELETE (no object) is allowed. An unparseable object is a plugin failure
 * (`err`).
 *
 * Settings are checked when the policy is loaded (exports_validator_validate_settings): `labels`
 * is required and must be a list of strings, and any other key is refused, with the Rust
 * plugin's messages (serde's wording), e.g. "invalid settings: unknown field `label`, expected
 * `labels`".
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "validator.h"

/* The bindings are generated without wit-bindgen's type object: the build embeds the WIT with
 * `wasm-tools component embed` instead, so this link anchor has nothing to pull in. */
void __component_type_object_force_link_validator(void) {}

/* A growing malloc'd string. */
typedef struct {
    char *ptr;
    size_t len, cap;
} buf;

static void put(buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (b->len + n + 1 > cap) cap *= 2;
        b->ptr = realloc(b->ptr, cap);
        if (!b->ptr) abort();
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, s, n);
    b->len += n;
    b->ptr[b->len] = '\0';
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

/* Moves the text into *err (the bindings free it) and returns false. */
static bool fail_buf(validator_string_t *err, buf *b) {
    if (!b->ptr) puts_(b, "");
    err->ptr = (uint8_t *)b->ptr;
    err->len = b->len;
    b->ptr = NULL;
    return false;
}

static bool fail(validator_string_t *err, const char *a, const char *b) {
    buf m = {0};
    puts_(&m, a);
    if (b) puts_(&m, b);
    return fail_buf(err, &m);
}

/* A string as Rust's `{:?}` shows it (serde and the label checks quote strings that way); of the
 * characters Rust escapes, only the control characters are (a rarer one, such as a zero-width
 * space, is shown as itself). */
static void put_rust_string(buf *b, const char *s, size_t n) {
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[16];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            put(b, esc, 2);
        } else if (c == '\n') puts_(b, "\\n");
        else if (c == '\r') puts_(b, "\\r");
        else if (c == '\t') puts_(b, "\\t");
        else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u{%x}", c);
            puts_(b, esc);
        } else if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] < 0xa0) { /* U+0080-U+009F */
            snprintf(esc, sizeof esc, "\\u{%x}", (unsigned char)s[++i]); /* the code point is the second byte */
            puts_(b, esc);
        } else put(b, (const char *)&c, 1);
    }
    put(b, "\"", 1);
}

/* A float as serde_json prints it: the shortest digits that read back, in fixed notation for
 * decimal exponents -5..=15 (with `.0` when whole), else as `1.5e+20` or `1e-7`. */
static void put_rust_float(buf *b, double x) {
    char text[40], sig[24];
    if (x == 0) {
        puts_(b, signbit(x) ? "-0.0" : "0.0");
        return;
    }
    for (int precision = 0; precision <= 17; precision++) { /* the shortest round trip */
        snprintf(text, sizeof text, "%.*e", precision, x);
        if (strtod(text, NULL) == x) break;
    }
    /* text is [-]d[.ddd]e(+|-)XX */
    const char *p = text;
    if (*p == '-') puts_(b, "-"), p++;
    size_t n = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') sig[n++] = *p;
    while (n > 1 && sig[n - 1] == '0') n--;
    sig[n] = '\0';
    int e = atoi(p + 1);
    if (e >= -5 && e <= 15) {
        if (e >= 0) {
            for (int i = 0; i <= e; i++) put(b, i < (int)n ? &sig[i] : "0", 1);
            puts_(b, ".");
            if ((int)n > e + 1) put(b, sig + e + 1, n - (size_t)e - 1);
            else puts_(b, "0");
        } else {
            puts_(b, "0.");
            for (int i = 0; i < -e - 1; i++) puts_(b, "0");
            put(b, sig, n);
        }
        return;
    }
    put(b, sig, 1);
    if (n > 1) puts_(b, "."), put(b, sig + 1, n - 1);
    snprintf(text, sizeof text, "e%c%d", e >= 0 ? '+' : '-', e >= 0 ? e : -e);
    puts_(b, text);
}

/* How serde_json names a JSON value it did not expect. A number is an integer when it has no
 * fraction or exponent and fits 64 bits (and is not -0); otherwise a float. */
static void put_unexpected(buf *b, const json_value *v) {
    switch (v->type) {
    case JSON_NULL: puts_(b, "null"); break;
    case JSON_FALSE: puts_(b, "boolean `false`"); break;
    case JSON_TRUE: puts_(b, "boolean `true`"); break;
    case JSON_NUMBER: {
        char text[400];
        size_t n = v->text_len < sizeof text - 1 ? v->text_len : sizeof text - 1;
        memcpy(text, v->text, n);
        text[n] = '\0';
        bool integer = !strpbrk(text, ".eE");
        if (integer) {
            errno = 0;
            if (text[0] == '-') {
                long long value = strtoll(text, NULL, 10);
                integer = errno == 0 && value != 0;
            } else {
                (void)strtoull(text, NULL, 10);
                integer = errno == 0;
            }
        }
        if (integer) {
            puts_(b, "integer `");
            puts_(b, text);
        } else {
            puts_(b, "floating point `");
            put_rust_float(b, strtod(text, NULL));
        }
        puts_(b, "`");
        break;
    }
    case JSON_STRING: {
        size_t n;
        char *s = json_unescape(v->text, v->text_len, &n);
        if (!s) abort();
        puts_(b, "string ");
        put_rust_string(b, s, n);
        free(s);
        break;
    }
    case JSON_ARRAY: puts_(b, "sequence"); break;
    case JSON_OBJECT: puts_(b, "map"); break;
    }
}

/* "<path>: invalid type: <value>, expected <expected>" */
static bool invalid_type(validator_string_t *err, const char *path, const json_value *v, const char *expected) {
    buf m = {0};
    if (path) puts_(&m, path), puts_(&m, ": ");
    puts_(&m, "invalid type: ");
    put_unexpected(&m, v);
    puts_(&m, ", expected ");
    puts_(&m, expected);
    return fail_buf(err, &m);
}

/* `labels` (a list of strings) at `path`, as serde reads a `Vec<String>`. */
static bool labels_at(const json_value *v, const char *path, validator_string_t *err) {
    if (v->type != JSON_ARRAY) return invalid_type(err, path, v, "a sequence");
    for (size_t i = 0; i < v->len; i++) {
        if (v->items[i]->type != JSON_STRING) {
            char item[64];
            snprintf(item, sizeof item, "%s[%zu]", path, i);
            return invalid_type(err, item, v->items[i], "a string");
        }
    }
    return true;
}

static bool alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
static bool alnum_ends(const char *s, size_t n) { return n > 0 && alnum(s[0]) && alnum(s[n - 1]); }

/* Why `key` (n bytes of UTF-8) is not a label key the API server accepts (an optional lowercase
 * DNS subdomain prefix and `/`, then a name of 1-63 characters of `[A-Za-z0-9._-]`, alphanumeric
 * at both ends), or NULL. */
static const char *label_key_problem(const char *key, size_t n) {
    const char *slash = memchr(key, '/', n);
    const char *name = slash ? slash + 1 : key;
    size_t name_len = slash ? n - (size_t)(slash + 1 - key) : n;
    if (name_len == 0 || name_len > 63) return "is not a label key: the name must be 1-63 characters";
    bool ok = alnum_ends(name, name_len);
    for (size_t i = 0; ok && i < name_len; i++)
        ok = alnum(name[i]) || name[i] == '-' || name[i] == '_' || name[i] == '.';
    if (!ok) return "is not a label key: the name must be alphanumerics, '-', '_' or '.', alphanumeric at both ends";
    if (slash) {
        size_t prefix_len = (size_t)(slash - key);
        bool dns = prefix_len > 0 && prefix_len <= 253;
        for (size_t start = 0; dns && start <= prefix_len;) {
            const char *dot = memchr(key + start, '.', prefix_len - start);
            size_t end = dot ? (size_t)(dot - key) : prefix_len, len = end - start;
            dns = len > 0 && len <= 63 && alnum_ends(key + start, len);
            for (size_t i = start; dns && i < end; i++)
                dns = (key[i] >= 'a' && key[i] <= 'z') || (key[i] >= '0' && key[i] <= '9') || key[i] == '-';
            start = end + 1;
        }
        if (!dns) return "is not a label key: the prefix must be a lowercase DNS subdomain";
    }
    return NULL;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Checks the settings text with the Rust plugin's rules and messages (serde's, with the path of
 * the bad value; then, with `check`, the label key checks, which the Rust plugin runs at load
 * only). On success *labels is the (tree-owned) list, and *tree the tree to json_free; on
 * failure fills *err and returns false. */
static bool parse_settings(const char *text, size_t len, bool check, json_value **tree, json_value **labels,
                           validator_string_t *err) {
    const char *error = NULL;
    *labels = NULL;
    while (len && is_space(text[0])) text++, len--;
    while (len && is_space(text[len - 1])) len--;
    if (len == 0 || (len == 4 && memcmp(text, "null", 4) == 0)) text = "{}", len = 2;
    *tree = json_parse(text, len, &error);
    if (!*tree) return fail(err, "not JSON: ", error);
    json_value *settings = *tree;
    if (settings->type == JSON_OBJECT) {
        /* serde reads the keys in order and stops at the first bad one. */
        for (size_t i = 0; i < settings->len; i++) {
            json_member *m = &settings->members[i];
            size_t key_len;
            char *key = json_unescape(m->key, m->key_len, &key_len);
            if (!key) abort();
            if (!(key_len == 6 && memcmp(key, "labels", 6) == 0)) {
                buf msg = {0};
                if (key_len) put(&msg, key, key_len), puts_(&msg, ": ");
                puts_(&msg, "unknown field `");
                put(&msg, key, key_len);
                puts_(&msg, "`, expected `labels`");
                free(key);
                return fail_buf(err, &msg);
            }
            free(key);
            if (*labels) return fail(err, "duplicate field `labels`", NULL);
            if (!labels_at(m->value, "labels", err)) return false;
            *labels = m->value;
        }
        if (!*labels) return fail(err, "missing field `labels`", NULL);
    } else if (settings->type == JSON_ARRAY) { /* serde also reads a struct from a list of its fields */
        if (settings->len == 0) return fail(err, "invalid length 0, expected struct Settings with 1 element", NULL);
        if (!labels_at(settings->items[0], "[0]", err)) return false;
        if (settings->len > 1) return fail(err, "trailing characters", NULL);
        *labels = settings->items[0];
    } else {
        return invalid_type(err, NULL, settings, "struct Settings");
    }
    if (!check) return true;
    if ((*labels)->len == 0) return fail(err, "labels: list at least one label key", NULL);
    for (size_t i = 0; i < (*labels)->len; i++) {
        size_t key_len;
        char *key = json_unescape((*labels)->items[i]->text, (*labels)->items[i]->text_len, &key_len);
        if (!key) abort();
        const char *why = label_key_problem(key, key_len);
        if (why) {
            buf msg = {0};
            char path[40];
            snprintf(path, sizeof path, "labels[%zu]: ", i);
            puts_(&msg, path);
            put_rust_string(&msg, key, key_len);
            puts_(&msg, " ");
            puts_(&msg, why);
            free(key);
            return fail_buf(err, &msg);
        }
        free(key);
    }
    return true;
}

bool exports_validator_validate_settings(validator_string_t *settings, validator_string_t *err) {
    json_value *tree = NULL, *labels;
    bool ok = parse_settings((const char *)settings->ptr, settings->len, true, &tree, &labels, err);
    json_free(tree);
    validator_string_free(settings);
    return ok;
}

static void allowed(validator_verdict_t *ret) {
    memset(ret, 0, sizeof *ret); /* decision allowed, no warnings, no annotations */
    ret->decision.tag = WASMGATE_PLUGIN_TYPES_DECISION_ALLOWED;
}

bool exports_validator_validate(validator_admission_request_t *request, validator_verdict_t *ret,
                                validator_string_t *err) {
    bool ok = false;
    const char *error = NULL;
    json_value *settings = NULL, *object = NULL, *labels = NULL;
    buf message = {0};

    validator_string_t settings_text;
    wasmgate_plugin_host_settings(&settings_text);
    if (!parse_settings((const char *)settings_text.ptr, settings_text.len, false, &settings, &labels, err)) {
        /* Checked at load, so only if the host skipped the check. */
        buf m = {0};
        puts_(&m, "invalid settings: ");
        put(&m, (const char *)err->ptr, err->len);
        free(err->ptr);
        fail_buf(err, &m);
        goto done;
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
    size_t missing = 0;
    puts_(&message, "missing required labels: ");
    for (size_t i = 0; i < labels->len; i++) {
        size_t key_len;
        char *key = json_unescape(labels->items[i]->text, labels->items[i]->text_len, &key_len);
        if (!key) abort();
        json_value *value = memchr(key, '\0', key_len) ? NULL : json_get(present, key);
        if (!value || value->type != JSON_STRING) { /* present means: a string value */
            if (missing++) puts_(&message, ", ");
            put(&message, key, key_len);
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
    ret->decision.val.denied.message = (validator_string_t){(uint8_t *)message.ptr, message.len};
    message.ptr = NULL; /* owned by the bindings now; freed after the host read it */
    ok = true;

done:
    free(message.ptr);
    json_free(object);
    json_free(settings);
    validator_string_free(&settings_text);
    validator_admission_request_free(request);
    return ok;
}
