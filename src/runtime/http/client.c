/*
 * client.c — the service client: calls, attempts, pooled connections; see client.h.
 *
 * A call makes attempts; an attempt takes an idle pooled connection of the chosen instance or
 * opens one, writes the request and parses the answer with http-parser (HTTP_RESPONSE). One
 * request per connection at a time (no pipelining). An idle connection keeps reading: bytes or
 * EOF on it mean the server is done with it, so it is closed at once and never written to.
 *
 * Every call has one timer, re-armed for what it waits for: the connect limit (min of the
 * connect timeout and the deadline), the deadline, or a retry's backoff. An attempt never
 * starts inside ms_http_client_request (a zero timer starts the first), so callbacks never
 * run inside the caller's own call.
 *
 * Lifetimes: the client counts its live objects (itself, its sweep timer, each connection until
 * its handle closed and its name lookup returned, each call until its timer closed) and frees
 * itself with the last.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/http/client.h"
#include "runtime/http/client_internal.h"
#include "runtime/http/client_policy.h"
#include "runtime/core/banned.h"

enum { MAX_UPSTREAMS = 16, BACKOFF_BASE_MS = 25, BACKOFF_CAP_MS = 250, READ_BUF = 64 * 1024 };

/*
 * The retry budget (per upstream and client), counted in thousandths of a retry so that it stays
 * in integers: each first attempt deposits a fifth of a retry (retries add at most 20 % to the
 * attempts), each retry withdraws a whole one. The deposits are capped so that a long healthy
 * time cannot bank an unbounded burst of retries; a reserve refilled with time (retry_min_per_s,
 * holding RETRY_RESERVE_S seconds' worth) lets a quiet upstream retry now and then.
 */
enum {
    RETRY_UNIT = 1000,
    RETRY_DEPOSIT = RETRY_UNIT / 5,
    RETRY_BANK_MAX = 100 * RETRY_UNIT,
    RETRY_RESERVE_S = 3,
};

typedef struct conn conn;
typedef struct call call;
typedef struct upstream upstream;
typedef struct join join;

typedef struct instance {
    ms_http_upstream_addr addr;
    char name[MS_HTTP_HOST_MAX + 10]; /* "host:port" ("[v6]:port"): Host header and metrics */
    upstream *up;
    bool numeric; /* an IP literal: no name lookup */
    struct sockaddr_storage sa;
    bool down, probing;
    uint64_t down_until;
    uint32_t down_ms;
    conn *idle; /* newest first */
    int nidle;
    /* the upstream's list, each connection and each call naming it: a removed instance lives
     * until its last connection and call are gone */
    int refs;
    bool removed;
    int active; /* attempts in flight */
    /* outlier ejection */
    int consecutive; /* failures (or slow answers) in a row */
    bool ejected;
    int times_ejected;
    uint64_t ejected_until;
    /* active health checks */
    ms_health health;
    bool checking; /* a check in flight */
    ms_http_client__inst *series;
} instance;

struct upstream {
    ms_http_client *c;
    char *name;
    instance **inst;
    int n;
    unsigned rr;
    int64_t bank;        /* the retry budget's deposits, at most RETRY_BANK_MAX */
    int64_t reserve;     /* its floor, at most retry_min_per_s × RETRY_RESERVE_S retries */
    uint64_t reserve_at; /* uv_now of the reserve's last refill */
    int nejected;
    ms_breaker br;
    ms_http_client__up *series;
};

struct ms_http_client {
    uv_loop_t *loop;
    ms_http_client_config cfg;
    upstream ups[MAX_UPSTREAMS];
    int nups;
    call *calls; /* pending calls */
    conn *conns; /* every open connection */
    uv_timer_t sweep, health;
    bool health_on;
    uint64_t rng; /* xorshift state: least-request's random choices */
    int live;
    bool closing;
    char readbuf[READ_BUF]; /* libuv calls read right after alloc: one buffer serves all */
};

typedef enum { K_CONNECTING, K_BUSY, K_IDLE, K_CLOSING } conn_state;

struct conn {
    ms_http_client *c;
    instance *in;
    conn_state state;
    int refs; /* the handle, plus a pending name lookup */
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_getaddrinfo_t gai;
    uv_write_t write;
    ms_buf out; /* the request being written (lives until the handle closed) */
    http_parser parser;
    bool reused, resolving, writing;
    uint64_t idle_since;
    call *call;
    conn *prev, *next;   /* client->conns */
    conn *iprev, *inext; /* instance->idle */
};

typedef enum { S_BACKOFF, S_CONNECT, S_SENT, S_DONE } call_state;

struct call {
    ms_http_client *c;
    upstream *up;
    call_state state;
    int method;
    char *path;
    ms_buf tail; /* the header lines after Host, then CRLF and the body */
    uint64_t deadline, start_ns;
    bool idempotent;
    int attempts;
    instance *inst;     /* of the current or last attempt */
    bool probe;         /* this attempt is its instance's probe */
    bool trying;        /* an attempt is in flight on inst (counted in its active requests) */
    bool trial;         /* the call is one of the half-open breaker's trials */
    ms_outcome outcome; /* of the last attempt ended: what the breaker records for the call */
    bool refused;       /* the breaker refused the first attempt */
    bool check;         /* an active health check, pinned to inst: no retry, breaker or metrics */
    int last_err;       /* of the attempt before a planned retry (0: an answer) */
    uint64_t attempt_at;
    conn *conn;
    uv_timer_t timer;
    ms_http_client_cb cb;
    void *arg;
    join *join;
    int join_index;
    /* the response being read */
    bool got_bytes, msg_done, head;
    int perr; /* set by a parser callback that refuses the response */
    int status;
    size_t hbytes;
    int last_header_cb; /* 1 after a field, 2 after a value */
    ms_arena arena;
    ms_http_header *headers;
    int nheaders, headers_cap;
    ms_buf body;
    ms_trace_ctx parent; /* the caller's (from its traceparent): current in the callback */
    ms_span *span;       /* the call's CLIENT span, NULL when not recorded */
    call *prev, *next;
};

typedef struct {
    ms_http_client_result r;
    ms_arena arena;
    ms_buf body;
} join_slot;

struct join {
    int n, left;
    ms_http_client_all_cb cb;
    void *arg;
    join_slot *slots;
};

static void inst_unref(instance *in)
{
    if (in && --in->refs == 0)
        free(in);
}

/* Points *slot at `in` (or NULL), moving the reference the slot holds. */
static void inst_set(instance **slot, instance *in)
{
    if (*slot == in)
        return;
    if (in)
        in->refs++;
    inst_unref(*slot);
    *slot = in;
}

