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
#include "runtime/error.h"
#include "runtime/id.h"
#include "runtime/banned.h"

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
            !o->payload)
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
static const char insert_event_sql[] =
    "INSERT INTO events (event_id, stream_id, version, type, data, metadata, recorded_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING position";
static const char insert_outbox_sql[] =
    "INSERT INTO outbox (id, aggregate_type, aggregate_id, type, payload, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6)";

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

int ms_es__apply(ms_db_conn *c, es_job *j, bool *is_dirty)
{
    const ms_es_append_req *a = &j->req;
    ms_db_result *r = NULL;
    *is_dirty = false;
    j->is_noop = false;
    j->first_position = j->last_position = j->version = 0;

    const char *head_params[] = {a->stream_id, a->events[0].event_id};
    int rc = ms_db_exec(c, head_sql, 2, head_params, &r);
    if (rc < 0) {
        *is_dirty = true;
        goto out;
    }
    int64_t current = strtoll(ms_db_get(r, 0, 0), NULL, 10);
    bool is_stored = ms_db_get(r, 0, 1) != NULL;
    ms_db_result_free(r);
    r = NULL;
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

    char now[MS_TIME_LEN + 1];
    ms_time_now(now);
    for (size_t i = 0; i < a->nevents; i++) {
        const ms_es_event *e = &a->events[i];
        char version[24];
        snprintf(version, sizeof version, "%" PRId64, current + 1 + (int64_t)i);
        const char *params[] = {e->event_id, a->stream_id, version, e->type,
                                e->data,     e->metadata,  now};
        if ((rc = ms_db_exec(c, insert_event_sql, 7, params, &r)) < 0) {
            *is_dirty = true;
            goto out;
        }
        if (ms_db_nrows(r) != 1)
            MS_BUG("eventstore: INSERT ... RETURNING gave no position");
        int64_t position = strtoll(ms_db_get(r, 0, 0), NULL, 10);
        ms_db_result_free(r);
        r = NULL;
        if (i == 0)
            j->first_position = position;
        j->last_position = position;
    }
    for (size_t i = 0; i < a->noutbox; i++) {
        const ms_es_outbox_row *o = &a->outbox[i];
        const char *params[] = {o->id,   o->aggregate_type, o->aggregate_id,
                                o->type, o->payload,        now};
        if ((rc = ms_db_exec(c, insert_outbox_sql, 6, params, NULL)) < 0) {
            *is_dirty = true;
            goto out;
        }
    }
    j->version = current + (int64_t)a->nevents;
out:
    ms_db_result_free(r);
    if (rc < 0 && rc != MS_ECONFLICT)
        j->version = 0;
    if (rc < 0)
        j->first_position = j->last_position = 0;
    return rc;
}
