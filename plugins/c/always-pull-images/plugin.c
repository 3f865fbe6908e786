/* always-pull-images: a wasmgate initializer (world `initializer` of wasmgate:plugin@0.2.0).
 *
 * Behaves exactly like plugins/rust/always-pull-images (see its README): sets
 * `imagePullPolicy: "Always"` on every container, init container and ephemeral container of the
 * pod spec of a Pod, PodTemplate, ReplicationController, Deployment, StatefulSet, DaemonSet,
 * ReplicaSet, Job or CronJob, taken as the request's `kind` says (else `requestKind`, else the
 * object's own apiVersion and kind: the object's `kind` is the client's word). Returns `unchanged`
 * when nothing changes, else `patched`: one RFC 6902 `add` of `imagePullPolicy: "Always"` per
 * container that lacks it, so the whole object is never written back (the host applies the
 * operations and computes the JSONPatch). An unparseable object, or a container that is not a
 * JSON object, is a plugin failure (`err`).
 *
 * It takes no settings: exports_initializer_validate_settings (called when the policy is loaded)
 * accepts none, `{}` or `null` and refuses any key, with the Rust plugin's message
 * (`unknown field `x`, there are no fields`).
 */
#include <stdlib.h>
#include <string.h>

#include "initializer.h"
#include "json.h"

void __component_type_object_force_link_initializer(void) {}

typedef struct {
    const char *dotted;       /* for messages, e.g. "spec.template.spec" */
    const char *const *keys;  /* NULL-terminated */
} pod_path;

static const char *const POD_KEYS[] = {"spec", NULL};
static const char *const POD_TEMPLATE_KEYS[] = {"template", "spec", NULL};
static const char *const TEMPLATE_KEYS[] = {"spec", "template", "spec", NULL};
static const char *const CRON_JOB_KEYS[] = {"spec", "jobTemplate", "spec", "template", "spec", NULL};
static const pod_path POD = {"spec", POD_KEYS};
static const pod_path POD_TEMPLATE = {"template.spec", POD_TEMPLATE_KEYS};
static const pod_path TEMPLATE = {"spec.template.spec", TEMPLATE_KEYS};
static const pod_path CRON_JOB = {"spec.jobTemplate.spec.template.spec", CRON_JOB_KEYS};

static const char *const CONTAINER_LISTS[] = {"containers", "initContainers", "ephemeralContainers"};

static bool is(const char *s, const char *t) { return strcmp(s, t) == 0; }

/* Where the pod spec sits for an object of `group` and `kind`, or NULL. */
static const pod_path *pod_spec_path(const char *group, const char *kind) {
    if (is(group, "")) {
        if (is(kind, "Pod")) return &POD;
        if (is(kind, "PodTemplate")) return &POD_TEMPLATE;
        if (is(kind, "ReplicationController")) return &TEMPLATE;
    } else if (is(group, "apps") || is(group, "extensions")) {
        if (is(kind, "Deployment") || is(kind, "StatefulSet") || is(kind, "DaemonSet") || is(kind, "ReplicaSet"))
            return &TEMPLATE;
    } else if (is(group, "batch")) {
        if (is(kind, "Job")) return &TEMPLATE;
        if (is(kind, "CronJob")) return &CRON_JOB;
    }
    return NULL;
}

/* The unescaped value of string member `key`, or "" (malloc'd either way). */
static char *string_field(const json_value *object, const char *key) {
    const json_value *v = json_get(object, key);
    char *s = v && v->type == JSON_STRING ? json_unescape(v->text, v->text_len, NULL) : strdup("");
    if (!s) abort();
    return s;
}

static bool fail(initializer_string_t *err, char *message /* malloc'd */) {
    err->ptr = (uint8_t *)message;
    err->len = strlen(message);
    return false;
}

static char *concat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (!s) abort();
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static char *concat3(const char *a, const char *b, const char *c) {
    char *ab = concat(a, b), *abc = concat(ab, c);
    free(ab);
    return abc;
}

/* Refuses any settings, as the Rust plugin's `NoSettings` does. */
bool exports_initializer_validate_settings(initializer_string_t *settings, initializer_string_t *err) {
    const char *text = (const char *)settings->ptr, *error = NULL;
    size_t len = settings->len;
    bool ok = true;
    while (len && is_space(text[0])) text++, len--;
    while (len && is_space(text[len - 1])) len--;
    json_value *v = len == 0 || (len == 4 && memcmp(text, "null", 4) == 0) ? NULL : json_parse(text, len, &error);
    if (error) {
        ok = fail(err, concat("not JSON: ", error));
    } else if (v && v->type == JSON_OBJECT) {
        if (v->len > 0) {
            char *key = json_unescape(v->members[0].key, v->members[0].key_len, NULL);
            if (!key) abort();
            ok = fail(err, concat3("unknown field `", key, "`, there are no fields"));
            free(key);
        }
    } else if (v) {
        char *what;
        if (v->type == JSON_STRING) {
            char *s = json_unescape(v->text, v->text_len, NULL);
            if (!s) abort();
            what = concat3("string \"", s, "\"");
            free(s);
        } else if (v->type == JSON_NUMBER) {
            char *n = strndup(v->text, v->text_len);
            if (!n) abort();
            what = concat3(strpbrk(n, ".eE") ? "floating point `" : "integer `", n, "`");
            free(n);
        } else {
            what = concat(v->type == JSON_ARRAY ? "sequence" : v->type == JSON_TRUE ? "boolean `true`" : "boolean `false`", "");
        }
        ok = fail(err, concat3("invalid type: ", what, ", expected no settings (an empty map)"));
        free(what);
    }
    json_free(v);
    initializer_string_free(settings);
    return ok;
}

