/*
 * relay.c — the outbox relay thread (contract in relay.h). Publishers are behind publisher.h
 * (the file feed: publisher_file.c); marking rows published is outbox.c's, shared with the
 * store's writer, which runs the marks on SQLite (ms_es_mark_published).
 *
 * The loop: (re)connect; on PostgreSQL hold the advisory lock; select the oldest unpublished
 * rows; publish the in-order prefix; mark exactly those rows. Marking goes by runs of
 * consecutive seq (`seq BETWEEN first AND last`, one statement per run, one run in the common
 * case): a range spanning a gap could mark a row that committed after the select and was never
 * published.
 *
 * The generic batch processor (runtime/obs/batch.h) is not used here on purpose: the outbox
 * table is already the relay's durable, ordered queue, read a page at a time; an in-memory
 * queue in front of the publisher would hold a second copy of rows that are safe where they
 * are, refuse nothing a producer could act on (the rows are committed), and lose its contents
 * at a crash instead of leaving them for the next start. The batching that pays is inside the
 * NATS publisher: a page's messages are pipelined and their acks awaited together.
 *
 * Threads: `is_stopping`, `is_kicked` and the stats are guarded by r->mu; the connection, the
 * publisher and the batch belong to the relay thread.
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
#include "runtime/obs/metrics.h"
#include "runtime/core/banned.h"

enum {
    BACKOFF_MIN_MS = 50,
    BACKOFF_MAX_MS = 5000,
    COUNT_EVERY_MS = 1000, /* the backlog COUNT(*) at most this often */
};

struct ms_relay {
    ms_db_config cfg; /* strings below are our copies */
    char *sqlite_path, *pg_conninfo, *service;
    ms_publisher pub;
    int batch, poll_ms, gap_wait_ms;
    char select_sql[192];

    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cond;
    bool is_stopping, is_kicked;
    bool is_awaiting_kick; /* in relay_wait with wake_on_kick: a kick must wake it */
    int linger_ms;
    ms_es *es; /* or NULL: see ms_relay_options */
    ms_relay_stats stats;

    /* relay thread only */
    ms_db_conn *conn;
    bool has_lock;
    int64_t next_seq;    /* the seq expected next (0: unknown) */
    uint64_t gap_since;  /* when the gap before next_seq was first seen (ms; 0: none) */
    uint64_t counted_at; /* when pending was last counted (ms) */
    unsigned attempt;    /* consecutive failures, for the backoff */
    ms_outbox_message *msgs;
    int64_t *run_first, *run_last; /* the runs of consecutive seq a mark covers */
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

static void db_failed(ms_relay *r, const char *what, int rc)
{
    ms_log(MS_LOG_WARN, "outbox relay: database error", "service", r->service, "step", what,
           "error", ms_errname(rc), "detail", r->conn ? ms_db_errmsg(r->conn) : "", NULL);
    if (rc == MS_ECONN && r->conn) { /* reopen; on PostgreSQL the lock went with the session */
        ms_db_close(r->conn);
        r->conn = NULL;
        r->has_lock = false;
        uv_mutex_lock(&r->mu);
        r->stats.has_lock = false;
        uv_mutex_unlock(&r->mu);
    }
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
    int64_t pending = n;
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

/* Opens the relay's connection; NULL on failure. */
static int open_conn(ms_relay *r)
{
    int rc = ms_db_open(&r->cfg, false, &r->conn);
    if (rc != 0) {
        ms_db_close(r->conn);
        r->conn = NULL;
    }
    return rc;
}

/* Marks msgs[0..n) published: one UPDATE per run of consecutive seq, in one transaction.
 * SQLite with this process's store: the store's writer runs it (ms_es_mark_published says
 * why); else on the relay's own connection. */
static int mark(ms_relay *r, int n)
{
    char now[MS_TIME_LEN + 1];
    ms_time_now(now);
    size_t runs = 0;
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && r->msgs[j].seq == r->msgs[j - 1].seq + 1)
            j++;
        r->run_first[runs] = r->msgs[i].seq;
        r->run_last[runs++] = r->msgs[j - 1].seq;
        i = j;
    }
    if (r->es && ms_db_backend_of(r->conn) == MS_DB_SQLITE)
        return ms_es_mark_published(r->es, r->run_first, r->run_last, runs, now);
    int rc = runs > 1 ? ms_db_begin(r->conn) : 0;
    if (rc == 0)
        rc = ms_outbox_mark_runs(r->conn, r->run_first, r->run_last, runs, now);
    return runs > 1 ? ms_db_end(r->conn, rc) : rc;
}

