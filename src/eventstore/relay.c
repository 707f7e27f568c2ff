/*
 * relay.c — the outbox relay thread (contract in relay.h). Publishers are behind publisher.h
 * (the file feed: publisher_file.c); marking rows published is outbox.c's, shared with the
 * store's writer, which runs the marks on SQLite (ms_es_mark_published).
 *
 * Two threads, a pipeline. The relay thread reads: (re)connect; on PostgreSQL hold the advisory
 * lock; select the oldest rows not yet handed on (seq >= next_seq); queue their in-order prefix
 * as one page on the batch processor (runtime/obs/batch.h), which flushes at `batch` rows or
 * at once (1 ms) and retries a failed flush with backoff. The batch's flusher thread publishes
 * a flush's rows and marks exactly those rows, so the next page is read while the last one is
 * published. Marking goes by runs of consecutive seq (`seq BETWEEN first AND last`, one
 * statement per run, one run in the common case): a range spanning a gap could mark a row that
 * committed after the select and was never published.
 *
 * The outbox table stays the durable queue: the batch holds copies of at most two pages, the
 * reader reads only when a page fits (so the batch never refuses a row), and what is queued at
 * a crash or left at stop is still unpublished in the table for the next start. A flush whose
 * publish worked but whose mark failed is retried without publishing those rows again
 * (published_through). A relay that lost the PostgreSQL lock takes it again only once its queue
 * is empty, since a new owner starts after the highest marked row.
 *
 * Threads: `is_stopping`, `is_kicked`, `in_flight` and the stats are guarded by r->mu; the reading
 * connection belongs to the relay thread; the publisher, the marking connection and the
 * flush's arrays to the flusher.
 */
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "eventstore/outbox.h"
#include "eventstore/relay.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/obs/batch.h"
#include "runtime/obs/metrics.h"
#include "runtime/core/banned.h"

enum {
    BACKOFF_MIN_MS = 50,
    BACKOFF_MAX_MS = 5000,
    COUNT_EVERY_MS = 1000, /* the backlog COUNT(*) at most this often */
    FLUSH_WAIT_MS = 1,     /* a page goes out at once; rows queued with it join it */
    STOP_FLUSH_MS = 250,   /* at stop, a healthy publisher still takes what is queued */
};

/* A row on its way to the publisher: a copy of the selected row, its strings in `text`. */
typedef struct relay_item {
    ms_outbox_message m;
    char text[];
} relay_item;

struct ms_relay {
    ms_db_config cfg; /* strings below are our copies */
    char *sqlite_path, *pg_conninfo, *service;
    ms_publisher pub;
    int batch, poll_ms, gap_wait_ms;
    char select_sql[224];
    ms_batch *queue; /* pages on their way to the publisher */

    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cond;
    bool is_stopping, is_kicked;
    bool is_awaiting_kick; /* in relay_wait with wake_on_kick: a kick must wake it */
    int64_t in_flight;     /* rows queued on the batch and not yet marked */
    int linger_ms;
    ms_es *es; /* or NULL: see ms_relay_options */
    ms_relay_stats stats;

    /* relay thread only */
    ms_db_conn *conn;
    bool has_lock;
    int64_t next_seq;    /* the seq to queue next (0: unknown) */
    uint64_t gap_since;  /* when the gap before next_seq was first seen (ms; 0: none) */
    uint64_t counted_at; /* when pending was last counted (ms) */
    unsigned attempt;    /* consecutive failures, for the backoff */
    ms_outbox_message *msgs;

    /* flusher thread only */
    ms_db_conn *mark_conn; /* NULL with a SQLite store, whose writer marks */
    ms_outbox_message *out;
    int64_t *run_first, *run_last; /* the runs of consecutive seq a mark covers */
    int64_t published_through;     /* the highest seq the publisher took */
};

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* ---- waiting ---- */

/* Sleeps up to `ms`, less when stopping or (with wake_on_kick) kicked. False when stopping. */
static bool relay_wait(ms_relay *r, uint64_t ms, bool wake_on_kick)
{
    uint64_t deadline = uv_hrtime() + ms * 1000000;
    uv_mutex_lock(&r->mu);
    r->is_awaiting_kick = wake_on_kick;
    while (!r->is_stopping && !(wake_on_kick && r->is_kicked)) {
        uint64_t now = uv_hrtime();
        if (now >= deadline)
            break;
        uv_cond_timedwait(&r->cond, &r->mu, deadline - now);
    }
    r->is_awaiting_kick = false;
    if (wake_on_kick)
        r->is_kicked = false;
    bool go = !r->is_stopping;
    uv_mutex_unlock(&r->mu);
    return go;
}

