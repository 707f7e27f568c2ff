/*
 * proxy.c — one request through the gateway's stages (gateway_internal.h), and the call to the
 * service that owns its route.
 *
 * The request goes as it came (method, path and query, headers, body) but for the headers of
 * one hop (Connection and those it governs, Host, Content-Length, Transfer-Encoding), which
 * the client writes itself, and the identity headers, which only auth.c adds; the caller's
 * traceparent is continued. Every request carries an X-Request-Id: the client's when it sent a
 * sane one, else a new one, also on the answer. The service's answer comes back with its
 * status, body and headers (but those of one hop). A service that cannot be reached is a 503,
 * one that has not answered by the route's deadline a 504; retries follow the client's rules
 * (idempotent methods, or a request with an Idempotency-Key).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/http/problem.h"
#include "runtime/http/server.h"
#include "services/gateway/gateway_internal.h"
#include "runtime/core/banned.h"

enum { REQUEST_ID_MAX = 128 };

/* Headers of one hop, or written by whoever sends: never forwarded either way. */
static bool is_hop_header(const char *name)
{
    static const char *const hop[] = {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "traceparent",
        "x-request-id",
        "date",
        "server",
    };
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (strcasecmp(name, hop[i]) == 0)
            return true;
    return false;
}

/* A client's request id is kept when it is short and plain (it lands in logs and headers). */
static bool sane_request_id(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (id[i] < 0x21 || id[i] > 0x7e)
            return false;
    return true;
}

bool gateway_call_add_header(gateway_call *c, const char *name, const char *value)
{
    if (c->nfwd >= GATEWAY_MAX_FORWARDED)
        return false;
    c->fwd[c->nfwd++] = (ms_http_header){name, value};
    return true;
}

static void answered(int err, const ms_http_client_resp *resp, void *arg)
{
    gateway_call *c = arg;
    ms_http_request *req = c->req;
    if (resp->instance)
        c->upstream = ms_arena_strndup(&req->arena, resp->instance, strlen(resp->instance));
    if (err < 0) {
        int code = err == MS_ETIMEDOUT ? MS_ETIMEDOUT : MS_ECONN;
        ms_problem_from_error(req, code,
                              code == MS_ETIMEDOUT
                                  ? "the service did not answer within the route's deadline"
                                  : "the service cannot be reached");
        return;
    }
    if (ms_log_enabled(MS_LOG_DEBUG)) {
        char st[8], tries[8];
        snprintf(st, sizeof st, "%d", resp->status);
        snprintf(tries, sizeof tries, "%d", resp->attempts);
        ms_log(MS_LOG_DEBUG, "upstream answered", "service",
               gateway_backend_name(c->route->backend), "instance", c->upstream, "#status", st,
               "#attempts", tries, NULL);
    }
    gateway_cache_observe(c, resp);
    gateway_session_observe(c, resp);
    for (int i = 0; i < resp->nheaders; i++)
        if (!is_hop_header(resp->headers[i].name))
            ms_http_set_header(req, resp->headers[i].name, resp->headers[i].value);
    ms_http_respond(req, resp->status, ms_http_client_resp_header(resp, "Content-Type"), resp->body,
                    resp->body_len);
}

void gateway_forward(gateway_call *c)
{
    ms_http_request *req = c->req;
    ms_http_client *client = req->loop->service;
    int backend = c->route->backend;
    if (gateway_proc.upstreams[backend].n == 0 || !client) {
        ms_problem_from_error(req, MS_ECONN, "the service behind this route is not configured");
        return;
    }
    gateway_session_apply(c);
    const char *path =
        req->query[0] ? ms_arena_printf(&req->arena, "%s?%s", req->path, req->query) : req->path;
    ms_http_client_req call = {
        .upstream = gateway_backend_name(backend),
        .method = req->method,
        .path = path,
        .headers = c->fwd,
        .nheaders = c->nfwd,
        .content_type = ms_http_header_get(req, "Content-Type"),
        .body = req->body,
        .body_len = req->body_len,
        .deadline = c->deadline,
        /* a keyed write answers the same to a repeat: safe to retry on another instance */
        .idempotent = ms_http_header_get(req, "Idempotency-Key") != NULL,
        .traceparent = ms_http_header_get(req, "traceparent"),
    };
    int rc = ms_http_client_request(client, &call, answered, c);
    if (rc < 0)
        ms_problem_from_error(req, rc == MS_EINVAL ? MS_EMALFORMED : MS_ECONN,
                              "the request cannot be forwarded");
}

void gateway_proxy(ms_http_request *req)
{
    gateway_call *c = ms_arena_alloc(&req->arena, sizeof *c);
    memset(c, 0, sizeof *c);
    c->req = req;
    req->handler_data = c; /* for the access line */
    c->route = &gateway_proc.routes[req->route->index];
    c->request_id = ms_http_header_get(req, "X-Request-Id");
    if (!sane_request_id(c->request_id)) {
        char *id = ms_arena_alloc(&req->arena, MS_UUID_LEN + 1);
        ms_uuid_new(id);
        c->request_id = id;
    }
    ms_http_set_header(req, "X-Request-Id", c->request_id);
    /* the route's deadline, not the listener's: a checkout may outwait the service's own */
    c->deadline = uv_now(&req->loop->uv) + c->route->deadline_ms;
    /* the request's headers are the runtime's (http.h): read here, copied by the client */
    c->fwd = ms_arena_alloc(&req->arena, sizeof *c->fwd * GATEWAY_MAX_FORWARDED);
    for (int i = 0; i < req->nheaders; i++)
        if (!is_hop_header(req->headers[i].name) &&
            !gateway_is_identity_header(req->headers[i].name))
            gateway_call_add_header(c, req->headers[i].name, req->headers[i].value);
    gateway_call_add_header(c, "X-Request-Id", c->request_id);
    if (gateway_ratelimit(c) < 0 || gateway_auth(c) < 0)
        return;
    gateway_cache_get(c);
}
