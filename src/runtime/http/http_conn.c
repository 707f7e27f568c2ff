/*
 * http_conn.c — one HTTP/1.1 connection: read, frame, dispatch, answer, in order.
 *
 * The header block is framed and checked by our own scanner before http-parser sees it:
 * that is where the limits (16 KiB, 100 headers) and the request-smuggling shapes that a
 * lenient reading would accept (bare LF, obs-fold, space before the colon) are refused. A
 * chunked body is framed by our own decoder too (chunk lines held to RFC 9112 7.1.1, which
 * http-parser 2.9.4 is lenient about); a Content-Length body is left to http-parser.
 *
 * Deadlines: the header block must arrive within headers_timeout_ms of its first byte; a body
 * may pause at most body_timeout_ms and must arrive whole by body_deadline_ms after its
 * headers, plus a second per body_min_rate bytes received (408 and close).
 *
 * TLS (a listener with a certificate): the bytes of a connection pass through http_tls.c where
 * they enter (on_read) and leave (conn_send); everything between sees plaintext. The header
 * deadline runs from the connection's start until its handshake is done.
 *
 * One request at a time per connection: the parser is paused at the end of each message and
 * resumed after its answer, so pipelined requests are answered strictly in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/http_internal.h"
#include "runtime/http/http_metrics.h"
#include "runtime/http/http_tls.h"
#include "runtime/http/problem.h"
#include "runtime/http/router.h"
#include "runtime/core/banned.h"

typedef enum { PH_HEADERS, PH_BODY, PH_HANDLING, PH_CLOSING } conn_phase;
/* where the chunked decoder is: a chunk line, its data, the CRLF after it, the trailer */
typedef enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER } chunk_state;

struct ms_http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_timer_t reap; /* frees a connection that died during a handler, after it returns */
    ms_loop *loop;
    ms_http_conn *prev, *next;
    http_parser parser;
    ms_buf in;      /* bytes read and not yet consumed */
    size_t scanned; /* header or chunk-line scan progress in `in` */
    conn_phase phase;
    ms_http_request req;
    ms_buf body;
    char *url;
    size_t url_len;
    /* header assembly: 1 after a field, 2 after a value */
    int last_header_cb;
    int content_lengths, hosts;
    char content_length[24];
    bool te_seen, te_chunked_last, expect_continue, expect_other;
    /* a chunked body (our decoder): its state, the data left in the chunk, trailer bytes */
    bool chunked;
    chunk_state chunk;
    uint64_t chunk_left;
    size_t trailer_bytes;
    uint64_t body_start; /* loop time when the body's headers ended */
    int error_status;    /* set by a parser callback that refuses the message */
    const char *error_detail;
    bool message_done, in_dispatch, keep_alive, eof, reading, timer_is_header;
    bool write_blocked; /* answers pile up unread: no more requests until they drain */
    int refs;           /* tcp handle + timer handle + the request being handled */
    ms_http_tls *tls;   /* NULL: plain */
    ms_span *span;      /* the request's SERVER span, NULL when not recorded */
    /* the peer's address, asked of the kernel once (a span and an access line want it for
     * every request: a getpeername each was ~6 % of the gateway's CPU); "" until then */
    char peer_ip[64];
};

typedef struct {
    uv_write_t req;
    char *data;
} write_req;

enum {
    READ_CHUNK = 4096,
    MAX_BUFFERED = 64 * 1024,     /* unparsed input kept while a handler works */
    MAX_WRITE_QUEUE = 256 * 1024, /* unsent answers before pipelined requests wait */
    LINGER_MS = 2000,
    /* A chunk line (size, extensions, CRLF) is at most this long: llhttp allows 16 KiB of
     * extensions; nothing we serve uses them, so 4 KiB is plenty and bounds the scan. */
    MAX_CHUNK_LINE = 4096,
};

static void process(ms_http_conn *c);
static int start_reading(ms_http_conn *c);
static void conn_close(ms_http_conn *c);
static void conn_send_raw(ms_http_conn *c, ms_buf *out);
static void fail(ms_http_conn *c, int status, const char *detail);

/* ---- lifetime ---- */

static void conn_unref(ms_http_conn *c)
{
    if (--c->refs > 0)
        return;
    ms_loop *l = c->loop;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->nconns--;
    ms_http_metrics_connections(l->metrics, -1);
    ms_buf_release(&c->in);
    ms_buf_release(&c->body);
    ms_buf_release(&c->req.resp_headers);
    ms_arena_release(&c->req.arena);
    ms_http_tls_free(c->tls);
    ms_span_end(c->span); /* never answered: the span still tells how long it lived */
    free(c);
    ms_server__conns_gone(l);
}