static void client_unref(ms_http_client *c)
{
    if (--c->live == 0) {
        for (int i = 0; i < c->nups; i++) {
            for (int j = 0; j < c->ups[i].n; j++)
                inst_unref(c->ups[i].inst[j]);
            free(c->ups[i].name);
            free(c->ups[i].inst);
        }
        free((char *)c->cfg.health_path);
        free(c);
    }
}

/* ---- health ---- */

static void mark_down(instance *in)
{
    ms_http_client *c = in->up->c;
    if (in->removed) /* out of the list: no view to keep */
        return;
    if (!in->down) {
        in->down = true;
        in->down_ms = c->cfg.down_base_ms;
        ms_http_client__down(c->cfg.metrics, in->up->name, in->name, 1);
    } else {
        in->down_ms = in->down_ms >= c->cfg.down_max_ms / 2 ? c->cfg.down_max_ms : in->down_ms * 2;
    }
    in->down_until = uv_now(c->loop) + in->down_ms;
    in->probing = false;
}

static void mark_up(instance *in)
{
    if (in->removed)
        return;
    if (in->down) {
        in->down = false;
        ms_http_client__down(in->up->c->cfg.metrics, in->up->name, in->name, -1);
    }
    in->probing = false;
}

/* Down (passively) or ejected: the next call after its time is the probe. */
static bool needs_probe(const instance *in)
{
    return in->down || in->ejected;
}

static bool usable(const instance *in, uint64_t now)
{
    if (in->health.down || (in->down && now < in->down_until) ||
        (in->ejected && now < in->ejected_until))
        return false;
    return !(needs_probe(in) && in->probing);
}

static uint64_t back_at(const instance *in)
{
    uint64_t t = in->down ? in->down_until : 0;
    if (in->ejected && in->ejected_until > t)
        t = in->ejected_until;
    return t;
}

static uint32_t next_random(ms_http_client *c)
{
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return (uint32_t)(c->rng >> 32);
}

/* Round robin over the usable instances, preferring one other than `avoid`. */
static instance *pick_round_robin(upstream *u, instance *avoid, uint64_t now)
{
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < u->n; i++) {
            int idx = (int)((u->rr + (unsigned)i) % (unsigned)u->n);
            instance *in = u->inst[idx];
            if (usable(in, now) && (pass == 1 || in != avoid)) {
                u->rr = (unsigned)idx + 1;
                return in;
            }
        }
    }
    return NULL;
}

/* The less busy of two random usable instances (other than `avoid` when there are others). */
static instance *pick_least_request(upstream *u, instance *avoid, uint64_t now)
{
    instance *cand[MS_HTTP_UPSTREAM_MAX];
    for (int pass = 0; pass < 2; pass++) {
        int n = 0;
        for (int i = 0; i < u->n; i++)
            if (usable(u->inst[i], now) && (pass == 1 || u->inst[i] != avoid))
                cand[n++] = u->inst[i];
        if (n == 1)
            return cand[0];
        if (n > 1) {
            int a = (int)(next_random(u->c) % (unsigned)n);
            int b = (int)(next_random(u->c) % (unsigned)(n - 1));
            if (b >= a)
                b++;
            return cand[b]->active < cand[a]->active ? cand[b] : cand[a];
        }
    }
    return NULL;
}

/*
 * Picks the instance of an attempt, preferring one other than `avoid` (the last one tried); when
 * none is usable, one not failing active checks that is back soonest (never refuse without
 * trying).
 */
static instance *pick(call *k, instance *avoid)
{
    upstream *u = k->up;
    uint64_t now = uv_now(u->c->loop);
    instance *chosen = u->c->cfg.balance == MS_BALANCE_LEAST_REQUEST
                           ? pick_least_request(u, avoid, now)
                           : pick_round_robin(u, avoid, now);
    k->probe = false;
    if (chosen && needs_probe(chosen)) { /* its time out is over: this call is the probe */
        chosen->probing = true;
        k->probe = true;
    }
    if (!chosen) {
        for (int i = 0; i < u->n; i++) {
            instance *in = u->inst[i];
            if (!chosen || (chosen->health.down && !in->health.down) ||
                (chosen->health.down == in->health.down && back_at(in) < back_at(chosen)))
                chosen = in;
        }
    }
    return chosen;
}

/* The attempt's instance is no longer being probed by it (the call ended or moves on). */
static void end_probe(call *k)
{
    if (k->probe && k->inst)
        k->inst->probing = false;
    k->probe = false;
}

/* ---- outlier ejection, the breaker ---- */

static void eject(instance *in, uint64_t now)
{
    ms_http_client *c = in->up->c;
    in->times_ejected++;
    in->ejected_until =
        now + ms_eject_ms(c->cfg.eject_base_ms, c->cfg.eject_max_ms, in->times_ejected);
    ms_http_client__ejected(in->up->series, in->series, in->ejected ? 0 : 1);
    if (!in->ejected) {
        in->ejected = true;
        in->up->nejected++;
    }
    in->consecutive = 0;
    in->probing = false;
}

static void unject(instance *in)
{
    if (!in->ejected)
        return;
    in->ejected = false;
    in->up->nejected--;
    ms_http_client__ejected(in->up->series, in->series, -1);
}

/*
 * Whether the upstream's breaker lets the call's next attempt go (a health check always goes).
 * A call is admitted once, before its first attempt; a retry only stops when the breaker has
 * opened meanwhile.
 */
static bool breaker_admit(call *k)
{
    upstream *u = k->up;
    if (k->check)
        return true;
    ms_breaker_override o = ms_http_client__override(u->series);
    if (o != MS_BREAKER_AUTO)
        return o == MS_BREAKER_FORCE_CLOSED;
    if (k->attempts > 0)
        return u->br.state != MS_BREAKER_OPEN;
    ms_breaker_state before = u->br.state;
    bool ok = ms_breaker_admit(&u->br, uv_now(u->c->loop), &k->trial);
    ms_http_client__breaker(u->series, before, u->br.state);
    return ok;
}

/*
 * The attempt in flight ended with outcome `o` (a success slower than slow_ms becomes SLOW):
 * passive health (`passive` -1: down, +1: up, 0: no word), ejection; the outcome is kept for the
 * breaker, which call_finish tells.
 */
