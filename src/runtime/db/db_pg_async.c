/*
 * db_pg_async.c — PostgreSQL reads without a thread (ms_db_pool_query): a few non-blocking
 * libpq connections owned by one loop, in pipeline mode.
 *
 * A statement is written to the least busy connection (after a PQsendPrepare the first time
 * its SQL is seen there) and the statements written during one loop iteration go out together
 * with one Sync and one write, just before the loop waits for I/O (uv_prepare): the server
 * then answers a batch with one write too. Results come back in the order sent, so each
 * connection keeps a FIFO of what it sent (statements, and NULL for a Sync).
 *
 * One Sync per batch means an error aborts the statements after it in the batch: those are
 * sent again (reads only), as are statements whose prepared plan went stale or missing.
 *
 * Connections are opened blocking on the thread pool (ms_db__pg_open, the same session setup
 * as the pool's) and switched to non-blocking pipeline mode on the loop. A lost connection fails
 * what it had in flight with MS_ECONN and is reopened at once, then with a backoff while
 * connecting fails; statements waiting for a connection fail with MS_ECONN when none is left.
 * A statement past its deadline is answered MS_ETIMEDOUT at once; if it is the one the
 * server is running, the connection is closed (nothing cheaper stops it without blocking) and
 * the statements queued behind it are sent again on another.
 *
 * Everything here runs on the owning loop's thread, but the connect work items.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/hash.h"
#include "runtime/core/log.h"
#include "runtime/db/db_pg_async.h"
#include "runtime/db/db_pq.h"
#include "runtime/core/banned.h"

#define pq ms_db__pq

enum {
    STMT_SLOTS = 32,  /* distinct statements prepared per connection; others run unnamed */
    MAX_ATTEMPTS = 3, /* sends of one statement aborted for another's reason */
    BACKOFF_MIN_MS = 50,
    BACKOFF_MAX_MS = 2000,
};

typedef struct query {
    struct query *next;       /* waiting for a connection */
    ms_db_query_done_fn done; /* NULL once answered: its results are read and dropped */
    void *arg;
    uint64_t deadline; /* uv_now() ms; 0: none */
    const char *sql;
    int nparams;
    const char **params; /* copies, in this allocation */
    ms_trace_ctx trace;  /* the caller's (a copy); not valid: none */
    ms_span *span;
    ms_db_result *result;
    int rc;              /* the first error of this send */
    bool is_retryable;   /* this send failed for another statement's reason */
    bool awaits_prepare; /* the result of its PQsendPrepare comes first */
    int stmt;            /* the cache entry it prepared, and which preparation */
    uint64_t prep_id;
    int attempts;
} query;

typedef struct stmt {
    uint64_t hash;
    char *sql; /* NULL: a free entry; an entry keeps its SQL for the connection's life */
    size_t len;
    uint64_t id; /* of the name it is prepared under, msp_<id> */
    bool is_prepared;
} stmt;

typedef enum { CONN_DOWN, CONN_CONNECTING, CONN_READY } conn_state;

typedef struct pconn {
    ms_db_pipe *pipe;
    int slot;
    ms_db_conn *db; /* from ms_db__pg_open; NULL until connected */
    PGconn *pg;
    uv_work_t work;
    int connect_rc;
    uv_poll_t poll;
    int poll_events; /* what the poll watches now */
    query **ring;    /* sent, in order; NULL marks a Sync */
    size_t head, len, cap;
    int in_flight, unsynced;
    bool needs_flush, is_broken, is_dead;
    stmt stmts[STMT_SLOTS];
    uint64_t next_id;
} pconn;

typedef struct slot {
    conn_state state;
    pconn *conn; /* READY or CONNECTING */
    int fails;   /* connects failed in a row */
    uint64_t retry_at;
    bool was_open;
} slot;

