/*
 * outbox.h — the outbox table every service writes in its business transactions (its SQL for
 * both backends) and the one write ever made to it after: marking rows published.
 *
 * Contract: ms_outbox_mark_runs runs in the caller's transaction on the caller's connection
 * (the store's writer on SQLite, the relay's own connection otherwise), and marks only rows
 * still unpublished, so running it again for the same runs changes nothing. It keeps no state:
 * any thread, one connection at a time.
 *
 * Commit order: readers follow the outbox by seq (the relay, the services' feeds), so a row
 * must never become visible after a row with a higher seq. SQLite has one writer at a time; on
 * PostgreSQL a sequence value is taken at INSERT and seen at COMMIT, so every transaction that
 * may write an outbox row holds the outbox's transaction advisory lock from its start
 * (ms_outbox_begin) to its end: seqs are then taken and committed one transaction at a time.
 */
#ifndef MS_OUTBOX_H
#define MS_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "runtime/db/db.h"

/*
 * The outbox table, as every service's migrations create it: `seq` orders the relay and is
 * never reused (AUTOINCREMENT / a sequence), `id` is the consumers' dedup key, and the partial
 * index holds only unpublished rows, so it stays small however long the history grows.
 */
// clang-format off
#define MS_OUTBOX_COLUMNS_ \
    " id TEXT NOT NULL UNIQUE," \
    " aggregate_type TEXT NOT NULL," \
    " aggregate_id TEXT NOT NULL," \
    " type TEXT NOT NULL," \
    " payload TEXT NOT NULL," \
    " created_at TEXT NOT NULL," \
    " published_at TEXT);" \
    "CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;"
#define MS_OUTBOX_TABLE_SQLITE \
    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT," MS_OUTBOX_COLUMNS_
#define MS_OUTBOX_TABLE_POSTGRES "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY," MS_OUTBOX_COLUMNS_
/* The event store's outbox with each row's payload: its own, or its event's data. */
#define MS_OUTBOX_MESSAGES_VIEW \
    "CREATE VIEW outbox_messages AS SELECT o.seq, o.id, o.aggregate_type, o.aggregate_id," \
    " o.type, COALESCE(e.data, o.payload) AS payload, o.created_at, o.published_at," \
    " o.event_position FROM outbox o LEFT JOIN events e ON e.position = o.event_position"
// clang-format on

/* The lock of the outbox in the current schema (advisory locks are per database; the table's
 * oid tells two services' outboxes apart if they share one). Taken for the transaction. */
#define MS_OUTBOX_LOCK_SQL                                                                         \
    "SELECT pg_advisory_xact_lock(1869968482,"                                                     \
    " CAST(CAST(CAST('outbox' AS regclass) AS oid) AS integer))"

/* Begins a transaction that may write outbox rows (ms_db_begin) and, on PostgreSQL, takes the
 * outbox lock first, before any other lock the transaction takes, so that lock order is the
 * same everywhere and outbox writers cannot deadlock on it. End it with ms_db_end as usual.
 * 0 or MS_E* (then the transaction is rolled back). */
int ms_outbox_begin(ms_db_conn *c);

/* Writes one outbox row (a new id, `payload` serialized compact with sorted keys; borrowed) in
 * the caller's transaction, so the event commits with the change it tells of. On PostgreSQL it
 * takes the outbox lock too (a no-op under ms_outbox_begin): a transaction begun otherwise still
 * commits in seq order, at the risk of a deadlock PostgreSQL breaks. 0 or MS_E*. */
int ms_outbox_write(ms_db_conn *c, const char *aggregate_type, const char *aggregate_id,
                    const char *type, const json_t *payload, const char *now);

/* Marks the unpublished rows with seq in [first[k], last[k]] (k < n) published at `at`: one
 * UPDATE per run, in the caller's transaction. Runs of consecutive seq only: a range spanning a
 * gap could mark a row that committed after the caller's select and was never published. */
int ms_outbox_mark_runs(ms_db_conn *c, const int64_t *first, const int64_t *last, size_t n,
                        const char *at);

#endif