static void attempt_end(call *k, ms_outcome o, int passive)
{
    if (!k->trying)
        return;
    k->trying = false;
    instance *in = k->inst;
    upstream *u = k->up;
    ms_http_client *c = k->c;
    in->active--;
    ms_http_client__active(u->series, in->series, -1);
    if (k->check || c->closing) {
        end_probe(k);
        return;
    }
    uint64_t now = uv_now(c->loop);
    if (o == MS_OUTCOME_OK && now - k->attempt_at > c->cfg.slow_ms)
        o = MS_OUTCOME_SLOW;
    if (!in->removed) {
        if (passive < 0)
            mark_down(in);
        else if (passive > 0)
            mark_up(in);
        if (o == MS_OUTCOME_FAIL || o == MS_OUTCOME_SLOW) {
            in->consecutive++;
            /* an ejected instance's probe failing sends it back out for longer */
            if (in->ejected ? k->probe
                            : in->consecutive >= c->cfg.eject_consecutive &&
                                  ms_eject_allowed(u->n, u->nejected, c->cfg.eject_max_percent))
                eject(in, now);
        } else if (o == MS_OUTCOME_OK) {
            in->consecutive = 0;
            if (in->ejected && k->probe)
                unject(in);
        }
    }
    k->outcome = o;
    end_probe(k);
}

/* The call ended: the breaker judges it by its last attempt (a refused call was never tried). */
static void breaker_record(call *k)
{
    upstream *u = k->up;
    if (k->check || k->refused || k->c->closing)
        return;
    ms_breaker_state before = u->br.state;
    ms_breaker_record(&u->br, k->trial, k->outcome, uv_now(k->c->loop), k->c->cfg.breaker_open_ms);
    ms_http_client__breaker(u->series, before, u->br.state);
}

/* ---- connections ---- */

