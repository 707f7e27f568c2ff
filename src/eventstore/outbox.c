/*
 * outbox.c — marking outbox rows published (contract in outbox.h). Shared by the store's
 * writer (SQLite: the file's only writer runs the relay's marks, ms_es_mark_published) and the
 * relay (its own connection otherwise), so neither calls into the other. And the outbox
 * lock that keeps PostgreSQL's commits in seq order (outbox.h says why).
 */
#include <stdio.h>
#include <stdlib.h>

#include "eventstore/outbox.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/banned.h"

int ms_outbox_mark_runs(ms_db_conn *c, const int64_t *first, const int64_t *last, size_t n,
                        const char *at)
{
    int rc = 0;
    for (size_t k = 0; k < n && rc == 0; k++) {
        char lo[24], hi[24];
        snprintf(lo, sizeof lo, "%lld", (long long)first[k]);
        snprintf(hi, sizeof hi, "%lld", (long long)last[k]);
        const char *params[] = {at, lo, hi};
        rc = ms_db_exec(c,
                        "UPDATE outbox SET published_at = $1 WHERE published_at IS NULL"
                        " AND seq BETWEEN CAST($2 AS BIGINT) AND CAST($3 AS BIGINT)",
                        3, params, NULL);
    }
    return rc;
}

static int take_lock(ms_db_conn *c)
{
    if (ms_db_backend_of(c) != MS_DB_POSTGRES)
        return 0;
    return ms_db_exec(c, MS_OUTBOX_LOCK_SQL, 0, NULL, NULL);
}

int ms_outbox_begin(ms_db_conn *c)
{
    int rc = ms_db_begin(c);
    if (rc < 0)
        return rc;
    if ((rc = take_lock(c)) < 0)
        return ms_db_end(c, rc);
    return 0;
}

int ms_outbox_write(ms_db_conn *c, const char *aggregate_type, const char *aggregate_id,
                    const char *type, const json_t *payload, const char *now)
{
    char id[MS_UUID_LEN + 1];
    ms_uuid_new(id);
    char *text = json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return MS_ENOMEM;
    const char *params[] = {id, aggregate_type, aggregate_id, type, text, now};
    int rc = take_lock(c);
    if (rc == 0)
        rc = ms_db_exec(c,
                        "INSERT INTO outbox (id, aggregate_type, aggregate_id, type, payload, "
                        "created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                        6, params, NULL);
    free(text);
    return rc;
}
