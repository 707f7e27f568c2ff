/*
 * checkpoint.c — SQLite checkpoints: the checkpointer thread (es-checkpoint) and the WAL
 * restarts the writer runs between its batches.
 *
 * Contract: the checkpointer has its own connection and never blocks the writer; the writer
 * calls ms_es__restart_wal between batches (never inside one) on its own connection. Counters
 * and signals (commits, is_ckpt_idle, is_restart_due, ckpt_total, restarts_total) are guarded
 * by es->mu. Started by ms_es_open (SQLite only), joined by ms_es_close once the writer has
 * stopped.
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
 * still on old frames, and the next batch writes the WAL from its start. The WAL file thus
 * stays around WAL_RESTART_FRAMES pages whatever the load.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "eventstore/eventstore_internal.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

enum {
    CKPT_INTERVAL_MS = 50,
    WAL_RESTART_FRAMES = 16384, /* 64 MiB of 4 KiB pages */
    RESTART_WAIT_MS = 100,
};

/* Runs PRAGMA wal_checkpoint(mode); *frames is the WAL's length then. */
static int checkpoint(ms_es *es, ms_db_conn *c, const char *mode, int64_t *frames)
{
    char sql[48];
    snprintf(sql, sizeof sql, "PRAGMA wal_checkpoint(%s)", mode);
    ms_db_result *r = NULL;
    int rc = ms_db_exec(c, sql, 0, NULL, &r);
    *frames = rc == 0 && ms_db_nrows(r) == 1 ? strtoll(ms_db_get(r, 0, 1), NULL, 10) : 0;
    ms_db_result_free(r);
    uv_mutex_lock(&es->mu);
    es->ckpt_total++;
    es->restarts_total += mode[0] == 'R' && rc == 0;
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
        int rc = c ? 0 : ms_db_open(&es->cfg, false, &c);
        if (rc == 0 && checkpoint(es, c, "PASSIVE", &frames) < 0) {
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
    ms_db_set_deadline(es->conn, uv_hrtime() / 1000000 + RESTART_WAIT_MS);
    checkpoint(es, es->conn, "RESTART", &frames);
    ms_db_set_deadline(es->conn, 0);
}

void ms_es__checkpointer_start(ms_es *es)
{
    es->wal_restart_frames = WAL_RESTART_FRAMES;
    es->has_checkpointer = true;
    if (uv_thread_create(&es->checkpointer, checkpointer_main, es) != 0)
        MS_BUG("eventstore: cannot start the checkpointer thread");
}
