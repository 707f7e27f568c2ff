/*
 * checkpoint.c — SQLite checkpoints: the checkpointer thread (es-checkpoint), the WAL restarts
 * the writer runs between its batches, and the WAL's hard size limit, which the writer enforces
 * before each write transaction.
 *
 * Contract: the checkpointer has its own connection and never blocks the writer; the writer
 * calls ms_es__bound_wal and ms_es__restart_wal between write transactions (never inside one)
 * on its own connection. Counters and signals (commits, is_ckpt_idle, is_restart_due,
 * wal_limit_bytes and the *_total counts) are guarded by es->mu. Started by ms_es_open (SQLite
 * only), joined by ms_es_close once the writer has stopped.
 *
 * In WAL mode a commit appends pages to the WAL, and a checkpoint copies them back into the
 * database file. SQLite's default runs one inside the commit that takes the WAL past 1000
 * pages, on the writer thread between a batch's fsync and its answers (~15% of the writer's
 * time under load, measured). Here the writer's connection has wal_autocheckpoint=0 and a
 * checkpointer thread runs PASSIVE checkpoints on its own connection (they never block the
 * writer) after the writer has committed, at most every CKPT_INTERVAL_MS, so that a page
 * rewritten by many batches is copied once.
 *
 * Under steady appends a passive checkpoint never quite catches up: the WAL starts over from
 * its beginning only when a write begins with every frame checkpointed, and the writer begins
 * its next batch at once. So when a passive checkpoint finds the WAL longer than
 * WAL_RESTART_FRAMES, the writer runs a RESTART checkpoint itself before its next batch: it
 * copies the few frames the passive one left, waits (at most RESTART_WAIT_MS) for readers
 * still on old frames, and the next batch writes the WAL from its start. That is the target,
 * and it is kept on time: a writer that fills the WAL faster than one checkpointer interval
 * would outrun it.
 *
 * The bound. So the writer also checks, before every write transaction (a batch, or a round
 * of outbox marks), the WAL file's size (one fstat of the descriptor the syncer holds: no
 * statement, no lock). When the file is larger than es->wal_limit_bytes (WAL_LIMIT_BYTES,
 * 256 MiB: four times the restart target of WAL_RESTART_FRAMES 4 KiB pages), it makes the WAL
 * durable and runs a TRUNCATE checkpoint on its own connection — every frame copied, readers
 * waited for, the file cut to zero bytes — before it writes anything more; while readers still
 * hold old frames it retries (RESTART_WAIT_MS each) for up to WAL_STALL_MS. Since the file
 * only grows between truncations, and each transaction starts with the file at or below the
 * limit:
 *
 *     WAL file size <= wal_limit_bytes + the frames of one write transaction
 *
 * (a batch: at most max_batch appends; frames are page size + 24 bytes), whatever the speed of
 * the machine or the checkpointer. The one exception is a reader that keeps a read transaction
 * open past WAL_STALL_MS: the writer then goes on (with a warning) rather than stop every
 * append for it, and the WAL grows by at most one write transaction per WAL_STALL_MS until the
 * reader lets go. The check costs one fstat per write transaction, not per append.
 */
#include <pthread.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/eventstore_internal.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

enum {
    CKPT_INTERVAL_MS = 50,
    WAL_RESTART_FRAMES = 16384, /* 64 MiB of 4 KiB pages */
    RESTART_WAIT_MS = 100,
    WAL_STALL_MS = 5000, /* the longest the writer waits for readers at the limit */
};
/* The WAL file's hard limit (see "The bound" above). */
#define WAL_LIMIT_BYTES ((int64_t)4 * WAL_RESTART_FRAMES * 4096)

/* Runs PRAGMA wal_checkpoint(mode); *frames is the WAL's length then, and *is_done tells that
 * the checkpoint did all its mode asks (SQLite's busy column is 0: no reader or lock held it
 * back). */
static int checkpoint(ms_es *es, ms_db_conn *c, const char *mode, int64_t *frames, bool *is_done)
{
    char sql[48];
    snprintf(sql, sizeof sql, "PRAGMA wal_checkpoint(%s)", mode);
    ms_db_result *r = NULL;
    int rc = ms_db_exec(c, sql, 0, NULL, &r);
    bool has_row = rc == 0 && ms_db_nrows(r) == 1;
    *frames = has_row ? strtoll(ms_db_get(r, 0, 1), NULL, 10) : 0;
    *is_done = has_row && strcmp(ms_db_get(r, 0, 0), "0") == 0;
    ms_db_result_free(r);
    uv_mutex_lock(&es->mu);
    es->ckpt_total++;
    es->restarts_total += mode[0] != 'P' && *is_done;
    es->truncates_total += mode[0] == 'T' && *is_done;
    uv_mutex_unlock(&es->mu);
    return rc;
}