/* Exponential backoff with full jitter: uniform in [50 ms, min(5 s, 50 ms * 2^attempt)]. */
static bool backoff(ms_relay *r)
{
    unsigned shift = r->attempt < 7 ? r->attempt : 7;
    uint64_t ceiling = (uint64_t)BACKOFF_MIN_MS << shift;
    if (ceiling > BACKOFF_MAX_MS)
        ceiling = BACKOFF_MAX_MS;
    uint32_t rnd;
    ms_random_bytes(&rnd, sizeof rnd);
    r->attempt++;
    return relay_wait(r, BACKOFF_MIN_MS + rnd % (ceiling - BACKOFF_MIN_MS + 1), false);
}

static bool is_stopping(ms_relay *r)
{
    uv_mutex_lock(&r->mu);
    bool stopping = r->is_stopping;
    uv_mutex_unlock(&r->mu);
    return stopping;
}

/* ---- the database side ---- */

/* Logs a failed step on *conn (the reading or the marking connection); a lost connection is
 * closed, to be reopened, and the reading one takes the PostgreSQL lock with it. */
static void db_failed(ms_relay *r, ms_db_conn **conn, const char *what, int rc)
{
    ms_log(MS_LOG_WARN, "outbox relay: database error", "service", r->service, "step", what,
           "error", ms_errname(rc), "detail", *conn ? ms_db_errmsg(*conn) : "", NULL);
    if (rc != MS_ECONN || !*conn)
        return;
    ms_db_close(*conn);
    *conn = NULL;
    if (conn == &r->conn) {
        r->has_lock = false;
        uv_mutex_lock(&r->mu);
        r->stats.has_lock = false;
        uv_mutex_unlock(&r->mu);
    }
}

/* Rows queued on the batch, not yet published and marked. */
static size_t queued(ms_relay *r)
{
    ms_batch_stats s;
    ms_batch_get_stats(r->queue, &s);
    return s.queued;
}

static int64_t scalar_i64(const ms_db_result *res)
{
    const char *v = ms_db_nrows(res) > 0 ? ms_db_get(res, 0, 0) : NULL;
    return v ? strtoll(v, NULL, 10) : 0;
}

/* Where a new owner of the outbox starts: after the highest published row. */
static int load_next_seq(ms_relay *r)
{
    ms_db_result *res = NULL;
    int rc = ms_db_exec(r->conn, "SELECT MAX(seq) FROM outbox WHERE published_at IS NOT NULL", 0,
                        NULL, &res);
    if (rc == 0)
        r->next_seq = scalar_i64(res) + 1;
    ms_db_result_free(res);
    r->gap_since = 0;
    return rc;
}

/* PostgreSQL: take the relay lock if free. SQLite: always ours. */
static int take_lock(ms_relay *r)
{
    int rc = 0;
    ms_db_result *res = NULL;
    if (ms_db_backend_of(r->conn) == MS_DB_POSTGRES) {
        rc = ms_db_exec(r->conn, "SELECT pg_try_advisory_lock(" MS_RELAY_LOCK_KEY ")", 0, NULL,
                        &res);
        if (rc != 0)
            goto out;
        const char *v = ms_db_nrows(res) > 0 ? ms_db_get(res, 0, 0) : NULL;
        if (!v || strcmp(v, "t") != 0)
            goto out; /* another relay publishes */
    }
    if ((rc = load_next_seq(r)) != 0)
        goto out;
    r->has_lock = true;
    ms_log(MS_LOG_INFO, "outbox relay: publishing", "service", r->service, "publisher",
           r->pub.name ? r->pub.name : "", NULL);
out:
    ms_db_result_free(res);
    uv_mutex_lock(&r->mu);
    r->stats.has_lock = r->has_lock;
    uv_mutex_unlock(&r->mu);
    return rc;
}

