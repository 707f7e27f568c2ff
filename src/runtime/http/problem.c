/* problem+json answers. `type` is a stable URN per status so clients can switch on it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/http/problem.h"
#include "runtime/core/banned.h"

static const char *slug_for(int status)
{
    switch (status) {
    case 400:
        return "malformed-request";
    case 401:
        return "unauthenticated";
    case 403:
        return "forbidden";
    case 404:
        return "not-found";
    case 405:
        return "method-not-allowed";
    case 408:
        return "request-timeout";
    case 409:
        return "conflict";
    case 411:
        return "length-required";
    case 412:
        return "precondition-failed";
    case 413:
        return "body-too-large";
    case 415:
        return "unsupported-media-type";
    case 417:
        return "expectation-failed";
    case 422:
        return "validation-failed";
    case 429:
        return "rate-limited";
    case 431:
        return "headers-too-large";
    case 503:
        return "unavailable";
    case 504:
        return "deadline-exceeded";
    case 505:
        return "http-version-not-supported";
    default:
        return status >= 500 ? "internal-error" : "client-error";
    }
}

void ms_problem_fields(ms_http_request *req, int status, const char *detail, json_t *errors)
{
    char type[64];
    snprintf(type, sizeof type, "urn:microshop:problem:%s", slug_for(status));
    json_t *doc =
        json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", type, "title", ms_http_reason(status),
                  "status", status, "detail", detail ? detail : ms_http_reason(status), "instance",
                  req->path ? req->path : "");
    if (errors)
        json_object_set_new(doc, "errors", errors);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    ms_http_respond(req, status, MS_PROBLEM_CONTENT_TYPE, text, text ? strlen(text) : 0);
    free(text);
}

void ms_problem(ms_http_request *req, int status, const char *detail)
{
    ms_problem_fields(req, status, detail, NULL);
}

int ms_http_status_for(int code)
{
    switch (code) {
    case MS_EINVAL:
    case MS_EMALFORMED:
        return 400;
    case MS_EUNAUTHENTICATED:
        return 401;
    case MS_EFORBIDDEN:
        return 403;
    case MS_ENOTFOUND:
        return 404;
    case MS_ECONFLICT:
        return 409;
    case MS_ETOOBIG:
        return 413;
    case MS_EMEDIATYPE:
        return 415;
    case MS_EVALIDATION:
        return 422;
    case MS_EPRECONDITION:
        return 428;
    case MS_EBUSY:
    case MS_EPOOLTIMEOUT:
    case MS_ECONN:
    case MS_ESHUTDOWN:
        return 503;
    case MS_ETIMEDOUT:
        return 504;
    default:
        return 500;
    }
}

void ms_problem_fields_from_error(ms_http_request *req, int code, const char *detail,
                                  json_t *errors)
{
    int status = ms_http_status_for(code);
    if (status == 503)
        ms_http_set_header(req, "Retry-After", "1");
    ms_problem_fields(req, status, detail ? detail : ms_strerror(code), errors);
}

void ms_problem_from_error(ms_http_request *req, int code, const char *detail)
{
    ms_problem_fields_from_error(req, code, detail, NULL);
}

void ms_problem_reason(ms_http_request *req, int code, const char *reason, const char *detail,
                       json_t *errors)
{
    int status = ms_http_status_for(code);
    char type[64];
    snprintf(type, sizeof type, "urn:microshop:problem:%s", slug_for(status));
    json_t *doc =
        json_pack("{s:s, s:s, s:i, s:s, s:s, s:s}", "type", type, "title", ms_http_reason(status),
                  "status", status, "detail", detail ? detail : ms_strerror(code), "instance",
                  req->path ? req->path : "", "reason", reason);
    if (errors)
        json_object_set_new(doc, "errors", errors);
    if (status == 503)
        ms_http_set_header(req, "Retry-After", "1");
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    ms_http_respond(req, status, MS_PROBLEM_CONTENT_TYPE, text, text ? strlen(text) : 0);
    free(text);
}