static void conn_unref(conn *cn)
{
    if (--cn->refs == 0) {
        ms_http_client *c = cn->c;
        ms_buf_release(&cn->out);
        inst_unref(cn->in);
        free(cn);
        client_unref(c);
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void idle_unlink(conn *cn)
{
    instance *in = cn->in;
    if (cn->iprev)
        cn->iprev->inext = cn->inext;
    else
        in->idle = cn->inext;
    if (cn->inext)
        cn->inext->iprev = cn->iprev;
    cn->iprev = cn->inext = NULL;
    in->nidle--;
}

/* Closes a connection and detaches its call (the caller decides what happens to the call). */
static void conn_close(conn *cn)
{
    if (cn->state == K_CLOSING)
        return;
    if (cn->state == K_IDLE)
        idle_unlink(cn);
    if (cn->call) {
        cn->call->conn = NULL;
        cn->call = NULL;
    }
    cn->state = K_CLOSING;
    ms_http_client *c = cn->c;
    if (cn->prev)
        cn->prev->next = cn->next;
    else
        c->conns = cn->next;
    if (cn->next)
        cn->next->prev = cn->prev;
    if (cn->resolving) /* the lookup comes back as canceled, or done: on_resolved drops it */
        uv_cancel((uv_req_t *)&cn->gai);
    uv_close((uv_handle_t *)&cn->tcp, on_conn_closed);
}

static void conn_to_idle(conn *cn)
{
    instance *in = cn->in;
    ms_http_client *c = cn->c;
    cn->call = NULL;
    if (c->closing || in->removed || in->nidle >= c->cfg.max_idle) {
        conn_close(cn);
        return;
    }
    cn->state = K_IDLE;
    cn->idle_since = uv_now(c->loop);
    cn->iprev = NULL;
    cn->inext = in->idle;
    if (in->idle)
        in->idle->iprev = cn;
    in->idle = cn;
    in->nidle++;
}

static void on_sweep(uv_timer_t *t)
{
    ms_http_client *c = t->data;
    uint64_t now = uv_now(c->loop);
    for (int i = 0; i < c->nups; i++) {
        for (int j = 0; j < c->ups[i].n; j++) {
            for (conn *cn = c->ups[i].inst[j]->idle, *next; cn; cn = next) {
                next = cn->inext;
                if (now - cn->idle_since >= c->cfg.idle_timeout_ms)
                    conn_close(cn);
            }
        }
    }
}

/* ---- calls: the response parser ---- */

static void call_reset_response(call *k)
{
    ms_arena_reset(&k->arena);
    k->headers = NULL;
    k->nheaders = k->headers_cap = 0;
    k->body.n = 0;
    k->got_bytes = k->msg_done = false;
    k->perr = 0;
    k->status = 0;
    k->hbytes = 0;
    k->last_header_cb = 0;
}

static char *arena_append(ms_arena *a, const char *old, size_t old_len, const char *p, size_t n)
{
    char *s = ms_arena_alloc(a, old_len + n + 1);
    if (old_len)
        memcpy(s, old, old_len);
    memcpy(s + old_len, p, n);
    s[old_len + n] = '\0';
    return s;
}

static call *parser_call(http_parser *p)
{
    return ((conn *)p->data)->call;
}

/* Counts status line and header bytes against the cap (4 for ": " and CRLF per header). */
static int header_bytes(call *k, size_t n)
{
    k->hbytes += n;
    if (k->hbytes > k->c->cfg.max_header_bytes) {
        k->perr = MS_ETOOBIG;
        return -1;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    call *k = parser_call(p);
    k->headers = NULL; /* after a 1xx, the real answer starts over */
    k->nheaders = k->headers_cap = 0;
    k->last_header_cb = 0;
    return 0;
}

static int on_status(http_parser *p, const char *at, size_t n)
{
    return header_bytes(parser_call(p), n);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    call *k = parser_call(p);
    if (header_bytes(k, n + (k->last_header_cb != 1 ? 4 : 0)) < 0)
        return -1;
    if (k->last_header_cb != 1) {
        if (k->nheaders == k->headers_cap) {
            int cap = k->headers_cap ? k->headers_cap * 2 : 16;
            ms_http_header *h = ms_arena_alloc(&k->arena, (size_t)cap * sizeof *h);
            if (k->nheaders)
                memcpy(h, k->headers, (size_t)k->nheaders * sizeof *h);
            k->headers = h;
            k->headers_cap = cap;
        }
        k->headers[k->nheaders++] = (ms_http_header){"", ""};
    }
    ms_http_header *h = &k->headers[k->nheaders - 1];
    h->name = arena_append(&k->arena, h->name, strlen(h->name), at, n);
    k->last_header_cb = 1;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    call *k = parser_call(p);
    if (header_bytes(k, n) < 0)
        return -1;
    ms_http_header *h = &k->headers[k->nheaders - 1];
    h->value = arena_append(&k->arena, h->value, strlen(h->value), at, n);
    k->last_header_cb = 2;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    call *k = parser_call(p);
    k->status = p->status_code;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > k->c->cfg.max_body_bytes) {
        k->perr = MS_ETOOBIG;
        return -1;
    }
    return k->head ? 1 : 0; /* 1: no body follows (an answer to HEAD) */
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    call *k = parser_call(p);
    if (k->body.n + n > k->c->cfg.max_body_bytes) {
        k->perr = MS_ETOOBIG;
        return -1;
    }
    ms_buf_add(&k->body, at, n);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    call *k = parser_call(p);
    if (p->status_code / 100 == 1 && p->status_code != 101) {
        k->body.n = 0; /* an interim answer: the final one follows */
        return 0;
    }
    k->msg_done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- calls: ending ---- */

static void on_call_closed(uv_handle_t *h)
{
    call *k = h->data;
    ms_http_client *c = k->c;
    inst_unref(k->inst);
    free(k->path);
    ms_buf_release(&k->tail);
    free(k);
    client_unref(c);
}

static const char *error_label(int err)
{
    switch (err) {
    case MS_ETIMEDOUT:
        return "timeout";
    case MS_ECONN:
        return "unreachable";
    case MS_ETOOBIG:
        return "too_big";
    case MS_EIO:
        return "bad_response";
    case MS_ESHUTDOWN:
        return "shutdown";
    default:
        return "error";
    }
}

static void join_done(join *j, int index, int err, const ms_http_client_resp *resp, call *k)
{
    join_slot *s = &j->slots[index];
    s->r.err = err;
    s->r.resp = *resp;
    /* the response's memory moves into the slot, to live until the join's callback returns */
    s->arena = k->arena;
    s->body = k->body;
    ms_arena_init(&k->arena);
    ms_buf_init(&k->body, 0);
    if (--j->left == 0) {
        ms_http_client_result *results = ms_xcalloc((size_t)j->n, sizeof *results);
        for (int i = 0; i < j->n; i++)
            results[i] = j->slots[i].r;
        j->cb(results, j->n, j->arg);
        for (int i = 0; i < j->n; i++) {
            ms_arena_release(&j->slots[i].arena);
            ms_buf_release(&j->slots[i].body);
        }
        free(results);
        free(j->slots);
        free(j);
    }
}

/* Ends a call: its callback, its metrics, then its timer closes and takes the call with it. */
/* The CLIENT span's outcome: the last instance tried, retries, the status or the failure. */
static void span_end(call *k, int err)
{
    ms_span *s = k->span;
    if (!s)
        return;
    k->span = NULL;
    if (k->inst) {
        ms_span_set_str(s, "server.address", k->inst->addr.host);
        ms_span_set_int(s, "server.port", k->inst->addr.port);
    }
    if (k->attempts > 1)
        ms_span_set_int(s, "http.request.resend_count", k->attempts - 1);
    if (err) {
        ms_span_error(s, k->refused ? "circuit open" : ms_strerror(err));
    } else {
        ms_span_set_int(s, "http.response.status_code", k->status);
        if (k->status >= 500)
            ms_span_error(s, ms_http_reason(k->status));
    }
    ms_span_end(s);
}

static void call_finish(call *k, int err)
{
    if (k->state == S_DONE)
        return;
    ms_http_client *c = k->c;
    k->state = S_DONE;
    uv_timer_stop(&k->timer);
    if (k->conn)
        conn_close(k->conn);
    attempt_end(k, MS_OUTCOME_NEUTRAL, 0);
    end_probe(k);
    breaker_record(k);
    if (k->prev)
        k->prev->next = k->next;
    else
        c->calls = k->next;
    if (k->next)
        k->next->prev = k->prev;
    if (err)
        k->status = 0;
    char status[16];
    snprintf(status, sizeof status, "%d", k->status);
    if (!k->check)
        ms_http_client__observe(c->cfg.metrics, k->up->name,
                                k->refused ? "circuit_open"
                                : err      ? error_label(err)
                                           : status,
                                (double)(uv_hrtime() - k->start_ns) / 1e9);
    ms_buf_add(&k->body, "", 1); /* the NUL the contract promises, not counted */
    k->body.n--;
    span_end(k, err);
    ms_http_client_resp resp = {
        .status = k->status,
        .headers = err ? NULL : k->headers,
        .nheaders = err ? 0 : k->nheaders,
        .body = err ? "" : k->body.p,
        .body_len = err ? 0 : k->body.n,
        .attempts = k->attempts,
        .instance = k->inst ? k->inst->name : NULL,
    };
    const ms_trace_ctx *was = ms_trace_current();
    ms_trace_set_current(&k->parent);
    if (k->join)
        join_done(k->join, k->join_index, err, &resp, k);
    else
        k->cb(err, &resp, k->arg);
    ms_trace_set_current(was);
    ms_arena_release(&k->arena);
    ms_buf_release(&k->body);
    uv_close((uv_handle_t *)&k->timer, on_call_closed);
}

static void on_call_timer(uv_timer_t *t);

/* A first attempt pays into its upstream's retry budget. */
static void budget_deposit(upstream *u)
{
    u->bank += RETRY_DEPOSIT;
    if (u->bank > RETRY_BANK_MAX)
        u->bank = RETRY_BANK_MAX;
}

/* Takes one retry from the budget: from the deposits, else from the reserve; false when
 * neither holds a whole one. */
static bool budget_withdraw(upstream *u, uint64_t now)
{
    int64_t per_s = u->c->cfg.retry_min_per_s, full = per_s * RETRY_UNIT * RETRY_RESERVE_S;
    uint64_t since = now > u->reserve_at ? now - u->reserve_at : 0;
    u->reserve_at = now;
    /* thousandths per millisecond = retries per second; past RETRY_RESERVE_S it is full anyway */
    u->reserve = since >= RETRY_RESERVE_S * 1000 ? full : u->reserve + (int64_t)since * per_s;
    if (u->reserve > full)
        u->reserve = full;
    if (u->bank >= RETRY_UNIT) {
        u->bank -= RETRY_UNIT;
        return true;
    }
    if (u->reserve >= RETRY_UNIT) {
        u->reserve -= RETRY_UNIT;
        return true;
    }
    return false;
}

/*
 * Plans the next attempt after a full-jitter backoff; false when none is allowed (retries spent,
 * or it could not start before the deadline).
 */
static bool retry_later(call *k, int err)
{
    ms_http_client *c = k->c;
    upstream *u = k->up;
    if (c->closing || k->check || k->attempts > c->cfg.max_retries)
        return false;
    int shift = k->attempts - 1 < 8 ? k->attempts - 1 : 8;
    uint32_t cap = (uint32_t)BACKOFF_BASE_MS << shift;
    if (cap > BACKOFF_CAP_MS)
        cap = BACKOFF_CAP_MS;
    uint32_t r;
    ms_random_bytes(&r, sizeof r);
    uint64_t delay = r % (cap + 1), now = uv_now(c->loop);
    if (now + delay >= k->deadline)
        return false;
    if (!budget_withdraw(u, now)) {
        ms_http_client__retry_skipped(c->cfg.metrics, u->name, "budget");
        return false;
    }
    k->last_err = err;
    end_probe(k);
    k->state = S_BACKOFF;
    uv_timer_start(&k->timer, on_call_timer, delay, 0);
    ms_http_client__retry(c->cfg.metrics, k->up->name);
    return true;
}

/*
 * An attempt failed without an answer. `sent`: its bytes may have reached the server, so only an
 * idempotent call may try again, and only when no response byte came back.
 */
static void attempt_failed(call *k, int err, bool sent, bool mark)
{
    if (k->conn)
        conn_close(k->conn);
    attempt_end(k, mark || err == MS_EIO ? MS_OUTCOME_FAIL : MS_OUTCOME_NEUTRAL, mark ? -1 : 0);
    bool may_retry = err == MS_ECONN && (!sent || (k->idempotent && !k->got_bytes));
    if (!may_retry || !retry_later(k, err))
        call_finish(k, err);
}

/* ---- calls: attempts ---- */

static void on_written(uv_write_t *req, int status)
{
    conn *cn = req->data;
    cn->writing = false;
    if (status < 0 && cn->state == K_BUSY && cn->call)
        attempt_failed(cn->call, MS_ECONN, true, !(cn->reused && !cn->call->got_bytes));
}

static void send_request(call *k)
{
    conn *cn = k->conn;
    ms_http_client *c = k->c;
    call_reset_response(k);
    cn->out.n = 0;
    ms_buf_adds(&cn->out, http_method_str(k->method));
    ms_buf_add(&cn->out, " ", 1);
    ms_buf_adds(&cn->out, k->path);
    ms_buf_adds(&cn->out, " HTTP/1.1\r\nHost: ");
    ms_buf_adds(&cn->out, cn->in->name);
    ms_buf_adds(&cn->out, "\r\n");
    ms_buf_add(&cn->out, k->tail.p, k->tail.n);
    http_parser_init(&cn->parser, HTTP_RESPONSE);
    cn->parser.data = cn;
    cn->state = K_BUSY;
    k->state = S_SENT;
    uint64_t now = uv_now(c->loop);
    uv_timer_start(&k->timer, on_call_timer, k->deadline > now ? k->deadline - now : 0, 0);
    /* A request nearly always fits the socket's buffer: written at once, it costs no write
     * request, whose completion made libuv re-arm the socket in epoll (a syscall per call) */
    uv_buf_t b = uv_buf_init(cn->out.p, (unsigned)cn->out.n);
    int n = uv_try_write((uv_stream_t *)&cn->tcp, &b, 1);
    if (n == (int)b.len)
        return;
    if (n < 0 && n != UV_EAGAIN) {
        attempt_failed(k, MS_ECONN, false, !cn->reused);
        return;
    }
    if (n > 0)
        b = uv_buf_init(cn->out.p + n, b.len - (unsigned)n);
    cn->write.data = cn;
    if (uv_write(&cn->write, (uv_stream_t *)&cn->tcp, &b, 1, on_written) < 0) {
        attempt_failed(k, MS_ECONN, false, !cn->reused);
        return;
    }
    cn->writing = true;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    conn *cn = h->data;
    *b = uv_buf_init(cn->c->readbuf, sizeof cn->c->readbuf);
}

/* The answer is whole: pool or close the connection, then retry a 502/503/504 or finish. */
static void response_done(conn *cn, call *k, bool keep)
{
    k->conn = NULL;
    if (keep && !cn->writing) { /* an answer before the whole request was written: not reusable */
        conn_to_idle(cn);
    } else {
        cn->call = NULL;
        conn_close(cn);
    }
    bool gateway_error = k->status == 502 || k->status == 503 || k->status == 504;
    attempt_end(k, k->status >= 500 ? MS_OUTCOME_FAIL : MS_OUTCOME_OK, gateway_error ? -1 : 1);
    if (gateway_error && k->idempotent && retry_later(k, 0))
        return;
    call_finish(k, 0);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *cn = s->data;
    if (cn->state == K_CLOSING)
        return;
    call *k = cn->call;
    if (cn->state == K_IDLE || !k) { /* EOF or stray bytes on an idle connection: unusable */
        if (nread != 0)
            conn_close(cn);
        return;
    }
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF && k->got_bytes) { /* EOF may end a body read until close */
            http_parser_execute(&cn->parser, &parser_settings, NULL, 0);
            if (k->msg_done) {
                response_done(cn, k, false);
                return;
            }
        }
        /* lost before any answer byte on a pooled connection: the server closed it as we
         * wrote; not the instance's fault */
        attempt_failed(k, MS_ECONN, true, !(cn->reused && !k->got_bytes));
        return;
    }
    k->got_bytes = true;
    size_t used = http_parser_execute(&cn->parser, &parser_settings, buf->base, (size_t)nread);
    if (k->perr) {
        attempt_failed(k, k->perr, true, false);
        return;
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&cn->parser);
    if (e != HPE_OK && e != HPE_PAUSED) {
        attempt_failed(k, MS_EIO, true, false);
        return;
    }
    if (k->msg_done)
        response_done(
            cn, k, used == (size_t)nread && http_should_keep_alive(&cn->parser) && !k->c->closing);
}

static void on_connected(uv_connect_t *req, int status)
{
    conn *cn = req->data;
    if (status == UV_ECANCELED || cn->state == K_CLOSING)
        return;
    call *k = cn->call;
    if (status < 0) {
        attempt_failed(k, MS_ECONN, false, true);
        return;
    }
    uv_tcp_nodelay(&cn->tcp, 1);
    if (uv_read_start((uv_stream_t *)&cn->tcp, on_alloc, on_read) < 0) {
        attempt_failed(k, MS_ECONN, false, true);
        return;
    }
    send_request(k);
}

static void start_connect(conn *cn, const struct sockaddr *sa)
{
    cn->connect.data = cn;
    if (uv_tcp_connect(&cn->connect, &cn->tcp, sa, on_connected) < 0)
        attempt_failed(cn->call, MS_ECONN, false, true);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    conn *cn = req->data;
    cn->resolving = false;
    if (cn->state != K_CLOSING) {
        if (status < 0 || !res)
            attempt_failed(cn->call, MS_ECONN, false, true);
        else
            start_connect(cn, res->ai_addr);
    }
    uv_freeaddrinfo(res);
    conn_unref(cn);
}

static conn *conn_open(call *k, instance *in)
{
    ms_http_client *c = k->c;
    conn *cn = ms_xcalloc(1, sizeof *cn);
    cn->c = c;
    inst_set(&cn->in, in);
    cn->state = K_CONNECTING;
    cn->refs = 1;
    c->live++;
    uv_tcp_init(c->loop, &cn->tcp);
    cn->tcp.data = cn;
    cn->gai.data = cn;
    ms_buf_init(&cn->out, 256);
    cn->next = c->conns;
    if (c->conns)
        c->conns->prev = cn;
    c->conns = cn;
    cn->call = k;
    k->conn = cn;
    return cn;
}

static void attempt_start(call *k)
{
    ms_http_client *c = k->c;
    uint64_t now = uv_now(c->loop);
    if (now >= k->deadline) {
        call_finish(k, MS_ETIMEDOUT);
        return;
    }
    if (!breaker_admit(k)) { /* open: fail fast, or a retry ends with the last answer */
        k->refused = k->attempts == 0;
        call_finish(k, k->attempts == 0 ? MS_ECONN : k->last_err);
        return;
    }
    if (k->attempts++ == 0 && !k->check)
        budget_deposit(k->up);
    instance *in = k->check ? k->inst : pick(k, k->inst);
    inst_set(&k->inst, in);
    k->trying = true;
    k->attempt_at = now;
    in->active++;
    ms_http_client__active(k->up->series, in->series, 1);
    call_reset_response(k);
    if (in->idle) {
        conn *cn = in->idle;
        idle_unlink(cn);
        cn->reused = true;
        cn->call = k;
        k->conn = cn;
        send_request(k);
        return;
    }
    conn *cn = conn_open(k, in);
    k->state = S_CONNECT;
    uint64_t limit = now + c->cfg.connect_timeout_ms;
    uv_timer_start(&k->timer, on_call_timer, (limit < k->deadline ? limit : k->deadline) - now, 0);
    if (in->numeric) {
        start_connect(cn, (const struct sockaddr *)&in->sa);
        return;
    }
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)in->addr.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    cn->refs++;
    cn->resolving = true;
    if (uv_getaddrinfo(c->loop, &cn->gai, on_resolved, in->addr.host, port, &hints) < 0) {
        cn->refs--;
        cn->resolving = false;
        attempt_failed(k, MS_ECONN, false, true);
    }
}