struct ms_db_pipe {
    uv_loop_t *loop;
    const ms_db_config *cfg; /* borrowed from the pool */
    int n;
    slot *slots;
    query *wait_head, *wait_tail;
    uv_timer_t timer;
    uint64_t timer_due;
    uv_prepare_t flush;
    bool is_flush_armed, is_closing;
    int live; /* connections not yet freed, and the two handles */
    void (*on_change)(void *);
    void *change_arg;
    void (*on_closed)(void *);
    void *closed_arg;
    uint64_t statements, reconnects;
};

static void dispatch(ms_db_pipe *p, query *q);
static void start_connects(ms_db_pipe *p);
static void on_flush(uv_prepare_t *h);

/* ---- answers ---- */

static void changed(ms_db_pipe *p)
{
    if (p->on_change)
        p->on_change(p->change_arg);
}

/* Calls `done` once, inside the caller's trace context, and ends the span with `rc`; `why` gives
 * the span's error text (and its SQLSTATE), or NULL for the default. */
static void answer(query *q, int rc, const ms_db_conn *why)
{
    if (!q->done)
        return;
    ms_db_conn tmp = {.backend = MS_DB_POSTGRES};
    if (!why) {
        ms_db__set_error(&tmp, "%s",
                         rc == MS_ETIMEDOUT ? "the request's deadline passed" : ms_strerror(rc));
        why = &tmp;
    }
    ms_db__span_end(q->span, why, rc);
    q->span = NULL;
    ms_db_result *r = q->result;
    q->result = NULL;
    if (rc < 0) {
        ms_db_result_free(r);
        r = NULL;
    }
    ms_db_query_done_fn done = q->done;
    q->done = NULL;
    const ms_trace_ctx *was = ms_trace_current();
    ms_trace_set_current(q->trace.valid ? &q->trace : NULL);
    done(rc, r, q->arg);
    ms_trace_set_current(was);
}

static void query_free(query *q)
{
    ms_db_result_free(q->result);
    free(q);
}

/* ---- connections ---- */

static void ring_push(pconn *c, query *q)
{
    if (c->len == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        query **ring = ms_xcalloc(cap, sizeof *ring);
        for (size_t i = 0; i < c->len; i++)
            ring[i] = c->ring[(c->head + i) % c->cap];
        free(c->ring);
        c->ring = ring;
        c->cap = cap;
        c->head = 0;
    }
    c->ring[(c->head + c->len++) % c->cap] = q;
}

static query *ring_at(const pconn *c, size_t i)
{
    return c->ring[(c->head + i) % c->cap];
}