static void on_handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void conn_close(ms_http_conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->tls) {
        /* best effort: a close_notify lets the client tell this close from a truncation */
        ms_buf bye = {0};
        ms_http_tls_close_notify(c->tls, &bye);
        if (bye.n) {
            uv_buf_t b = uv_buf_init(bye.p, (unsigned)bye.n);
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
        ms_buf_release(&bye);
    }
    c->phase = PH_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

/* ---- timers ---- */

static void on_idle_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

/* When the whole body must have arrived: body_deadline_ms after its headers, moved by
 * 1/body_min_rate seconds for every body byte received, so that a client keeping up the
 * minimum rate finishes and one trickling a byte at a time does not. Only body bytes count
 * (not chunk lines): a chunk extension cannot buy time. */
static uint64_t body_deadline(const ms_http_conn *c)
{
    const ms_server_config *cfg = c->loop->cfg;
    uint64_t grace = cfg->body_min_rate ? (uint64_t)c->body.n * 1000 / cfg->body_min_rate : 0;
    return c->body_start + cfg->body_deadline_ms + grace;
}

static void on_header_timeout(uv_timer_t *t)
{
    ms_http_conn *c = t->data;
    if (c->tls && !ms_http_tls_established(c->tls))
        conn_close(c); /* no session to carry a 408 */
    else if (c->phase != PH_BODY)
        fail(c, 408, "the request headers did not arrive in time");
    else if (uv_now(&c->loop->uv) >= body_deadline(c))
        fail(c, 408, "the request body did not arrive in time");
    else
        fail(c, 408, "the request body stalled");
}

/* The body's timer: the pause limit, or the whole-body deadline when that comes first. */
static void arm_body_timer(ms_http_conn *c)
{
    uint64_t now = uv_now(&c->loop->uv);
    uint64_t deadline = body_deadline(c);
    uint64_t wait = c->loop->cfg->body_timeout_ms;
    if (deadline <= now)
        wait = 0;
    else if (deadline - now < wait)
        wait = deadline - now;
    uv_timer_start(&c->timer, on_header_timeout, wait, 0);
}

static void on_resume(uv_timer_t *t)
{
    process(t->data);
}

static void on_reap(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, on_handle_closed); /* drops the request's reference */
}

/* ---- writing ---- */

static void on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    if (nread < 0)
        conn_close(s->data);
}

static void linger_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static __thread char sink[4096]; /* lingering reads are discarded */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(sink, sizeof sink);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    ms_http_conn *c = req->data;
    free(req);
    if (status < 0 || uv_is_closing((uv_handle_t *)&c->tcp)) {
        conn_close(c);
        return;
    }
    /* Lingering close: read and drop what the client still sends, so closing with unread
     * bytes does not turn into a reset that destroys the answer in flight. */
    if (uv_read_start((uv_stream_t *)&c->tcp, linger_alloc, on_linger_read) < 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_idle_timeout, LINGER_MS, 0);
}

/* Closes gracefully: pending answers are flushed first (uv_shutdown waits for writes). */
static void start_shutdown(ms_http_conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->tls) {
        ms_buf bye = {0};
        ms_http_tls_close_notify(c->tls, &bye);
        conn_send_raw(c, &bye); /* queued before the shutdown, which waits for it */
        if (uv_is_closing((uv_handle_t *)&c->tcp))
            return;
    }
    uv_shutdown_t *s = ms_xmalloc(sizeof *s);
    s->data = c;
    c->phase = PH_CLOSING;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    uv_timer_stop(&c->timer);
    if (uv_shutdown(s, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        free(s);
        conn_close(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    ms_http_conn *c = req->data;
    free(w->data);
    free(w);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->write_blocked &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < MAX_WRITE_QUEUE / 2) {
        c->write_blocked = false;
        uv_timer_start(&c->timer, on_resume, 0, 0);
    }
}

/* Sends the bytes in `out` as they are (taking its storage). */
static void conn_send_raw(ms_http_conn *c, ms_buf *out)
{
    if (out->n == 0 || uv_is_closing((uv_handle_t *)&c->tcp)) {
        ms_buf_release(out);
        return;
    }
    uv_buf_t b = uv_buf_init(out->p, (unsigned)out->n);
    int n = 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == UV_EAGAIN)
            n = 0;
        if (n < 0) {
            ms_buf_release(out);
            conn_close(c);
            return;
        }
    }
    if ((size_t)n == out->n) {
        ms_buf_release(out);
        return;
    }
    write_req *w = ms_xmalloc(sizeof *w);
    w->data = out->p;
    w->req.data = c;
    b = uv_buf_init(out->p + n, (unsigned)(out->n - (size_t)n));
    out->p = NULL;
    out->n = out->cap = 0;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        free(w->data);
        free(w);
        conn_close(c);
    }
}

/* Sends the plaintext `out` (taking its storage). */
static void conn_send(ms_http_conn *c, ms_buf *out)
{
    if (c->tls && !uv_is_closing((uv_handle_t *)&c->tcp) && ms_http_tls_seal(c->tls, out) < 0) {
        conn_close(c);
        return;
    }
    conn_send_raw(c, out);
}

/* ---- answering ---- */

const char *ms_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
    }
}

