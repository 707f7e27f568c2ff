/*
 * writer.c — the store's lifecycle and its writer thread: group commit.
 *
 * One thread per store owns the write connection. It takes every queued append (up to
 * max_batch) into one transaction, commits once — one fsync for the lot: SQLite runs WAL with
 * synchronous=FULL — and only then answers each caller. No timer waits for a batch to fill:
 * appends that arrive while a commit is being flushed form the next batch, so batches grow
 * with the load and a lone append pays no extra latency.
 *
 * Position order is commit order. SQLite has one writer (this thread, holding BEGIN IMMEDIATE).
 * On PostgreSQL several processes may append to one database, so every batch transaction
 * first takes a transaction-scoped advisory lock (see begin_batch).
 *
 * On SQLite the writer never checkpoints on its own commits: a checkpointer thread does, on its
 * own connection (checkpoint.c). It is the file's only writer: the outbox relay's marks run
 * here too, between batches (ms_es_mark_published, "outbox marks" below; the SQL is outbox.c's).
 *
 * On SQLite the commit and its fsync are also pipelined (wal_sync.c): the writer
 * commits batch N without syncing and goes on to batch N+1 while a syncer thread makes N
 * durable (fdatasync of the WAL) and only then answers its callers and moves the committed
 * position. The fsync was half the writer's time; now it overlaps the next batch's work.
 * Overlap only pays with enough work queued: while a sync runs, a small batch waits for it
 * (es->hold, set in ms_es_open) and goes out bigger, right after it.
 *
 * Threads: the queue and its counts, `is_stopping`, the ports count and the checkpointer's
 * signals are guarded by es->mu; the stats and the committed position by es->stats_mu; the
 * connection belongs to the writer thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eventstore/eventstore_internal.h"
#include "eventstore/outbox.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/obs/metrics.h"
#include "runtime/core/banned.h"

const double ms_es_latency_bounds[MS_ES_LATENCY_BOUNDS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
/* a batch of n appends falls in bucket b when n < 2^(b+1) */
const double ms_es_batch_bounds[MS_ES_BATCH_BOUNDS] = {1, 3, 7, 15, 31, 63, 127};

/* The ms_es_stats latency bucket of `ms` (11: +Inf). */
int ms_es__latency_bucket(double ms)
{
    return ms_metrics_bucket(ms_es_latency_bounds, MS_ES_LATENCY_BOUNDS, ms / 1000.0);
}

/* ---- answers ---- */

static void answer(ms_es *es, es_job *j)
{
    if (j->port) {
        ms_es__port_deliver(j->port, j);
        return;
    }
    uv_sem_post(j->done);
}

/* Should the writer, with jobs queued, wait before its next batch? Under es->mu. */
bool ms_es__writer_holds(const ms_es *es)
{
    return es->unsynced > 0 && es->queued < es->hold && !es->is_stopping;
}

void ms_es__submit(ms_es *es, es_job *j)
{
    uv_mutex_lock(&es->mu);
    if (es->is_stopping) {
        uv_mutex_unlock(&es->mu);
        j->rc = MS_ESHUTDOWN;
        answer(es, j);
        return;
    }
    if (es->tail)
        es->tail->next = j;
    else
        es->head = j;
    es->tail = j;
    es->queued++;
    if (!ms_es__writer_holds(es))
        uv_cond_signal(&es->has_work);
    uv_mutex_unlock(&es->mu);
}

/* ---- the batch ---- */

/*
 * Starts a batch transaction. On PostgreSQL a sequence value is taken at INSERT but becomes
 * visible at COMMIT, so two overlapping transactions could commit out of position order and a
 * reader checkpointing past the later one's positions would never see the earlier's (see
 * REFERENCE.md, "the global-position trap"). Every append transaction therefore takes the same
 * advisory lock before it reads or writes anything: appenders run one at a time, each takes
 * its positions while holding the lock, and PostgreSQL releases a transaction's locks only
 * after its commit is recorded and visible to new snapshots (CommitTransaction marks the
 * transaction committed in the proc array before releasing locks). So when the next appender
 * gets the lock and takes higher positions, every lower position is already committed (or
 * rolled back, leaving a gap that is final): any snapshot that sees position P sees everything
 * below P that will ever exist. Holding a lock across a whole batch costs little: the batch is
 * the unit of work anyway, and the writer thread already serialises this process's appends.
 */