static void checkpointer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "es-checkpoint");
    ms_es *es = arg;
    ms_db_conn *c = NULL;
    uint64_t seen = 0, next_ns = 0;
    uv_mutex_lock(&es->mu);
    for (;;) {
        uint64_t now = uv_hrtime();
        if (es->is_stopping)
            break;
        if (es->commits == seen) {
            es->is_ckpt_idle = true;
            uv_cond_wait(&es->has_wal, &es->mu);
            es->is_ckpt_idle = false;
            continue;
        }
        if (now < next_ns) {
            uv_cond_timedwait(&es->has_wal, &es->mu, next_ns - now);
            continue;
        }
        seen = es->commits;
        next_ns = now + (uint64_t)CKPT_INTERVAL_MS * 1000000;
        uv_mutex_unlock(&es->mu);
        int64_t frames = 0;
        bool is_done;
        int rc = c ? 0 : ms_db_open(&es->cfg, false, &c);
        if (rc == 0 && checkpoint(es, c, "PASSIVE", &frames, &is_done) < 0) {
            ms_log(MS_LOG_WARN, "eventstore checkpoint failed", "error", ms_db_errmsg(c), NULL);
            ms_db_close(c); /* reopened next time */
            c = NULL;
        }
        uv_mutex_lock(&es->mu);
        if (frames > es->wal_restart_frames)
            es->is_restart_due = true;
    }
    uv_mutex_unlock(&es->mu);
    ms_db_close(c);
}

/* On the writer, between batches: see above. A failure only means the WAL goes on growing
 * until the next try. The writer's connection leaves WAL syncs to the syncer, and a
 * checkpoint must only copy durable frames: the WAL is synced first. */
void ms_es__restart_wal(ms_es *es)
{
    if (!es->conn)
        return;
    ms_es__sync_wal(es);
    int64_t frames;
    bool is_done;
    ms_db_set_deadline(es->conn, uv_hrtime() / 1000000 + RESTART_WAIT_MS);
    checkpoint(es, es->conn, "RESTART", &frames, &is_done);
    ms_db_set_deadline(es->conn, 0);
}

bool ms_es__bound_wal(ms_es *es, int64_t limit)
{
    struct stat st;
    if (es->wal_fd < 0 || !es->conn || fstat(es->wal_fd, &st) != 0 || st.st_size <= limit)
        return false;
    /* A checkpoint must only copy durable frames, and the writer's connection leaves WAL
     * syncs to the syncer. */
    ms_es__sync_wal(es);
    uint64_t since = uv_hrtime();
    for (;;) {
        int64_t frames;
        bool is_done;
        ms_db_set_deadline(es->conn, uv_hrtime() / 1000000 + RESTART_WAIT_MS);
        int rc = checkpoint(es, es->conn, "TRUNCATE", &frames, &is_done);
        ms_db_set_deadline(es->conn, 0);
        if (rc == 0 && is_done)
            return true;
        uv_mutex_lock(&es->mu);
        bool is_stopping = es->is_stopping;
        uv_mutex_unlock(&es->mu);
        bool is_busy = rc == 0 || rc == MS_EBUSY || rc == MS_ETIMEDOUT;
        if (!is_busy || is_stopping || uv_hrtime() - since >= (uint64_t)WAL_STALL_MS * 1000000) {
            char size[24];
            snprintf(size, sizeof size, "%lld", (long long)st.st_size);
            ms_log(MS_LOG_WARN, "eventstore: WAL over its limit, not truncated; writing on",
                   "error", rc < 0 ? ms_errname(rc) : "readers hold it", "#bytes", size, NULL);
            return false;
        }
        uv_sleep(1); /* a busy answer that came at once must not spin */
    }
}

void ms_es__checkpointer_start(ms_es *es)
{
    es->wal_restart_frames = WAL_RESTART_FRAMES;
    es->wal_limit_bytes = WAL_LIMIT_BYTES;
    es->has_checkpointer = true;
    if (uv_thread_create(&es->checkpointer, checkpointer_main, es) != 0)
        MS_BUG("eventstore: cannot start the checkpointer thread");
}