static const char *date_line(ms_loop *l)
{
    uint64_t now = (uint64_t)time(NULL);
    if (now != l->date_sec) {
        struct tm tm;
        time_t t = (time_t)now;
        gmtime_r(&t, &tm);
        strftime(l->date, sizeof l->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        l->date_sec = now;
    }
    return l->date;
}

/* Ends the current request: metrics, access log, then the next pipelined one. */
static void finish_request(ms_http_conn *c, int status)
{
    ms_http_request *r = &c->req;
    double secs = (double)(uv_hrtime() - r->start_ns) / 1e9;
    ms_http_metrics_observe(c->loop->metrics, r->route ? r->route->index : -1, r->method, status,
                            secs);
    if (c->span) {
        ms_span_set_int(c->span, "http.response.status_code", status);
        if (status >= 500)
            ms_span_error(c->span, ms_http_reason(status));
        ms_span_end(c->span);
        c->span = NULL;
    }
    if (c->loop->cfg->access_log || status >= 500) {
        char st[8], ms[32];
        snprintf(st, sizeof st, "%d", status);
        snprintf(ms, sizeof ms, "%.3f", secs * 1000);
        ms_log(status >= 500 ? MS_LOG_WARN : MS_LOG_INFO, "request", "method",
               r->method < 0 ? "-" : http_method_str((enum http_method)r->method), "path",
               r->path ? r->path : "", "endpoint", r->route ? r->route->template : "", "#status",
               st, "#duration_ms", ms, NULL);
    }
}

void ms_http_set_header(ms_http_request *req, const char *name, const char *value)
{
    /* header injection guard: a value must never end the line */
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        MS_BUG("response header with CR/LF");
    ms_buf *h = &req->resp_headers;
    ms_buf_adds(h, name);
    ms_buf_add(h, ": ", 2);
    ms_buf_adds(h, value);
    ms_buf_add(h, "\r\n", 2);
}

void ms_http_respond(ms_http_request *req, int status, const char *content_type, const void *body,
                     size_t len)
{
    ms_http_conn *c = req->conn;
    if (req->responded)
        MS_BUG("a request answered twice");
    req->responded = true;
    bool close_after = !c->keep_alive || c->loop->draining || c->error_status;
    bool no_body = status == 204 || status == 304 || status < 200;

    ms_buf out;
    ms_buf_init(&out, 256 + req->resp_headers.n + len);
    /* no printf here: five calls were a tenth of a small answer's time */
    ms_buf_add(&out, "HTTP/1.1 ", 9);
    ms_buf_add_int(&out, status);
    ms_buf_add(&out, " ", 1);
    ms_buf_adds(&out, ms_http_reason(status));
    ms_buf_add(&out, "\r\n", 2);
    ms_buf_adds(&out, date_line(c->loop));
    if (!no_body) {
        if (content_type) {
            ms_buf_add(&out, "Content-Type: ", 14);
            ms_buf_adds(&out, content_type);
            ms_buf_add(&out, "\r\n", 2);
        }
        ms_buf_add(&out, "Content-Length: ", 16);
        ms_buf_add_int(&out, (int64_t)len);
        ms_buf_add(&out, "\r\n", 2);
    }
    if (close_after)
        ms_buf_adds(&out, "Connection: close\r\n");
    else if (c->parser.http_minor == 0)
        ms_buf_adds(&out, "Connection: keep-alive\r\n");
    ms_buf_add(&out, req->resp_headers.p, req->resp_headers.n);
    ms_buf_add(&out, "\r\n", 2);
    if (!no_body && req->method != HTTP_HEAD)
        ms_buf_add(&out, body, len);
    bool dead = uv_is_closing((uv_handle_t *)&c->tcp);
    conn_send(c, &out);
    finish_request(c, status);
    const ms_loop_hooks *hooks = c->loop->hooks;
    if (hooks && hooks->answered)
        hooks->answered(req, status, no_body || req->method == HTTP_HEAD ? 0 : len,
                        uv_hrtime() - req->start_ns, hooks->arg);
    if (dead) {
        /* The connection died while the handler worked. Free it on the next loop turn: the
         * handler may still touch the request's memory on its way out. */
        uv_timer_init(&c->loop->uv, &c->reap);
        c->reap.data = c;
        uv_timer_start(&c->reap, on_reap, 0, 0);
        return;
    }
    /* The request's reference. The open handles still hold theirs (a close started by the
     * send above ends on a later loop turn), so this never frees c: no conn_unref. */
    c->refs--;
    if (close_after) {
        start_shutdown(c);
        return;
    }
    c->phase = PH_HEADERS;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > MAX_WRITE_QUEUE) {
        /* a client that pipelines without reading: wait until it reads (on_write resumes) */
        c->write_blocked = true;
        uv_timer_start(&c->timer, on_idle_timeout, c->loop->cfg->idle_timeout_ms, 0);
        return;
    }
    /* Continue with pipelined bytes after the handler has returned: it may still touch
     * the request's memory on its way out. */
    if (!c->in_dispatch)
        uv_timer_start(&c->timer, on_resume, 0, 0);
}

void ms_http_respond_json(ms_http_request *req, int status, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        MS_BUG("json_dumps failed");
    ms_http_respond(req, status, "application/json", text, strlen(text));
    free(text);
}

/* Refuses the current message and closes after the answer. */
static void fail(ms_http_conn *c, int status, const char *detail)
{
    if (c->phase == PH_CLOSING)
        return;
    ms_http_request *r = &c->req;
    if (!r->path)
        r->path = "";
    c->error_status = status;
    c->keep_alive = false;
    c->phase = PH_HANDLING;
    c->refs++;
    uv_timer_stop(&c->timer);
    ms_problem(r, status, detail);
}

/* ---- requests ---- */

const char *ms_http_header_get(const ms_http_request *req, const char *name)
{
    for (int i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

int ms_http_peer_ip(const ms_http_request *req, char *out, size_t n)
{
    struct sockaddr_storage sa;
    int len = sizeof sa;
    out[0] = '\0';
    ms_http_conn *c = req->conn;
    if (!c)
        return MS_ECONN;
    if (!c->peer_ip[0]) {
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) < 0)
            return MS_ECONN;
        int rc = sa.ss_family == AF_INET6
                     ? uv_ip6_name((const struct sockaddr_in6 *)&sa, c->peer_ip, sizeof c->peer_ip)
                     : uv_ip4_name((const struct sockaddr_in *)&sa, c->peer_ip, sizeof c->peer_ip);
        if (rc < 0) {
            c->peer_ip[0] = '\0';
            return MS_ECONN;
        }
    }
    size_t ip_len = strlen(c->peer_ip);
    if (ip_len >= n)
        return MS_ECONN;
    memcpy(out, c->peer_ip, ip_len + 1);
    return 0;
}

const char *ms_http_param(const ms_http_request *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->param_names[i], name) == 0)
            return req->param_values[i];
    return NULL;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

const char *ms_http_query_param(ms_http_request *req, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *p = req->query; *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            const char *v = p + nlen + 1;
            size_t vlen = len - nlen - 1;
            char *out = ms_arena_alloc(&req->arena, vlen + 1), *o = out;
            for (size_t i = 0; i < vlen; i++) {
                int hi, lo;
                if (v[i] == '+') {
                    *o++ = ' ';
                } else if (v[i] == '%' && i + 2 < vlen + 1 && (hi = hexval(v[i + 1])) >= 0 &&
                           (lo = hexval(v[i + 2])) >= 0) {
                    *o++ = (char)(hi * 16 + lo);
                    i += 2;
                } else {
                    *o++ = v[i];
                }
            }
            *o = '\0';
            return out;
        }
        p += len + (amp ? 1 : 0);
    }
    return NULL;
}

