/*
 * append.c — one append: its checks and copy on the caller's thread (ms_es__job_new), and its
 * statements inside the writer's batch transaction (ms_es__apply).
 *
 * An append checks before it writes: the stream's version against the expected one, and
 * whether its first event id is already stored. A mismatch is MS_ECONFLICT with nothing
 * written and the transaction intact, so the batch goes on without a savepoint per append.
 * A statement that fails anyway (an event id stored elsewhere that is not the first, an outbox
 * id reused, a disk error) marks the transaction dirty; the writer rolls back and runs the
 * batch again without this append. Appends of a batch run one after another in the same
 * transaction, so each sees the ones before it.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/eventstore_internal.h"
#include "runtime/core/error.h"
#include "runtime/core/hash.h"
#include "runtime/core/id.h"
#include "runtime/db/db_array.h"
#include "runtime/core/banned.h"

/* ---- the copy ---- */

static size_t text_size(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

/* Copies s (NULL stays NULL) to the bump pointer *p. */
static const char *copy_text(char **p, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = *p;
    memcpy(d, s, n);
    *p += n;
    return d;
}

/* UUIDs compare as text in the UNIQUE index: one spelling (lower case) for each. */
static void copy_uuid(char dst[37], const char *src)
{
    for (int i = 0; i < MS_UUID_LEN; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[MS_UUID_LEN] = '\0';
}

static bool is_blank(const char *s)
{
    return !s || !*s;
}

static int check(const ms_es_append_req *a)
{
    if (is_blank(a->stream_id) || a->nevents == 0 || !a->events ||
        a->expected_version < MS_ES_STREAM_EXISTS || (a->noutbox > 0 && !a->outbox))
        return MS_EINVAL;
    for (size_t i = 0; i < a->nevents; i++) {
        const ms_es_event *e = &a->events[i];
        if (memchr(e->event_id, '\0', sizeof e->event_id) == NULL || !ms_uuid_valid(e->event_id) ||
            is_blank(e->type) || !e->data)
            return MS_EINVAL;
        for (size_t k = 0; k < i; k++) /* the same event twice in one append */
            if (strcasecmp(a->events[k].event_id, e->event_id) == 0)
                return MS_EINVAL;
    }
    for (size_t i = 0; i < a->noutbox; i++) {
        const ms_es_outbox_row *o = &a->outbox[i];
        if (memchr(o->id, '\0', sizeof o->id) == NULL || !ms_uuid_valid(o->id) ||
            is_blank(o->aggregate_type) || is_blank(o->aggregate_id) || is_blank(o->type) ||
            (o->of_event ? o->payload || o->of_event > a->nevents : !o->payload))
            return MS_EINVAL;
    }
    return 0;
}

int ms_es__job_new(const ms_es_append_req *a, es_job **out)
{
    *out = NULL;
    int rc = check(a);
    if (rc < 0)
        return rc;
    size_t size = sizeof(es_job) + a->nevents * sizeof(ms_es_event) +
                  a->noutbox * sizeof(ms_es_outbox_row) + text_size(a->stream_id);
    for (size_t i = 0; i < a->nevents; i++)
        size += text_size(a->events[i].type) + text_size(a->events[i].data) +
                text_size(a->events[i].metadata ? a->events[i].metadata : "{}");
    for (size_t i = 0; i < a->noutbox; i++)
        size += text_size(a->outbox[i].aggregate_type) + text_size(a->outbox[i].aggregate_id) +
                text_size(a->outbox[i].type) + text_size(a->outbox[i].payload);

    es_job *j = ms_xcalloc(1, size);
    ms_es_event *events = (ms_es_event *)(j + 1);
    ms_es_outbox_row *outbox = (ms_es_outbox_row *)(events + a->nevents);
    char *p = (char *)(outbox + a->noutbox);
    j->req.stream_id = copy_text(&p, a->stream_id);
    j->req.expected_version = a->expected_version;
    j->req.events = events;
    j->req.nevents = a->nevents;
    j->req.outbox = a->noutbox ? outbox : NULL;
    j->req.noutbox = a->noutbox;
    for (size_t i = 0; i < a->nevents; i++) {
        const ms_es_event *e = &a->events[i];
        copy_uuid(events[i].event_id, e->event_id);
        events[i].type = copy_text(&p, e->type);
        events[i].data = copy_text(&p, e->data);
        events[i].metadata = copy_text(&p, e->metadata ? e->metadata : "{}");
    }
    for (size_t i = 0; i < a->noutbox; i++) {
        const ms_es_outbox_row *o = &a->outbox[i];
        copy_uuid(outbox[i].id, o->id);
        outbox[i].aggregate_type = copy_text(&p, o->aggregate_type);
        outbox[i].aggregate_id = copy_text(&p, o->aggregate_id);
        outbox[i].type = copy_text(&p, o->type);
        outbox[i].payload = copy_text(&p, o->payload);
        outbox[i].of_event = o->of_event;
    }
    if (p != (char *)j + size)
        MS_BUG("eventstore: job size miscounted");
    j->caller = (ms_es_append_req *)a;
    j->queued_ns = uv_hrtime();
    *out = j;
    return 0;
}

/* ---- inside the batch ---- */

/* The stream's version and, in the same round trip, where the first event id is stored. */
static const char head_sql[] =
    "SELECT COALESCE((SELECT version FROM events WHERE stream_id = $1 "
    "ORDER BY version DESC LIMIT 1), 0), (SELECT position FROM events WHERE event_id = $2)";
static const char find_sql[] =
    "SELECT stream_id, version, position FROM events WHERE event_id = $1";
/* An event whose id or (stream, version) is taken is skipped: see write_events. SQLite's
 * position is the rowid (INTEGER PRIMARY KEY): no RETURNING, which costs more there. */
#define INSERT_EVENT                                                                               \
    "INSERT INTO events (event_id, stream_id, version, type, data, metadata, recorded_at) "        \
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
static const char insert_event_sql[] = INSERT_EVENT " RETURNING position";
static const char insert_event_sqlite[] = INSERT_EVENT;
/* A row referencing its event stores payload '' (the column is NOT NULL): see schema.c. */
static const char insert_outbox_sql[] =
    "INSERT INTO outbox (id, aggregate_type, aggregate_id, type, payload, created_at, "
    "event_position) VALUES ($1, $2, $3, $4, COALESCE($5, ''), $6, CAST($7 AS BIGINT))";

static bool version_matches(int64_t expected, int64_t current)
{
    switch (expected) {
    case MS_ES_ANY:
        return true;
    case MS_ES_NO_STREAM:
        return current == 0;
    case MS_ES_STREAM_EXISTS:
        return current > 0;
    default:
        return current == expected;
    }
}

/*
 * The first event id is already stored: a retry of an append that committed is a success
 * with the original positions when every event is stored, in this stream, consecutively and
 * in order, at versions the expected version allows (as if it had been checked before the
 * first write). Anything else reuses ids elsewhere: MS_ECONFLICT.
 */
static int check_retry(ms_db_conn *c, es_job *j, bool *is_dirty)
{
    const ms_es_append_req *a = &j->req;
    int64_t first_version = 0;
    int rc = 0;
    for (size_t i = 0; i < a->nevents && rc == 0; i++) {
        const char *params[] = {a->events[i].event_id};
        ms_db_result *r = NULL;
        if ((rc = ms_db_exec(c, find_sql, 1, params, &r)) < 0) {
            *is_dirty = true;
            break;
        }
        if (ms_db_nrows(r) != 1 || strcmp(ms_db_get(r, 0, 0), a->stream_id) != 0) {
            rc = MS_ECONFLICT;
        } else {
            int64_t version = strtoll(ms_db_get(r, 0, 1), NULL, 10);
            int64_t position = strtoll(ms_db_get(r, 0, 2), NULL, 10);
            if (i == 0) {
                first_version = version;
                j->first_position = position;
            } else if (version != first_version + (int64_t)i || position <= j->last_position) {
                rc = MS_ECONFLICT;
            }
            j->last_position = position;
        }
        ms_db_result_free(r);
    }
    if (rc == 0 && !version_matches(a->expected_version, first_version - 1))
        rc = MS_ECONFLICT;
    if (rc == 0) {
        j->version = first_version + (int64_t)a->nevents - 1;
        j->is_noop = true;
    } else
        j->first_position = j->last_position = 0;
    return rc;
}

/* ---- the writer's stream versions (SQLite) ---- */

enum { VERSIONS_MAX = 65536 }; /* streams remembered; past that the cache starts over */

/* Emptied whenever another connection commits (the outbox relay, dozens of times a second
 * under load): only the slots in use are touched, not the whole table. */
void ms_es__versions_clear(es_versions *v, bool is_final)
{
    for (size_t k = 0; k < v->count; k++) {
        es_version_slot *s = &v->slots[v->used[k]];
        free(s->stream_id);
        *s = (es_version_slot){0};
    }
    v->count = 0;
    if (is_final) {
        free(v->slots);
        free(v->used);
        *v = (es_versions){0};
    }
}

/* The slot of `stream_id`: its own, or the empty one where it goes. */
static es_version_slot *versions_slot(es_versions *v, const char *stream_id)
{
    if (!v->slots) {
        v->mask = 2 * VERSIONS_MAX - 1; /* at most half full */
        v->slots = ms_xcalloc(v->mask + 1, sizeof *v->slots);
        v->used = ms_xcalloc(VERSIONS_MAX, sizeof *v->used);
    }
    for (size_t i = (size_t)ms_hash_text(stream_id) & v->mask;; i = (i + 1) & v->mask)
        if (!v->slots[i].stream_id || strcmp(v->slots[i].stream_id, stream_id) == 0)
            return &v->slots[i];
}

/* The stream's version as known, or -1. */
static int64_t versions_get(es_versions *v, const char *stream_id)
{
    if (!v || v->count == 0)
        return -1;
    const es_version_slot *s = versions_slot(v, stream_id);
    return s->stream_id ? s->version : -1;
}

static void versions_set(es_versions *v, const char *stream_id, int64_t version)
{
    if (!v)
        return;
    es_version_slot *s = versions_slot(v, stream_id);
    if (!s->stream_id) {
        if (v->count == VERSIONS_MAX) {
            ms_es__versions_clear(v, false);
            s = versions_slot(v, stream_id);
        }
        s->stream_id = ms_xstrdup(stream_id);
        v->used[v->count++] = (size_t)(s - v->slots);
    }
    s->version = version;
}

/* ---- one append ---- */

static int take_position(const ms_db_row *row, void *arg)
{
    *(int64_t *)arg = ms_db_row_int(row, 0);
    return 0;
}

/* write_events: the first event's id or (stream, version) is taken; nothing was written. */
enum { IS_TAKEN = 1 };

/*
 * Writes the append's events at versions current+1.. and its outbox rows. An event whose id or
 * (stream, version) is taken is skipped by the INSERT (ON CONFLICT DO NOTHING) and returns no
 * position: for the first event nothing is written yet (IS_TAKEN: the caller probes and
 * decides), for a later one the append is half written (MS_ECONFLICT, dirty).
 */
static int write_events(ms_db_conn *c, es_job *j, int64_t current, bool *is_dirty)
{
    const ms_es_append_req *a = &j->req;
    bool is_sqlite = ms_db_backend_of(c) == MS_DB_SQLITE;
    char now[MS_TIME_LEN + 1];
    ms_time_now(now);
    int rc = 0;
    int64_t few[8], *positions = a->nevents <= 8 ? few : ms_xcalloc(a->nevents, sizeof *positions);
    for (size_t i = 0; i < a->nevents; i++) {
        const ms_es_event *e = &a->events[i];
        char version[24];
        snprintf(version, sizeof version, "%" PRId64, current + 1 + (int64_t)i);
        const char *params[] = {e->event_id, a->stream_id, version, e->type,
                                e->data,     e->metadata,  now};
        int64_t position = 0;
        rc = is_sqlite ? ms_db_insert_rowid(c, insert_event_sqlite, 7, params, &position)
                       : ms_db_each(c, insert_event_sql, 7, params, take_position, &position);
        if (rc < 0) {
            *is_dirty = true;
            goto out;
        }
        if (position == 0) {
            *is_dirty = i > 0;
            rc = i > 0 ? MS_ECONFLICT : IS_TAKEN;
            goto out;
        }
        if (i == 0)
            j->first_position = position;
        j->last_position = positions[i] = position;
    }
    for (size_t i = 0; i < a->noutbox; i++) {
        const ms_es_outbox_row *o = &a->outbox[i];
        char position[24];
        if (o->of_event)
            snprintf(position, sizeof position, "%" PRId64, positions[o->of_event - 1]);
        const char *params[] = {o->id,
                                o->aggregate_type,
                                o->aggregate_id,
                                o->type,
                                o->payload,
                                now,
                                o->of_event ? position : NULL};
        if ((rc = ms_db_exec(c, insert_outbox_sql, 7, params, NULL)) < 0) {
            *is_dirty = true;
            goto out;
        }
    }
    j->version = current + (int64_t)a->nevents;
out:
    if (positions != few)
        free(positions);
    return rc;
}

/*
 * With the stream's version known (the cache) and matching, the append is one INSERT per
 * event and per outbox row. Otherwise, or when the INSERT finds the first event id taken, a
 * probe reads the stream's version and where that id is stored, and decides as before any
 * write: a retry (check_retry), a conflict, or the write.
 *
 * A new stream (MS_ES_NO_STREAM, or exactly version 0) needs no probe either: versions start at 1
 * and have no gaps, so the INSERT of version 1 succeeds exactly when the stream has no event, and
 * the (stream_id, version) and event_id constraints turn it away otherwise (IS_TAKEN: the probe
 * then decides). Every order starts one; the probe was a fifth of the writer's statements.
 */
int ms_es__apply(ms_db_conn *c, es_job *j, es_versions *cache, bool *is_dirty)
{
    const ms_es_append_req *a = &j->req;
    ms_db_result *r = NULL;
    *is_dirty = false;
    j->is_noop = false;
    j->first_position = j->last_position = j->version = 0;

    int rc;
    int64_t known = versions_get(cache, a->stream_id);
    if (known < 0 && (a->expected_version == MS_ES_NO_STREAM || a->expected_version == 0))
        known = 0;
    if (known >= 0 && version_matches(a->expected_version, known)) {
        rc = write_events(c, j, known, is_dirty);
        if (rc != IS_TAKEN)
            goto out;
    }

    const char *head_params[] = {a->stream_id, a->events[0].event_id};
    rc = ms_db_exec(c, head_sql, 2, head_params, &r);
    if (rc < 0) {
        *is_dirty = true;
        goto out;
    }
    int64_t current = strtoll(ms_db_get(r, 0, 0), NULL, 10);
    bool is_stored = ms_db_get(r, 0, 1) != NULL;
    ms_db_result_free(r);
    r = NULL;
    versions_set(cache, a->stream_id, current);
    if (is_stored) {
        rc = check_retry(c, j, is_dirty);
        if (rc == MS_ECONFLICT)
            j->version = current;
        goto out;
    }
    if (!version_matches(a->expected_version, current)) {
        j->version = current; /* tells the caller where the stream is */
        rc = MS_ECONFLICT;
        goto out;
    }
    if ((rc = write_events(c, j, current, is_dirty)) == IS_TAKEN) {
        rc = MS_ECONFLICT; /* taken since the probe: cannot be, but never written twice */
        *is_dirty = true;
    }
out:
    ms_db_result_free(r);
    if (rc == 0 && !j->is_noop)
        versions_set(cache, a->stream_id, j->version);
    if (rc < 0 && rc != MS_ECONFLICT)
        j->version = 0;
    if (rc < 0)
        j->first_position = j->last_position = 0;
    return rc;
}

/* ---- the whole batch at once (PostgreSQL) ---- */

/*
 * On PostgreSQL every statement is a round trip, so the common batch costs a constant number
 * of them instead of two or more per append: one probe of the batch's stream versions and
 * event ids, then one INSERT of the accepted appends' events and one of their outbox rows,
 * each taking the whole batch as arrays (unnest). Checks run in memory, in queue order, each
 * append seeing the ones before it. An append with an event id already stored (a retry, or
 * an id reused), in the database or earlier in the batch, takes the one-by-one path above
 * after what precedes it is written, so its answer is exactly the same.
 *
 * SQLite keeps the one-by-one path: it has no round trips to save, and measured, multi-row
 * INSERTs and padded probes were slower there than its cached single-row statements.
 */
enum { EVENT_COLS = 7, OUTBOX_COLS = 7 };

/* Each takes the whole batch as arrays. */
static const char pg_probe[] =
    "SELECT u.s, (SELECT version FROM events WHERE stream_id = u.s ORDER BY version DESC "
    "LIMIT 1), 0 FROM unnest($1::text[]) AS u(s) "
    "UNION ALL SELECT event_id, NULL, 1 FROM events WHERE event_id = ANY($2::text[])";
static const char pg_insert_events[] =
    "INSERT INTO events (event_id, stream_id, version, type, data, metadata, recorded_at) "
    "SELECT u.e, u.s, u.v, u.t, u.d, u.m, $7 FROM unnest($1::text[], $2::text[], $3::bigint[], "
    "$4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS u(e, s, v, t, d, m, n) ORDER BY u.n "
    "RETURNING event_id, position";
/* $6: the event id a row references, '' for none (arrays hold no NULL) */
static const char pg_insert_outbox[] =
    "INSERT INTO outbox (id, aggregate_type, aggregate_id, type, payload, event_position, "
    "created_at) SELECT u.i, u.a, u.g, u.t, u.p, (SELECT position FROM events WHERE event_id = "
    "NULLIF(u.e, '')), $7 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
    "$5::text[], $6::text[]) WITH ORDINALITY AS u(i, a, g, t, p, e, n) ORDER BY u.n";

/* A string-keyed open-addressing table: stream -> version, or a set of event ids. */
typedef struct str_slot {
    const char *key;
    int64_t value;
} str_slot;
typedef struct str_map {
    str_slot *slots;
    size_t mask;
} str_map;

static void map_init(str_map *m, size_t count)
{
    size_t cap = 16;
    while (cap < count * 2)
        cap *= 2;
    m->slots = ms_xcalloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
}

/* The slot of `key`: its own, or the empty one where it goes. */
static str_slot *map_slot(const str_map *m, const char *key)
{
    for (size_t i = (size_t)ms_hash_text(key) & m->mask;; i = (i + 1) & m->mask)
        if (!m->slots[i].key || strcmp(m->slots[i].key, key) == 0)
            return &m->slots[i];
}

typedef struct pending_event {
    es_job *job;
    size_t index; /* in job->req.events */
    int64_t version;
} pending_event;

typedef struct pending_outbox {
    const ms_es_outbox_row *row;
    const char *event_id; /* of the event it references, or "" */
} pending_outbox;

typedef struct batch {
    ms_db_conn *c;
    char now[MS_TIME_LEN + 1];
    pending_event *events;
    pending_outbox *outbox;
    size_t nevents, noutbox;
} batch;

/* Sets the appends' positions from the (event_id, position) rows of an INSERT ... RETURNING of
 * b->events[from, from + rows). */
static void take_positions(batch *b, size_t from, size_t rows, const ms_db_result *res)
{
    if (ms_db_nrows(res) != (int)rows)
        MS_BUG("eventstore: INSERT ... RETURNING gave too few positions");
    for (size_t r = 0; r < rows; r++) {
        /* Rows come back in insertion order; matched by id all the same. */
        size_t k = r;
        const char *id = ms_db_get(res, (int)r, 0);
        if (strcmp(b->events[from + k].job->req.events[b->events[from + k].index].event_id, id)) {
            for (k = 0; k < rows; k++)
                if (!strcmp(b->events[from + k].job->req.events[b->events[from + k].index].event_id,
                            id))
                    break;
            if (k == rows)
                MS_BUG("eventstore: INSERT ... RETURNING gave an unknown event id");
        }
        const pending_event *p = &b->events[from + k];
        int64_t position = strtoll(ms_db_get(res, (int)r, 1), NULL, 10);
        if (p->index == 0)
            p->job->first_position = position;
        if (p->index == p->job->req.nevents - 1)
            p->job->last_position = position;
    }
}

/* PostgreSQL: the pending events in one statement, the outbox rows in another. */
static int flush_pg(batch *b)
{
    ms_db_array cols[EVENT_COLS - 1] = {{0}};
    const char *params[EVENT_COLS];
    int rc = 0;
    if (b->nevents > 0) {
        for (size_t r = 0; r < b->nevents; r++) {
            const pending_event *p = &b->events[r];
            const ms_es_event *e = &p->job->req.events[p->index];
            char version[24];
            snprintf(version, sizeof version, "%" PRId64, p->version);
            ms_db_array_add(&cols[0], e->event_id);
            ms_db_array_add(&cols[1], p->job->req.stream_id);
            ms_db_array_add(&cols[2], version);
            ms_db_array_add(&cols[3], e->type);
            ms_db_array_add(&cols[4], e->data);
            ms_db_array_add(&cols[5], e->metadata);
        }
        for (int i = 0; i < EVENT_COLS - 1; i++)
            params[i] = ms_db_array_text(&cols[i]);
        params[EVENT_COLS - 1] = b->now;
        ms_db_result *res = NULL;
        rc = ms_db_exec(b->c, pg_insert_events, EVENT_COLS, params, &res);
        if (rc == 0)
            take_positions(b, 0, b->nevents, res);
        ms_db_result_free(res);
    }
    if (rc == 0 && b->noutbox > 0) {
        for (int i = 0; i < EVENT_COLS - 1; i++)
            ms_db_array_reset(&cols[i]);
        for (size_t r = 0; r < b->noutbox; r++) {
            const ms_es_outbox_row *o = b->outbox[r].row;
            ms_db_array_add(&cols[0], o->id);
            ms_db_array_add(&cols[1], o->aggregate_type);
            ms_db_array_add(&cols[2], o->aggregate_id);
            ms_db_array_add(&cols[3], o->type);
            ms_db_array_add(&cols[4], o->payload ? o->payload : "");
            ms_db_array_add(&cols[5], b->outbox[r].event_id);
        }
        for (int i = 0; i < OUTBOX_COLS - 1; i++)
            params[i] = ms_db_array_text(&cols[i]);
        params[OUTBOX_COLS - 1] = b->now;
        rc = ms_db_exec(b->c, pg_insert_outbox, OUTBOX_COLS, params, NULL);
    }
    for (int i = 0; i < EVENT_COLS - 1; i++)
        ms_db_array_free(&cols[i]);
    b->nevents = b->noutbox = 0;
    return rc;
}

/* Records one probed row: `key` is the result's; the map keeps ours, one of keys[0..n). */
static void take_probe_row(str_map *m, const char **keys, size_t n, const char *key,
                           const char *value)
{
    str_slot *s = map_slot(m, key);
    for (size_t k = 0; !s->key && k < n; k++)
        if (strcmp(keys[k], key) == 0)
            s->key = keys[k];
    if (s->key) /* else not asked for (a collation quirk): the slow path decides */
        s->value = value ? strtoll(value, NULL, 10) : 0;
}

/* PostgreSQL: both probes in one round trip. */
static int probe_pg(ms_db_conn *c, const char **streams, size_t nstreams, str_map *versions,
                    const char **ids, size_t nids, str_map *stored)
{
    ms_db_array s = {0}, e = {0};
    for (size_t k = 0; k < nstreams; k++)
        ms_db_array_add(&s, streams[k]);
    for (size_t k = 0; k < nids; k++)
        ms_db_array_add(&e, ids[k]);
    const char *params[] = {ms_db_array_text(&s), ms_db_array_text(&e)};
    ms_db_result *r = NULL;
    int rc = ms_db_exec(c, pg_probe, 2, params, &r);
    ms_db_array_free(&s);
    ms_db_array_free(&e);
    if (rc < 0)
        return rc;
    for (int i = 0; i < ms_db_nrows(r); i++) {
        if (strcmp(ms_db_get(r, i, 2), "0") == 0)
            take_probe_row(versions, streams, nstreams, ms_db_get(r, i, 0), ms_db_get(r, i, 1));
        else
            take_probe_row(stored, ids, nids, ms_db_get(r, i, 0), "1");
    }
    ms_db_result_free(r);
    return 0;
}

int ms_es__apply_batch(ms_db_conn *c, es_job **jobs, size_t n, bool *is_dirty)
{
    *is_dirty = false;
    size_t nevents = 0, noutbox = 0;
    for (size_t i = 0; i < n; i++) {
        nevents += jobs[i]->req.nevents;
        noutbox += jobs[i]->req.noutbox;
    }
    const char **streams = ms_xcalloc(n, sizeof *streams);
    const char **ids = ms_xcalloc(nevents, sizeof *ids);
    str_map versions, stored, taken; /* streams; ids stored before; ids written by this batch */
    map_init(&versions, n);
    map_init(&stored, nevents);
    map_init(&taken, nevents);
    batch b = {.c = c};
    b.events = ms_xcalloc(nevents, sizeof *b.events);
    b.outbox = ms_xcalloc(noutbox ? noutbox : 1, sizeof *b.outbox);
    ms_time_now(b.now);

    size_t nstreams = 0, nids = 0;
    for (size_t i = 0; i < n; i++) {
        const ms_es_append_req *a = &jobs[i]->req;
        str_slot *s = map_slot(&versions, a->stream_id);
        if (!s->key) {
            s->key = a->stream_id;
            s->value = -1; /* not probed yet */
            streams[nstreams++] = a->stream_id;
        }
        for (size_t k = 0; k < a->nevents; k++)
            ids[nids++] = a->events[k].event_id;
    }
    int rc = probe_pg(c, streams, nstreams, &versions, ids, nids, &stored);
    for (size_t i = 0; i < n && rc == 0; i++) {
        es_job *j = jobs[i];
        const ms_es_append_req *a = &j->req;
        j->is_noop = false;
        j->first_position = j->last_position = j->version = 0;
        bool is_known = false;
        for (size_t k = 0; k < a->nevents && !is_known; k++)
            is_known = map_slot(&stored, a->events[k].event_id)->key ||
                       map_slot(&taken, a->events[k].event_id)->key;
        str_slot *s = map_slot(&versions, a->stream_id);
        if (is_known || s->value < 0) {
            /* the one-by-one path, seeing everything written before it */
            if ((rc = flush_pg(&b)) < 0)
                break;
            int arc = ms_es__apply(c, j, NULL, is_dirty);
            j->rc = arc;
            if (*is_dirty) {
                rc = arc;
                break;
            }
            if (arc == 0 && !j->is_noop) {
                s->value = j->version;
                for (size_t k = 0; k < a->nevents; k++)
                    map_slot(&taken, a->events[k].event_id)->key = a->events[k].event_id;
            }
            continue;
        }
        int64_t current = s->value;
        if (!version_matches(a->expected_version, current)) {
            j->version = current;
            j->rc = MS_ECONFLICT;
            continue;
        }
        for (size_t k = 0; k < a->nevents; k++) {
            map_slot(&taken, a->events[k].event_id)->key = a->events[k].event_id;
            b.events[b.nevents++] = (pending_event){j, k, current + 1 + (int64_t)k};
        }
        for (size_t k = 0; k < a->noutbox; k++)
            b.outbox[b.noutbox++] = (pending_outbox){
                &a->outbox[k],
                a->outbox[k].of_event ? a->events[a->outbox[k].of_event - 1].event_id : ""};
        j->version = s->value = current + (int64_t)a->nevents;
        j->rc = 0;
    }
    if (rc == 0)
        rc = flush_pg(&b);
    if (rc < 0)
        *is_dirty = true;
    free(streams);
    free(ids);
    free(versions.slots);
    free(stored.slots);
    free(taken.slots);
    free(b.events);
    free(b.outbox);
    return rc;
}