static void on_call_timer(uv_timer_t *t)
{
    call *k = t->data;
    uint64_t now = uv_now(k->c->loop);
    switch (k->state) {
    case S_BACKOFF:
        attempt_start(k);
        break;
    case S_CONNECT:
        if (now >= k->deadline) {
            attempt_end(k, MS_OUTCOME_FAIL, -1);
            call_finish(k, MS_ETIMEDOUT);
        } else { /* the connect limit, before the deadline: a connect failure */
            attempt_failed(k, MS_ECONN, false, true);
        }
        break;
    case S_SENT:
        attempt_end(k, MS_OUTCOME_FAIL, -1);
        call_finish(k, MS_ETIMEDOUT);
        break;
    case S_DONE:
        break;
    }
}

/* ---- the API ---- */

static void on_health(uv_timer_t *t);

void ms_http_client_config_defaults(ms_http_client_config *cfg)
{
    *cfg = (ms_http_client_config){
        .connect_timeout_ms = 1000,
        .default_timeout_ms = 10000,
        .idle_timeout_ms = 30000,
        .max_idle = 32,
        .max_retries = 2,
        .down_base_ms = 1000,
        .down_max_ms = 10000,
        .max_header_bytes = 16 * 1024,
        .max_body_bytes = 4 * 1024 * 1024,
        .slow_ms = 1000,
        .eject_consecutive = 5,
        .eject_base_ms = 30000,
        .eject_max_ms = 300000,
        .eject_max_percent = 10,
        .breaker_open_ms = 5000,
        .health_interval_ms = 2000,
        .retry_min_per_s = 3,
    };
}

