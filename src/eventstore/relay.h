/*
 * relay.h — the outbox relay: moves committed rows of a service's `outbox` table (see
 * ms_es_migrations 1002 and the user service's migration 2: seq, id, aggregate_type,
 * aggregate_id, type, payload, created_at, published_at) to a publisher, in seq order, at
 * least once.
 *
 * Delivery: rows go out through the runtime's batch processor (runtime/obs/batch.h, batch
 * "outbox"): the relay thread queues pages of rows, the batch's thread publishes a flush of up
 * to `batch` rows and marks them published only after the publisher reported every message of
 * it durably handed over. A publish error marks nothing; the batch backs off (exponential, full
 * jitter, up to 5 s) and retries the same rows: messages are never dropped, and the table
 * stays their durable copy. A crash between publish and mark publishes those rows again after
 * the restart, so consumers must dedup by `id` (the outbox row's UUID; Eventuate's
 * received_messages).
 *
 * Ordering: one relay publishes strictly in seq order. Only one relay may run per outbox: on
 * PostgreSQL the relay holds a session advisory lock (MS_RELAY_LOCK_KEY) and, while another
 * relay holds it, only retries every poll, so replicas never both publish (a later issue adds
 * leader election); on SQLite a single process owns the file. PostgreSQL can make a higher seq
 * visible before a lower one commits: the relay holds rows behind such a gap for up to
 * gap_wait_ms (then takes the gap for a rolled-back insert) and never marks a row it did not
 * publish.
 *
 * The outbox table's SQL and the marking are outbox.h's, the publisher interface and the file
 * feed publisher.h's; both are included here for the relay's users.
 *
 * Threading: each relay runs a reading thread with its own connection and a batch thread that
 * publishes and marks (its own connection, unless a SQLite store's writer marks);
 * ms_relay_kick, ms_relay_get_stats and ms_relay_collect may be called from any thread; start
 * and stop from one owner. The publisher is called on the batch thread only.
 * Ownership: ms_relay_start copies the config and options; on success it owns the publisher
 * (ms_relay_stop closes it). Messages handed to publish are borrowed for the call.
 */
#ifndef MS_RELAY_H
#define MS_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventstore/eventstore.h"
#include "eventstore/outbox.h"
#include "eventstore/publisher.h"
#include "runtime/core/buf.h"
#include "runtime/db/db.h"

/* pg_try_advisory_lock key of "the outbox relay" (advisory locks are per database). */
#define MS_RELAY_LOCK_KEY "7236353617836913"

typedef struct ms_relay_options {
    int batch;       /* rows per publish (default 500) */
    int poll_ms;     /* idle sleep between polls, and the lock retry period (default 200) */
    int gap_wait_ms; /* PostgreSQL: longest hold of rows behind a seq gap (default 1000) */
    int linger_ms;   /* after catching up, let rows gather this long (default 20) */
    /* This process's event store writing the outbox, or NULL: rows are then published only
     * once the store has made them durable (its commits are visible a moment before), read
     * with their events' payloads (the outbox_messages view), and on SQLite the store's
     * writer marks them (ms_es_mark_published): the relay never writes. */
    ms_es *es;
    const char *service; /* the metrics label service=... and the logs' name (default "unknown") */
} ms_relay_options;

typedef struct ms_relay ms_relay;

/*
 * Opens the relay's connection (blocking) and starts its thread. `opt` may be NULL. The outbox
 * table must exist (migrations run first). Returns 0, MS_EINVAL, or the ms_db_open error; on
 * error the caller still owns the publisher.
 */
int ms_relay_start(const ms_db_config *db, const ms_publisher *pub, const ms_relay_options *opt,
                   ms_relay **out);
/* A commit just wrote outbox rows: poll now instead of at the next poll_ms. Any thread; cheap;
 * NULL is fine (no relay in this process). */
void ms_relay_kick(ms_relay *r);
/* Stops and joins the threads, closes the publisher and frees the relay. What is queued gets
 * one more flush (up to 250 ms; one under way completes and is marked); rows still failing are
 * left in the table for the next start. NULL is fine. */
void ms_relay_stop(ms_relay *r);

typedef struct ms_relay_stats {
    uint64_t published_total; /* messages published and marked */
    uint64_t failures_total;  /* publish calls that failed */
    int64_t pending;          /* rows unpublished at the last poll (exact below one batch;
                                 counted at most once a second while there is a backlog) */
    int64_t last_seq;         /* the highest seq published and marked (0: none yet) */
    double lag_seconds;       /* age of the oldest unpublished row at the last poll (0: none) */
    bool has_lock;            /* this relay may publish (PostgreSQL lock held; SQLite: true) */
} ms_relay_stats;

/* A consistent snapshot; any thread. */
void ms_relay_get_stats(ms_relay *r, ms_relay_stats *out);
/* A metrics collector (ms_metrics_register(ms_relay_collect, relay)): outbox_published_total,
 * outbox_publish_failures_total, outbox_pending, outbox_lag_seconds, labelled service=<name>.
 * One relay per process: each call writes the families' HELP and TYPE lines. */
void ms_relay_collect(ms_buf *out, void *relay);

#endif
