/*
 * access_log.c — the gateway's access line: one INFO line "access" per answer of the public
 * listener (gateway_internal.h), with method, path (never the query: it may hold tokens),
 * route (the template; absent for a 404), status, duration_ms, bytes_in, bytes_out,
 * request_id, client (the peer's address), user (once auth has run), upstream (the instance
 * that answered), cache (HIT or MISS for a cacheable read), and the request's trace_id and
 * span_id. No header, cookie or body is ever written.
 *
 * Threading: the flag is set at start; lines are written on the loop threads, each built on
 * the stack and written with one write(2) (log.h), no allocation.
 */
#include <stdio.h>

#include "runtime/core/log.h"
#include "runtime/obs/trace.h"
#include "runtime/http/server.h"
#include "services/gateway/gateway_admin.h"
#include "services/gateway/gateway_internal.h"
#include "runtime/core/banned.h"

enum { ACCESS_MAX_FIELDS = 16 };

static bool access_on = true;

void gateway_access_log_enable(bool on)
{
    access_on = on;
}

void gateway_access_log(ms_http_request *req, int status, size_t body_bytes, uint64_t elapsed_ns,
                        void *arg)
{
    (void)arg;
    if (!access_on || !ms_log_enabled(MS_LOG_INFO))
        return;
    const gateway_call *c = req->handler_data;
    const char *kv[2 * ACCESS_MAX_FIELDS];
    size_t n = 0;
#define FIELD(k, v) (kv[2 * n] = (k), kv[2 * n + 1] = (v), n++)
    char st[16], ms[32], in[24], out[24], ip[64], trace_id[MS_TRACE_ID_HEX + 1],
        span_id[MS_SPAN_ID_HEX + 1];
    snprintf(st, sizeof st, "%d", status);
    snprintf(ms, sizeof ms, "%.3f", (double)elapsed_ns / 1e6);
    snprintf(in, sizeof in, "%zu", req->body_len);
    snprintf(out, sizeof out, "%zu", body_bytes);
    FIELD("method", req->method < 0 ? "-" : http_method_str((enum http_method)req->method));
    FIELD("path", req->path ? req->path : "");
    if (req->route)
        FIELD("route", req->route->template);
    FIELD("#status", st);
    FIELD("#duration_ms", ms);
    FIELD("#bytes_in", in);
    FIELD("#bytes_out", out);
    if (c && c->request_id)
        FIELD("request_id", c->request_id);
    if (ms_http_peer_ip(req, ip, sizeof ip) == 0)
        FIELD("client", ip);
    if (c && c->user_id)
        FIELD("user", c->user_id);
    if (c && c->upstream)
        FIELD("upstream", c->upstream);
    if (c && c->cache)
        FIELD("cache", c->cache);
    if (req->trace.valid) {
        ms_trace_ids_hex(&req->trace, trace_id, span_id);
        FIELD("trace_id", trace_id);
        FIELD("span_id", span_id);
    }
#undef FIELD
    /* the ids are the request's own, written above: not the thread's context a second time */
    const ms_trace_ctx *current = ms_trace_current();
    ms_trace_set_current(NULL);
    ms_log_fields(MS_LOG_INFO, "access", kv, n);
    ms_trace_set_current(current);
}
