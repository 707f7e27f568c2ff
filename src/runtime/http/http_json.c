/* A request's JSON body and its field errors answered as problem+json; see http_json.h. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/core/banned.h"

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

int ms_http_json_body(ms_http_request *req, json_t **out)
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

bool ms_http_reject_fields(ms_http_request *req, json_t *malformed, json_t *invalid)
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
