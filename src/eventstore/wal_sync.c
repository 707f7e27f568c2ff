/*
 * wal_sync.c — SQLite durability: the syncer thread (es-sync), the pipelined fdatasync of the
 * WAL behind the writer's commits.
 *
 * Contract: the writer commits a batch without syncing and hands it over (ms_es__to_syncer);
 * the syncer answers a batch's callers (ms_es__finish_batch: stats, committed position, then
 * the answers) only after an fdatasync of the WAL that began after the batch's COMMIT, so no
 * caller is ever answered for a batch that a power cut could take back. Batches are answered
 * in commit order. A failed fdatasync ends the process (ms_es__sync_wal). Threads: the list
 * and its flag are guarded by es->sync_mu; es->unsynced by es->mu. Started by ms_es_open,
 * stopped by ms_es_close after the writer has stopped: every batch committed is answered.
 *
 * The writer's connection uses the deferring VFS (db_sqlite_vfs.c): COMMIT writes the batch to
 * the WAL in the kernel's cache and makes it visible to readers, without fdatasync. The batch
 * then waits here; the syncer takes every batch waiting, runs one fdatasync of the WAL file
 * (through a descriptor of its own: an fsync is of the file, whichever descriptor) and
 * answers them (a failed fdatasync stops the process: see ms_es__sync_wal). A crash of the
 * process loses nothing written to the kernel; a power cut loses only batches nobody was
 * answered for.
 *
 * What a reader may see before it is durable: the event store's own readers in this process
 * are held to the committed (= durable) position — subscriptions drop what lies beyond it,
 * the outbox relay waits for it before publishing (ms_es_visible_position), and the order
 * service's events endpoint does the same — so nothing that a power cut could take back is
 * ever published or projected.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eventstore/eventstore_internal.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

typedef struct es_committed {
    struct es_committed *next;
    int64_t top;
    size_t n;
    es_job *jobs[];
} es_committed;

/*
 * fdatasync of the WAL. Any thread. A failed fdatasync ends the process, as PostgreSQL does
 * (data_sync_retry=off): Linux may have dropped the dirty pages it could not write and will
 * not report it again, so neither the kernel's cache nor a later successful fsync can be
 * trusted. After the restart SQLite recovers from what is on disk; nobody was answered for a
 * batch that was not synced, and a retry of it is an idempotent append.
 */
void ms_es__sync_wal(ms_es *es)
{
    if (es->wal_fd < 0)
        return;
    int rc;
    while ((rc = fdatasync(es->wal_fd)) != 0 && errno == EINTR)
        ;
    if (rc == 0)
        return;
    ms_log(MS_LOG_ERROR, "eventstore: fdatasync of the WAL failed; stopping", "error",
           strerror(errno), NULL);
    abort();
}

void ms_es__to_syncer(ms_es *es, es_job **jobs, size_t n, int64_t top)
{
    uv_mutex_lock(&es->mu);
    es->unsynced++;
    uv_mutex_unlock(&es->mu);
    es_committed *b = ms_xcalloc(1, sizeof *b + n * sizeof b->jobs[0]);
    b->top = top;
    b->n = n;
    memcpy(b->jobs, jobs, n * sizeof jobs[0]);
    uv_mutex_lock(&es->sync_mu);
    if (es->sync_tail)
        es->sync_tail->next = b;
    else
        es->sync_head = b;
    es->sync_tail = b;
    uv_cond_signal(&es->has_unsynced);
    uv_mutex_unlock(&es->sync_mu);
}

static void syncer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "es-sync");
    ms_es *es = arg;
    for (;;) {
        uv_mutex_lock(&es->sync_mu);
        while (!es->sync_head && !es->is_sync_stopping)
            uv_cond_wait(&es->has_unsynced, &es->sync_mu);
        es_committed *b = es->sync_head;
        es->sync_head = es->sync_tail = NULL;
        uv_mutex_unlock(&es->sync_mu);
        if (!b)
            break; /* stopping, and nothing left */
        uint64_t started = uv_hrtime();
        ms_es__sync_wal(es); /* one fdatasync for every batch taken */
        double ms = (double)(uv_hrtime() - started) / 1e6;
        uv_mutex_lock(&es->stats_mu);
        es->stats.fsync_seconds_hist[ms_es__latency_bucket(ms)]++;
        es->stats.fsync_seconds_sum += ms / 1000.0;
        uv_mutex_unlock(&es->stats_mu);
        size_t synced = 0;
        while (b) {
            es_committed *next = b->next;
            ms_es__finish_batch(es, b->jobs, b->n, b->top);
            free(b);
            b = next;
            synced++;
        }
        uv_mutex_lock(&es->mu);
        es->unsynced -= synced;
        if (es->head && !ms_es__writer_holds(es))
            uv_cond_signal(&es->has_work);
        uv_mutex_unlock(&es->mu);
    }
}

void ms_es__syncer_start(ms_es *es)
{
    uv_mutex_init(&es->sync_mu);
    uv_cond_init(&es->has_unsynced);
    es->has_syncer = true;
    if (uv_thread_create(&es->syncer, syncer_main, es) != 0)
        MS_BUG("eventstore: cannot start the syncer thread");
}

void ms_es__syncer_stop(ms_es *es)
{
    if (!es->has_syncer)
        return;
    uv_mutex_lock(&es->sync_mu);
    es->is_sync_stopping = true;
    uv_cond_signal(&es->has_unsynced);
    uv_mutex_unlock(&es->sync_mu);
    uv_thread_join(&es->syncer); /* it answers what the writer committed last */
    uv_cond_destroy(&es->has_unsynced);
    uv_mutex_destroy(&es->sync_mu);
    es->has_syncer = false;
}
