/*
 * db_pool.c — connections for one loop thread. Checkout never blocks the loop: a request gets
 * an idle connection, opens a new one (on a worker), or waits in a FIFO that a single timer
 * expires, so a request fails with MS_EPOOLTIMEOUT inside its deadline even if no connection
 * ever frees. Blocking database calls run on libuv's thread pool.
 *
 * Everything here is touched only by the loop thread, except a slot and its connection while
 * its work item runs (uv_queue_work orders those accesses) and the published stats (mutex).
 *
 * The trace context current when work is queued travels with it: current on the worker while
 * the work runs (its statements are spans under it, its log lines carry its ids) and again
 * around the done callback on the loop, which may queue the next work of the same request.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/db/db_internal.h"
#include "runtime/db/db_pg_async.h"
#include "runtime/core/banned.h"

#define PRE_PING_IDLE_NS 1000000000ULL

/* An overflow connection goes back once it has idled this long, not the moment nobody waits:
 * under a steady load the queue empties and fills many times a second, and a PostgreSQL
 * connection closed and opened each time cost a server process's fork and start-up per burst
 * (a GET's p99 went to hundreds of ms). */
enum { DEFAULT_IDLE_MS = 5000 };

typedef struct slot {
    ms_db_conn *db;              /* NULL until opened on a worker, or after it was closed there */
    uint64_t opened_ns, used_ns; /* uv_hrtime(): readable from any thread */
    struct slot *next_idle;
    bool is_fresh; /* handed out to be opened by its first work */
} slot;

/* New connections opened at once per pool. A burst of requests on a cold pool would otherwise
 * open size+overflow connections in the same instant, and a database that forks a process per
 * connection (PostgreSQL) answers that storm with connect timeouts for everyone. */
enum { MAX_OPENING = 2 };

typedef struct request {
    uv_work_t work;
    ms_db_pool *pool;
    slot *slot;
    ms_db_work_fn fn; /* NULL: the item only closes the slot's connection */
    ms_db_done_fn done;
    void *arg;
    int rc;
    bool reconnected;
    uint64_t queued_ms, expires_ms;
    uint64_t deadline_ms; /* the request's: statements stop at it */
    ms_trace_ctx trace;   /* the queuing thread's current context (a copy); not valid: none */
    struct request *next; /* waiter FIFO */
} request;

struct ms_db_pool {
    uv_loop_t *loop;
    ms_db_config cfg;
    int size, overflow;
    slot *idle;
    int open, in_use, pending; /* pending: queued uv_work items, including closes */
    int closing;               /* closes queued: still counted in open */
    int opening;               /* fresh slots whose first work has not finished */
    request *wait_head, *wait_tail;
    int waiting;
    uv_timer_t timer;
    uint64_t timer_due; /* UINT64_MAX when not armed */
    ms_db_conn *reader; /* SQLite MS_DB_READ connection, opened on first use */
    /* the reader's read transaction, kept while nothing commits (see run_inline) */
    uv_prepare_t read_end;
    bool is_read_open;
    uint64_t read_token;
    ms_db_pipe *pipe; /* PostgreSQL ms_db_pool_query, made on first use; NULL once closed */
    bool is_closing, is_timer_closed, is_prepare_closed;
    void (*on_closed)(void *);
    void *on_closed_arg;
    uint64_t checkouts, timeouts, reconnects;
    double wait_s;
    uv_mutex_t stats_mu;
    ms_db_pool_stats published;
};

static void publish(ms_db_pool *p)
{
    int open = 0, in_use = 0, in_flight = 0;
    uint64_t statements = 0, reconnects = 0;
    if (p->pipe)
        ms_db__pipe_stats(p->pipe, &open, &in_use, &in_flight, &statements, &reconnects);
    uv_mutex_lock(&p->stats_mu);
    p->published = (ms_db_pool_stats){p->size,        p->overflow,
                                      p->open + open, p->in_use + in_use,
                                      p->waiting,     p->checkouts + statements,
                                      p->timeouts,    p->reconnects + reconnects,
                                      p->wait_s,      open,
                                      in_flight};
    uv_mutex_unlock(&p->stats_mu);
}

static void publish_cb(void *arg)
{
    publish(arg);
}

void ms_db_pool_get_stats(ms_db_pool *p, ms_db_pool_stats *out)
{
    uv_mutex_lock(&p->stats_mu);
    *out = p->published;
    uv_mutex_unlock(&p->stats_mu);
}