/* Seconds since an RFC 3339 UTC time "2026-11-25T06:15:47.123Z" (0 when unparsable). */
static double age_seconds(const char *ts)
{
    struct tm tm;
    int ms = 0;
    memset(&tm, 0, sizeof tm);
    if (!ts || sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                      &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double age = (double)(now.tv_sec - timegm(&tm)) + (double)now.tv_nsec / 1e9 - ms / 1e3;
    return age > 0 ? age : 0;
}

/* Records what the poll saw: pending rows and the oldest one's age. */
static void note_poll(ms_relay *r, const ms_db_result *res, int n)
{
    int64_t pending = -1; /* below one page: n plus the rows queued, which the select skips */
    bool is_counted = n < r->batch;
    if (!is_counted && now_ms() - r->counted_at >= COUNT_EVERY_MS) {
        ms_db_result *cnt = NULL;
        if (ms_db_exec(r->conn, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL", 0, NULL,
                       &cnt) == 0) {
            pending = scalar_i64(cnt);
            is_counted = true;
            r->counted_at = now_ms();
        }
        ms_db_result_free(cnt);
    }
    double lag = n > 0 ? age_seconds(ms_db_get(res, 0, 6)) : 0;
    uv_mutex_lock(&r->mu);
    if (pending < 0) /* under the lock the flusher takes published rows out of in_flight with */
        pending = n + r->in_flight;
    if (is_counted || pending > r->stats.pending) /* else keep the last count, less published */
        r->stats.pending = pending;
    r->stats.lag_seconds = lag;
    uv_mutex_unlock(&r->mu);
}

/*
 * How many of the n selected rows to publish now: the prefix of consecutive seq starting at
 * next_seq. On PostgreSQL a gap may be a transaction that has its seq but has not committed:
 * hold what follows for up to gap_wait_ms, then take it for a rollback. SQLite commits in seq
 * order, so there a gap is always a rollback.
 */
static int in_order_prefix(ms_relay *r, int n)
{
    bool is_pg = ms_db_backend_of(r->conn) == MS_DB_POSTGRES;
    if (is_pg && r->next_seq > 0 && r->msgs[0].seq != r->next_seq) {
        uint64_t now = now_ms();
        if (!r->gap_since)
            r->gap_since = now;
        if (now - r->gap_since < (uint64_t)r->gap_wait_ms)
            return 0;
        char from[24], to[24];
        snprintf(from, sizeof from, "%lld", (long long)r->next_seq);
        snprintf(to, sizeof to, "%lld", (long long)r->msgs[0].seq - 1);
        ms_log(MS_LOG_INFO, "outbox relay: seq gap taken for rolled back", "service", r->service,
               "#from", from, "#to", to, NULL);
    }
    r->gap_since = 0;
    int k = 1;
    while (k < n && (!is_pg || r->msgs[k].seq == r->msgs[k - 1].seq + 1))
        k++;
    return k;
}

/* Opens one of the relay's connections into *conn (NULL on failure). */
static int open_conn(ms_relay *r, ms_db_conn **conn)
{
    int rc = ms_db_open(&r->cfg, false, conn);
    if (rc != 0) {
        ms_db_close(*conn);
        *conn = NULL;
    }
    return rc;
}

/* Marks out[0..n) published: one UPDATE per run of consecutive seq, in one transaction.
 * SQLite with this process's store: the store's writer runs it (ms_es_mark_published says
 * why); else on the flusher's own connection. */
static int mark(ms_relay *r, size_t n)
{
    char now[MS_TIME_LEN + 1];
    ms_time_now(now);
    size_t runs = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && r->out[j].seq == r->out[j - 1].seq + 1)
            j++;
        r->run_first[runs] = r->out[i].seq;
        r->run_last[runs++] = r->out[j - 1].seq;
        i = j;
    }
    if (r->es && r->cfg.backend == MS_DB_SQLITE)
        return ms_es_mark_published(r->es, r->run_first, r->run_last, runs, now);
    int rc = r->mark_conn ? 0 : open_conn(r, &r->mark_conn);
    if (rc != 0)
        return rc;
    rc = runs > 1 ? ms_db_begin(r->mark_conn) : 0;
    if (rc == 0)
        rc = ms_outbox_mark_runs(r->mark_conn, r->run_first, r->run_last, runs, now);
    return runs > 1 ? ms_db_end(r->mark_conn, rc) : rc;
}