static char *copy_string(const initializer_string_t *s) {
    char *c = strndup((const char *)s->ptr, s->len);
    if (!c) abort();
    return c;
}

/* Where the pod spec of `object` sits, taking it as the request's `kind` says, else its
 * `requestKind` (the API server's word), else the object's own apiVersion and kind (as the Rust
 * SDK's `kind_of`); NULL for other kinds. */
static const pod_path *pod_spec_path_of(const initializer_admission_request_t *request, const json_value *object) {
    const wasmgate_plugin_types_group_version_kind_t *gvk = NULL;
    if (request->kind.kind.len > 0) gvk = &request->kind;
    else if (request->request_kind.is_some && request->request_kind.val.kind.len > 0) gvk = &request->request_kind.val;
    char *group, *kind;
    if (gvk) {
        group = copy_string(&gvk->group);
        kind = copy_string(&gvk->kind);
    } else {
        group = string_field(object, "apiVersion");
        kind = string_field(object, "kind");
        char *slash = strrchr(group, '/');
        if (slash) *slash = '\0';
        else group[0] = '\0';
    }
    const pod_path *path = pod_spec_path(group, kind);
    free(group);
    free(kind);
    return path;
}

/* A growing NUL-terminated text. */
typedef struct {
    char *text;
    size_t len, cap;
} buffer;

static void append(buffer *b, const char *s) {
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->text = realloc(b->text, b->cap);
        if (!b->text) abort();
    }
    memcpy(b->text + b->len, s, n + 1);
    b->len += n;
}

/* `n` in decimal, written at the end of `digits` (24 bytes); returns where it starts. */
static const char *decimal(size_t n, char digits[24]) {
    char *p = digits + 24;
    *--p = '\0';
    do *--p = (char)('0' + n % 10); while ((n /= 10) != 0);
    return p;
}

/* One RFC 6902 `add` of `imagePullPolicy: "Always"` per container of the pod spec at `path`
 * whose policy is not `Always` yet (an `add` of a member that exists replaces it), in Rust's
 * order, appended to `ops` as a JSON array. Returns how many, or -1 (with *error set, malloc'd)
 * when a container is not a JSON object. */
static int always_pull(const json_value *object, const pod_path *path, buffer *ops, char **error) {
    if (object->type != JSON_OBJECT || !path) return 0;
    const json_value *spec = object;
    for (size_t i = 0; spec && path->keys[i]; i++) spec = json_get(spec, path->keys[i]);
    if (!spec || spec->type != JSON_OBJECT) return 0;

    int count = 0;
    for (size_t f = 0; f < sizeof CONTAINER_LISTS / sizeof CONTAINER_LISTS[0]; f++) {
        const json_value *containers = json_get(spec, CONTAINER_LISTS[f]);
        if (!containers || containers->type != JSON_ARRAY) continue;
        for (size_t i = 0; i < containers->len; i++) {
            const json_value *c = containers->items[i];
            char digits[24];
            const char *index = decimal(i, digits);
            if (c->type != JSON_OBJECT) {
                /* "<pod path>.<list>[<index>] is not a JSON object" (no printf: it triples the size) */
                buffer message = {0};
                const char *parts[] = {path->dotted, ".", CONTAINER_LISTS[f], "[", index, "] is not a JSON object"};
                for (size_t k = 0; k < 6; k++) append(&message, parts[k]);
                *error = message.text;
                return -1;
            }
            if (json_string_equals(json_get(c, "imagePullPolicy"), "Always", 6)) continue;
            append(ops, count == 0 ? "[{\"op\":\"add\",\"path\":\"" : ",{\"op\":\"add\",\"path\":\"");
            for (size_t k = 0; path->keys[k]; k++) {
                append(ops, "/");
                append(ops, path->keys[k]);
            }
            const char *rest[] = {"/", CONTAINER_LISTS[f], "/", index, "/imagePullPolicy\",\"value\":\"Always\"}"};
            for (size_t k = 0; k < 5; k++) append(ops, rest[k]);
            count++;
        }
    }
    if (count) append(ops, "]");
    return count;
}

bool exports_initializer_initialize(initializer_admission_request_t *request, initializer_mutation_t *ret,
                                    initializer_string_t *err) {
    bool ok = true;
    const char *error = NULL;
    json_value *object = NULL;

    memset(ret, 0, sizeof *ret); /* unchanged, no warnings, no annotations */
    ret->change.tag = WASMGATE_PLUGIN_TYPES_CHANGE_UNCHANGED;

    if (!request->object.is_some) goto done; /* DELETE */
    object = json_parse((const char *)request->object.val.ptr, request->object.val.len, &error);
    if (!object) {
        ok = fail(err, concat("the request's object is not JSON: ", error));
        goto done;
    }
    char *message = NULL;
    buffer ops = {0};
    int count = always_pull(object, pod_spec_path_of(request, object), &ops, &message);
    if (count < 0) {
        free(ops.text);
        ok = fail(err, message);
        goto done;
    }
    if (count == 0) goto done;

    ret->change.tag = WASMGATE_PLUGIN_TYPES_CHANGE_PATCHED;
    ret->change.val.patched = (initializer_string_t){(uint8_t *)ops.text, ops.len};

done:
    json_free(object); /* the tree points into the request's object text */
    initializer_admission_request_free(request);
    return ok;
}