/* ---- the worker side ---- */

static void work_cb(uv_work_t *w)
{
    request *r = w->data;
    slot *s = r->slot;
    const ms_db_config *cfg = &r->pool->cfg;
    uint64_t now = uv_hrtime();
    if (!r->fn) {
        ms_db_close(s->db);
        s->db = NULL;
        return;
    }
    if (s->db && cfg->pool_recycle_s > 0 &&
        now - s->opened_ns > (uint64_t)cfg->pool_recycle_s * 1000000000ULL) {
        ms_db_close(s->db);
        s->db = NULL;
    }
    /* Only PostgreSQL is pinged: a SQLite connection is a file handle in this process, with no
     * server or network in between that could have dropped it while idle. */
    if (s->db && cfg->pool_pre_ping && cfg->backend == MS_DB_POSTGRES &&
        now - s->used_ns > PRE_PING_IDLE_NS && ms_db_ping(s->db) < 0) {
        ms_log(MS_LOG_WARN, "db connection failed pre-ping, reconnecting", "error",
               ms_db_errmsg(s->db), NULL);
        ms_db_close(s->db);
        s->db = NULL;
        r->reconnected = true;
    }
    if (!s->db) {
        if (ms_db_open(cfg, false, &s->db) < 0) { /* the reason is logged by ms_db_open */
            r->rc = MS_ECONN;
            return;
        }
        s->opened_ns = uv_hrtime();
    }
    ms_db_set_deadline(s->db, r->deadline_ms);
    const ms_trace_ctx *was = ms_trace_current(); /* none on a pool thread, unless shared */
    ms_trace_set_current(r->trace.valid ? &r->trace : NULL);
    r->rc = r->fn(s->db, r->arg);
    ms_trace_set_current(was);
    ms_db_set_deadline(s->db, 0);
    s->used_ns = uv_hrtime();
    if (r->rc == MS_ECONN) { /* closed here, not on the loop: closing may block */
        ms_db_close(s->db);
        s->db = NULL;
    }
}

/* ---- the loop side ---- */

/* Calls `done` inside the context its work was queued in. */
static void call_done(ms_db_done_fn done, int rc, void *arg, const ms_trace_ctx *trace)
{
    const ms_trace_ctx *was = ms_trace_current();
    ms_trace_set_current(trace->valid ? trace : NULL);
    done(rc, arg);
    ms_trace_set_current(was);
}

static void after_work_cb(uv_work_t *w, int status);
static void timer_cb(uv_timer_t *t);

/* Frees the pool once nothing can call back into it any more. */
static void maybe_finish(ms_db_pool *p)
{
    if (!p->is_closing || !p->is_timer_closed || !p->is_prepare_closed || p->pending > 0 ||
        p->open > 0 || p->pipe)
        return;
    void (*cb)(void *) = p->on_closed;
    void *arg = p->on_closed_arg;
    free((char *)p->cfg.sqlite_path);
    free((char *)p->cfg.pg_conninfo);
    uv_mutex_destroy(&p->stats_mu);
    free(p);
    if (cb)
        cb(arg);
}

static void queue(ms_db_pool *p, request *r, slot *s)
{
    r->slot = s;
    r->work.data = r;
    p->pending++;
    if (uv_queue_work(p->loop, &r->work, work_cb, after_work_cb) != 0)
        MS_BUG("uv_queue_work failed"); /* only for a NULL callback */
}

static void close_slot(ms_db_pool *p, slot *s)
{
    p->closing++;
    request *r = ms_xcalloc(1, sizeof *r);
    r->pool = p;
    queue(p, r, s);
}

static void start(ms_db_pool *p, request *r, slot *s)
{
    p->in_use++;
    p->checkouts++;
    p->wait_s += (double)(uv_now(p->loop) - r->queued_ms) / 1000.0;
    queue(p, r, s);
}

static int idle_ms(const ms_db_pool *p)
{
    return p->cfg.pool_idle_ms > 0 ? p->cfg.pool_idle_ms : DEFAULT_IDLE_MS;
}

/* An idle connection, or a new (not yet opened) slot if the limit allows; NULL otherwise. */
static slot *take_slot(ms_db_pool *p)
{
    slot *s = p->idle;
    if (s) {
        p->idle = s->next_idle;
        return s;
    }
    if (p->open >= p->size + p->overflow || p->opening >= MAX_OPENING)
        return NULL;
    p->open++;
    p->opening++;
    s = ms_xcalloc(1, sizeof *s);
    s->is_fresh = true;
    return s;
}