/* The batch's flush, on its thread: publishes the rows the publisher has not taken yet, then
 * marks all n. Non-zero: the batch backs off and hands the same rows (and maybe more) again. */
static int relay_flush(void *arg, void *const *items, size_t n)
{
    ms_relay *r = arg;
    for (size_t i = 0; i < n; i++)
        r->out[i] = ((const relay_item *)items[i])->m;
    size_t fresh = 0;
    while (fresh < n && r->out[fresh].seq <= r->published_through)
        fresh++;
    if (fresh < n) {
        int rc = r->pub.publish(r->pub.self, r->out + fresh, n - fresh);
        if (rc != 0) { /* logged by the batch, once per outage */
            uv_mutex_lock(&r->mu);
            r->stats.failures_total++;
            uv_mutex_unlock(&r->mu);
            return rc;
        }
        r->published_through = r->out[n - 1].seq;
    }
    int rc = mark(r, n);
    if (rc != 0) { /* published, not marked: the retry only marks; a crash publishes again */
        db_failed(r, &r->mark_conn, "mark", rc);
        return rc;
    }
    uv_mutex_lock(&r->mu);
    r->stats.published_total += (uint64_t)n;
    r->stats.last_seq = r->out[n - 1].seq;
    r->stats.pending = r->stats.pending > (int64_t)n ? r->stats.pending - (int64_t)n : 0;
    r->in_flight -= (int64_t)n;
    uv_mutex_unlock(&r->mu);
    ms_relay_kick(r); /* a reader waiting for room goes on */
    return 0;
}

static void item_free(void *arg, void *item)
{
    (void)arg;
    free(item);
}

/* A copy of msgs[i] the batch can own. */
static relay_item *item_copy(const ms_outbox_message *m)
{
    const char *src[6] = {m->id,   m->aggregate_type, m->aggregate_id,
                          m->type, m->payload,        m->created_at};
    size_t len[6], total = 0;
    for (int i = 0; i < 6; i++)
        total += (len[i] = strlen(src[i] ? src[i] : "")) + 1;
    relay_item *it = ms_xmalloc(sizeof *it + total);
    const char **dst[6] = {&it->m.id,   &it->m.aggregate_type, &it->m.aggregate_id,
                           &it->m.type, &it->m.payload,        &it->m.created_at};
    char *p = it->text;
    for (int i = 0; i < 6; i++) {
        memcpy(p, src[i] ? src[i] : "", len[i] + 1);
        *dst[i] = p;
        p += len[i] + 1;
    }
    it->m.seq = m->seq;
    return it;
}

/* Queues msgs[0..k) as one page; the reader then goes on after them. */
static void queue_page(ms_relay *r, int k)
{
    void **items = ms_xcalloc((size_t)k, sizeof *items);
    for (int i = 0; i < k; i++)
        items[i] = item_copy(&r->msgs[i]);
    uv_mutex_lock(&r->mu); /* counted before the flusher can mark them */
    r->in_flight += k;
    uv_mutex_unlock(&r->mu);
    int rc = ms_batch_enqueue_many(r->queue, items, (size_t)k);
    if (rc == 0) {
        r->next_seq = r->msgs[k - 1].seq + 1;
    } else { /* cannot happen: the reader reads only when a page fits, and stops first */
        uv_mutex_lock(&r->mu);
        r->in_flight -= k;
        uv_mutex_unlock(&r->mu);
        ms_log(MS_LOG_ERROR, "outbox relay: cannot queue rows", "service", r->service, "error",
               ms_errname(rc), NULL);
        for (int i = 0; i < k; i++)
            free(items[i]);
    }
    free(items);
}

