/* A request's JSON body and its field errors answered as problem+json; see http_json.h. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/json/json_arena.h"
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
    int rc = 0;
    char detail[300];
    json_t *errors = NULL;
    if (!is_json_type(ms_http_header_get(req, "Content-Type"))) {
        rc = MS_EMEDIATYPE;
        snprintf(detail, sizeof detail, "the body must be application/json (UTF-8)");
        goto out;
    }
    json_error_t err;
    json_t *doc = ms_json_own(&req->arena,
                              json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &err));
    if (!doc) {
        rc = MS_EMALFORMED;
        snprintf(detail, sizeof detail,
                 "the body is not valid JSON: %s at line %d, column %d (byte %d)", err.text,
                 err.line, err.column, err.position);
        errors = json_array();
        ms_field_error(errors, "body", "%s at line %d, column %d (byte %d)", err.text, err.line,
                       err.column, err.position);
        goto out;
    }
    if (!json_is_object(doc)) {
        rc = MS_EMALFORMED;
        snprintf(detail, sizeof detail, "the body must be a JSON object");
        errors = json_array();
        ms_field_error(errors, "body", "must be a JSON object");
        goto out;
    }
    *out = doc;
out:
    if (rc < 0)
        ms_problem_fields_from_error(req, rc, detail, errors);
    return rc;
}

int ms_http_reject_fields(ms_http_request *req, json_t *malformed, json_t *invalid)
{
    int rc = 0;
    if (json_array_size(malformed)) {
        rc = MS_EMALFORMED;
        ms_problem_fields_from_error(
            req, rc, "the body has fields of the wrong kind or unknown fields", malformed);
        malformed = NULL;
    } else if (json_array_size(invalid)) {
        rc = MS_EVALIDATION;
        ms_problem_fields_from_error(req, rc, "some fields are invalid", invalid);
        invalid = NULL;
    }
    json_decref(malformed);
    json_decref(invalid);
    return rc;
}