/* Makes the timer fire by `due` (absolute uv_now ms). It is only ever moved earlier here;
 * a stale firing finds nothing expired and re-arms, so queueing and serving stay O(1). */
static void arm_timer(ms_db_pool *p, uint64_t due)
{
    if (due >= p->timer_due)
        return;
    uint64_t now = uv_now(p->loop);
    p->timer_due = due;
    uv_timer_start(&p->timer, timer_cb, due > now ? due - now : 0, 0);
}

static void stop_timer(ms_db_pool *p)
{
    uv_timer_stop(&p->timer);
    p->timer_due = UINT64_MAX;
}

static request *pop_waiter(ms_db_pool *p)
{
    request *r = p->wait_head;
    p->wait_head = r->next;
    if (!p->wait_head)
        p->wait_tail = NULL;
    p->waiting--;
    return r;
}

/* Closes idle connections beyond the pool's size once they have idled idle_ms; returns when
 * the next one will have (uv_now ms), or UINT64_MAX. The idle list is most recent first: the
 * ones given back are at its end, idle longest, and the ones kept are those in use lately. */
static uint64_t trim_idle(ms_db_pool *p)
{
    int excess = p->open - p->closing - p->size, n = 0;
    for (slot *s = p->idle; s; s = s->next_idle)
        n++;
    uint64_t now_ns = uv_hrtime(), idle_ns = (uint64_t)idle_ms(p) * 1000000, next_ns = UINT64_MAX;
    slot **pp = &p->idle;
    for (int skip = n - excess; skip > 0 && *pp; skip--)
        pp = &(*pp)->next_idle;
    while (excess > 0 && *pp) {
        slot *s = *pp;
        if (now_ns - s->used_ns >= idle_ns) {
            *pp = s->next_idle;
            close_slot(p, s);
            excess--;
            continue;
        }
        if (s->used_ns + idle_ns < next_ns)
            next_ns = s->used_ns + idle_ns;
        pp = &s->next_idle;
    }
    return next_ns == UINT64_MAX ? UINT64_MAX : uv_now(p->loop) + (next_ns - now_ns) / 1000000 + 1;
}

/* Hands free or openable connections to the oldest waiters. */
static void serve_waiters(ms_db_pool *p)
{
    slot *s;
    if (!p->wait_head)
        return;
    while (p->wait_head && (s = take_slot(p)))
        start(p, pop_waiter(p), s);
    if (!p->wait_head) { /* what the timer waits for now: only idle overflow, if any */
        stop_timer(p);
        arm_timer(p, trim_idle(p));
    }
}