/* One round: connect, lock, select, queue a page; then sleep as the round asks. */
static void relay_round(ms_relay *r)
{
    int rc;
    if (!r->conn && (rc = open_conn(r, &r->conn)) != 0) {
        db_failed(r, &r->conn, "connect", rc);
        backoff(r);
        return;
    }
    if (!r->has_lock) {
        if (queued(r) > 0) { /* rows of the last ownership go first: next_seq comes from marks */
            relay_wait(r, 20, true);
        } else if ((rc = take_lock(r)) != 0) {
            db_failed(r, &r->conn, "lock", rc);
            backoff(r);
        } else if (!r->has_lock) {
            relay_wait(r, (uint64_t)r->poll_ms, false);
        }
        return;
    }
    if (queued(r) > (size_t)r->batch) { /* no room for a page: a flush kicks when it made some */
        relay_wait(r, (uint64_t)r->poll_ms, true);
        return;
    }
    char from[24];
    snprintf(from, sizeof from, "%lld", (long long)r->next_seq);
    const char *param[] = {from};
    ms_db_result *res = NULL;
    if ((rc = ms_db_exec(r->conn, r->select_sql, 1, param, &res)) != 0) {
        ms_db_result_free(res);
        db_failed(r, &r->conn, "select", rc);
        backoff(r);
        return;
    }
    r->attempt = 0;
    int n = ms_db_nrows(res);
    /* Every row seen lies in a batch at or below the visible position read now: once that is
     * durable, so are they (a row never goes out that a power cut could take back). */
    if (n > 0 && r->es && ms_es_wait_committed(r->es, ms_es_visible_position(r->es), 1000) != 0) {
        ms_db_result_free(res);
        relay_wait(r, 20, false);
        return;
    }
    for (int i = 0; i < n; i++) {
        ms_outbox_message *m = &r->msgs[i];
        m->seq = strtoll(ms_db_get(res, i, 0), NULL, 10);
        m->id = ms_db_get(res, i, 1);
        m->aggregate_type = ms_db_get(res, i, 2);
        m->aggregate_id = ms_db_get(res, i, 3);
        m->type = ms_db_get(res, i, 4);
        m->payload = ms_db_get(res, i, 5);
        m->created_at = ms_db_get(res, i, 6);
    }
    note_poll(r, res, n);
    int k = n > 0 ? in_order_prefix(r, n) : 0;
    if (k > 0)
        queue_page(r, k);
    ms_db_result_free(res);
    /* Caught up: let rows gather before the next round. Every flush ends in a write
     * transaction (marking rows published), the store writer's or one competing with it for
     * the database's write lock; a flush per commit would halve the commits' rate. */
    if (k > 0 && k < r->batch && r->linger_ms > 0)
        relay_wait(r, (uint64_t)r->linger_ms, false);
    if (n == 0)
        relay_wait(r, (uint64_t)r->poll_ms, true);
    else if (k == 0) /* holding rows behind a gap: look again soon */
        relay_wait(r, (uint64_t)(r->poll_ms < 20 ? r->poll_ms : 20), true);
}

static void relay_main(void *arg)
{
    pthread_setname_np(pthread_self(), "outbox-relay");
    ms_relay *r = arg;
    while (!is_stopping(r))
        relay_round(r);
}

/* ---- lifecycle ---- */

/* What ms_relay_start allocated; its thread, lock and connection are the caller's to end. */
static void relay_free(ms_relay *r)
{
    free(r->run_first);
    free(r->run_last);
    free(r->out);
    free(r->msgs);
    free(r->service);
    free(r->pg_conninfo);
    free(r->sqlite_path);
    free(r);
}

