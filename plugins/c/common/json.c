#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 512

typedef struct {
    const char *p, *end;
    const char *error;
    int depth;
} parser;

static json_value *new_value(json_type type) {
    json_value *v = calloc(1, sizeof *v);
    if (v) v->type = type;
    return v;
}

void json_free(json_value *v) {
    if (!v) return;
    if (v->type == JSON_ARRAY) {
        for (size_t i = 0; i < v->len; i++) json_free(v->items[i]);
        free(v->items);
    } else if (v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->len; i++) json_free(v->members[i].value);
        free(v->members);
    }
    free(v);
}

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Scans a string starting after the opening quote; sets *start and *len to its escaped content. */
static bool scan_string(parser *ps, const char **start, size_t *len) {
    const char *s = ps->p;
    while (ps->p < ps->end) {
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') {
            *start = s;
            *len = (size_t)(ps->p - s);
            ps->p++;
            return true;
        }
        if (c < 0x20) {
            ps->error = "control character in string";
            return false;
        }
        if (c == '\\') {
            ps->p++;
            if (ps->p >= ps->end) break;
            switch (*ps->p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                ps->p++;
                break;
            case 'u':
                if (ps->end - ps->p < 5 || hex(ps->p[1]) < 0 || hex(ps->p[2]) < 0 || hex(ps->p[3]) < 0 ||
                    hex(ps->p[4]) < 0) {
                    ps->error = "invalid \\u escape";
                    return false;
                }
                ps->p += 5;
                break;
            default:
                ps->error = "invalid escape";
                return false;
            }
            continue;
        }
        ps->p++;
    }
    ps->error = "unterminated string";
    return false;
}

static bool digits(parser *ps) {
    const char *s = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    return ps->p > s;
}

static json_value *parse_value(parser *ps);

static json_value *parse_number(parser *ps) {
    const char *s = ps->p;
    if (*ps->p == '-') ps->p++;
    if (ps->p < ps->end && *ps->p == '0') {
        ps->p++;
    } else if (!digits(ps)) {
        ps->error = "invalid number";
        return NULL;
    }
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!digits(ps)) {
            ps->error = "invalid number";
            return NULL;
        }
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (!digits(ps)) {
            ps->error = "invalid number";
            return NULL;
        }
    }
    json_value *v = new_value(JSON_NUMBER);
    if (!v) {
        ps->error = "out of memory";
        return NULL;
    }
    v->text = s;
    v->text_len = (size_t)(ps->p - s);
    return v;
}

static bool literal(parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
        ps->error = "invalid literal";
        return false;
    }
    ps->p += n;
    return true;
}

static bool grow(void **buf, size_t *cap, size_t len, size_t elem) {
    if (len < *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 4;
    void *n = realloc(*buf, ncap * elem);
    if (!n) return false;
    *buf = n;
    *cap = ncap;
    return true;
}

static json_value *parse_array(parser *ps) {
    json_value *v = new_value(JSON_ARRAY);
    if (!v) goto oom;
    ps->p++; /* [ */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return v;
    }
    for (;;) {
        json_value *item = parse_value(ps);
        if (!item) goto fail;
        if (!grow((void **)&v->items, &v->cap, v->len, sizeof *v->items)) {
            json_free(item);
            goto oom;
        }
        v->items[v->len++] = item;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return v;
        }
        ps->error = "expected ',' or ']'";
        goto fail;
    }
oom:
    ps->error = "out of memory";
fail:
    json_free(v);
    return NULL;
}

static json_value *parse_object(parser *ps) {
    json_value *v = new_value(JSON_OBJECT);
    if (!v) goto oom;
    ps->p++; /* { */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return v;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"') {
            ps->error = "expected a string key";
            goto fail;
        }
        ps->p++;
        const char *key;
        size_t key_len;
        if (!scan_string(ps, &key, &key_len)) goto fail;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') {
            ps->error = "expected ':'";
            goto fail;
        }
        ps->p++;
        json_value *value = parse_value(ps);
        if (!value) goto fail;
        if (!grow((void **)&v->members, &v->cap, v->len, sizeof *v->members)) {
            json_free(value);
            goto oom;
        }
        v->members[v->len++] = (json_member){key, key_len, value};
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return v;
        }
        ps->error = "expected ',' or '}'";
        goto fail;
    }
oom:
    ps->error = "out of memory";
fail:
    json_free(v);
    return NULL;
}

static json_value *parse_value(parser *ps) {
    skip_ws(ps);
    if (ps->p >= ps->end) {
        ps->error = "unexpected end of input";
        return NULL;
    }
    if (++ps->depth > JSON_MAX_DEPTH) {
        ps->error = "nested too deeply";
        return NULL;
    }
    json_value *v = NULL;
    switch (*ps->p) {
    case '{':
        v = parse_object(ps);
        break;
    case '[':
        v = parse_array(ps);
        break;
    case '"': {
        ps->p++;
        const char *s;
        size_t n;
        if (scan_string(ps, &s, &n)) {
            v = new_value(JSON_STRING);
            if (v) {
                v->text = s;
                v->text_len = n;
            } else {
                ps->error = "out of memory";
            }
        }
        break;
    }
    case 't':
        if (literal(ps, "true")) v = new_value(JSON_TRUE);
        break;
    case 'f':
        if (literal(ps, "false")) v = new_value(JSON_FALSE);
        break;
    case 'n':
        if (literal(ps, "null")) v = new_value(JSON_NULL);
        break;
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) v = parse_number(ps);
        else ps->error = "unexpected character";
    }
    if (!v && !ps->error) ps->error = "out of memory";
    ps->depth--;
    return v;
}