static int begin_batch(ms_db_conn *c)
{
    if (ms_db_backend_of(c) != MS_DB_POSTGRES)
        return ms_db_begin(c);
    /* both in one round trip */
    int rc =
        ms_db_exec_script(c, "BEGIN; SELECT pg_advisory_xact_lock(" MS_ES__APPEND_LOCK_KEY ")");
    if (rc < 0)
        ms_db_rollback(c);
    return rc;
}

/*
 * Opens the writer's connection. On PostgreSQL its statements are prepared once, and a plan
 * made generic while the events table was still empty (a new database) would go on scanning
 * the whole table as it grows: the batch probes (event_id = ANY, a stream's last version)
 * would cost O(table) each. Every statement of the writer has an index path, so sequential
 * scans are ruled out for this session.
 */
static int open_writer_conn(ms_es *es)
{
    ms_db_config cfg = es->cfg;
    cfg.defers_wal_sync = cfg.backend == MS_DB_SQLITE; /* the syncer's (wal_sync.c) */
    int rc = ms_db_open(&cfg, false, &es->conn);
    if (rc < 0) {
        es->conn = NULL;
        return rc;
    }
    /* SQLite: checkpoints are the checkpointer's; a batch's pages stay in the cache. */
    const char *setup = es->cfg.backend == MS_DB_POSTGRES
                            ? "SET enable_seqscan = off"
                            : "PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -16384";
    if ((rc = ms_db_exec_script(es->conn, setup)) < 0) {
        ms_db_close(es->conn);
        es->conn = NULL;
    }
    return rc;
}

/* A failure that is not one append's own: the connection, a lock timeout, the server. */
static bool is_batch_wide(int rc)
{
    return rc == MS_ECONN || rc == MS_ETIMEDOUT || rc == MS_EBUSY || rc == MS_EINTERNAL;
}

/* SAVEPOINT / ROLLBACK TO / RELEASE: the same text on both dialects. */
static int savepoint(ms_db_conn *c, const char *verb)
{
    char sql[48];
    snprintf(sql, sizeof sql, "%s es_append", verb);
    return ms_db_exec(c, sql, 0, NULL, NULL);
}

/*
 * Runs jobs[0..n) as one transaction; each job's rc and results are set. Returns the highest
 * committed position, or 0 when nothing was written.
 *
 * The common batch runs without savepoints: appends check before they write (append.c); on
 * PostgreSQL the whole batch goes in a few statements (ms_es__apply_batch). When a
 * statement fails all the same, what the transaction holds of that append is unknown (and
 * PostgreSQL has aborted it), so the batch is rolled back and run once more without that
 * append, this time with a savepoint around each append, so any further failing append is
 * undone alone. A batch costs at most two transactions, whatever fails in it.
 */
static int read_data_version(const ms_db_row *row, void *arg)
{
    *(int64_t *)arg = ms_db_row_int(row, 0);
    return 0;
}

/*
 * SQLite, in the batch's transaction (the write lock held): empties the writer's stream
 * versions when another connection has committed since they were learnt. PRAGMA data_version
 * changes with every other connection's commit, never with this one's.
 */
static int check_versions(ms_es *es, ms_db_conn *c)
{
    int64_t dv = -1;
    int rc = ms_db_each(c, "PRAGMA data_version", 0, NULL, read_data_version, &dv);
    if (rc < 0)
        return rc;
    if (dv != es->versions.data_version) {
        ms_es__versions_clear(&es->versions, false);
        es->versions.data_version = dv;
    }
    return 0;
}

/* After a rollback the stream versions learnt in the transaction may be undone. */
static void rollback(ms_es *es, ms_db_conn *c)
{
    ms_db_rollback(c);
    ms_es__versions_clear(&es->versions, false);
}