ms_http_client *ms_http_client_new(uv_loop_t *loop, const ms_http_client_config *cfg)
{
    ms_http_client *c = ms_xcalloc(1, sizeof *c);
    ms_http_client_config d;
    ms_http_client_config_defaults(&d);
    c->cfg = cfg ? *cfg : d;
#define DEFAULT_(f)                                                                                \
    if (!c->cfg.f)                                                                                 \
    c->cfg.f = d.f
    DEFAULT_(connect_timeout_ms);
    DEFAULT_(default_timeout_ms);
    DEFAULT_(idle_timeout_ms);
    DEFAULT_(max_idle);
    DEFAULT_(max_retries);
    DEFAULT_(down_base_ms);
    DEFAULT_(down_max_ms);
    DEFAULT_(max_header_bytes);
    DEFAULT_(max_body_bytes);
    DEFAULT_(slow_ms);
    DEFAULT_(eject_consecutive);
    DEFAULT_(eject_base_ms);
    DEFAULT_(eject_max_ms);
    DEFAULT_(eject_max_percent);
    DEFAULT_(breaker_open_ms);
    DEFAULT_(health_interval_ms);
    DEFAULT_(retry_min_per_s);
#undef DEFAULT_
    if (c->cfg.max_retries < 0)
        c->cfg.max_retries = 0;
    c->health_on = c->cfg.health_path && c->cfg.health_path[0] == '/';
    c->cfg.health_path = c->health_on ? ms_xstrdup(c->cfg.health_path) : NULL;
    c->loop = loop;
    ms_random_bytes(&c->rng, sizeof c->rng);
    c->rng |= 1; /* xorshift never leaves zero */
    c->live = 3; /* the owner's reference, the sweep and the health timers */
    uv_timer_init(loop, &c->sweep);
    c->sweep.data = c;
    uint64_t every = c->cfg.idle_timeout_ms < 1000 ? c->cfg.idle_timeout_ms : 1000;
    uv_timer_start(&c->sweep, on_sweep, every, every);
    uv_unref((uv_handle_t *)&c->sweep); /* idle upkeep alone never keeps a loop running */
    uv_timer_init(loop, &c->health);
    c->health.data = c;
    if (c->health_on)
        uv_timer_start(&c->health, on_health, c->cfg.health_interval_ms, c->cfg.health_interval_ms);
    uv_unref((uv_handle_t *)&c->health);
    return c;
}

