/*
 * eventstore_internal.h — what the event store's files share: the store, a queued append (a
 * job) and the port. Include only from src/eventstore/.
 *
 * A job is one allocation holding a deep copy of the caller's request, so the caller's strings
 * may go away once ms_es_append returns. It moves caller -> writer queue (es->mu) -> writer
 * thread -> port queue (port->mu) or waiter (its semaphore) -> caller's thread, which frees it.
 */
#ifndef MS_EVENTSTORE_INTERNAL_H
#define MS_EVENTSTORE_INTERNAL_H

#include "eventstore/eventstore.h"

/* PostgreSQL: the advisory lock every append transaction holds (writer.c says why). Any fixed
 * key works: it only has to be the same in every process appending to this database, and
 * differ from db.c's migration key. */
#define MS_ES__APPEND_LOCK_KEY "7236353617836911"

typedef struct es_job {
    struct es_job *next;
    ms_es_append_req req; /* the copy; its pointers point into this allocation */
    ms_es_append_req *caller;
    ms_es_append_cb cb;
    void *arg;
    ms_es_port *port; /* NULL for ms_es_append_wait */
    uv_sem_t *done;   /* ms_es_append_wait: posted once the job is answered (no lock) */
    bool is_noop;     /* a retry that found its events stored */
    int rc;
    int64_t first_position, last_position, version; /* copied to `caller` on its thread */
    uint64_t queued_ns;                             /* uv_hrtime() at ms_es_append_req */
} es_job;

/* A call of ms_es_mark_published, waiting in es->marks until the writer has run it. The
 * caller's stack holds it: the writer touches it only under es->mu, until is_done. */
typedef struct es_mark {
    struct es_mark *next;
    const int64_t *first, *last;
    size_t n;
    const char *at;
    int rc;
    bool is_done;
} es_mark;

/*
 * SQLite: what the writer knows of stream versions, so that most appends need no probe
 * (append.c). Valid only while no other connection has written: the writer empties it when
 * PRAGMA data_version says one did, and after any rollback. Writer thread only.
 */
typedef struct es_version_slot {
    char *stream_id; /* owned; NULL: empty */
    int64_t version;
} es_version_slot;
typedef struct es_versions {
    es_version_slot *slots;
    size_t *used; /* the indexes of the count slots in use, so a clear touches only those */
    size_t mask, count;
    int64_t data_version; /* as last read; -1: unknown */
} es_versions;

struct ms_es {
    ms_db_config cfg; /* strings owned */
    ms_es_options opt;
    ms_db_conn *conn;     /* the writer's; NULL after a lost connection until reopened */
    es_versions versions; /* SQLite, the writer's */
    uv_thread_t writer;

    uv_mutex_t mu; /* the queue, stopping, ports, waiters */
    uv_cond_t has_work;
    es_job *head, *tail;
    size_t queued;   /* jobs in the queue */
    size_t unsynced; /* batches committed, handed to the syncer, not yet synced */
    size_t hold;     /* while a sync runs, the writer waits for this many jobs (0: never) */
    bool is_stopping;
    int nports;
    es_mark *marks;       /* ms_es_mark_published calls for the writer to run */
    uv_cond_t marks_done; /* the writer has run some: their callers look at is_done */

    /* SQLite: checkpoints run on their own thread and connection, off the writer's commits
     * (checkpoint.c). Guarded by es->mu. */
    bool has_checkpointer;
    uv_thread_t checkpointer;
    uv_cond_t has_wal;          /* the writer committed: the WAL grew */
    bool is_ckpt_idle;          /* the checkpointer waits for a commit (not for its interval) */
    uint64_t commits;           /* the writer's commits so far, for the checkpointer */
    bool is_restart_due;        /* the WAL is long: the writer restarts it before its next batch */
    int64_t wal_restart_frames; /* how long is long (tests make it short) */
    int64_t wal_limit_bytes;    /* the WAL file's hard limit (checkpoint.c; tests make it small) */
    uint64_t ckpt_total;        /* checkpoints run, by either thread */
    uint64_t restarts_total;    /* RESTART or TRUNCATE checkpoints that completed */
    uint64_t truncates_total;   /* of which TRUNCATE: the WAL at its limit */

