/*
 * access_log.c — the gateway's access line: one INFO line "access" per answer of the public
 * listener (gateway_internal.h), with method, path (never the query: it may hold tokens),
 * route (the template; absent for a 404), status, duration_ms, bytes_in, bytes_out,
 * request_id, client (the peer's address), user (once auth has run), upstream (the instance
 * that answered), cache (HIT, MISS or BYPASS for a cacheable read), and the request's trace_id and
 * span_id. No header, cookie or body is ever written.
 *
 * Threading: the flag is set at start; lines are built on the loop threads (log.h's format)
 * into a buffer of the loop's own, written with one write(2) when the loop is about to wait
 * for I/O (a uv_prepare handle: whatever one iteration answered goes out before it sleeps) or
 * when the next line would not fit. A write(2) per line was a tenth of the gateway's CPU on
 * the forwarded GET. A clean shutdown loses nothing: the draining loop writes what it holds
 * and from then on writes each line at once; a crash loses at most the lines of the iteration
 * under way. Lines of one iteration may reach stderr after the other log lines written during
 * it (each keeps its own ts).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "runtime/core/log.h"
#include "runtime/obs/trace.h"
#include "runtime/http/server.h"
#include "services/gateway/gateway_admin.h"
#include "services/gateway/gateway_internal.h"
#include "runtime/core/banned.h"

enum { ACCESS_MAX_FIELDS = 16, ACCESS_BUF = 32 * 1024 };

static bool access_on = true;

typedef struct access_buf {
    uv_prepare_t flush; /* runs before the loop waits for I/O */
    ms_loop *loop;
    size_t n;
    char p[ACCESS_BUF];
} access_buf;

/* The loop thread's buffer (NULL until its first line) and whether its loop began draining
 * (then lines are written at once). */
static _Thread_local access_buf *tl_buf;
static _Thread_local bool tl_unbuffered;

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* stderr is gone: as log.h, the line is lost */
        p += w;
        n -= (size_t)w;
    }
}

static void buf_flush(access_buf *b)
{
    write_all(b->p, b->n);
    b->n = 0;
}

static void on_buf_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_prepare(uv_prepare_t *h)
{
    access_buf *b = h->data;
    buf_flush(b);
    if (b->loop->draining) { /* the loop ends soon: nothing may stay behind */
        tl_buf = NULL;
        tl_unbuffered = true;
        uv_close((uv_handle_t *)h, on_buf_closed);
    }
}

/* The loop's buffer, set up on its first line; NULL when lines are to be written at once. */
static access_buf *loop_buf(ms_loop *l)
{
    if (tl_buf || tl_unbuffered || !l)
        return tl_buf;
    if (l->draining) {
        tl_unbuffered = true;
        return NULL;
    }
    access_buf *b = malloc(sizeof *b);
    if (!b)
        return NULL;
    b->loop = l;
    b->n = 0;
    b->flush.data = b;
    /* a referenced handle: a draining loop runs once more, so on_prepare writes what is held */
    if (uv_prepare_init(&l->uv, &b->flush) < 0) {
        free(b);
        return NULL;
    }
    uv_prepare_start(&b->flush, on_prepare);
    tl_buf = b;
    return b;
}

void gateway_access_log_enable(bool on)
{
    access_on = on;
}

/* v in decimal into out, with `frac` digits after a point (v in units of 10^-frac). */
static void decimal(char *out, size_t cap, uint64_t v, int frac)
{
    char tmp[32], *p = tmp + sizeof tmp;
    int digits = 0;
    do {
        if (frac && digits == frac)
            *--p = '.';
        *--p = (char)('0' + v % 10);
        v /= 10;
        digits++;
    } while (v != 0 || digits <= frac);
    size_t n = (size_t)(tmp + sizeof tmp - p);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
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
    /* by hand: four snprintf calls (one of a double) were a fifth of the line's cost */
    decimal(st, sizeof st, (uint64_t)(status < 0 ? 0 : status), 0);
    decimal(ms, sizeof ms, elapsed_ns / 1000, 3);
    decimal(in, sizeof in, req->body_len, 0);
    decimal(out, sizeof out, body_bytes, 0);
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
    access_buf *b = loop_buf(req->loop);
    if (b && b->n + MS_LOG_LINE_MAX > sizeof b->p)
        buf_flush(b);
    if (b) {
        b->n += ms_log_format_fields(b->p + b->n, MS_LOG_INFO, "access", kv, n);
        return;
    }
    char line[MS_LOG_LINE_MAX];
    write_all(line, ms_log_format_fields(line, MS_LOG_INFO, "access", kv, n));
}
