/*
 * json.h — strict JSON on jansson, with no HTTP in it: every field checked by kind before its
 * value is looked at, unknown fields refused on commands, field errors as {field, message}
 * lists that the HTTP layer (http/http_json.h) answers. Writers for hand-built answers.
 * Thread-safe (no shared state); jansson values follow jansson's reference rules.
 */
#ifndef MS_JSON_H
#define MS_JSON_H

#include <jansson.h>
#include <stdbool.h>

#include "runtime/core/buf.h"

typedef enum {
    MS_JSON_STRING,
    MS_JSON_BOOL,
    MS_JSON_INTEGER,
    MS_JSON_OBJECT,
    MS_JSON_ARRAY,
} ms_json_kind;

typedef struct ms_json_field {
    const char *name;
    ms_json_kind kind;
    bool required;
    bool nullable;
} ms_json_field;

/*
 * Checks an object's shape: unknown fields and wrong kinds are appended to `malformed`
 * (answered 400), missing required fields to `invalid` (answered 422). `prefix` names a
 * nested object in field paths ("address."). Returns true when every present field is known
 * and of its kind, so rules may look at the values. Either list may be NULL (errors dropped).
 */
bool ms_json_check(json_t *obj, const ms_json_field *fields, size_t n, const char *prefix,
                   json_t *malformed, json_t *invalid);

/* Appends `s` as a JSON string literal (quoted, escaped): for hand-written answers on hot
 * paths, where building a jansson tree costs more than the rest of the request. */
void ms_json_put_string(ms_buf *b, const char *s);
/* Appends `doc` as compact JSON; consumes it. */
void ms_json_put_doc(ms_buf *b, json_t *doc);

/* Number of code points in a UTF-8 string (jansson has already checked the encoding). */
size_t ms_utf8_length(const char *s);

/* Appends {"field": field, "message": ...} to a JSON array (NULL: dropped). */
void ms_field_error(json_t *errors, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
