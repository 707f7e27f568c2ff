/*
 * http_json.h — a request's JSON body, parsed strictly (json.h) and its failures answered:
 * 415 when it is not JSON, 400 with line and column when it does not parse, 400/422 with the
 * field list when ms_json_check found fields of the wrong kind or invalid values.
 * Loop-thread only (it answers the request on failure). The parsed body lives as long as the
 * request's arena.
 */
#ifndef MS_HTTP_JSON_H
#define MS_HTTP_JSON_H

#include <jansson.h>
#include <stdbool.h>

#include "runtime/http/http.h"
#include "runtime/json/json.h"

/*
 * Parses the request body as a JSON object. On failure it answers — 415 (not JSON), 400
 * (syntax, with where; not an object) — and returns the code it answered (MS_EMEDIATYPE,
 * MS_EMALFORMED); the caller just stops. On success *out belongs to the request's arena (it
 * is released when the answer is done): the caller borrows it, may change it, never decrefs.
 */
int ms_http_json_body(ms_http_request *req, json_t **out);

/* When either list has entries, answers 400 (malformed first) or 422 and returns the code it
 * answered (MS_EMALFORMED, MS_EVALIDATION); 0 when both are empty. Consumes both lists. */
int ms_http_reject_fields(ms_http_request *req, json_t *malformed, json_t *invalid);

#endif
