/*
 * eventstore.h — an event store on SQLite or PostgreSQL (through db.h), for any service.
 * It knows nothing of orders.
 *
 * Streams of events {event_id, stream_id, type, version, position, data, metadata,
 * recorded_at}. `version` counts events within a stream from 1; `position` is global and
 * strictly increasing in commit order, so a reader that has seen position P has seen every
 * event that will ever commit below P (on PostgreSQL appends are serialized by an advisory
 * lock held to commit; SQLite has one writer).
 *
 * Appends are group-committed: one writer thread per store takes every queued append, runs
 * them in one transaction with one fsync, and only then answers each caller. An append whose
 * expected version does not match fails alone with MS_ECONFLICT and writes nothing; an append
 * whose events (by event_id) are already stored at the same place is a no-op success
 * (idempotent retries).
 *
 * Threading: ms_es_* may be called from any thread unless said otherwise; answers to
 * ms_es_append come back on the caller's loop through its port. Ownership: the store copies
 * what it needs from an append request before ms_es_append returns; pages are freed by
 * ms_es_page_release.
 */
#ifndef MS_EVENTSTORE_H
#define MS_EVENTSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/db/db.h"

/* The tables (events, snapshots, outbox) as migrations, to append to a service's own list:
 * versions 1000..1099 are reserved for the event store. */
extern const ms_migration ms_es_migrations[];
extern const size_t ms_es_nmigrations;
/* The same count as a constant expression, for static initializers. */
#define MS_ES_NMIGRATIONS 4

enum {
    MS_ES_ANY = -1,           /* append whatever the stream's version */
    MS_ES_NO_STREAM = -2,     /* the stream must not exist yet */
    MS_ES_STREAM_EXISTS = -3, /* the stream must have at least one event */
};

typedef struct ms_es_event {
    char event_id[37]; /* UUID; the caller's, so a retried append is recognised */
    const char *type;
    const char *data;     /* JSON text */
    const char *metadata; /* JSON text, "{}" when none */
    /* filled when read */
    const char *stream_id;
    int64_t version, position;
    const char *recorded_at; /* RFC 3339 UTC */
} ms_es_event;

/*
 * A row for the transactional outbox, written in the same transaction as the events. A row
 * whose payload is one of the append's events sets `of_event` instead of `payload`: the row
 * then references that event (outbox.event_position) rather than storing a second copy of
 * it, and the relay reads the payload from the event (the outbox_messages view).
 */
typedef struct ms_es_outbox_row {
    const char *aggregate_type, *aggregate_id, *type;
    const char *payload; /* JSON text; NULL with of_event */
    size_t of_event;     /* 1..nevents: the payload is events[of_event - 1].data; 0: none */
    char id[37];         /* UUID, the dedup key */
} ms_es_outbox_row;

/* An append request (named _req: `ms_es_append` is the function). */
typedef struct ms_es_append_req {
    const char *stream_id;
    int64_t expected_version; /* MS_ES_ANY / NO_STREAM / STREAM_EXISTS, or the exact version */
    const ms_es_event *events;
    size_t nevents;
    const ms_es_outbox_row *outbox;
    size_t noutbox;
    /* results, set before the callback runs */
    int64_t first_position, last_position; /* of the appended (or already stored) events */
    bool is_replay;  /* the events were stored already: an idempotent retry, nothing written */
    int64_t version; /* the stream's version after the append (on MS_ECONFLICT: as found) */
} ms_es_append_req;

typedef struct ms_es ms_es;
typedef struct ms_es_port ms_es_port;

typedef struct ms_es_options {
    int max_batch;      /* appends per group commit (default 256) */
    int snapshot_every; /* suggest a snapshot every N events of a stream (default 50) */
} ms_es_options;

/* Opens the store on `cfg` (migrated by the caller) and starts its writer thread. */
int ms_es_open(const ms_db_config *cfg, const ms_es_options *opt, ms_es **out);
/* Finishes queued appends, stops the writer, closes. No port may be open. */
void ms_es_close(ms_es *es);

/* A loop's door to the store: answers to its appends arrive on this loop. Loop thread only. */
int ms_es_port_open(ms_es *es, uv_loop_t *loop, ms_es_port **out);
/* Closes after pending answers are delivered; `on_closed` (may be NULL) runs on the loop. */
void ms_es_port_close(ms_es_port *port, void (*on_closed)(void *arg), void *arg);

typedef void (*ms_es_append_cb)(int rc, ms_es_append_req *a, void *arg);
/*
 * Queues an append for the next group commit. `cb` runs on the port's loop after the commit
 * (or failure) with: 0; MS_ECONFLICT (expected version did not match, or an event_id is stored
 * elsewhere); MS_EINVAL (empty stream id, no events); MS_ESHUTDOWN; a database error. `a` is
 * the caller's and must live until `cb`. Loop thread only.
 */