static int64_t run_batch(ms_es *es, es_job **jobs, size_t n)
{
    int rc = 0;
    if (!es->conn && open_writer_conn(es) < 0) {
        for (size_t i = 0; i < n; i++)
            jobs[i]->rc = MS_ECONN;
        return 0;
    }
    ms_db_conn *c = es->conn;
    bool is_sqlite = ms_db_backend_of(c) == MS_DB_SQLITE;
    bool *is_out = ms_xcalloc(n, sizeof *is_out); /* failed alone by a statement error */
    bool is_careful = false;                      /* a savepoint around each append */
redo:
    if ((rc = begin_batch(c)) < 0)
        goto fail_all;
    if (is_sqlite && (rc = check_versions(es, c)) < 0)
        goto rollback_all;
    if (!is_careful && ms_db_backend_of(c) == MS_DB_POSTGRES) {
        bool is_dirty;
        rc = ms_es__apply_batch(c, jobs, n, &is_dirty);
        if (is_dirty && is_batch_wide(rc))
            goto rollback_all;
        if (is_dirty) { /* whose failure it is, the careful run tells */
            rollback(es, c);
            is_careful = true;
            goto redo;
        }
        goto commit;
    }
    for (size_t i = 0; i < n; i++) {
        if (is_out[i])
            continue;
        if (is_careful && (rc = savepoint(c, "SAVEPOINT")) < 0)
            goto rollback_all;
        bool is_dirty;
        int arc = ms_es__apply(c, jobs[i], is_sqlite ? &es->versions : NULL, &is_dirty);
        jobs[i]->rc = arc;
        if (is_dirty && is_batch_wide(arc)) {
            rc = arc;
            goto rollback_all;
        }
        if (is_dirty && !is_careful) {
            rollback(es, c);
            is_out[i] = true;
            is_careful = true;
            goto redo;
        }
        if (is_dirty) {
            is_out[i] = true;
            if ((rc = savepoint(c, "ROLLBACK TO SAVEPOINT")) < 0)
                goto rollback_all;
        }
        if (is_careful && (rc = savepoint(c, "RELEASE SAVEPOINT")) < 0)
            goto rollback_all;
    }
commit:;
    int64_t top = 0;
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->rc == 0 && jobs[i]->last_position > top)
            top = jobs[i]->last_position;
    /* Published before the commit: a reader that sees the batch sees at least its top here
     * (ms_es_visible_position). Taken back if the commit fails. */
    int64_t was_visible = __atomic_load_n(&es->visible_position, __ATOMIC_ACQUIRE);
    if (top > was_visible)
        __atomic_store_n(&es->visible_position, top, __ATOMIC_RELEASE);
    if ((rc = ms_db_commit(c)) < 0) {
        __atomic_store_n(&es->visible_position, was_visible, __ATOMIC_RELEASE);
        goto rollback_all;
    }
    free(is_out);
    return top;

rollback_all : {
    char why[512]; /* the first error says why; the rollback's would not */
    snprintf(why, sizeof why, "%s", ms_db_errmsg(c));
    rollback(es, c);
    ms_log(MS_LOG_WARN, "eventstore batch failed", "error", ms_errname(rc), "detail", why, NULL);
    goto answer_all;
}
fail_all:
    ms_es__versions_clear(&es->versions, false); /* a failed COMMIT may have rolled back */
    /* Nothing of the batch is stored, and every append's checks ran against writes that are
     * now undone: all of them get the error (a retry with the same event ids is safe, even if
     * a failed COMMIT did in fact reach the disk). */
    ms_log(MS_LOG_WARN, "eventstore batch failed", "error", ms_errname(rc), "detail",
           ms_db_errmsg(c), NULL);
answer_all:
    for (size_t i = 0; i < n; i++) {
        jobs[i]->rc = rc;
        jobs[i]->first_position = jobs[i]->last_position = jobs[i]->version = 0;
    }
    if (rc == MS_ECONN) { /* reopened by the next batch */
        ms_db_close(es->conn);
        es->conn = NULL;
    }
    free(is_out);
    return 0;
}

static int size_bucket(size_t n)
{
    return ms_metrics_bucket(ms_es_batch_bounds, MS_ES_BATCH_BOUNDS, (double)n);
}

