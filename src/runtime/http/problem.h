/*
 * problem.h — errors to clients as RFC 9457 application/problem+json:
 *   {"type", "title", "status", "detail", "instance", "errors": [{"field", "message"}]}
 * This is the one place where internal MS_E* codes become HTTP statuses.
 * Loop-thread only, like the request it answers.
 */
#ifndef MS_PROBLEM_H
#define MS_PROBLEM_H

#include <jansson.h>

#include "runtime/http/http.h"
#include "runtime/json/json.h" /* ms_field_error, for callers that build field lists */

#define MS_PROBLEM_CONTENT_TYPE "application/problem+json"

/* Answers `status` with a detail sentence. */
void ms_problem(ms_http_request *req, int status, const char *detail);
/* Answers `status` with field errors; consumes `errors` (a JSON array, may be NULL). */
void ms_problem_fields(ms_http_request *req, int status, const char *detail, json_t *errors);
/* Maps an MS_E* code to its status and answers; 503 carries Retry-After. */
void ms_problem_from_error(ms_http_request *req, int code, const char *detail);
/* The HTTP status for an MS_E* code. */
int ms_http_status_for(int code);

#endif
