/* Strict request JSON on top of jansson; see json.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/json/json.h"
#include "runtime/core/banned.h"

static const char *kind_name(ms_json_kind k)
{
    switch (k) {
    case MS_JSON_STRING:
        return "a string";
    case MS_JSON_BOOL:
        return "a boolean";
    case MS_JSON_INTEGER:
        return "an integer";
    case MS_JSON_ARRAY:
        return "an array";
    default:
        return "an object";
    }
}

static bool has_kind(const json_t *v, ms_json_kind k)
{
    switch (k) {
    case MS_JSON_STRING:
        return json_is_string(v);
    case MS_JSON_BOOL:
        return json_is_boolean(v);
    case MS_JSON_INTEGER:
        return json_is_integer(v);
    case MS_JSON_ARRAY:
        return json_is_array(v);
    default:
        return json_is_object(v);
    }
}

bool ms_json_check(json_t *obj, const ms_json_field *fields, size_t n, const char *prefix,
                   json_t *malformed, json_t *invalid)
{
    char path[128];
    const char *key;
    json_t *v;
    bool ok = true;
    json_object_foreach(obj, key, v)
    {
        size_t i = 0;
        while (i < n && strcmp(fields[i].name, key) != 0)
            i++;
        /* the path is written only for an error: a printf per field was most of this */
        if (i == n) {
            snprintf(path, sizeof path, "%s%s", prefix, key);
            ms_field_error(malformed, path, "unknown field");
            ok = false;
        } else if (json_is_null(v) ? !fields[i].nullable : !has_kind(v, fields[i].kind)) {
            snprintf(path, sizeof path, "%s%s", prefix, key);
            ms_field_error(malformed, path, "must be %s%s", kind_name(fields[i].kind),
                           fields[i].nullable ? " or null" : "");
            ok = false;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (fields[i].required && !json_object_get(obj, fields[i].name)) {
            snprintf(path, sizeof path, "%s%s", prefix, fields[i].name);
            ms_field_error(invalid, path, "is required");
        }
    }
    return ok;
}

void ms_json_put_string(ms_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    ms_buf_add(b, "\"", 1);
    const char *run = s; /* bytes that need no escape are copied in runs */
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        ms_buf_add(b, run, (size_t)(s - run));
        run = s + 1;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            ms_buf_add(b, e, 2);
        } else if (c == '\n') {
            ms_buf_add(b, "\\n", 2);
        } else if (c == '\t') {
            ms_buf_add(b, "\\t", 2);
        } else if (c == '\r') {
            ms_buf_add(b, "\\r", 2);
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            ms_buf_add(b, e, 6);
        }
    }
    ms_buf_add(b, run, (size_t)(s - run));
    ms_buf_add(b, "\"", 1);
}

static int dump_to_buf(const char *p, size_t n, void *arg)
{
    ms_buf_add(arg, p, n);
    return 0;
}

void ms_json_put_doc(ms_buf *b, json_t *doc)
{
    json_dump_callback(doc, dump_to_buf, b, JSON_COMPACT);
    json_decref(doc);
}

size_t ms_utf8_length(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

void ms_field_error(json_t *errors, const char *field, const char *fmt, ...)
{
    if (!errors)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message", msg));
}