int ms_relay_start(const ms_db_config *db, const ms_publisher *pub, const ms_relay_options *opt,
                   ms_relay **out)
{
    *out = NULL;
    if (!db || !pub || !pub->publish)
        return MS_EINVAL;
    ms_relay_options o = opt ? *opt : (ms_relay_options){0};
    if (o.batch < 0 || o.poll_ms < 0 || o.gap_wait_ms < 0 || o.linger_ms < 0)
        return MS_EINVAL;
    ms_relay *r = ms_xcalloc(1, sizeof *r);
    r->cfg = *db;
    /* A published mark lost to a power cut only publishes its rows again: at least once. */
    r->cfg.is_derived = true;
    if (db->sqlite_path)
        r->cfg.sqlite_path = r->sqlite_path = ms_xstrdup(db->sqlite_path);
    if (db->pg_conninfo)
        r->cfg.pg_conninfo = r->pg_conninfo = ms_xstrdup(db->pg_conninfo);
    r->service = ms_xstrdup(o.service ? o.service : "unknown");
    r->batch = o.batch ? o.batch : 500;
    r->poll_ms = o.poll_ms ? o.poll_ms : 200;
    r->gap_wait_ms = o.gap_wait_ms ? o.gap_wait_ms : 1000;
    r->linger_ms = o.linger_ms ? o.linger_ms : 20;
    r->es = o.es;
    /* with a store, rows may reference their events (ms_es_migrations 1003) */
    snprintf(r->select_sql, sizeof r->select_sql,
             "SELECT seq, id, aggregate_type, aggregate_id, type, payload, created_at FROM %s"
             " WHERE published_at IS NULL AND seq >= CAST($1 AS BIGINT) ORDER BY seq LIMIT %d",
             r->es ? "outbox_messages" : "outbox", r->batch);
    r->msgs = ms_xcalloc((size_t)r->batch, sizeof *r->msgs);
    r->out = ms_xcalloc((size_t)r->batch, sizeof *r->out);
    r->run_first = ms_xcalloc((size_t)r->batch, sizeof *r->run_first);
    r->run_last = ms_xcalloc((size_t)r->batch, sizeof *r->run_last);
    int rc = open_conn(r, &r->conn);
    if (rc != 0)
        goto out;
    r->pub = *pub;
    uv_mutex_init(&r->mu);
    uv_cond_init(&r->cond);
    ms_batch_options bo = {
        .name = "outbox",
        .max_items = r->batch,
        .max_wait_ms = FLUSH_WAIT_MS,
        .max_queued = 2 * r->batch,
        .backoff_min_ms = BACKOFF_MIN_MS,
        .backoff_max_ms = BACKOFF_MAX_MS,
        .stop_timeout_ms = STOP_FLUSH_MS,
        .keeps_source = true,
        .flush = relay_flush,
        .release = item_free,
        .arg = r,
    };
    if ((rc = ms_batch_start(&bo, &r->queue)) != 0)
        MS_BUG("the outbox relay's batch options are wrong");
    if (uv_thread_create(&r->thread, relay_main, r) != 0)
        MS_BUG("cannot start the outbox relay thread");
out:
    if (rc != 0) {
        relay_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void ms_relay_kick(ms_relay *r)
{
    if (!r)
        return;
    /* Called for every commit: a relay that is busy, or lingering on purpose, is not woken
     * (a wake-up per request was two context switches each); it polls when it is done. */
    uv_mutex_lock(&r->mu);
    bool wake = r->is_awaiting_kick && !r->is_kicked;
    r->is_kicked = true;
    if (wake)
        uv_cond_signal(&r->cond);
    uv_mutex_unlock(&r->mu);
}

void ms_relay_stop(ms_relay *r)
{
    if (!r)
        return;
    uv_mutex_lock(&r->mu);
    r->is_stopping = true;
    uv_cond_signal(&r->cond);
    uv_mutex_unlock(&r->mu);
    uv_thread_join(&r->thread);
    ms_batch_stop(r->queue); /* what it could not publish stays in the table */
    if (r->pub.close)
        r->pub.close(r->pub.self);
    ms_db_close(r->mark_conn);
    ms_db_close(r->conn); /* ends the session: releases the PostgreSQL lock */
    uv_cond_destroy(&r->cond);
    uv_mutex_destroy(&r->mu);
    relay_free(r);
}

void ms_relay_get_stats(ms_relay *r, ms_relay_stats *out)
{
    uv_mutex_lock(&r->mu);
    *out = r->stats;
    uv_mutex_unlock(&r->mu);
}

void ms_relay_collect(ms_buf *out, void *relay)
{
    ms_relay *r = relay;
    ms_relay_stats s;
    ms_relay_get_stats(r, &s);
    const char *svc = r->service;
    ms_metrics_family(out, "outbox_published_total", "counter",
                      "Outbox messages published and marked.");
    ms_metrics_sample(out, "outbox_published_total", (double)s.published_total, "service", svc,
                      NULL);
    ms_metrics_family(out, "outbox_publish_failures_total", "counter",
                      "Publish calls that failed (the batch is retried).");
    ms_metrics_sample(out, "outbox_publish_failures_total", (double)s.failures_total, "service",
                      svc, NULL);
    ms_metrics_family(out, "outbox_pending", "gauge", "Outbox rows unpublished at the last poll.");
    ms_metrics_sample(out, "outbox_pending", (double)s.pending, "service", svc, NULL);
    ms_metrics_family(out, "outbox_lag_seconds", "gauge",
                      "Age of the oldest unpublished outbox row at the last poll.");
    ms_metrics_sample(out, "outbox_lag_seconds", s.lag_seconds, "service", svc, NULL);
}
