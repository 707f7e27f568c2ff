/*
 * read.c — blocking reads and snapshots on a connection of the caller's. A page borrows its
 * strings from the one database result it was built from, so reading costs one allocation
 * for the event array on top of the result; ms_es_each costs none: it decodes each row where
 * the database holds it (ms_db_each).
 *
 * Numbers travel as text (db.h): CAST(... AS BIGINT) gives the parameters an integer type on
 * both dialects, so LIMIT and comparisons with the INTEGER columns never compare text.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/eventstore_internal.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/banned.h"

#define EVENT_COLUMNS "event_id, stream_id, version, position, type, data, metadata, recorded_at"

/* Largest page: a bound on memory for one call, whatever `max` a caller passes. */
enum { MAX_PAGE = 100000 };

static int read_page(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
                     ms_es_page *out)
{
    ms_db_result *r = NULL;
    *out = (ms_es_page){0};
    int rc = ms_db_exec(c, sql, nparams, params, &r);
    if (rc < 0)
        return rc;
    int n = ms_db_nrows(r);
    out->events = n > 0 ? ms_xcalloc((size_t)n, sizeof *out->events) : NULL;
    for (int i = 0; i < n; i++) {
        ms_es_event *e = &out->events[i];
        const char *id = ms_db_get(r, i, 0);
        size_t len = id ? strnlen(id, sizeof e->event_id - 1) : 0;
        memcpy(e->event_id, id ? id : "", len);
        e->event_id[len] = '\0';
        e->stream_id = ms_db_get(r, i, 1);
        e->version = strtoll(ms_db_get(r, i, 2), NULL, 10);
        e->position = strtoll(ms_db_get(r, i, 3), NULL, 10);
        e->type = ms_db_get(r, i, 4);
        e->data = ms_db_get(r, i, 5);
        e->metadata = ms_db_get(r, i, 6);
        e->recorded_at = ms_db_get(r, i, 7);
    }
    out->n = (size_t)n;
    out->storage = r;
    return 0;
}

static void limit_text(char buf[24], size_t max)
{
    snprintf(buf, 24, "%zu", max < MAX_PAGE ? max : (size_t)MAX_PAGE);
}

int ms_es_read_stream(ms_db_conn *c, const char *stream_id, int64_t from_version, size_t max,
                      ms_es_page *out)
{
    if (!stream_id || !*stream_id) {
        *out = (ms_es_page){0};
        return MS_EINVAL;
    }
    char from[24], limit[24];
    snprintf(from, sizeof from, "%" PRId64, from_version);
    limit_text(limit, max);
    const char *params[] = {stream_id, from, limit};
    return read_page(c,
                     "SELECT " EVENT_COLUMNS " FROM events WHERE stream_id = $1 AND "
                     "version >= CAST($2 AS BIGINT) ORDER BY version LIMIT CAST($3 AS BIGINT)",
                     3, params, out);
}

int ms_es_read_all(ms_db_conn *c, int64_t after, size_t max, ms_es_page *out)
{
    char from[24], limit[24];
    snprintf(from, sizeof from, "%" PRId64, after);
    limit_text(limit, max);
    const char *params[] = {from, limit};
    return read_page(c,
                     "SELECT " EVENT_COLUMNS " FROM events WHERE position > CAST($1 AS BIGINT) "
                     "ORDER BY position LIMIT CAST($2 AS BIGINT)",
                     2, params, out);
}

typedef struct each_ctx {
    ms_es_event_fn fn;
    void *arg;
} each_ctx;

static int visit_row(const ms_db_row *row, void *arg)
{
    const each_ctx *x = arg;
    ms_es_event e;
    size_t len;
    const char *id = ms_db_row_text(row, 0, &len);
    if (!id || len >= sizeof e.event_id)
        len = 0;
    memcpy(e.event_id, id ? id : "", len);
    e.event_id[len] = '\0';
    e.stream_id = ms_db_row_text(row, 1, NULL);
    e.version = ms_db_row_int(row, 2);
    e.position = ms_db_row_int(row, 3);
    e.type = ms_db_row_text(row, 4, NULL);
    e.data = ms_db_row_text(row, 5, NULL);
    e.metadata = ms_db_row_text(row, 6, NULL);
    e.recorded_at = ms_db_row_text(row, 7, NULL);
    return x->fn(&e, x->arg);
}

int ms_es_each(ms_db_conn *c, int64_t after, size_t max, ms_es_event_fn fn, void *arg)
{
    char from[24], limit[24];
    snprintf(from, sizeof from, "%" PRId64, after);
    snprintf(limit, sizeof limit, "%zu", max < (size_t)INT64_MAX ? max : (size_t)INT64_MAX);
    const char *params[] = {from, limit};
    each_ctx x = {fn, arg};
    return ms_db_each(c,
                      "SELECT " EVENT_COLUMNS " FROM events WHERE position > CAST($1 AS BIGINT) "
                      "ORDER BY position LIMIT CAST($2 AS BIGINT)",
                      2, params, visit_row, &x);
}

void ms_es_page_release(ms_es_page *page)
{
    if (!page)
        return;
    free(page->events);
    ms_db_result_free(page->storage);
    *page = (ms_es_page){0};
}

int ms_es_stream_version(ms_db_conn *c, const char *stream_id, int64_t *version)
{
    *version = 0;
    if (!stream_id || !*stream_id)
        return MS_EINVAL;
    ms_db_result *r = NULL;
    const char *params[] = {stream_id};
    int rc = ms_db_exec(c,
                        "SELECT version FROM events WHERE stream_id = $1 "
                        "ORDER BY version DESC LIMIT 1",
                        1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 1)
        *version = strtoll(ms_db_get(r, 0, 0), NULL, 10);
    ms_db_result_free(r);
    return rc;
}

/* A snapshot only moves forward: of two savers racing, the one at the higher version stays. */
int ms_es_snapshot_save(ms_db_conn *c, const char *stream_id, int64_t version, const char *data)
{
    if (!stream_id || !*stream_id || version <= 0 || !data)
        return MS_EINVAL;
    char v[24], now[MS_TIME_LEN + 1];
    snprintf(v, sizeof v, "%" PRId64, version);
    ms_time_now(now);
    const char *params[] = {stream_id, v, data, now};
    return ms_db_exec(c,
                      "INSERT INTO snapshots (stream_id, version, data, taken_at) "
                      "VALUES ($1, CAST($2 AS BIGINT), $3, $4) ON CONFLICT (stream_id) DO UPDATE "
                      "SET version = excluded.version, data = excluded.data, "
                      "taken_at = excluded.taken_at WHERE excluded.version > snapshots.version",
                      4, params, NULL);
}

int ms_es_snapshot_load(ms_db_conn *c, const char *stream_id, int64_t *version, char **data)
{
    *version = 0;
    *data = NULL;
    if (!stream_id || !*stream_id)
        return MS_EINVAL;
    ms_db_result *r = NULL;
    const char *params[] = {stream_id};
    int rc =
        ms_db_exec(c, "SELECT version, data FROM snapshots WHERE stream_id = $1", 1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 1) {
        *version = strtoll(ms_db_get(r, 0, 0), NULL, 10);
        *data = ms_xstrdup(ms_db_get(r, 0, 1));
    }
    ms_db_result_free(r);
    return rc;
}