static void start_message(ms_http_conn *c)
{
    ms_http_request *r = &c->req;
    ms_arena_reset(&r->arena);
    r->method = -1; /* not parsed yet (0 would be DELETE) */
    r->path = NULL;
    r->query = "";
    r->body = "";
    r->body_len = 0;
    r->route = NULL;
    r->handler_data = NULL;
    r->trace = (ms_trace_ctx){0};
    r->headers = NULL;
    r->nheaders = r->headers_cap = 0;
    r->nparams = 0;
    r->resp_headers.n = 0;
    r->start_ns = uv_hrtime();
    r->responded = false;
    c->body.n = 0;
    c->url = NULL;
    c->url_len = 0;
    c->last_header_cb = 0;
    c->content_lengths = c->hosts = 0;
    c->te_seen = c->te_chunked_last = c->expect_continue = c->expect_other = false;
    c->chunked = false;
    c->chunk = CH_SIZE;
    c->chunk_left = 0;
    c->trailer_bytes = 0;
    c->error_status = 0;
    c->error_detail = NULL;
    c->message_done = false;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
}

/* Appends a piece to a string kept in the arena (callbacks may deliver a token in pieces). */
static char *arena_append(ms_arena *a, const char *old, size_t old_len, const char *p, size_t n)
{
    char *s = ms_arena_alloc(a, old_len + n + 1);
    if (old_len)
        memcpy(s, old, old_len);
    memcpy(s + old_len, p, n);
    s[old_len + n] = '\0';
    return s;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    ms_http_conn *c = p->data;
    c->url = arena_append(&c->req.arena, c->url, c->url_len, at, n);
    c->url_len += n;
    return 0;
}

/* Appends a header to the request (the table grows in the arena). */
static void add_header(ms_http_request *r, const char *name, const char *value)
{
    if (r->nheaders == r->headers_cap) {
        int cap = r->headers_cap ? r->headers_cap * 2 : 16;
        ms_http_header *h = ms_arena_alloc(&r->arena, (size_t)cap * sizeof *h);
        if (r->nheaders)
            memcpy(h, r->headers, (size_t)r->nheaders * sizeof *h);
        r->headers = h;
        r->headers_cap = cap;
    }
    r->headers[r->nheaders++] = (ms_http_header){name, value};
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    ms_http_conn *c = p->data;
    ms_http_request *r = &c->req;
    if (c->last_header_cb != 1) {
        add_header(r, "", "");
    }
    ms_http_header *h = &r->headers[r->nheaders - 1];
    h->name = arena_append(&r->arena, h->name, strlen(h->name), at, n);
    c->last_header_cb = 1;
    return 0;
}

static bool list_ends_with_chunked(const char *v)
{
    /* Transfer-Encoding is a comma list; only a final "chunked" frames a request body */
    const char *last = strrchr(v, ',');
    last = last ? last + 1 : v;
    while (*last == ' ' || *last == '\t')
        last++;
    size_t n = strlen(last);
    while (n && (last[n - 1] == ' ' || last[n - 1] == '\t'))
        n--;
    return n == 7 && strncasecmp(last, "chunked", 7) == 0;
}

