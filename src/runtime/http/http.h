/*
 * http.h — the request a handler sees and the ways to answer it.
 *
 * A handler runs on the loop thread that owns the connection and must answer exactly once
 * with ms_http_respond* (now, or later from a callback on the same loop). Everything the
 * request allocates goes in its arena and is freed after the answer; strings handed to the
 * respond functions are copied. Requests on one connection are handled one at a time, so
 * pipelined requests are answered in order.
 */
#ifndef MS_HTTP_H
#define MS_HTTP_H

#include <http_parser.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "runtime/core/arena.h"
#include "runtime/core/buf.h"
#include "runtime/obs/trace.h"

typedef struct ms_loop ms_loop;
typedef struct ms_route ms_route;
typedef struct ms_http_conn ms_http_conn;
typedef struct ms_http_request ms_http_request;
typedef void (*ms_http_handler)(ms_http_request *req);

enum { MS_HTTP_MAX_PARAMS = 4 };

typedef struct ms_http_header {
    const char *name, *value; /* NUL-terminated, in the request arena */
} ms_http_header;

struct ms_http_request {
    /* read-only for handlers */
    int method;        /* enum http_method from http_parser.h */
    const char *path;  /* origin-form path without the query */
    const char *query; /* the part after '?', or "" */
    const char *body;  /* NUL-terminated copy of the body (body_len bytes), or "" */
    size_t body_len;
    ms_loop *loop;         /* the loop thread serving this request */
    uint64_t deadline;     /* uv_now() in ms by which the answer is due */
    const ms_route *route; /* the matched route, NULL when none */
    ms_arena arena;        /* free-for-all per-request memory */
    ms_trace_ctx trace;    /* the request's own span context (valid once the runtime traced it) */
    void *handler_data;    /* the handler's own (NULL at first), for ms_loop_hooks.answered */
    /* private to the runtime */
    ms_http_header *headers;
    int nheaders, headers_cap;
    const char *param_names[MS_HTTP_MAX_PARAMS], *param_values[MS_HTTP_MAX_PARAMS];
    int nparams;
    ms_buf resp_headers; /* extra "Name: value\r\n" lines */
    uint64_t start_ns;
    ms_http_conn *conn;
    bool responded;
};

/* A request header by name (ASCII case-insensitive), or NULL. */
const char *ms_http_header_get(const ms_http_request *req, const char *name);
/* The client's address ("127.0.0.1", "::1") into out (n >= 46); MS_ECONN when it is gone. */
int ms_http_peer_ip(const ms_http_request *req, char *out, size_t n);
/* A path parameter of the route template ("id" in /users/{id}), or NULL. */
const char *ms_http_param(const ms_http_request *req, const char *name);
/* A query parameter, decoded into the arena, or NULL. */
const char *ms_http_query_param(ms_http_request *req, const char *name);

/* Adds a response header (copied). Call before responding. */
void ms_http_set_header(ms_http_request *req, const char *name, const char *value);
/* Answers with `len` bytes of body (copied). */
void ms_http_respond(ms_http_request *req, int status, const char *content_type, const void *body,
                     size_t len);
/* Answers with a JSON document (application/json); consumes `doc`. */
void ms_http_respond_json(ms_http_request *req, int status, json_t *doc);

/* True when an If-None-Match header value matches `etag` (the quoted tag being answered):
 * "*", or a list of tags compared weakly (RFC 9110 13.1.2). False for NULL or malformed. */
bool ms_http_none_match(const char *header, const char *etag);

/* The standard reason phrase of a status ("Not Found"). */
const char *ms_http_reason(int status);

#endif
