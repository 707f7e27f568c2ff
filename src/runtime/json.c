/* Strict request JSON on top of jansson; see json.h. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "runtime/error.h"
#include "runtime/json.h"
#include "runtime/problem.h"
#include "runtime/banned.h"

/* application/json or application/<x>+json, with at most a utf-8 charset parameter */
static bool is_json_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    const char *semi = strchr(ct, ';');
    size_t n = semi ? (size_t)(semi - ct) : strlen(ct);
    while (n && ct[n - 1] == ' ')
        n--;
    bool json = (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
                (n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
                 strncasecmp(ct + n - 5, "+json", 5) == 0);
    if (!json)
        return false;
    if (!semi)
        return true;
    const char *param = semi + 1;
    while (*param == ' ')
        param++;
    return strncasecmp(param, "charset=", 8) == 0 &&
           (strcasecmp(param + 8, "utf-8") == 0 || strcasecmp(param + 8, "\"utf-8\"") == 0);
}

int ms_json_body(ms_http_request *req, json_t **out)
{
    *out = NULL;
    if (!is_json_type(ms_http_header_get(req, "Content-Type"))) {
        ms_problem(req, 415, "the body must be application/json (UTF-8)");
        return MS_EINVAL;
    }
    json_error_t err;
    json_t *doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &err);
    if (!doc) {
        char detail[300];
        snprintf(detail, sizeof detail,
                 "the body is not valid JSON: %s at line %d, column %d (byte %d)", err.text,
                 err.line, err.column, err.position);
        json_t *errors = json_array();
        ms_field_error(errors, "body", "%s at line %d, column %d (byte %d)", err.text, err.line,
                       err.column, err.position);
        ms_problem_fields(req, 400, detail, errors);
        return MS_EINVAL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        json_t *errors = json_array();
        ms_field_error(errors, "body", "must be a JSON object");
        ms_problem_fields(req, 400, "the body must be a JSON object", errors);
        return MS_EINVAL;
    }
    *out = doc;
    return 0;
}

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

bool ms_json_reject(ms_http_request *req, json_t *malformed, json_t *invalid)
{
    if (json_array_size(malformed)) {
        json_decref(invalid);
        ms_problem_fields(req, 400, "the body has fields of the wrong kind or unknown fields",
                          malformed);
        return true;
    }
    json_decref(malformed);
    if (json_array_size(invalid)) {
        ms_problem_fields(req, 422, "some fields are invalid", invalid);
        return true;
    }
    json_decref(invalid);
    return false;
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
