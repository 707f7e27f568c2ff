/*
 * schema.c — the event store's tables as migrations 1000..1099, appended by a service to its
 * own list (ms_db_migrate wants ascending versions, so they go after the service's < 1000).
 *
 * `position` must never be reused (a reader's checkpoint would skip a reused one): SQLite
 * AUTOINCREMENT, PostgreSQL a sequence. Data stays TEXT on PostgreSQL too (not jsonb), so an
 * event reads back byte for byte as it was appended. Timestamps are RFC 3339 TEXT, as in the
 * rest of the repository.
 */
#include <stddef.h>

#include "eventstore/eventstore.h"
#include "eventstore/outbox.h"
#include "runtime/core/banned.h"

// clang-format off
const ms_migration ms_es_migrations[] = {
    {1000, "eventstore: events",
     "CREATE TABLE events ("
     " position INTEGER PRIMARY KEY AUTOINCREMENT,"
     " event_id TEXT NOT NULL UNIQUE,"
     " stream_id TEXT NOT NULL,"
     " version INTEGER NOT NULL CHECK (version > 0),"
     " type TEXT NOT NULL,"
     " data TEXT NOT NULL,"
     " metadata TEXT NOT NULL DEFAULT '{}',"
     " recorded_at TEXT NOT NULL,"
     " UNIQUE (stream_id, version))",
     "CREATE TABLE events ("
     " position BIGSERIAL PRIMARY KEY,"
     " event_id TEXT NOT NULL UNIQUE,"
     " stream_id TEXT NOT NULL,"
     " version BIGINT NOT NULL CHECK (version > 0),"
     " type TEXT NOT NULL,"
     " data TEXT NOT NULL,"
     " metadata TEXT NOT NULL DEFAULT '{}',"
     " recorded_at TEXT NOT NULL,"
     " UNIQUE (stream_id, version))"},
    {1001, "eventstore: snapshots",
     "CREATE TABLE snapshots ("
     " stream_id TEXT PRIMARY KEY,"
     " version INTEGER NOT NULL,"
     " data TEXT NOT NULL,"
     " taken_at TEXT NOT NULL)",
     "CREATE TABLE snapshots ("
     " stream_id TEXT PRIMARY KEY,"
     " version BIGINT NOT NULL,"
     " data TEXT NOT NULL,"
     " taken_at TEXT NOT NULL)"},
    /* The relay reads unpublished rows in seq order: the partial index holds only those, so
     * it stays small however long the published history grows. */
    {1002, "eventstore: outbox",
     MS_OUTBOX_TABLE_SQLITE, MS_OUTBOX_TABLE_POSTGRES},
    /* An outbox row of an event references it instead of holding a second copy (a fifth of
     * the bytes each order wrote); outbox_messages shows every row with its payload, and is
     * what the relay reads. payload is '' in a referencing row (the column is NOT NULL). */
    {1003, "eventstore: outbox rows reference their events",
     "ALTER TABLE outbox ADD COLUMN event_position INTEGER;" MS_OUTBOX_MESSAGES_VIEW,
     "ALTER TABLE outbox ADD COLUMN event_position BIGINT;" MS_OUTBOX_MESSAGES_VIEW},
};
// clang-format on

const size_t ms_es_nmigrations = sizeof ms_es_migrations / sizeof ms_es_migrations[0];
_Static_assert(sizeof ms_es_migrations / sizeof ms_es_migrations[0] == MS_ES_NMIGRATIONS,
               "MS_ES_NMIGRATIONS must count ms_es_migrations");