static void ring_pop(pconn *c)
{
    c->head = (c->head + 1) % c->cap;
    c->len--;
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Changes what the poll watches only when it differs: a flush per loop iteration would
 * otherwise restart it each time. */
static void watch(pconn *c, int events)
{
    if (events != c->poll_events) {
        c->poll_events = events;
        uv_poll_start(&c->poll, events, on_poll);
    }
}

static void conn_free(pconn *c)
{
    ms_db_pipe *p = c->pipe;
    for (int i = 0; i < STMT_SLOTS; i++)
        free(c->stmts[i].sql);
    free(c->ring);
    ms_db_close(c->db);
    free(c);
    p->live--;
}

static void maybe_finish(ms_db_pipe *p)
{
    if (!p->is_closing || p->live > 0)
        return;
    void (*cb)(void *) = p->on_closed;
    void *arg = p->closed_arg;
    free(p->slots);
    free(p);
    if (cb)
        cb(arg);
}

static void poll_closed(uv_handle_t *h)
{
    pconn *c = h->data;
    ms_db_pipe *p = c->pipe;
    conn_free(c);
    maybe_finish(p);
}

static uint64_t backoff_ms(int fails)
{
    uint64_t ms = BACKOFF_MIN_MS;
    for (int i = 1; i < fails && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

static void arm_timer(ms_db_pipe *p, uint64_t due);

/*
 * Takes a READY connection out of service and closes it. What it had in flight is answered
 * with `rc` (and `why`'s text), or, when `resend` is set, sent again elsewhere unless already
 * answered. Its slot reconnects at once.
 */
static void conn_drop(pconn *c, int rc, const ms_db_conn *why, bool resend)
{
    ms_db_pipe *p = c->pipe;
    slot *s = &p->slots[c->slot];
    c->is_dead = true;
    s->state = CONN_DOWN;
    s->conn = NULL;
    s->retry_at = 0;
    uv_poll_stop(&c->poll);
    /* detached first: the answers may queue statements, which must not land here */
    query **ring = c->ring;
    size_t head = c->head, len = c->len, cap = c->cap;
    c->ring = NULL;
    c->len = c->cap = c->head = 0;
    c->in_flight = 0;
    ms_db_conn saved = {.backend = MS_DB_POSTGRES};
    if (why)
        memcpy(&saved, why, sizeof saved); /* `why` may be c->db, closed before the answers */
    uv_close((uv_handle_t *)&c->poll, poll_closed);
    for (size_t i = 0; i < len; i++) {
        query *q = ring[(head + i) % cap];
        if (!q)
            continue;
        if (resend && q->done && !p->is_closing) {
            q->rc = 0;
            q->is_retryable = false;
            q->awaits_prepare = false;
            ms_db_result_free(q->result);
            q->result = NULL;
            dispatch(p, q);
            continue;
        }
        answer(q, rc, why ? &saved : NULL);
        query_free(q);
    }
    free(ring);
    if (!p->is_closing)
        start_connects(p);
    changed(p);
}

/* Only for a connection that was READY: it has its db and pg. */
static void conn_lost(pconn *c, const char *what)
{
    const char *detail = pq.PQerrorMessage(c->pg);
    ms_db__set_error(c->db, "%s%s%s", what, detail[0] ? ": " : "", detail);
    ms_log(MS_LOG_WARN, "pipelined db connection lost", "error", c->db->errmsg, NULL);
    conn_drop(c, MS_ECONN, c->db, false);
}

static void want_flush(ms_db_pipe *p, pconn *c)
{
    c->needs_flush = true;
    if (!p->is_flush_armed && !p->is_closing) {
        p->is_flush_armed = true;
        uv_prepare_start(&p->flush, on_flush);
    }
}

/* The statement's prepared name on `c`, preparing it first when new; NULL runs it unnamed
 * (the cache is full). Returns false when libpq refused to queue the Prepare. */
static bool prepared_name(pconn *c, query *q, char name[24], bool *named)
{
    size_t len = strlen(q->sql);
    uint64_t h = ms_hash(q->sql, len);
    stmt *e = NULL;
    *named = false;
    for (int i = 0; i < STMT_SLOTS; i++) {
        stmt *s = &c->stmts[i];
        if (!s->sql) {
            if (!e)
                e = s;
            continue;
        }
        if (s->hash == h && s->len == len && memcmp(s->sql, q->sql, len) == 0) {
            e = s;
            break;
        }
    }
    if (!e)
        return true;
    *named = true;
    if (e->sql && e->is_prepared) {
        snprintf(name, 24, "msp_%llu", (unsigned long long)e->id);
        return true;
    }
    if (!e->sql) {
        e->sql = ms_xstrndup(q->sql, len);
        e->hash = h;
        e->len = len;
    }
    e->id = ++c->next_id;
    snprintf(name, 24, "msp_%llu", (unsigned long long)e->id);
    /* the statements behind this one may use the name before the server has answered: it
     * runs them in order, and a failed Prepare makes them fail and be sent again */
    e->is_prepared = true;
    q->awaits_prepare = true;
    q->stmt = (int)(e - c->stmts);
    q->prep_id = e->id;
    return pq.PQsendPrepare(c->pg, name, q->sql, 0, NULL) == 1;
}

static void send_query(pconn *c, query *q)
{
    ms_db_pipe *p = c->pipe;
    if (!q->span) {
        const ms_trace_ctx *was = ms_trace_current();
        ms_trace_set_current(q->trace.valid ? &q->trace : NULL);
        q->span = ms_db__span_start(c->db, q->sql);
        ms_trace_set_current(was);
    }
    ring_push(c, q);
    c->in_flight++;
    c->unsynced++;
    want_flush(p, c);
    if (c->is_broken)
        return;
    char name[24];
    bool named;
    bool ok = prepared_name(c, q, name, &named);
    if (ok && named)
        ok = pq.PQsendQueryPrepared(c->pg, name, q->nparams, q->params, NULL, NULL, 0) == 1;
    else if (ok)
        ok = pq.PQsendQueryParams(c->pg, q->sql, q->nparams, NULL, q->params, NULL, NULL, 0) == 1;
    /* handled by the flush, so that `done` never runs inside ms_db_pool_query */
    if (!ok)
        c->is_broken = true;
}

static pconn *least_busy(ms_db_pipe *p)
{
    pconn *best = NULL;
    for (int i = 0; i < p->n; i++) {
        pconn *c = p->slots[i].state == CONN_READY ? p->slots[i].conn : NULL;
        if (c && !c->is_broken && (!best || c->in_flight < best->in_flight))
            best = c;
    }
    return best;
}

static void wait_push(ms_db_pipe *p, query *q)
{
    q->next = NULL;
    if (p->wait_tail)
        p->wait_tail->next = q;
    else
        p->wait_head = q;
    p->wait_tail = q;
}

static void dispatch(ms_db_pipe *p, query *q)
{
    pconn *c = least_busy(p);
    if (q->deadline) {
        arm_timer(p, q->deadline);
        if (q->deadline <= uv_now(p->loop))
            c = NULL; /* left to the timer, which answers it */
    }
    if (c) {
        send_query(c, q);
        return;
    }
    wait_push(p, q);
    start_connects(p);
}

static void invalidate(pconn *c, int i, uint64_t id)
{
    if (c->stmts[i].id == id)
        c->stmts[i].is_prepared = false;
}

static bool is_missing_plan(const PGresult *res)
{
    const char *state = pq.PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = pq.PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!state)
        return false;
    if (strcmp(state, "26000") == 0) /* invalid_sql_statement_name: its Prepare failed */
        return true;
    return strcmp(state, "0A000") == 0 && msg && strstr(msg, "cached plan must not");
}

/* One result of the statement at the head of c's FIFO (of its Prepare first, if any). */
static void take_result(pconn *c, query *q, PGresult *res)
{
    ExecStatusType st = pq.PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        if (!q->awaits_prepare && q->rc == 0 && !q->is_retryable && !q->result)
            q->result = ms_db__pg_result_copy(res);
        return;
    }
    if (st == PGRES_PIPELINE_ABORTED) {
        if (q->awaits_prepare)
            invalidate(c, q->stmt, q->prep_id);
        if (q->rc == 0)
            q->is_retryable = true;
        return;
    }
    int rc = ms_db__pg_check(c->db, res);
    bool is_missing = is_missing_plan(res);
    if (q->awaits_prepare)
        invalidate(c, q->stmt, q->prep_id);
    else if (is_missing)
        for (int i = 0; i < STMT_SLOTS; i++)
            if (c->stmts[i].sql && strcmp(c->stmts[i].sql, q->sql) == 0)
                c->stmts[i].is_prepared = false;
    if (q->rc == 0 && is_missing && !q->awaits_prepare)
        q->is_retryable = true;
    else if (q->rc == 0)
        q->rc = rc < 0 ? rc : MS_EDB;
}

/* A statement's results are all in: answer it, or send it again. */
static void finish(pconn *c, query *q)
{
    ms_db_pipe *p = c->pipe;
    if (q->rc == 0 && q->is_retryable && q->done && ++q->attempts < MAX_ATTEMPTS) {
        q->is_retryable = false;
        ms_db_result_free(q->result);
        q->result = NULL;
        dispatch(p, q);
        return;
    }
    int rc = q->rc;
    if (rc == 0 && q->is_retryable) {
        rc = MS_EDB;
        ms_db__set_error(c->db, "the statement was aborted %d times", q->attempts);
    }
    if (rc == 0 && !q->result) /* no row description came: still a result, with no rows */
        q->result = ms_db__result_new(0);
    answer(q, rc, c->db);
    query_free(q);
}

/* Reads every result that has arrived, in the order sent. */
static void read_results(pconn *c)
{
    while (!c->is_dead && c->len > 0 && !pq.PQisBusy(c->pg)) {
        query *q = ring_at(c, 0);
        PGresult *res = pq.PQgetResult(c->pg);
        if (!q) { /* a Sync */
            if (!res)
                break;
            ExecStatusType st = pq.PQresultStatus(res);
            pq.PQclear(res);
            if (st != PGRES_PIPELINE_SYNC) {
                conn_lost(c, "pipeline out of step");
                return;
            }
            ring_pop(c);
            continue;
        }
        if (res) {
            take_result(c, q, res);
            pq.PQclear(res);
            continue;
        }
        if (q->awaits_prepare) { /* the end of the Prepare's results */
            q->awaits_prepare = false;
            continue;
        }
        ring_pop(c);
        c->in_flight--;
        bool is_lost = q->rc == MS_ECONN; /* e.g. 57P01: the server ended the session */
        finish(c, q);
        if (is_lost && !c->is_dead)
            conn_lost(c, "the server ended the session");
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    pconn *c = h->data;
    if (status < 0) {
        conn_lost(c, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE) {
        int rc = pq.PQflush(c->pg);
        if (rc < 0) {
            conn_lost(c, "flush failed");
            return;
        }
        if (rc == 0)
            watch(c, UV_READABLE);
    }
    if (events & UV_READABLE) {
        if (!pq.PQconsumeInput(c->pg)) {
            conn_lost(c, "connection closed");
            return;
        }
        read_results(c);
        if (!c->is_dead && pq.PQstatus(c->pg) == CONNECTION_BAD)
            conn_lost(c, "connection closed");
    }
    if (!c->is_dead)
        changed(c->pipe);
}

static void flush_conn(pconn *c)
{
    c->needs_flush = false;
    if (c->is_broken) {
        conn_lost(c, "cannot queue a statement");
        return;
    }
    if (c->unsynced > 0) {
        c->unsynced = 0;
        ring_push(c, NULL);
        if (pq.PQpipelineSync(c->pg) != 1) { /* it writes what was queued, too */
            conn_lost(c, "cannot send");
            return;
        }
    }
    int rc = pq.PQflush(c->pg);
    if (rc < 0)
        conn_lost(c, "cannot send");
    else
        watch(c, rc ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

/* Just before the loop waits for I/O: what this iteration queued goes out, a batch per
 * connection. An answer given here (a lost connection) may queue more: hence the rounds. */
static void on_flush(uv_prepare_t *h)
{
    ms_db_pipe *p = h->data;
    uv_prepare_stop(h);
    p->is_flush_armed = false;
    for (bool again = true; again && !p->is_closing;) {
        again = false;
        for (int i = 0; i < p->n && !p->is_closing; i++) {
            pconn *c = p->slots[i].state == CONN_READY ? p->slots[i].conn : NULL;
            if (c && c->needs_flush) {
                flush_conn(c);
                again = true;
            }
        }
    }
}

/* ---- connecting ---- */

static void connect_work(uv_work_t *w)
{
    pconn *c = w->data;
    c->connect_rc = ms_db_open(c->pipe->cfg, false, &c->db);
}

static bool has_live_conn(const ms_db_pipe *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].state != CONN_DOWN)
            return true;
    return false;
}

static void fail_waiting(ms_db_pipe *p, int rc)
{
    query *q = p->wait_head;
    p->wait_head = p->wait_tail = NULL;
    while (q) {
        query *next = q->next;
        answer(q, rc, NULL);
        query_free(q);
        q = next;
    }
}

static void connect_done(uv_work_t *w, int status)
{
    pconn *c = w->data;
    ms_db_pipe *p = c->pipe;
    slot *s = &p->slots[c->slot];
    if (p->is_closing) {
        conn_free(c);
        maybe_finish(p);
        return;
    }
    s->conn = NULL;
    s->state = CONN_DOWN;
    if (c->connect_rc == 0) {
        c->pg = ms_db__pg_handle(c->db);
        if (pq.PQsetnonblocking(c->pg, 1) != 0 || pq.PQenterPipelineMode(c->pg) != 1 ||
            uv_poll_init(p->loop, &c->poll, pq.PQsocket(c->pg)) != 0) {
            ms_log(MS_LOG_ERROR, "cannot pipeline on a postgres connection", "error",
                   pq.PQerrorMessage(c->pg), NULL);
            c->connect_rc = MS_ECONN;
        }
    }
    if (c->connect_rc < 0) {
        conn_free(c);
        s->fails++;
        s->retry_at = uv_now(p->loop) + backoff_ms(s->fails);
        arm_timer(p, s->retry_at);
        if (!has_live_conn(p))
            fail_waiting(p, MS_ECONN);
        changed(p);
        return;
    }
    c->poll.data = c;
    watch(c, UV_READABLE);
    s->state = CONN_READY;
    s->conn = c;
    s->fails = 0;
    if (s->was_open)
        p->reconnects++;
    s->was_open = true;
    query *q = p->wait_head;
    p->wait_head = p->wait_tail = NULL;
    while (q) {
        query *next = q->next;
        dispatch(p, q);
        q = next;
    }
    changed(p);
}

static void start_connects(ms_db_pipe *p)
{
    uint64_t now = uv_now(p->loop);
    for (int i = 0; i < p->n && !p->is_closing; i++) {
        slot *s = &p->slots[i];
        if (s->state != CONN_DOWN)
            continue;
        if (s->retry_at > now) {
            arm_timer(p, s->retry_at);
            continue;
        }
        pconn *c = ms_xcalloc(1, sizeof *c);
        c->pipe = p;
        c->slot = i;
        c->work.data = c;
        s->state = CONN_CONNECTING;
        s->conn = c;
        p->live++;
        if (uv_queue_work(p->loop, &c->work, connect_work, connect_done) != 0)
            MS_BUG("uv_queue_work failed");
    }
}

/* ---- deadlines ---- */

static void on_timer(uv_timer_t *t);

static void arm_timer(ms_db_pipe *p, uint64_t due)
{
    if (p->is_closing || due >= p->timer_due)
        return;
    uint64_t now = uv_now(p->loop);
    p->timer_due = due;
    uv_timer_start(&p->timer, on_timer, due > now ? due - now : 0, 0);
}

static bool is_due(const query *q, uint64_t now)
{
    return q->deadline && q->deadline <= now;
}

/* Answers what is past its deadline; a connection whose running statement is, is closed. */
static void on_timer(uv_timer_t *t)
{
    ms_db_pipe *p = t->data;
    uint64_t now = uv_now(p->loop);
    p->timer_due = UINT64_MAX;
    query *expired = NULL, **tail = &expired, *last = NULL;
    for (query **pp = &p->wait_head; *pp;) {
        query *q = *pp;
        if (!is_due(q, now)) {
            last = q;
            pp = &q->next;
            continue;
        }
        *pp = q->next;
        q->next = NULL;
        *tail = q;
        tail = &q->next;
    }
    p->wait_tail = last;
    while (expired && !p->is_closing) {
        query *q = expired;
        expired = q->next;
        answer(q, MS_ETIMEDOUT, NULL);
        query_free(q);
    }
    for (int i = 0; i < p->n && !p->is_closing; i++) {
        pconn *c = p->slots[i].state == CONN_READY ? p->slots[i].conn : NULL;
        if (!c)
            continue;
        query *running = c->len ? ring_at(c, 0) : NULL;
        bool is_stuck = running && is_due(running, now);
        for (size_t j = 0; j < c->len && !c->is_dead && !p->is_closing; j++) {
            query *q = ring_at(c, j);
            if (q && q->done && is_due(q, now))
                answer(q, MS_ETIMEDOUT, NULL);
        }
        if (is_stuck && !c->is_dead && !p->is_closing) {
            ms_log(MS_LOG_WARN, "closing a pipelined db connection stuck past a deadline", NULL);
            conn_drop(c, MS_ETIMEDOUT, NULL, true);
        }
    }
    if (p->is_closing)
        return;
    /* what comes due next: statements still waiting or in flight, and reconnections */
    uint64_t next = UINT64_MAX;
    for (query *q = p->wait_head; q; q = q->next)
        if (q->deadline && q->deadline < next)
            next = q->deadline;
    for (int i = 0; i < p->n; i++) {
        slot *s = &p->slots[i];
        if (s->state == CONN_DOWN && s->retry_at < next)
            next = s->retry_at;
        const pconn *c = s->state == CONN_READY ? s->conn : NULL;
        for (size_t j = 0; c && j < c->len; j++) {
            query *q = ring_at(c, j);
            if (q && q->done && q->deadline && q->deadline < next)
                next = q->deadline;
        }
    }
    start_connects(p);
    if (next != UINT64_MAX)
        arm_timer(p, next);
    changed(p);
}

/* ---- the pipe ---- */

static void handle_closed(uv_handle_t *h)
{
    ms_db_pipe *p = h->data;
    p->live--;
    maybe_finish(p);
}

int ms_db__pipe_new(uv_loop_t *loop, const ms_db_config *cfg, void (*on_change)(void *), void *arg,
                    ms_db_pipe **out)
{
    *out = NULL;
    if (!ms_db__pq_load())
        return MS_ECONN;
    ms_db_pipe *p = ms_xcalloc(1, sizeof *p);
    p->loop = loop;
    p->cfg = cfg;
    p->n = cfg->pipeline_conns > 0 ? cfg->pipeline_conns : MS_DB_PIPELINE_CONNS_DEFAULT;
    p->slots = ms_xcalloc((size_t)p->n, sizeof *p->slots);
    p->on_change = on_change;
    p->change_arg = arg;
    p->timer_due = UINT64_MAX;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_prepare_init(loop, &p->flush);
    p->flush.data = p;
    p->live = 2;
    *out = p;
    return 0;
}

void ms_db__pipe_query(ms_db_pipe *p, uint64_t deadline, const char *sql, int nparams,
                       const char *const *params, ms_db_query_done_fn done, void *arg)
{
    size_t size = sizeof(query) + (size_t)nparams * sizeof(char *);
    for (int i = 0; i < nparams; i++)
        size += params[i] ? strlen(params[i]) + 1 : 0;
    query *q = ms_xcalloc(1, size);
    q->done = done;
    q->arg = arg;
    q->deadline = deadline;
    q->sql = sql;
    q->nparams = nparams;
    q->params = (const char **)(q + 1);
    char *text = (char *)(q->params + nparams);
    for (int i = 0; i < nparams; i++) {
        if (!params[i])
            continue;
        size_t n = strlen(params[i]) + 1;
        memcpy(text, params[i], n);
        q->params[i] = text;
        text += n;
    }
    const ms_trace_ctx *trace = ms_trace_current();
    if (trace)
        q->trace = *trace;
    p->statements++;
    dispatch(p, q);
    changed(p);
}

void ms_db__pipe_close(ms_db_pipe *p, void (*on_closed)(void *), void *arg)
{
    p->is_closing = true;
    p->on_closed = on_closed;
    p->closed_arg = arg;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, handle_closed);
    uv_prepare_stop(&p->flush);
    uv_close((uv_handle_t *)&p->flush, handle_closed);
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].state == CONN_READY)
            conn_drop(p->slots[i].conn, MS_ESHUTDOWN, NULL, false);
    fail_waiting(p, MS_ESHUTDOWN);
}

void ms_db__pipe_stats(const ms_db_pipe *p, int *open, int *in_use, int *in_flight,
                       uint64_t *statements, uint64_t *reconnects)
{
    *open = *in_use = *in_flight = 0;
    for (int i = 0; i < p->n; i++) {
        const slot *s = &p->slots[i];
        if (s->state == CONN_DOWN)
            continue;
        (*open)++;
        if (s->state == CONN_READY && s->conn->in_flight > 0) {
            (*in_use)++;
            *in_flight += s->conn->in_flight;
        }
    }
    *statements = p->statements;
    *reconnects = p->reconnects;
}
