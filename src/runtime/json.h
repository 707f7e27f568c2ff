/*
 * json.h — strict JSON bodies with jansson: content type checked, duplicate keys and invalid
 * UTF-8 refused, syntax errors reported with line, column and byte position, unknown fields
 * refused on commands, every field checked by kind before its value is looked at.
 * Loop-thread only (it answers the request on failure).
 */
#ifndef MS_JSON_H
#define MS_JSON_H

#include <jansson.h>
#include <stdbool.h>

#include "runtime/buf.h"
#include "runtime/http.h"

/*
 * Parses the request body as a JSON object. On failure it answers — 415 (not JSON), 400
 * (syntax, with where; not an object) — and returns MS_EINVAL; the caller just returns.
 * On success *out is a new reference.
 */
int ms_json_body(ms_http_request *req, json_t **out);

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

/* When either list has entries, answers 400 (malformed first) or 422 and returns true.
 * Consumes both lists either way. */
bool ms_json_reject(ms_http_request *req, json_t *malformed, json_t *invalid);

/* Appends `s` as a JSON string literal (quoted, escaped): for hand-written answers on hot
 * paths, where building a jansson tree costs more than the rest of the request. */
void ms_json_put_string(ms_buf *b, const char *s);
/* Appends `doc` as compact JSON; consumes it. */
void ms_json_put_doc(ms_buf *b, json_t *doc);

/* Number of code points in a UTF-8 string (jansson has already checked the encoding). */
size_t ms_utf8_length(const char *s);

#endif