static void account(ms_es *es, es_job **jobs, size_t n, int64_t top)
{
    uint64_t now = uv_hrtime();
    uv_mutex_lock(&es->stats_mu);
    ms_es_stats *s = &es->stats;
    s->batches_total++;
    s->batch_size_hist[size_bucket(n)]++;
    for (size_t i = 0; i < n; i++) {
        const es_job *j = jobs[i];
        double ms = (double)(now - j->queued_ns) / 1e6;
        s->append_seconds_hist[ms_es__latency_bucket(ms)]++;
        s->append_seconds_sum += ms / 1000.0;
        s->appends_total++;
        if (j->rc == MS_ECONFLICT)
            s->conflicts_total++;
        /* events written now, not retries that found theirs stored */
        if (j->rc == 0 && !j->is_noop)
            s->events_total += j->req.nevents;
    }
    bool grew = top > s->committed_position;
    if (grew)
        s->committed_position = top;
    uv_mutex_unlock(&es->stats_mu);
    if (grew) {
        __atomic_add_fetch(&es->committed_seq, 1, __ATOMIC_RELEASE);
        syscall(SYS_futex, &es->committed_seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
}

/* Answers a batch that is durable (or failed). */
void ms_es__finish_batch(ms_es *es, es_job **jobs, size_t n, int64_t top)
{
    /* Stats first: a caller answered next may read them and the committed position. */
    account(es, jobs, n, top);
    /* Waiters are woken by their own semaphore, with no lock for them to fight over with
     * the writer and each other; ports each take their own lock. A waiter frees its job
     * as soon as it is posted: nothing of it is touched after. */
    for (size_t i = 0; i < n; i++) {
        if (jobs[i]->port)
            ms_es__port_deliver(jobs[i]->port, jobs[i]);
        else
            uv_sem_post(jobs[i]->done);
    }
}

/* ---- outbox marks (SQLite) ---- */

/* Runs the marks of `list` in one transaction and answers them all with its outcome. */
static bool run_marks(ms_es *es, es_mark *list)
{
    int rc = es->conn ? 0 : open_writer_conn(es);
    bool is_begun = rc == 0 && (rc = ms_db_begin(es->conn)) == 0;
    for (es_mark *m = list; rc == 0 && m; m = m->next)
        rc = ms_outbox_mark_runs(es->conn, m->first, m->last, m->n, m->at);
    if (is_begun)
        rc = ms_db_end(es->conn, rc);
    if (rc < 0)
        ms_log(MS_LOG_WARN, "eventstore: marking outbox rows published failed", "error",
               ms_errname(rc), "detail", es->conn ? ms_db_errmsg(es->conn) : "", NULL);
    if (rc == MS_ECONN && es->conn) { /* reopened by the next batch */
        ms_db_close(es->conn);
        es->conn = NULL;
    }
    uv_mutex_lock(&es->mu);
    for (es_mark *m = list, *next; m; m = next) {
        next = m->next; /* m is the caller's, and may be gone once is_done is seen */
        m->rc = rc;
        m->is_done = true;
    }
    uv_cond_broadcast(&es->marks_done);
    uv_mutex_unlock(&es->mu);
    return is_begun && rc == 0;
}

int ms_es_mark_published(ms_es *es, const int64_t *first, const int64_t *last, size_t n,
                         const char *at)
{
    if (es->cfg.backend != MS_DB_SQLITE)
        return MS_EINVAL;
    if (n == 0)
        return 0;
    es_mark m = {.first = first, .last = last, .n = n, .at = at};
    uv_mutex_lock(&es->mu);
    if (es->is_stopping) {
        uv_mutex_unlock(&es->mu);
        return MS_ESHUTDOWN;
    }
    m.next = es->marks;
    /* m outlives its stay in the list: this call waits below until the writer is done */
    es->marks = &m; // cppcheck-suppress autoVariables
    uv_cond_signal(&es->has_work);
    while (!m.is_done)
        uv_cond_wait(&es->marks_done, &es->mu);
    uv_mutex_unlock(&es->mu);
    return m.rc;
}

static void writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "es-writer"); /* for top -H, perf, gdb */
    ms_es *es = arg;
    size_t max = (size_t)es->opt.max_batch;
    es_job **jobs = ms_xcalloc(max, sizeof *jobs);
    bool has_committed = false;
    for (;;) {
        size_t n = 0;
        uv_mutex_lock(&es->mu);
        if (has_committed && es->has_checkpointer) {
            es->commits++;
            /* Only a checkpointer idle since its last run needs waking: one waiting out its
             * interval looks at the count when the interval ends (a wake-up per commit was
             * two context switches each, for nothing). */
            if (es->is_ckpt_idle)
                uv_cond_signal(&es->has_wal);
        }
        bool is_restart_due = es->is_restart_due;
        es->is_restart_due = false;
        int64_t wal_limit = es->wal_limit_bytes;
        while (!es->is_stopping && !es->marks && (!es->head || ms_es__writer_holds(es)))
            uv_cond_wait(&es->has_work, &es->mu);
        /* woken for marks alone while holding: the batch still waits */
        bool is_holding = ms_es__writer_holds(es);
        while (!is_holding && es->head && n < max) {
            es_job *j = es->head;
            es->head = j->next;
            j->next = NULL;
            jobs[n++] = j;
        }
        es->queued -= n;
        if (!es->head)
            es->tail = NULL;
        es_mark *marks = es->marks;
        es->marks = NULL;
        bool is_last = es->is_stopping && n == 0;
        uv_mutex_unlock(&es->mu);
        has_committed = false;
        /* before anything is written: the WAL's bound (checkpoint.c) */
        if ((n > 0 || marks) && ms_es__bound_wal(es, wal_limit))
            is_restart_due = false; /* the WAL starts over anyway */
        if (n > 0) {
            if (is_restart_due)
                ms_es__restart_wal(es);
            int64_t top = run_batch(es, jobs, n);
            has_committed = top > 0;
            if (es->has_syncer)
                ms_es__to_syncer(es, jobs, n, top);
            else
                ms_es__finish_batch(es, jobs, n, top);
        } else if (is_restart_due) {
            uv_mutex_lock(&es->mu);
            es->is_restart_due = true; /* before the next batch, as ever */
            uv_mutex_unlock(&es->mu);
        }
        /* after the batch, while its fsync runs: its appends wait on none of this */
        if (marks)
            has_committed |= run_marks(es, marks);
        if (is_last)
            break;
    }
    free(jobs);
}