/* Checks a completed header line (called when the next field starts or headers end). */
static int check_header(ms_http_conn *c, const ms_http_header *h)
{
    if (strcasecmp(h->name, "content-length") == 0) {
        if (c->content_lengths++ && strcmp(c->content_length, h->value) != 0) {
            c->error_detail = "conflicting Content-Length headers";
            return -1;
        }
        snprintf(c->content_length, sizeof c->content_length, "%s", h->value);
    } else if (strcasecmp(h->name, "transfer-encoding") == 0) {
        if (c->te_seen) {
            c->error_detail = "more than one Transfer-Encoding header";
            return -1;
        }
        c->te_seen = true;
        c->te_chunked_last = list_ends_with_chunked(h->value);
    } else if (strcasecmp(h->name, "host") == 0) {
        c->hosts++;
    } else if (strcasecmp(h->name, "expect") == 0) {
        if (strcasecmp(h->value, "100-continue") == 0)
            c->expect_continue = true;
        else
            c->expect_other = true;
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    ms_http_conn *c = p->data;
    ms_http_request *r = &c->req;
    ms_http_header *h = &r->headers[r->nheaders - 1];
    h->value = arena_append(&r->arena, h->value, strlen(h->value), at, n);
    c->last_header_cb = 2;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    ms_http_conn *c = p->data;
    ms_http_request *r = &c->req;
    const ms_server_config *cfg = c->loop->cfg;
    r->method = p->method;
    for (int i = 0; i < r->nheaders; i++) {
        if (check_header(c, &r->headers[i]) < 0) {
            c->error_status = 400;
            return -1;
        }
    }
    if (c->te_seen && c->content_lengths) {
        c->error_status = 400;
        c->error_detail = "Content-Length together with Transfer-Encoding";
        return -1;
    }
    if (c->te_seen && !c->te_chunked_last) {
        c->error_status = 400;
        c->error_detail = "Transfer-Encoding must end with chunked";
        return -1;
    }
    if (p->http_major != 1) {
        c->error_status = 505;
        c->error_detail = "only HTTP/1.0 and HTTP/1.1 are served";
        return -1;
    }
    if ((p->http_minor == 1 && c->hosts != 1) || c->hosts > 1) {
        c->error_status = 400;
        c->error_detail = "an HTTP/1.1 request needs exactly one Host header";
        return -1;
    }
    if (c->expect_other) {
        c->error_status = 417;
        c->error_detail = "only Expect: 100-continue is supported";
        return -1;
    }
    if (c->content_lengths && p->content_length > cfg->max_body_bytes) {
        c->error_status = 413;
        c->error_detail = "the request body is larger than the limit";
        return -1;
    }
    if (c->url &&
        (strncasecmp(c->url, "http://", 7) == 0 || strncasecmp(c->url, "https://", 8) == 0)) {
        /* absolute-form (RFC 9112 3.2.2): a server must accept it; the path is what routes */
        const char *authority = strstr(c->url, "//") + 2;
        const char *path = authority + strcspn(authority, "/?#");
        c->url = *path == '/' ? (char *)path : ms_arena_printf(&r->arena, "/%s", path);
    }
    if (!c->url || (c->url[0] != '/' && (strcmp(c->url, "*") != 0 || p->method != HTTP_OPTIONS))) {
        c->error_status = 400;
        c->error_detail = "the request target must be an absolute path";
        return -1;
    }
    char *hash = strchr(c->url, '#'); /* a fragment is never the server's business */
    if (hash)
        *hash = '\0';
    char *q = strchr(c->url, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    }
    r->path = c->url;
    if (c->expect_continue && (c->te_seen || p->content_length > 0)) {
        ms_buf cont;
        ms_buf_init(&cont, 32);
        ms_buf_adds(&cont, "HTTP/1.1 100 Continue\r\n\r\n");
        conn_send(c, &cont);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    ms_http_conn *c = p->data;
    if (c->body.n + n > c->loop->cfg->max_body_bytes) {
        c->error_status = 413;
        c->error_detail = "the request body is larger than the limit";
        return -1;
    }
    ms_buf_add(&c->body, at, n);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    ms_http_conn *c = p->data;
    c->message_done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/*
 * Frames the header block at the start of c->in. Returns its length once "\r\n\r\n" is seen,
 * 0 when more bytes are needed, -1 after refusing the message.
 */
static long scan_headers(ms_http_conn *c)
{
    const ms_server_config *cfg = c->loop->cfg;
    const char *b = c->in.p;
    size_t n = c->in.n, i = c->scanned;
    size_t limit = cfg->max_header_bytes;
    for (; i < n; i++) {
        if (i >= limit) {
            fail(c, 431, "the request header block is larger than the limit");
            return -1;
        }
        if (b[i] == '\n' && (i == 0 || b[i - 1] != '\r')) {
            fail(c, 400, "bare LF in the request head");
            return -1;
        }
        if (b[i] == '\r' && i + 1 < n && b[i + 1] != '\n') {
            fail(c, 400, "bare CR in the request head");
            return -1;
        }
        if (b[i] == '\n' && i >= 3 && b[i - 2] == '\n')
            break;
    }
    if (i == n) {
        c->scanned = n > 0 && b[n - 1] == '\r' ? n - 1 : n; /* re-check a trailing CR */
        return 0;
    }
    size_t end = i + 1;
    /* line by line: no obs-fold, no space before a colon, at most max_headers fields */
    int lines = 0;
    for (size_t s = 0; s < end - 2;) {
        const char *eol = memchr(b + s, '\r', end - s);
        size_t len = (size_t)(eol - (b + s));
        if (lines > 0) {
            if (b[s] == ' ' || b[s] == '\t') {
                fail(c, 400, "obsolete line folding in a header");
                return -1;
            }
            const char *colon = memchr(b + s, ':', len);
            if (!colon || colon == b + s) {
                fail(c, 400, "a header line without a name");
                return -1;
            }
            if (colon[-1] == ' ' || colon[-1] == '\t') {
                fail(c, 400, "white space between a header name and its colon");
                return -1;
            }
            if (lines > cfg->max_headers) {
                fail(c, 431, "more header fields than the limit");
                return -1;
            }
        }
        lines++;
        s += len + 2;
    }
    return (long)end;
}

/* ---- chunked bodies (RFC 9112 7.1) ---- */

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Field-value and quoted-pair bytes: HTAB, SP, VCHAR and obs-text; no other control byte. */
static bool is_text(unsigned char ch)
{
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

static size_t skip_bws(const char *b, size_t i, size_t len)
{
    while (i < len && (b[i] == ' ' || b[i] == '\t'))
        i++;
    return i;
}

static size_t skip_token(const char *b, size_t i, size_t len)
{
    while (i < len && is_tchar((unsigned char)b[i]))
        i++;
    return i;
}

/* Checks a chunk line without its CRLF: chunk-size [ chunk-ext ]. *size saturates at
 * UINT64_MAX (the caller's body limit refuses it). Returns 0 or -1 with *why. */
static int parse_chunk_line(const char *b, size_t len, uint64_t *size, const char **why)
{
    uint64_t v = 0;
    size_t i = 0;
    for (int d; i < len && (d = hexval(b[i])) >= 0; i++)
        v = v > UINT64_MAX >> 4 ? UINT64_MAX : v << 4 | (uint64_t)d;
    if (i == 0) {
        *why = "a chunk size must be hexadecimal digits";
        return -1;
    }
    *size = v;
    /* chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ) */
    while (i < len) {
        i = skip_bws(b, i, len);
        if (i == len || b[i] != ';')
            goto malformed;
        i = skip_bws(b, i + 1, len);
        size_t name = i;
        if ((i = skip_token(b, i, len)) == name)
            goto malformed;
        size_t eq = skip_bws(b, i, len);
        if (eq == len || b[eq] != '=')
            continue; /* a name alone; the loop wants ";" next (trailing BWS is refused) */
        i = skip_bws(b, eq + 1, len);
        if (i < len && b[i] == '"') {
            for (i++;; i++) {
                if (i == len) {
                    *why = "an unterminated quoted string in a chunk extension";
                    return -1;
                }
                unsigned char ch = (unsigned char)b[i];
                if (ch == '"')
                    break;
                if (ch == '\\' && ++i == len) {
                    *why = "an unterminated quoted string in a chunk extension";
                    return -1;
                }
                if (!is_text((unsigned char)b[i]))
                    goto malformed;
            }
            i++;
        } else {
            size_t value = i;
            if ((i = skip_token(b, i, len)) == value)
                goto malformed;
        }
    }
    return 0;
malformed:
    *why = "a malformed chunk extension";
    return -1;
}

/*
 * Frames the chunk line at the start of b[0..n). Returns its length with the CRLF and sets
 * *size; 0 when more bytes are needed (*scanned keeps the progress); -1 with *why (400).
 * http-parser 2.9.4 skipped anything up to a CR in an extension, bare LF included, so a
 * request hidden behind a front end that ends lines at LF ran; every LF here must follow CR.
 */
static long scan_chunk_line(const char *b, size_t n, size_t *scanned, uint64_t *size,
                            const char **why)
{
    size_t lim = n < MAX_CHUNK_LINE ? n : MAX_CHUNK_LINE;
    const char *lf = *scanned < lim ? memchr(b + *scanned, '\n', lim - *scanned) : NULL;
    if (!lf) {
        if (n >= MAX_CHUNK_LINE) {
            *why = "a chunk line longer than 4096 bytes";
            return -1;
        }
        *scanned = n;
        return 0;
    }
    size_t eol = (size_t)(lf - b);
    if (eol == 0 || b[eol - 1] != '\r') {
        *why = "bare LF in a chunk line";
        return -1;
    }
    if (parse_chunk_line(b, eol - 1, size, why) < 0)
        return -1;
    return (long)eol + 1;
}

/*
 * Frames one trailer line (or the empty line that ends the trailers) at the start of b[0..n),
 * at most `max` bytes long. Returns its length with the CRLF, 0 when more bytes are needed, -1
 * with *why and *status. Trailer fields are checked like header lines, then dropped: nothing
 * here reads them (RFC 9110 6.5.1 lets a recipient discard them).
 */
static long scan_trailer_line(const char *b, size_t n, size_t *scanned, size_t max, int *status,
                              const char **why)
{
    size_t lim = n < max ? n : max;
    const char *lf = *scanned < lim ? memchr(b + *scanned, '\n', lim - *scanned) : NULL;
    *status = 400;
    if (!lf) {
        if (n >= max) {
            *status = 431;
            *why = "the trailer section is larger than the header limit";
            return -1;
        }
        *scanned = n;
        return 0;
    }
    size_t eol = (size_t)(lf - b);
    if (eol == 0 || b[eol - 1] != '\r') {
        *why = "bare LF in the trailer section";
        return -1;
    }
    size_t len = eol - 1, name = skip_token(b, 0, len);
    if (len > 0 && (name == 0 || name == len || b[name] != ':')) {
        *why = "a malformed trailer field";
        return -1;
    }
    for (size_t i = name; i < len; i++) {
        if (!is_text((unsigned char)b[i])) {
            *why = "a control byte in a trailer field";
            return -1;
        }
    }
    return (long)eol + 1;
}

/*
 * Decodes the chunked body in c->in into c->body. Returns 1 when the message is complete, 0
 * when more bytes are needed, -1 after refusing it. Input is consumed once at the end (many
 * small chunks must not each move the rest of the buffer).
 */
static int decode_chunked(ms_http_conn *c)
{
    const ms_server_config *cfg = c->loop->cfg;
    const char *b = c->in.p;
    size_t n = c->in.n, off = 0;
    int rc = 0, status = 400;
    const char *why = NULL;
    for (;;) {
        if (c->chunk == CH_SIZE) {
            uint64_t size = 0;
            long len = scan_chunk_line(b + off, n - off, &c->scanned, &size, &why);
            if (len <= 0) {
                rc = len;
                break;
            }
            off += (size_t)len;
            c->scanned = 0;
            if (size > cfg->max_body_bytes - c->body.n) {
                rc = -1;
                status = 413;
                why = "the request body is larger than the limit";
                break;
            }
            c->chunk_left = size;
            c->chunk = size ? CH_DATA : CH_TRAILER;
        } else if (c->chunk == CH_DATA) {
            size_t take = n - off < c->chunk_left ? n - off : (size_t)c->chunk_left;
            if (take == 0)
                break;
            ms_buf_add(&c->body, b + off, take);
            off += take;
            c->chunk_left -= take;
            if (c->chunk_left == 0)
                c->chunk = CH_DATA_END;
        } else if (c->chunk == CH_DATA_END) {
            if (n - off >= 1 && b[off] != '\r') {
                rc = -1;
                why = "chunk data not followed by CRLF";
                break;
            }
            if (n - off < 2)
                break;
            if (b[off + 1] != '\n') {
                rc = -1;
                why = "chunk data not followed by CRLF";
                break;
            }
            off += 2;
            c->chunk = CH_SIZE;
        } else {
            size_t room = cfg->max_header_bytes - c->trailer_bytes;
            long len = scan_trailer_line(b + off, n - off, &c->scanned, room, &status, &why);
            if (len <= 0) {
                rc = len;
                break;
            }
            off += (size_t)len;
            c->scanned = 0;
            c->trailer_bytes += (size_t)len;
            if (len == 2) {
                rc = 1;
                break;
            }
        }
    }
    ms_buf_consume(&c->in, off);
    if (rc < 0)
        fail(c, status, why);
    return rc;
}

/* Probes and scrapes are not traced: they would drown the requests that matter. */
static bool untraced(const char *path)
{
    return strcmp(path, "/health") == 0 || strcmp(path, "/ready") == 0 ||
           strcmp(path, "/metrics") == 0;
}

/*
 * From here on the request's traceparent header is its own span's context: a handler that
 * passes it on (ms_http_client_req.traceparent) makes its calls children of this request's
 * span, not of the caller's, and a request that came without one still starts one trace.
 */
static void own_traceparent(ms_http_request *r, const ms_trace_ctx *incoming)
{
    /* a tracestate belongs to the valid traceparent it came with: else it goes */
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, "tracestate") == 0 &&
            !ms_tracestate_pass(r->headers[i].value, incoming)) {
            memmove(&r->headers[i], &r->headers[i + 1],
                    (size_t)(r->nheaders - i - 1) * sizeof *r->headers);
            r->nheaders--;
            i--;
        }
    char *tp = ms_arena_alloc(&r->arena, MS_TRACEPARENT_LEN + 1);
    ms_traceparent_format(&r->trace, tp);
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, "traceparent") == 0) {
            r->headers[i].value = tp;
            return;
        }
    add_header(r, "traceparent", tp);
}