static instance *inst_new(upstream *u, const ms_http_upstream_addr *addr)
{
    instance *in = ms_xcalloc(1, sizeof *in);
    in->up = u;
    in->refs = 1; /* the list's */
    in->addr = *addr;
    bool v6 = strchr(in->addr.host, ':') != NULL;
    snprintf(in->name, sizeof in->name, v6 ? "[%s]:%u" : "%s:%u", in->addr.host,
             (unsigned)in->addr.port);
    if (uv_ip4_addr(in->addr.host, in->addr.port, (struct sockaddr_in *)&in->sa) == 0 ||
        uv_ip6_addr(in->addr.host, in->addr.port, (struct sockaddr_in6 *)&in->sa) == 0)
        in->numeric = true;
    in->series = ms_http_client__inst_join(u->series, in->name);
    return in;
}

static bool list_ok(const ms_http_upstream_list *list)
{
    return list && list->n > 0 && list->n <= MS_HTTP_UPSTREAM_MAX;
}

int ms_http_client_add_upstream(ms_http_client *c, const char *name,
                                const ms_http_upstream_list *list)
{
    if (!name || !*name || !list_ok(list))
        return MS_EINVAL;
    for (int i = 0; i < c->nups; i++)
        if (strcmp(c->ups[i].name, name) == 0)
            return MS_EINVAL;
    if (c->nups == MAX_UPSTREAMS)
        return MS_ETOOBIG;
    upstream *u = &c->ups[c->nups++];
    u->c = c;
    u->name = ms_xstrdup(name);
    u->series = ms_http_client__up_join(c->cfg.metrics, name);
    /* full: a new client may retry at once */
    u->reserve = (int64_t)c->cfg.retry_min_per_s * RETRY_UNIT * RETRY_RESERVE_S;
    u->reserve_at = uv_now(c->loop);
    u->n = list->n;
    u->inst = ms_xcalloc((size_t)list->n, sizeof *u->inst);
    for (int i = 0; i < list->n; i++)
        u->inst[i] = inst_new(u, &list->addr[i]);
    return 0;
}

static upstream *find_upstream(ms_http_client *c, const char *name);

/* An instance leaves its upstream's list: its idle connections close, its down view goes;
 * connections and calls using it keep it alive until they end. */
static void inst_leave(instance *in)
{
    ms_http_client *c = in->up->c;
    if (in->down)
        ms_http_client__down(c->cfg.metrics, in->up->name, in->name, -1);
    in->down = false;
    unject(in);
    if (in->health.down)
        ms_http_client__unhealthy(in->series, -1);
    in->health.down = false;
    ms_http_client__inst_leave(in->series);
}

static void inst_remove(instance *in)
{
    inst_leave(in);
    in->removed = true;
    while (in->idle)
        conn_close(in->idle);
    inst_unref(in);
}

int ms_http_client_set_upstream(ms_http_client *c, const char *name,
                                const ms_http_upstream_list *list)
{
    upstream *u = find_upstream(c, name);
    if (!u || !list_ok(list) || c->closing)
        return MS_EINVAL;
    instance **next = ms_xcalloc((size_t)list->n, sizeof *next);
    for (int i = 0; i < list->n; i++) {
        const ms_http_upstream_addr *a = &list->addr[i];
        for (int j = 0; j < u->n && !next[i]; j++) {
            instance *in = u->inst[j];
            if (in && in->addr.port == a->port && strcmp(in->addr.host, a->host) == 0) {
                next[i] = in; /* kept, with its state: moves over */
                u->inst[j] = NULL;
            }
        }
        if (!next[i])
            next[i] = inst_new(u, a);
    }
    for (int j = 0; j < u->n; j++)
        if (u->inst[j])
            inst_remove(u->inst[j]);
    free(u->inst);
    u->inst = next;
    u->n = list->n;
    u->rr %= (unsigned)u->n;
    return 0;
}

static void close_timer_only(uv_handle_t *h)
{
    client_unref(h->data);
}

void ms_http_client_free(ms_http_client *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    while (c->calls)
        call_finish(c->calls, MS_ESHUTDOWN);
    for (int i = 0; i < c->nups; i++) { /* this loop's view of the upstreams goes away */
        upstream *u = &c->ups[i];
        for (int j = 0; j < u->n; j++)
            inst_leave(u->inst[j]);
        ms_http_client__breaker(u->series, u->br.state, MS_BREAKER_CLOSED);
        ms_http_client__up_leave(u->series);
    }
    while (c->conns)
        conn_close(c->conns);
    uv_close((uv_handle_t *)&c->sweep, close_timer_only);
    uv_close((uv_handle_t *)&c->health, close_timer_only);
    client_unref(c);
}

int ms_http_client_idle_count(const ms_http_client *c, const char *name)
{
    for (int i = 0; i < c->nups; i++) {
        if (strcmp(c->ups[i].name, name) != 0)
            continue;
        int n = 0;
        for (int j = 0; j < c->ups[i].n; j++)
            n += c->ups[i].inst[j]->nidle;
        return n;
    }
    return -1;
}