/* ---- the store ---- */

int ms_es_open(const ms_db_config *cfg, const ms_es_options *opt, ms_es **out)
{
    *out = NULL;
    ms_es *es = ms_xcalloc(1, sizeof *es);
    es->cfg = *cfg;
    es->cfg.sqlite_path = cfg->sqlite_path ? ms_xstrdup(cfg->sqlite_path) : NULL;
    es->cfg.pg_conninfo = cfg->pg_conninfo ? ms_xstrdup(cfg->pg_conninfo) : NULL;
    /* Another process (a migration, a tool) may hold SQLite's write lock for a moment: wait
     * for it rather than fail a whole batch with MS_EBUSY. */
    if (es->cfg.backend == MS_DB_SQLITE && es->cfg.busy_timeout_ms <= 0)
        es->cfg.busy_timeout_ms = 5000;
    es->opt.max_batch = opt && opt->max_batch > 0 ? opt->max_batch : 256;
    es->opt.snapshot_every = opt && opt->snapshot_every > 0 ? opt->snapshot_every : 50;
    es->versions.data_version = -1;
    /* While a sync runs, a batch waits for it unless this many appends queue up: the commit
     * after the sync then carries all that came meanwhile. Committing whatever was queued
     * the moment the last commit ended gave ~10 appends a transaction and cost a tenth more
     * CPU per append (each commit rewrites the tables' last pages and takes ~13 locks) for
     * no more appends a second: their fsync was still to come either way. */
    es->hold = (size_t)es->opt.max_batch / 8;
    ms_db_result *r = NULL;
    int rc = open_writer_conn(es);
    if (rc < 0)
        goto out;
    /* Positions committed before this process started count as committed: a subscriber
     * waiting for one of them must not wait for a new append. */
    if ((rc = ms_db_exec(es->conn, "SELECT COALESCE(MAX(position), 0) FROM events", 0, NULL, &r)) <
        0) {
        ms_log(MS_LOG_ERROR, "eventstore open failed (not migrated?)", "error",
               ms_db_errmsg(es->conn), NULL);
        goto out;
    }
    es->stats.committed_position = strtoll(ms_db_get(r, 0, 0), NULL, 10);
    es->visible_position = es->stats.committed_position;
    es->wal_fd = -1;
    if (es->cfg.backend == MS_DB_SQLITE) {
        /* the read above opened (created) the WAL file */
        char wal[4096];
        snprintf(wal, sizeof wal, "%s-wal", es->cfg.sqlite_path);
        if ((es->wal_fd = open(wal, O_RDONLY | O_CLOEXEC)) < 0) {
            ms_log(MS_LOG_ERROR, "eventstore open failed: no WAL file", "path", wal, "error",
                   strerror(errno), NULL);
            rc = MS_EIO;
            goto out;
        }
    }
    uv_mutex_init(&es->mu);
    uv_cond_init(&es->has_work);
    uv_cond_init(&es->marks_done);
    uv_cond_init(&es->has_wal);
    uv_mutex_init(&es->stats_mu);
    if (es->cfg.backend == MS_DB_SQLITE) { /* before the writer, which looks at both */
        ms_es__syncer_start(es);
        ms_es__checkpointer_start(es);
    }
    if (uv_thread_create(&es->writer, writer_main, es) != 0)
        MS_BUG("eventstore: cannot start the writer thread");
out:
    ms_db_result_free(r);
    if (rc < 0) {
        ms_db_close(es->conn);
        if (es->wal_fd >= 0)
            close(es->wal_fd);
        free((char *)es->cfg.sqlite_path);
        free((char *)es->cfg.pg_conninfo);
        free(es);
        return rc;
    }
    *out = es;
    return 0;
}