/* Expires every waiter whose time has come (not only the head: deadlines differ). */
static void timer_cb(uv_timer_t *t)
{
    ms_db_pool *p = t->data;
    uint64_t now = uv_now(p->loop), next_due = UINT64_MAX;
    request *expired = NULL, **tail = &expired, *last = NULL;
    p->timer_due = UINT64_MAX; /* a one-shot timer that has fired */
    for (request **pp = &p->wait_head; *pp;) {
        request *r = *pp;
        if (r->expires_ms > now) {
            if (r->expires_ms < next_due)
                next_due = r->expires_ms;
            last = r;
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        p->waiting--;
        p->timeouts++;
        p->wait_s += (double)(now - r->queued_ms) / 1000.0;
        r->next = NULL;
        *tail = r;
        tail = &r->next;
    }
    p->wait_tail = last;
    if (p->wait_head)
        arm_timer(p, next_due);
    arm_timer(p, trim_idle(p));
    publish(p);
    while (expired) {
        request *r = expired;
        expired = r->next;
        call_done(r->done, MS_EPOOLTIMEOUT, r->arg, &r->trace);
        free(r);
    }
}

static void timer_close_cb(uv_handle_t *h)
{
    ms_db_pool *p = h->data;
    p->is_timer_closed = true;
    maybe_finish(p);
}

static void prepare_close_cb(uv_handle_t *h)
{
    ms_db_pool *p = h->data;
    p->is_prepare_closed = true;
    maybe_finish(p);
}

/* Takes a connection back from finished work. */
static void release(ms_db_pool *p, slot *s)
{
    if (!s->db) { /* never opened, or lost (MS_ECONN): its place frees up */
        free(s);
        p->open--;
    } else if (p->is_closing) {
        close_slot(p, s);
    } else {
        s->next_idle = p->idle;
        p->idle = s;
        if (p->open > p->size) /* overflow: given back once idle long enough (trim_idle) */
            arm_timer(p, uv_now(p->loop) + (uint64_t)idle_ms(p));
    }
    if (!p->is_closing)
        serve_waiters(p);
}

static void after_work_cb(uv_work_t *w, int status)
{
    request *r = w->data;
    ms_db_pool *p = r->pool;
    p->pending--;
    if (!r->fn) {
        free(r->slot);
        p->open--;
        p->closing--;
        free(r);
        if (!p->is_closing)
            serve_waiters(p);
        publish(p);
        maybe_finish(p);
        return;
    }
    p->in_use--;
    if (r->reconnected)
        p->reconnects++;
    if (r->slot->is_fresh) {
        r->slot->is_fresh = false;
        p->opening--;
    }
    release(p, r->slot);
    publish(p);
    ms_db_done_fn done = r->done;
    void *arg = r->arg;
    int rc = r->rc;
    ms_trace_ctx trace = r->trace;
    free(r);
    call_done(done, rc, arg, &trace);
    maybe_finish(p);
}

int ms_db_pool_new(uv_loop_t *loop, const ms_db_config *cfg, int share, ms_db_pool **out)
{
    *out = NULL;
    if (share < 1 || cfg->pool_size < 0 || cfg->pool_overflow < 0)
        return MS_EINVAL;
    ms_db_pool *p = ms_xcalloc(1, sizeof *p);
    p->loop = loop;
    p->cfg = *cfg;
    p->cfg.sqlite_path = cfg->sqlite_path ? ms_xstrdup(cfg->sqlite_path) : NULL;
    p->cfg.pg_conninfo = cfg->pg_conninfo ? ms_xstrdup(cfg->pg_conninfo) : NULL;
    p->size = (cfg->pool_size + share - 1) / share;
    if (p->size < 1)
        p->size = 1;
    p->overflow = (cfg->pool_overflow + share - 1) / share;
    if (uv_mutex_init(&p->stats_mu) != 0)
        MS_BUG("uv_mutex_init failed");
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_prepare_init(loop, &p->read_end);
    p->read_end.data = p;
    p->timer_due = UINT64_MAX;
    publish(p);
    *out = p;
    return 0;
}

static void end_read(ms_db_pool *p)
{
    if (p->is_read_open) {
        p->is_read_open = false;
        ms_db_exec_script(p->reader, "COMMIT");
    }
    uv_prepare_stop(&p->read_end);
}

static void on_read_end(uv_prepare_t *h)
{
    end_read(h->data);
}

/*
 * SQLite reads run right here: a WAL reader never waits for the writer, and a short read costs
 * less than a trip through the thread pool.
 *
 * Each SQLite read transaction costs two fcntl() calls (the WAL read lock), as much as the rest
 * of a GET. So the reader keeps its transaction across reads for as long as the WAL index says
 * nothing has committed since it began (a memory read, see ms_db__sqlite_change_token): a read
 * on a reused snapshot sees the latest commit, exactly as a fresh one would. The transaction
 * ends before the loop next waits for I/O (uv_prepare), so it is never held while idle and a
 * writer's WAL reset is not held off.
 */
static void run_inline(ms_db_pool *p, uint64_t deadline, ms_db_work_fn work, ms_db_done_fn done,
                       void *arg)
{
    int rc = 0;
    if (!p->reader)
        rc = ms_db_open(&p->cfg, true, &p->reader);
    if (rc == 0) {
        uint64_t token;
        bool known = ms_db__sqlite_change_token(p->reader, &token) == 0;
        if (p->is_read_open && (!known || token != p->read_token))
            end_read(p);
        if (!p->is_read_open && known && ms_db_exec_script(p->reader, "BEGIN") == 0) {
            /* the token is read before the snapshot is taken: a commit in between only makes
             * the next check end this transaction early */
            p->is_read_open = true;
            p->read_token = token;
            uv_prepare_start(&p->read_end, on_read_end);
        }
        p->checkouts++;
        ms_db_set_deadline(p->reader, deadline);
        rc = work(p->reader, arg);
        ms_db_set_deadline(p->reader, 0);
        if (rc < 0)
            end_read(p);
        if (rc == MS_ECONN) {
            ms_db_close(p->reader);
            p->reader = NULL;
        }
    }
    publish(p);
    done(rc, arg);
}

void ms_db_pool_run(ms_db_pool *p, int flags, uint64_t deadline, ms_db_work_fn work,
                    ms_db_done_fn done, void *arg)
{
    if (p->is_closing) {
        done(MS_ESHUTDOWN, arg);
        return;
    }
    if ((flags & MS_DB_READ) && p->cfg.backend == MS_DB_SQLITE) {
        run_inline(p, deadline, work, done, arg);
        return;
    }
    request *r = ms_xcalloc(1, sizeof *r);
    r->pool = p;
    r->fn = work;
    r->done = done;
    r->arg = arg;
    r->queued_ms = uv_now(p->loop);
    r->expires_ms = deadline;
    r->deadline_ms = deadline;
    const ms_trace_ctx *trace = ms_trace_current();
    if (trace)
        r->trace = *trace;
    if (p->cfg.pool_timeout_ms > 0 && r->queued_ms + (uint64_t)p->cfg.pool_timeout_ms < deadline)
        r->expires_ms = r->queued_ms + (uint64_t)p->cfg.pool_timeout_ms;
    slot *s;
    if (!p->wait_head && (s = take_slot(p))) {
        start(p, r, s);
    } else {
        /* Even an expired request goes through the timer: outside shutdown a write's `done`
         * never runs inside this call, so callers need not guard against reentry. */
        if (p->wait_tail)
            p->wait_tail->next = r;
        else
            p->wait_head = r;
        p->wait_tail = r;
        p->waiting++;
        arm_timer(p, r->expires_ms);
    }
    publish(p);
}

typedef struct inline_query {
    const char *sql;
    int nparams;
    const char *const *params;
    ms_db_result *result;
    ms_db_query_done_fn done;
    void *arg;
} inline_query;

static int inline_query_work(ms_db_conn *c, void *arg)
{
    inline_query *iq = arg;
    return ms_db_exec(c, iq->sql, iq->nparams, iq->params, &iq->result);
}

static void inline_query_done(int rc, void *arg)
{
    inline_query *iq = arg;
    if (rc < 0) {
        ms_db_result_free(iq->result);
        iq->result = NULL;
    }
    iq->done(rc, iq->result, iq->arg);
}

void ms_db_pool_query(ms_db_pool *p, uint64_t deadline, const char *sql, int nparams,
                      const char *const *params, ms_db_query_done_fn done, void *arg)
{
    if (p->is_closing) {
        done(MS_ESHUTDOWN, NULL, arg);
        return;
    }
    if (p->cfg.backend == MS_DB_SQLITE) {
        inline_query iq = {sql, nparams, params, NULL, done, arg};
        run_inline(p, deadline, inline_query_work, inline_query_done, &iq);
        return;
    }
    if (!p->pipe) {
        int rc = ms_db__pipe_new(p->loop, &p->cfg, publish_cb, p, &p->pipe);
        if (rc < 0) {
            done(rc, NULL, arg);
            return;
        }
    }
    ms_db__pipe_query(p->pipe, deadline, sql, nparams, params, done, arg);
}

static void pipe_closed(void *arg)
{
    ms_db_pool *p = arg;
    p->pipe = NULL;
    maybe_finish(p);
}

void ms_db_pool_close(ms_db_pool *p, void (*on_closed)(void *arg), void *arg)
{
    if (p->is_closing)
        MS_BUG("ms_db_pool_close called twice");
    p->is_closing = true;
    p->on_closed = on_closed;
    p->on_closed_arg = arg;
    request *waiters = p->wait_head;
    p->wait_head = p->wait_tail = NULL;
    p->waiting = 0;
    stop_timer(p);
    uv_close((uv_handle_t *)&p->timer, timer_close_cb);
    if (p->reader)
        end_read(p);
    uv_close((uv_handle_t *)&p->read_end, prepare_close_cb);
    while (p->idle) {
        slot *s = p->idle;
        p->idle = s->next_idle;
        close_slot(p, s);
    }
    ms_db_close(p->reader);
    p->reader = NULL;
    if (p->pipe)
        ms_db__pipe_close(p->pipe, pipe_closed, p);
    publish(p);
    while (waiters) {
        request *r = waiters;
        waiters = r->next;
        call_done(r->done, MS_ESHUTDOWN, r->arg, &r->trace);
        free(r);
    }
}
