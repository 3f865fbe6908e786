/* A small JSON reader/writer for wasmgate's C plugins.
 *
 * The parser builds a tree that points into the input text: strings keep their escaped form and
 * numbers their exact text, so writing a tree back out reproduces every value exactly (only the
 * whitespace goes). Keys and strings are compared after unescaping. Everything is malloc'd;
 * json_free releases a tree. No global state, so it is safe for any instance lifetime.
 */
#ifndef WASMGATE_JSON_H
#define WASMGATE_JSON_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;

typedef struct {
    const char *key; /* escaped form, without quotes */
    size_t key_len;
    json_value *value;
} json_member;

struct json_value {
    json_type type;
    const char *text; /* NUMBER: the number's text; STRING: escaped form without quotes */
    size_t text_len;
    size_t len, cap; /* ARRAY: items; OBJECT: members */
    json_value **items;
    json_member *members;
};

/* Parses exactly one JSON value (surrounded by optional whitespace). Returns NULL on error and
 * points *error at a static description. The tree borrows `text`: keep it alive. */
json_value *json_parse(const char *text, size_t len, const char **error);
void json_free(json_value *v);

/* The member `key` (unescaped, NUL-terminated) of an object, or NULL (also for non-objects). */
json_value *json_get(const json_value *object, const char *key);
/* True when `v` is a string whose unescaped value is `s` (`s_len` bytes). */
bool json_string_equals(const json_value *v, const char *s, size_t s_len);
/* The unescaped value of a string (or a key), malloc'd, NUL-terminated; length in *out_len.
 * Lone surrogate escapes become U+FFFD so the result is always valid UTF-8. */
char *json_unescape(const char *text, size_t text_len, size_t *out_len);

/* A new string value whose escaped form is `escaped` (static or outliving the tree). */
json_value *json_new_string(const char *escaped);
/* Sets `key` (plain ASCII needing no escapes, static) on an object, replacing any member
 * with that key. Returns false when out of memory. */
bool json_set(json_value *object, const char *key, json_value *value);

/* Compact JSON text for `v`, malloc'd and NUL-terminated; length in *out_len. */
char *json_write(const json_value *v, size_t *out_len);

#endif