json_value *json_parse(const char *text, size_t len, const char **error) {
    parser ps = {text, text + len, NULL, 0};
    json_value *v = parse_value(&ps);
    if (v) {
        skip_ws(&ps);
        if (ps.p != ps.end) {
            json_free(v);
            v = NULL;
            ps.error = "trailing characters after the value";
        }
    }
    if (error) *error = v ? NULL : ps.error;
    return v;
}

static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t hex4(const char *p) {
    return (uint32_t)(hex(p[0]) << 12 | hex(p[1]) << 8 | hex(p[2]) << 4 | hex(p[3]));
}

/* The escaped text was validated by the parser; the output is never longer than the input. */
char *json_unescape(const char *text, size_t text_len, size_t *out_len) {
    char *out = malloc(text_len + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < text_len;) {
        char c = text[i];
        if (c != '\\') {
            out[o++] = c;
            i++;
            continue;
        }
        char e = text[i + 1];
        i += 2;
        switch (e) {
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            uint32_t cp = hex4(text + i);
            i += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= text_len && text[i] == '\\' && text[i + 1] == 'u') {
                uint32_t lo = hex4(text + i + 2);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;
            o += put_utf8(out + o, cp); /* at most 4 bytes for 6 (or 12) input bytes */
            break;
        }
        default: out[o++] = e; /* " \ / */
        }
    }
    out[o] = '\0';
    if (out_len) *out_len = o;
    return out;
}

static bool escaped_equals(const char *text, size_t text_len, const char *s, size_t s_len) {
    if (!memchr(text, '\\', text_len)) return text_len == s_len && memcmp(text, s, s_len) == 0;
    size_t n;
    char *u = json_unescape(text, text_len, &n);
    bool eq = u && n == s_len && memcmp(u, s, s_len) == 0;
    free(u);
    return eq;
}

json_value *json_get(const json_value *object, const char *key) {
    if (!object || object->type != JSON_OBJECT) return NULL;
    size_t key_len = strlen(key);
    json_value *found = NULL;
    /* The last duplicate wins, as in most JSON readers (and Go's and serde's maps). */
    for (size_t i = 0; i < object->len; i++)
        if (escaped_equals(object->members[i].key, object->members[i].key_len, key, key_len))
            found = object->members[i].value;
    return found;
}

bool json_string_equals(const json_value *v, const char *s, size_t s_len) {
    return v && v->type == JSON_STRING && escaped_equals(v->text, v->text_len, s, s_len);
}

json_value *json_new_string(const char *escaped) {
    json_value *v = new_value(JSON_STRING);
    if (v) {
        v->text = escaped;
        v->text_len = strlen(escaped);
    }
    return v;
}

bool json_set(json_value *object, const char *key, json_value *value) {
    size_t key_len = strlen(key);
    bool replaced = false;
    for (size_t i = 0; i < object->len; i++) {
        if (escaped_equals(object->members[i].key, object->members[i].key_len, key, key_len)) {
            json_free(object->members[i].value);
            object->members[i].value = value; /* every duplicate gets the new value */
            replaced = true;
        }
    }
    if (replaced) return true;
    if (!grow((void **)&object->members, &object->cap, object->len, sizeof *object->members)) return false;
    object->members[object->len++] = (json_member){key, key_len, value};
    return true;
}

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} writer;

static void put(writer *w, const char *s, size_t n) {
    if (w->oom) return;
    if (w->len + n + 1 > w->cap) {
        size_t ncap = w->cap ? w->cap : 256;
        while (w->len + n + 1 > ncap) ncap *= 2;
        char *b = realloc(w->buf, ncap);
        if (!b) {
            w->oom = true;
            return;
        }
        w->buf = b;
        w->cap = ncap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void write_value(writer *w, const json_value *v) {
    switch (v->type) {
    case JSON_NULL: put(w, "null", 4); break;
    case JSON_FALSE: put(w, "false", 5); break;
    case JSON_TRUE: put(w, "true", 4); break;
    case JSON_NUMBER: put(w, v->text, v->text_len); break;
    case JSON_STRING:
        put(w, "\"", 1);
        put(w, v->text, v->text_len);
        put(w, "\"", 1);
        break;
    case JSON_ARRAY:
        put(w, "[", 1);
        for (size_t i = 0; i < v->len; i++) {
            if (i) put(w, ",", 1);
            write_value(w, v->items[i]);
        }
        put(w, "]", 1);
        break;
    case JSON_OBJECT:
        put(w, "{", 1);
        for (size_t i = 0; i < v->len; i++) {
            if (i) put(w, ",", 1);
            put(w, "\"", 1);
            put(w, v->members[i].key, v->members[i].key_len);
            put(w, "\":", 2);
            write_value(w, v->members[i].value);
        }
        put(w, "}", 1);
        break;
    }
}

char *json_write(const json_value *v, size_t *out_len) {
    writer w = {0};
    write_value(&w, v);
    if (w.oom) {
        free(w.buf);
        return NULL;
    }
    put(&w, "", 0);
    if (w.oom) {
        free(w.buf);
        return NULL;
    }
    w.buf[w.len] = '\0';
    if (out_len) *out_len = w.len;
    return w.buf;
}