/* The request's context (a child of its traceparent, or a new trace) and its SERVER span. */
static void start_span(ms_http_conn *c)
{
    ms_http_request *r = &c->req;
    const char *path = r->path ? r->path : "";
    if (c->loop->is_admin || untraced(path))
        return;
    ms_trace_ctx parent;
    ms_traceparent_parse(ms_http_header_get(r, "traceparent"), &parent);
    const char *method = http_method_str((enum http_method)r->method);
    char name[256]; /* "METHOD /route/{template}", cut to fit; no snprintf on this path */
    size_t mn = strlen(method), tn = r->route ? strlen(r->route->template) : 0;
    if (mn > 32)
        mn = 32;
    if (tn > sizeof name - mn - 2)
        tn = sizeof name - mn - 2;
    memcpy(name, method, mn);
    if (r->route) {
        name[mn] = ' ';
        memcpy(name + mn + 1, r->route->template, tn);
        mn += tn + 1;
    }
    name[mn] = '\0';
    ms_span *s = ms_span_start(name, MS_SPAN_SERVER, &parent, &r->trace);
    own_traceparent(r, &parent);
    if (!s)
        return;
    ms_span_set_str(s, "http.request.method", method);
    ms_span_set_str(s, "url.path", path);
    if (r->route)
        ms_span_set_str(s, "http.route", r->route->template);
    char ip[64];
    if (ms_http_peer_ip(r, ip, sizeof ip) == 0)
        ms_span_set_str(s, "client.address", ip);
    ms_span_set_str(s, "user_agent.original", ms_http_header_get(r, "User-Agent"));
    c->span = s;
}