void ms_es_append(ms_es_port *port, ms_es_append_req *a, ms_es_append_cb cb, void *arg);
/* The same, blocking: for tools and tests (never on a loop thread). */
int ms_es_append_wait(ms_es *es, ms_es_append_req *a);

/* A page of events read; its strings live until ms_es_page_release. */
typedef struct ms_es_page {
    ms_es_event *events;
    size_t n;
    void *storage; /* private */
} ms_es_page;
void ms_es_page_release(ms_es_page *page);

/* Blocking reads on a connection of the caller's (a pool worker, a tool). */
/* Events of one stream with version >= from_version, in version order, at most `max`. */
int ms_es_read_stream(ms_db_conn *c, const char *stream_id, int64_t from_version, size_t max,
                      ms_es_page *out);
/* Events of every stream with position > after, in position order, at most `max`. */
int ms_es_read_all(ms_db_conn *c, int64_t after, size_t max, ms_es_page *out);
/* Called by ms_es_each for each event; 0 to go on, anything else stops (and is returned). */
typedef int (*ms_es_event_fn)(const ms_es_event *e, void *arg);
/* Events of every stream with position > after, in position order, at most `max`, shown one
 * by one to `fn` without being copied (a replay, a rebuild): the event and its strings are
 * valid only during the call, and `fn` must not use `c`. On PostgreSQL libpq holds the rows of
 * one call: page through a big store with a moderate `max`. Returns 0, `fn`'s nonzero return,
 * or a database error. */
int ms_es_each(ms_db_conn *c, int64_t after, size_t max, ms_es_event_fn fn, void *arg);
/* The stream's version, 0 when it has no event. */
int ms_es_stream_version(ms_db_conn *c, const char *stream_id, int64_t *version);

/* Snapshots: the latest state of a stream as JSON text at a version. */
int ms_es_snapshot_save(ms_db_conn *c, const char *stream_id, int64_t version, const char *data);
/* *data is a malloc()ed copy (free it), or NULL with *version 0 when there is none. */
int ms_es_snapshot_load(ms_db_conn *c, const char *stream_id, int64_t *version, char **data);
/* True when a stream that went from `before` to `after` should get a new snapshot. */
bool ms_es_snapshot_due(const ms_es *es, int64_t before, int64_t after);

/* The highest position this process has committed durably; at open, the highest already
 * stored. Readers in this process must not publish or project events beyond it: on SQLite a
 * batch is visible to readers of the database a moment before its fsync ends (writer.c). */
int64_t ms_es_committed_position(ms_es *es);
/* The top position of every batch whose commit has begun: whatever a read of the store sees
 * lies at or below it, so waiting (ms_es_wait_committed) for this value read after the read
 * makes everything that read saw durable. */
int64_t ms_es_visible_position(ms_es *es);
/* Waits (blocking) until this process has committed up to `position` or `timeout_ms` passed;
 * 0 or MS_ETIMEDOUT. For catch-up subscribers that have read everything. */
int ms_es_wait_committed(ms_es *es, int64_t position, int timeout_ms);

/*
 * SQLite only (MS_EINVAL elsewhere): marks the still unpublished outbox rows whose seq lies in
 * [first[i], last[i]] (i < n) published at `at`, in a transaction of the writer thread's, run
 * between its batches; returns once it committed. The commit is not synced of its own: a mark
 * a power cut takes back only publishes its rows again. This is how the outbox relay marks:
 * with a connection of its own it competed with the batches for the file's one write lock
 * (the writer napped until it was free) and emptied the writer's page cache at every commit.
 * 0, MS_ESHUTDOWN when the store is closing, or a database error (nothing marked).
 */
int ms_es_mark_published(ms_es *es, const int64_t *first, const int64_t *last, size_t n,
                         const char *at);

/* The upper bounds, in seconds, of ms_es_stats's latency buckets (a 12th is above them all),
 * and of its batch-size buckets (an 8th is above them), for ms_metrics_histogram. */
enum { MS_ES_LATENCY_BOUNDS = 11, MS_ES_BATCH_BOUNDS = 7 };
extern const double ms_es_latency_bounds[MS_ES_LATENCY_BOUNDS];
extern const double ms_es_batch_bounds[MS_ES_BATCH_BOUNDS];

/* Metrics of the store: append latency, group-commit batch sizes, committed position. */
typedef struct ms_es_stats {
    uint64_t appends_total, conflicts_total, batches_total, events_total;
    uint64_t batch_size_hist[8];      /* batches of 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64-127, 128+ */
    double append_seconds_sum;        /* queue to answer */
    uint64_t append_seconds_hist[12]; /* <=0.5,1,2.5,5,10,25,50,100,250,500,1000 ms, +Inf */
    double fsync_seconds_sum;         /* SQLite: the syncer's fdatasync of the WAL */
    uint64_t fsync_seconds_hist[12];  /* the same buckets */
    int64_t committed_position;
} ms_es_stats;
void ms_es_get_stats(ms_es *es, ms_es_stats *out);

#endif
