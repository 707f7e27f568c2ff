/*
 * outbox.c — marking outbox rows published (contract in outbox.h). Shared by the store's
 * writer (SQLite: the file's only writer runs the relay's marks, ms_es_mark_published) and the
 * relay (its own connection otherwise), so neither calls into the other.
 */
#include <stdio.h>

#include "eventstore/outbox.h"
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