const char *ms_http_client_resp_header(const ms_http_client_resp *r, const char *name)
{
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

static bool token_char(unsigned char ch)
{
    return ch > 32 && ch < 127 && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

static bool header_ok(const ms_http_header *h)
{
    static const char *const reserved[] = {"host", "content-length", "transfer-encoding",
                                           "connection", "traceparent"};
    if (!h->name || !*h->name || !h->value)
        return false;
    for (const char *p = h->name; *p; p++)
        if (!token_char((unsigned char)*p))
            return false;
    for (const char *p = h->value; *p; p++)
        if ((unsigned char)*p < 32 && *p != '\t')
            return false;
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcasecmp(h->name, reserved[i]) == 0)
            return false;
    return true;
}

static upstream *find_upstream(ms_http_client *c, const char *name)
{
    for (int i = 0; name && i < c->nups; i++)
        if (strcmp(c->ups[i].name, name) == 0)
            return &c->ups[i];
    return NULL;
}

/* Checks and copies a request into a new call, not started yet. */
static int call_prepare(ms_http_client *c, const ms_http_client_req *req, bool check, call **out)
{
    if (c->closing)
        return MS_ESHUTDOWN;
    upstream *u = find_upstream(c, req->upstream);
    if (!u || !req->path || req->path[0] != '/' || req->nheaders < 0 ||
        (req->body_len && !req->body) || strcmp(http_method_str(req->method), "<unknown>") == 0 ||
        (req->content_type && !*req->content_type))
        return MS_EINVAL;
    for (const char *p = req->path; *p; p++)
        if ((unsigned char)*p <= 32 || *p == 127)
            return MS_EINVAL;
    for (int i = 0; i < req->nheaders; i++)
        if (!header_ok(&req->headers[i]))
            return MS_EINVAL;
    if (req->content_type)
        for (const char *p = req->content_type; *p; p++)
            if ((unsigned char)*p < 32)
                return MS_EINVAL;
    call *k = ms_xcalloc(1, sizeof *k);
    k->c = c;
    k->up = u;
    k->method = req->method;
    k->head = req->method == HTTP_HEAD;
    k->path = ms_xstrdup(req->path);
    uint64_t now = uv_now(c->loop);
    k->deadline = req->deadline ? req->deadline : now + c->cfg.default_timeout_ms;
    k->idempotent = req->idempotent || req->method == HTTP_GET || req->method == HTTP_HEAD ||
                    req->method == HTTP_PUT || req->method == HTTP_DELETE ||
                    req->method == HTTP_OPTIONS;
    /* the traceparent sent is the CLIENT span's context; a health check has no span */
    ms_trace_ctx parent, ctx;
    ms_traceparent_parse(req->traceparent, &parent);
    k->parent = parent;
    if (check) {
        ms_trace_child(&parent, &ctx);
    } else if ((k->span =
                    ms_span_start(http_method_str(req->method), MS_SPAN_CLIENT, &parent, &ctx))) {
        ms_span_set_str(k->span, "http.request.method", http_method_str(req->method));
        const char *q = strchr(req->path, '?');
        int plen = q ? (int)(q - req->path) : (int)strlen(req->path);
        char path[512];
        snprintf(path, sizeof path, "%.*s", plen, req->path);
        ms_span_set_str(k->span, "url.path", path);
    }
    ms_buf_init(&k->tail, 256 + req->body_len);
    for (int i = 0; i < req->nheaders; i++) {
        const ms_http_header *h = &req->headers[i];
        /* a tracestate goes on only with the valid traceparent it belongs to */
        if (strcasecmp(h->name, "tracestate") == 0 && !ms_tracestate_pass(h->value, &parent))
            continue;
        ms_buf_printf(&k->tail, "%s: %s\r\n", h->name, h->value);
    }
    if (req->content_type)
        ms_buf_printf(&k->tail, "Content-Type: %s\r\n", req->content_type);
    if (req->body_len || req->method == HTTP_POST || req->method == HTTP_PUT ||
        req->method == HTTP_PATCH)
        ms_buf_printf(&k->tail, "Content-Length: %zu\r\n", req->body_len);
    char tp[MS_TRACEPARENT_LEN + 1];
    ms_traceparent_format(&ctx, tp);
    ms_buf_printf(&k->tail, "traceparent: %s\r\n\r\n", tp);
    if (req->body_len)
        ms_buf_add(&k->tail, req->body, req->body_len);
    ms_arena_init(&k->arena);
    ms_buf_init(&k->body, 0);
    *out = k;
    return 0;
}

/* Starts a prepared call: its first attempt runs from the loop, never inside the caller. */
static void call_start(call *k)
{
    ms_http_client *c = k->c;
    c->live++;
    k->start_ns = uv_hrtime();
    k->state = S_BACKOFF;
    uv_timer_init(c->loop, &k->timer);
    k->timer.data = k;
    k->next = c->calls;
    if (c->calls)
        c->calls->prev = k;
    c->calls = k;
    uv_timer_start(&k->timer, on_call_timer, 0, 0);
}

/* ---- active health checks ---- */

static void on_checked(int err, const ms_http_client_resp *r, void *arg)
{
    instance *in = arg; /* alive: the check's call holds it until its timer closed */
    in->checking = false;
    if (in->up->c->closing || in->removed)
        return;
    if (ms_health_record(&in->health, err == 0 && r->status >= 200 && r->status < 300))
        ms_http_client__unhealthy(in->series, in->health.down ? 1 : -1);
}

/* One GET of the health path, pinned to the instance (no retry, no breaker, no metrics). */
static void check_start(ms_http_client *c, upstream *u, instance *in)
{
    ms_http_client_req req = {
        .upstream = u->name,
        .method = HTTP_GET,
        .path = c->cfg.health_path,
        .deadline = uv_now(c->loop) + c->cfg.health_interval_ms,
    };
    call *k;
    if (call_prepare(c, &req, true, &k) < 0)
        return;
    k->up = u;
    k->check = true;
    k->cb = on_checked;
    k->arg = in;
    inst_set(&k->inst, in);
    in->checking = true;
    call_start(k);
}

static void on_health(uv_timer_t *t)
{
    ms_http_client *c = t->data;
    for (int i = 0; i < c->nups; i++)
        for (int j = 0; j < c->ups[i].n; j++)
            if (!c->ups[i].inst[j]->checking)
                check_start(c, &c->ups[i], c->ups[i].inst[j]);
}

static void call_discard(call *k)
{
    ms_span_error(k->span, "not started: another call of its fan-out was invalid");
    ms_span_end(k->span);
    free(k->path);
    ms_buf_release(&k->tail);
    ms_arena_release(&k->arena);
    ms_buf_release(&k->body);
    free(k);
}

int ms_http_client_request(ms_http_client *c, const ms_http_client_req *req, ms_http_client_cb cb,
                           void *arg)
{
    call *k;
    int rc = call_prepare(c, req, false, &k);
    if (rc < 0)
        return rc;
    k->cb = cb;
    k->arg = arg;
    call_start(k);
    return 0;
}

int ms_http_client_all(ms_http_client *c, const ms_http_client_req *reqs, int n,
                       ms_http_client_all_cb cb, void *arg)
{
    if (n <= 0)
        return MS_EINVAL;
    int rc = 0;
    call **ks = ms_xcalloc((size_t)n, sizeof *ks);
    for (int i = 0; i < n && rc == 0; i++)
        rc = call_prepare(c, &reqs[i], false, &ks[i]);
    if (rc < 0) {
        for (int i = 0; i < n; i++)
            if (ks[i])
                call_discard(ks[i]);
        goto out;
    }
    join *j = ms_xcalloc(1, sizeof *j);
    j->n = j->left = n;
    j->cb = cb;
    j->arg = arg;
    j->slots = ms_xcalloc((size_t)n, sizeof *j->slots);
    for (int i = 0; i < n; i++) {
        ks[i]->join = j;
        ks[i]->join_index = i;
        call_start(ks[i]);
    }
out:
    free(ks);
    return rc;
}