static void dispatch(ms_http_conn *c)
{
    ms_http_request *r = &c->req;
    ms_loop *l = c->loop;
    c->phase = PH_HANDLING;
    uv_timer_stop(&c->timer);
    c->keep_alive = http_should_keep_alive(&c->parser) && !l->draining;
    ms_buf_add(&c->body, "", 1); /* NUL-terminate for handlers that treat it as text */
    c->body.n--;
    r->body = c->body.p;
    r->body_len = c->body.n;
    r->deadline = uv_now(&l->uv) + l->cfg->request_timeout_ms;
    c->refs++;
    char allow[128];
    const ms_route *route = NULL;
    ms_route_result m = ms_router_match(l->router, r, &route, allow, sizeof allow);
    if (m == MS_ROUTE_FOUND)
        r->route = route;
    start_span(c);
    ms_trace_set_current(&r->trace);
    switch (m) {
    case MS_ROUTE_FOUND:
        route->handler(r);
        break;
    case MS_ROUTE_BAD_METHOD:
        ms_http_set_header(r, "Allow", allow);
        ms_problem(r, 405, "this method is not allowed here");
        break;
    default:
        ms_problem(r, 404, "no such resource");
        break;
    }
    ms_trace_set_current(NULL);
}

static void feed_error(ms_http_conn *c)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->error_status) {
        int st = c->error_status;
        c->error_status = 0;
        fail(c, st, c->error_detail);
        return;
    }
    char detail[160];
    snprintf(detail, sizeof detail, "malformed request: %s", http_errno_description(e));
    fail(c, 400, detail);
}

