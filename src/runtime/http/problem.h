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

/*
 * Handlers answer through the *_from_error pair: an MS_E* code plus context, the status chosen
 * by ms_http_status_for. The literal-status pair is for the HTTP edge itself (the connection
 * and the server: 405, 408, 413, 431, ...), whose statuses have no error behind them.
 */

/* Answers the status of `code` with a detail sentence (NULL: the code's message); 503 carries
 * Retry-After. */
void ms_problem_from_error(ms_http_request *req, int code, const char *detail);
/* The same with field errors; consumes `errors` (a JSON array of {field, message}, may be
 * NULL). */
void ms_problem_fields_from_error(ms_http_request *req, int code, const char *detail,
                                  json_t *errors);
/* The HTTP status for an MS_E* code: the one place codes become statuses (500 for unknown). */
int ms_http_status_for(int code);
/* Like ms_problem_fields_from_error with one more member, "reason": a stable machine-readable
 * word for why (e.g. "out_of_stock") when one status has several causes; consumes `errors`. */
void ms_problem_reason(ms_http_request *req, int code, const char *reason, const char *detail,
                       json_t *errors);

/* Answers `status` with a detail sentence (HTTP edge only, see above). */
void ms_problem(ms_http_request *req, int status, const char *detail);
/* Answers `status` with field errors; consumes `errors` (a JSON array, may be NULL). */
void ms_problem_fields(ms_http_request *req, int status, const char *detail, json_t *errors);

#endif