    /* SQLite: committed batches wait for the syncer's fdatasync (wal_sync.c).
     * The list and its flag are guarded by sync_mu. */
    bool has_syncer;
    uv_thread_t syncer;
    uv_mutex_t sync_mu;
    uv_cond_t has_unsynced;
    struct es_committed *sync_head, *sync_tail;
    bool is_sync_stopping;
    int wal_fd;               /* the WAL file, for fdatasync; -1 on PostgreSQL */
    int64_t visible_position; /* atomic: top of the batches whose COMMIT has begun */

    uv_mutex_t stats_mu; /* stats, committed position */
    /* Bumped (atomically) after the committed position grows; ms_es_wait_committed sleeps on it
     * as a futex. Not a condition variable: glibc's broadcast can wait for a woken waiter to
     * leave its group, so one waiter that is descheduled or stopped (a debugger) held up the
     * writer, and every append with it. A futex wake never waits for anyone. */
    uint32_t committed_seq;
    ms_es_stats stats;
};

struct ms_es_port {
    ms_es *es;
    uv_loop_t *loop;
    uv_async_t async;
    uv_mutex_t mu; /* the answered jobs */
    es_job *head, *tail;
    /* loop thread only */
    size_t pending; /* appends not yet answered on this loop */
    bool is_closing, is_close_started, is_delivering;
    void (*on_closed)(void *arg);
    void *on_closed_arg;
};

/* writer.c. The ms_es_stats latency bucket of `ms` (11: +Inf). */
int ms_es__latency_bucket(double ms);
/* writer.c. Should the writer, with jobs queued, wait before its next batch? Under es->mu. */
bool ms_es__writer_holds(const ms_es *es);
/* writer.c. Answers a batch that is durable (or failed): stats and committed position first. */
void ms_es__finish_batch(ms_es *es, es_job **jobs, size_t n, int64_t top);

/* wal_sync.c (SQLite): the syncer thread. Start before the writer; stop after it. */
void ms_es__syncer_start(ms_es *es);
void ms_es__syncer_stop(ms_es *es);
/* wal_sync.c. Hands a committed batch to the syncer, which answers it once it is durable. */
void ms_es__to_syncer(ms_es *es, es_job **jobs, size_t n, int64_t top);
/* wal_sync.c. fdatasync of the WAL (no-op on PostgreSQL); any thread; aborts on failure. */
void ms_es__sync_wal(ms_es *es);

/* checkpoint.c (SQLite): starts the checkpointer thread (ms_es_close joins it). */
void ms_es__checkpointer_start(ms_es *es);
/* checkpoint.c. On the writer, between batches: a RESTART checkpoint on its connection. */
void ms_es__restart_wal(ms_es *es);
/* checkpoint.c. On the writer, before each write transaction: when the WAL file is larger than
 * `limit` bytes, checkpoints it (TRUNCATE) before anything more is written. True when the WAL
 * was truncated (and so starts over). */
bool ms_es__bound_wal(ms_es *es, int64_t limit);

/* Checks and copies a request into a new job; MS_EINVAL (no job) when it is malformed. */
int ms_es__job_new(const ms_es_append_req *a, es_job **out);
/* Runs one append inside the writer's open transaction. Returns 0 (results in the job),
 * MS_ECONFLICT having written nothing, or an error; `*is_dirty` tells that a statement failed,
 * so the transaction must be rolled back (PostgreSQL has aborted it; SQLite may hold part of
 * this append). `cache` (may be NULL) is consulted and kept up to date. */
int ms_es__apply(ms_db_conn *c, es_job *j, es_versions *cache, bool *is_dirty);
/* Empties the cache (keeps it usable); frees it all with `is_final`. */
void ms_es__versions_clear(es_versions *v, bool is_final);
/* PostgreSQL: runs every job of a batch inside the writer's open transaction with a few
 * statements for the lot (append.c says how); each job's rc and results are set. Returns 0, or an
 * error with
 * `*is_dirty` set: the transaction must be rolled back, and the batch run again one append at a
 * time (ms_es__apply with a savepoint each), which tells whose the failure is. */
int ms_es__apply_batch(ms_db_conn *c, es_job **jobs, size_t n, bool *is_dirty);
/* Queues a job for the writer, or answers it MS_ESHUTDOWN when the store is closing. */
void ms_es__submit(ms_es *es, es_job *j);
/* Hands an answered job to its port's loop (any thread). */
void ms_es__port_deliver(ms_es_port *port, es_job *j);
/* On the port's loop: copies the results to the caller's request, runs its callback, frees. */
void ms_es__finish_on_loop(es_job *j);

#endif