void ms_es_close(ms_es *es)
{
    if (!es)
        return;
    uv_mutex_lock(&es->mu);
    if (es->nports > 0)
        MS_BUG("ms_es_close: a port is still open");
    es->is_stopping = true;
    uv_cond_signal(&es->has_work);
    uv_cond_signal(&es->has_wal);
    uv_mutex_unlock(&es->mu);
    uv_thread_join(&es->writer); /* it finishes the queue first */
    if (es->has_checkpointer)
        uv_thread_join(&es->checkpointer);
    ms_es__syncer_stop(es); /* it answers what the writer committed last */
    /* The last connection to close checkpoints what is left; only durable frames may be
     * copied, and this connection leaves WAL syncs to us. */
    ms_es__sync_wal(es);
    ms_db_close(es->conn);
    if (es->wal_fd >= 0)
        close(es->wal_fd); /* SQLite holds no lock on the WAL file: closing drops none */
    ms_es__versions_clear(&es->versions, true);
    uv_cond_destroy(&es->has_wal);
    uv_mutex_destroy(&es->stats_mu);
    uv_cond_destroy(&es->marks_done);
    uv_cond_destroy(&es->has_work);
    uv_mutex_destroy(&es->mu);
    free((char *)es->cfg.sqlite_path);
    free((char *)es->cfg.pg_conninfo);
    free(es);
}

static void copy_results(es_job *j)
{
    j->caller->first_position = j->first_position;
    j->caller->is_replay = j->rc == 0 && j->is_noop;
    j->caller->last_position = j->last_position;
    j->caller->version = j->version;
}

int ms_es_append_wait(ms_es *es, ms_es_append_req *a)
{
    es_job *j;
    int rc = ms_es__job_new(a, &j);
    if (rc < 0)
        return rc;
    uv_sem_t done;
    if (uv_sem_init(&done, 0) != 0)
        MS_BUG("eventstore: cannot make a semaphore");
    j->done = &done;
    ms_es__submit(es, j);
    uv_sem_wait(&done);
    uv_sem_destroy(&done);
    rc = j->rc;
    copy_results(j);
    free(j);
    return rc;
}

void ms_es__finish_on_loop(es_job *j)
{
    copy_results(j);
    j->cb(j->rc, j->caller, j->arg);
    free(j);
}

bool ms_es_snapshot_due(const ms_es *es, int64_t before, int64_t after)
{
    int64_t every = es->opt.snapshot_every;
    return every > 0 && after > before && before / every != after / every;
}

int64_t ms_es_visible_position(ms_es *es)
{
    return __atomic_load_n(&es->visible_position, __ATOMIC_ACQUIRE);
}

int64_t ms_es_committed_position(ms_es *es)
{
    uv_mutex_lock(&es->stats_mu);
    int64_t p = es->stats.committed_position;
    uv_mutex_unlock(&es->stats_mu);
    return p;
}

int ms_es_wait_committed(ms_es *es, int64_t position, int timeout_ms)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000;
    for (;;) {
        /* the sequence is read before the position: a commit after this read changes it, so
         * the futex wait below returns at once instead of missing that commit's wake */
        uint32_t seq = __atomic_load_n(&es->committed_seq, __ATOMIC_ACQUIRE);
        uv_mutex_lock(&es->stats_mu);
        bool reached = es->stats.committed_position >= position;
        uv_mutex_unlock(&es->stats_mu);
        if (reached)
            return 0;
        uint64_t now = uv_hrtime();
        if (now >= deadline)
            return MS_ETIMEDOUT;
        uint64_t left = deadline - now;
        struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
        syscall(SYS_futex, &es->committed_seq, FUTEX_WAIT_PRIVATE, seq, &ts, NULL, 0);
    }
}

void ms_es_get_stats(ms_es *es, ms_es_stats *out)
{
    uv_mutex_lock(&es->stats_mu);
    *out = es->stats;
    uv_mutex_unlock(&es->stats_mu);
}