/* Publishes msgs[0..n) until it succeeds (or the relay stops), then marks them. */
static void publish_batch(ms_relay *r, int n)
{
    for (;;) {
        int rc = r->pub.publish(r->pub.self, r->msgs, (size_t)n);
        if (rc == 0)
            break;
        uv_mutex_lock(&r->mu);
        r->stats.failures_total++;
        uv_mutex_unlock(&r->mu);
        char attempt[16];
        snprintf(attempt, sizeof attempt, "%u", r->attempt + 1);
        ms_log(MS_LOG_WARN, "outbox relay: publish failed, will retry", "service", r->service,
               "publisher", r->pub.name ? r->pub.name : "", "error", ms_errname(rc), "#attempt",
               attempt, NULL);
        if (!backoff(r))
            return; /* stopping: nothing marked, the next start publishes the batch */
    }
    r->attempt = 0;
    for (;;) {
        int rc = 0;
        if (!r->conn)
            rc = open_conn(r);
        if (rc == 0 && (rc = mark(r, n)) == 0)
            break;
        db_failed(r, "mark", rc);
        if (!backoff(r))
            return; /* published, not marked: at-least-once, the next start repeats them */
    }
    r->attempt = 0;
    r->next_seq = r->msgs[n - 1].seq + 1;
    uv_mutex_lock(&r->mu);
    r->stats.published_total += (uint64_t)n;
    r->stats.last_seq = r->msgs[n - 1].seq;
    r->stats.pending = r->stats.pending > n ? r->stats.pending - n : 0;
    uv_mutex_unlock(&r->mu);
}

/* One round: connect, lock, select, publish, mark; then sleep as the round asks. */
static void relay_round(ms_relay *r)
{
    int rc;
    if (!r->conn && (rc = open_conn(r)) != 0) {
        db_failed(r, "connect", rc);
        backoff(r);
        return;
    }
    if (!r->has_lock) {
        if ((rc = take_lock(r)) != 0) {
            db_failed(r, "lock", rc);
            backoff(r);
        } else if (!r->has_lock) {
            relay_wait(r, (uint64_t)r->poll_ms, false);
        }
        return;
    }
    ms_db_result *res = NULL;
    if ((rc = ms_db_exec(r->conn, r->select_sql, 0, NULL, &res)) != 0) {
        ms_db_result_free(res);
        db_failed(r, "select", rc);
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
        publish_batch(r, k);
    ms_db_result_free(res);
    /* Caught up: let rows gather before the next round. Every round ends in a write
     * transaction (marking rows published), the store writer's or one competing with it for
     * the database's write lock; a round per commit would halve the commits' rate. */
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
             " WHERE published_at IS NULL ORDER BY seq LIMIT %d",
             r->es ? "outbox_messages" : "outbox", r->batch);
    r->msgs = ms_xcalloc((size_t)r->batch, sizeof *r->msgs);
    r->run_first = ms_xcalloc((size_t)r->batch, sizeof *r->run_first);
    r->run_last = ms_xcalloc((size_t)r->batch, sizeof *r->run_last);
    int rc = open_conn(r);
    if (rc != 0)
        goto out;
    r->pub = *pub;
    uv_mutex_init(&r->mu);
    uv_cond_init(&r->cond);
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
    if (r->pub.close)
        r->pub.close(r->pub.self);
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