static void process(ms_http_conn *c)
{
    c->in_dispatch = true;
    while ((c->phase == PH_HEADERS || c->phase == PH_BODY) && !c->write_blocked) {
        if (c->phase == PH_HEADERS) {
            /* RFC 9112 2.2: empty lines before a request line are ignored */
            while (c->in.n >= 2 && c->in.p[0] == '\r' && c->in.p[1] == '\n')
                ms_buf_consume(&c->in, 2);
            if (c->in.n == 0) {
                if (c->eof) {
                    conn_close(c);
                    break;
                }
                if (c->loop->draining) {
                    start_shutdown(c);
                    break;
                }
                c->timer_is_header = false;
                uv_timer_start(&c->timer, on_idle_timeout, c->loop->cfg->idle_timeout_ms, 0);
                break;
            }
            if (!c->timer_is_header) {
                c->timer_is_header = true;
                start_message(c);
                uv_timer_start(&c->timer, on_header_timeout, c->loop->cfg->headers_timeout_ms, 0);
            }
            long hlen = scan_headers(c);
            if (hlen < 0)
                break;
            if (hlen == 0) {
                if (c->eof)
                    conn_close(c);
                break;
            }
            size_t used = http_parser_execute(&c->parser, &parser_settings, c->in.p, (size_t)hlen);
            enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
            if (e != HPE_OK && e != HPE_PAUSED) {
                feed_error(c);
                break;
            }
            ms_buf_consume(&c->in, used);
            c->scanned = 0;
            c->timer_is_header = false;
            if (!c->message_done) {
                c->phase = PH_BODY;
                /* our decoder frames a chunked body; http-parser, paused before its first
                 * chunk line, sees no more of this message (te_seen means chunked last) */
                c->chunked = c->te_seen;
                c->body_start = uv_now(&c->loop->uv);
                arm_body_timer(c);
            }
        } else {
            if (c->in.n == 0) {
                if (c->eof)
                    conn_close(c);
                break;
            }
            if (c->chunked) {
                int rc = decode_chunked(c);
                if (rc < 0)
                    break;
                if (rc == 1)
                    c->message_done = true;
            } else {
                size_t used = http_parser_execute(&c->parser, &parser_settings, c->in.p, c->in.n);
                enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
                if (e != HPE_OK && e != HPE_PAUSED) {
                    feed_error(c);
                    break;
                }
                ms_buf_consume(&c->in, used);
            }
            if (!c->message_done) {
                if (c->eof)
                    conn_close(c);
                else
                    arm_body_timer(c);
                break;
            }
        }
        if (c->message_done) {
            http_parser_pause(&c->parser, 0);
            dispatch(c);
        }
    }
    c->in_dispatch = false;
    if (c->phase == PH_CLOSING)
        return;
    /* backpressure: stop reading while a handler works on a full buffer (a header block or a
     * body being read is bounded by its own limits, and needs its bytes to end) */
    bool want = c->phase != PH_HANDLING || c->in.n < MAX_BUFFERED;
    if (want != c->reading && !c->eof) {
        if (want) {
            if (start_reading(c) < 0)
                conn_close(c);
        } else {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = false;
        }
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ms_http_conn *c = h->data;
    (void)suggested;
    if (c->tls) { /* ciphertext: decrypted into c->in by on_read */
        size_t len;
        char *p = ms_http_tls_read_buf(&len);
        *buf = uv_buf_init(p, (unsigned)len);
        return;
    }
    char *p = ms_buf_reserve(&c->in, READ_CHUNK);
    *buf = uv_buf_init(p, (unsigned)(c->in.cap - c->in.n));
}

/* The client will send no more. */
static void peer_done(ms_http_conn *c)
{
    c->eof = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    if (c->phase == PH_HANDLING)
        return; /* answer first: a half-closed client still reads */
    process(c);
}

/* Takes the ciphertext a read delivered: plaintext goes to c->in, the handshake's and the
 * session's own bytes back to the socket. 1 when there is news for process(), else 0
 * (the connection may have closed). */
static int tls_read(ms_http_conn *c, const char *p, size_t n)
{
    ms_buf out = {0};
    size_t before = c->in.n;
    bool was_up = ms_http_tls_established(c->tls);
    int rc = ms_http_tls_input(c->tls, p, n, &c->in, &out);
    conn_send_raw(c, &out); /* an alert too, when the session failed */
    if (rc < 0 || uv_is_closing((uv_handle_t *)&c->tcp)) {
        conn_close(c);
        return 0;
    }
    if (rc == MS_HTTP_TLS_CLOSED) {
        peer_done(c);
        return 0;
    }
    /* a finished handshake without a request yet starts the idle wait (in process) */
    return c->in.n > before || (!was_up && ms_http_tls_established(c->tls));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ms_http_conn *c = s->data;
    if (nread == 0)
        return; /* EAGAIN: not EOF */
    if (nread < 0) {
        if (nread != UV_EOF || c->phase == PH_CLOSING) {
            conn_close(c);
            return;
        }
        peer_done(c);
        return;
    }
    if (!c->tls)
        c->in.n += (size_t)nread;
    else if (!tls_read(c, buf->base, (size_t)nread))
        return;
    if (c->phase == PH_HEADERS || c->phase == PH_BODY) {
        process(c);
    } else if (c->phase == PH_HANDLING && c->in.n >= MAX_BUFFERED) {
        uv_read_stop(s); /* backpressure: resumed by process() after the answer */
        c->reading = false;
    }
}

static int start_reading(ms_http_conn *c)
{
    c->reading = true;
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

void ms_http__adopt(ms_loop *l, int fd)
{
    ms_http_conn *c = ms_xcalloc(1, sizeof *c);
    c->loop = l;
    uv_tcp_init(&l->uv, &c->tcp);
    uv_timer_init(&l->uv, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->refs = 2;
    c->req.conn = c;
    c->req.loop = l;
    ms_arena_init(&c->req.arena);
    c->next = l->conns;
    if (c->next)
        c->next->prev = c;
    l->conns = c;
    l->nconns++;
    ms_http_metrics_connections(l->metrics, 1);
    if (uv_tcp_open(&c->tcp, fd) < 0) {
        close(fd);
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (l->tls && !(c->tls = ms_http_tls_new(l->tls))) {
        conn_close(c);
        return;
    }
    if (start_reading(c) < 0) {
        conn_close(c);
        return;
    }
    if (c->tls) /* the handshake must finish by the header deadline */
        uv_timer_start(&c->timer, on_header_timeout, l->cfg->headers_timeout_ms, 0);
    else
        uv_timer_start(&c->timer, on_idle_timeout, l->cfg->idle_timeout_ms, 0);
}

void ms_http__drain(ms_loop *l)
{
    for (ms_http_conn *c = l->conns, *next; c; c = next) {
        next = c->next;
        if (c->phase == PH_HEADERS && c->in.n == 0)
            start_shutdown(c);
    }
}

void ms_http__close_all(ms_loop *l)
{
    for (ms_http_conn *c = l->conns, *next; c; c = next) {
        next = c->next;
        conn_close(c);
    }
}
