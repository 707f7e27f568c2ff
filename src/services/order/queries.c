/*
 * queries.c — the read side over HTTP: an order and a user's orders come from the views (the
 * read database), answered as stored; an order's events come from the event store itself.
 *
 * One order reads its own writes with no header: an acknowledged write is durable in the
 * stream, so a view that is missing or older than the stream's durable head is read again once
 * the projector has passed that head (on the loop, within the request's deadline; 504 after).
 * The stream is looked at only when the projector may be behind: on SQLite this process is the
 * store's only writer, so a projector at or past every position it made visible cannot be.
 * A list may carry X-Min-Position (the X-Position its write returned): it then waits until the
 * views have caught up with that write — or answers 504 at its deadline.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/base64.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/identity.h"
#include "runtime/http/problem.h"
#include "runtime/json/json.h"
#include "services/order/order_internal.h"
#include "runtime/core/banned.h"

enum { DEFAULT_LIMIT = 10, MAX_LIMIT = 100, MAX_EVENTS = 1000 };

typedef struct query_call {
    ms_http_request *req;
    ms_identity who;
    char id[MS_UUID_LEN + 1];
    /* list */
    char limit[24], after_time[64], after_id[MS_UUID_LEN + 1];
    /* results */
    ms_buf out;
    char owner[MS_UUID_LEN + 1];
    int64_t version;
    bool found;
    bool checked_stream; /* the view was compared with the stream's durable head */
    int64_t head;        /* that head's position, 0 when the stream has nothing past the view */
} query_call;

static void fail(query_call *k, int rc)
{
    if (rc == MS_ENOTFOUND) {
        ms_problem_from_error(k->req, MS_ENOTFOUND, "no such order");
    } else if (rc == MS_ETIMEDOUT && k->out.n == 0) {
        ms_http_set_header(k->req, "Retry-After", "1");
        ms_problem_from_error(k->req, MS_ETIMEDOUT,
                              "the read model has not caught up with that position yet");
    } else {
        if (ms_http_status_for(rc) >= 500)
            ms_log(MS_LOG_ERROR, "order query failed", "error", ms_strerror(rc), NULL);
        ms_problem_from_error(k->req, rc, NULL);
    }
    ms_buf_release(&k->out);
}

/* Parses X-Min-Position; answers 400 and returns -1 when it is malformed; 0 when absent. */
static int64_t min_position(ms_http_request *req)
{
    const char *v = ms_http_header_get(req, "X-Min-Position");
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long long p = strtoll(v, &end, 10);
    if (end == v || *end || p < 0 || errno == ERANGE || v[0] == '+' || v[0] == ' ') {
        json_t *errors = json_array();
        ms_field_error(errors, "X-Min-Position", "must be a position (a whole number)");
        ms_problem_fields_from_error(req, MS_EMALFORMED, "the X-Min-Position header is malformed",
                                     errors);
        return -1;
    }
    return p;
}

static query_call *begin(ms_http_request *req, bool order_id)
{
    ms_identity who;
    if (ms_identity_get(req, &who) < 0)
        return NULL;
    query_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    memset(k, 0, sizeof *k);
    k->req = req;
    k->who = who;
    if (order_id) {
        const char *id = ms_http_param(req, "id");
        if (!ms_uuid_valid(id)) {
            ms_problem_from_error(req, MS_ENOTFOUND, "no such order");
            return NULL;
        }
        for (int i = 0; i < MS_UUID_LEN; i++)
            k->id[i] = (char)(id[i] >= 'A' && id[i] <= 'F' ? id[i] + 32 : id[i]);
    }
    return k;
}

/* Drops the events of a page that are not durable yet, which nobody was told of. On SQLite an
 * append is visible a moment before its fsync ends (writer.c); on PostgreSQL what a read
 * returns is committed, so durable, and may be another process's append. */
static void trim_to_durable(ms_es_page *page)
{
    if (order_proc.write_db.backend != MS_DB_SQLITE)
        return;
    int64_t durable = ms_es_committed_position(order_proc.es);
    while (page->n > 0 && page->events[page->n - 1].position > durable)
        page->n--;
}

/* ---- GET /api/v1/orders/{id} ---- */

static int get_work(ms_db_conn *c, void *arg)
{
    query_call *k = arg;
    ms_db_result *r = NULL;
    const char *params[] = {k->id};
    int rc = ms_db_exec(c, "SELECT data, user_id, version FROM order_views WHERE id = $1", 1,
                        params, &r);
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    if (rc == 0) {
        ms_buf_adds(&k->out, ms_db_get(r, 0, 0));
        snprintf(k->owner, sizeof k->owner, "%s", ms_db_get(r, 0, 1));
        k->version = strtoll(ms_db_get(r, 0, 2), NULL, 10);
    }
    ms_db_result_free(r);
    return rc;
}

static void get_when_projected(int rc, void *arg);
static void get_done(int rc, void *arg);

/* Whether the views hold every acknowledged write of this order without looking at its stream:
 * on SQLite every append is this process's, and an acknowledged one is visible. */
static bool views_surely_current(void)
{
    return order_proc.write_db.backend == MS_DB_SQLITE &&
           order_projector_position(order_proc.projector) >= ms_es_visible_position(order_proc.es);
}

/* The durable events of the stream past the view's version: their last position in k->head. */
static int head_work(ms_db_conn *c, void *arg)
{
    query_call *k = arg;
    char stream[ORDER_STREAM_LEN + 1];
    snprintf(stream, sizeof stream, "%s%s", ORDER_STREAM_PREFIX, k->id);
    ms_es_page page = {0};
    int rc = ms_es_read_stream(c, stream, k->found ? k->version + 1 : 1, 64, &page);
    trim_to_durable(&page);
    k->head = rc == 0 && page.n > 0 ? page.events[page.n - 1].position : 0;
    ms_es_page_release(&page);
    return rc;
}

static void head_done(int rc, void *arg)
{
    query_call *k = arg;
    if (rc < 0) {
        fail(k, rc);
        return;
    }
    k->checked_stream = true;
    if (k->head == 0) { /* the view (or its absence) is the stream's durable state */
        get_done(k->found ? 0 : MS_ENOTFOUND, k);
        return;
    }
    k->found = false;
    k->out.n = 0;
    order_wait_projected(k->req, k->head, get_when_projected, k);
}

static void get_done(int rc, void *arg)
{
    query_call *k = arg;
    ms_http_request *req = k->req;
    if (!k->checked_stream && (rc == 0 || rc == MS_ENOTFOUND)) {
        k->found = rc == 0;
        ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, head_work, head_done, k);
        return;
    }
    if (rc == 0 && !k->who.is_admin && strcasecmp(k->who.user_id, k->owner) != 0)
        rc = MS_ENOTFOUND; /* others' orders do not exist for a customer */
    if (rc < 0) {
        fail(k, rc);
        return;
    }
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", (long long)k->version);
    ms_http_set_header(req, "ETag", etag);
    if (ms_http_none_match(ms_http_header_get(req, "If-None-Match"), etag))
        ms_http_respond(req, 304, NULL, NULL, 0);
    else
        ms_http_respond(req, 200, "application/json", k->out.p, k->out.n);
    ms_buf_release(&k->out);
}

static void get_when_projected(int rc, void *arg)
{
    query_call *k = arg;
    if (rc < 0) {
        fail(k, rc);
        return;
    }
    ms_http_request *req = k->req;
    ms_db_pool_run(order_loop_of(req)->read_pool, MS_DB_READ, req->deadline, get_work, get_done, k);
}

void order_get(ms_http_request *req)
{
    query_call *k = begin(req, true);
    if (!k)
        return;
    int64_t pos = min_position(req);
    if (pos < 0)
        return;
    /* decided before the view is read: what the projector had then, the read sees */
    k->checked_stream = views_surely_current();
    order_wait_projected(req, pos, get_when_projected, k);
}

/* ---- GET /api/v1/users/{id}/orders ---- */

static int list_work(ms_db_conn *c, void *arg)
{
    query_call *k = arg;
    ms_db_result *r = NULL;
    const char *params[] = {k->id, k->after_time, k->after_id, k->limit};
    int rc = ms_db_exec(c,
                        "SELECT v.data, u.created_at, u.order_id FROM user_order_views u "
                        "JOIN order_views v ON v.id = u.order_id WHERE u.user_id = $1 AND "
                        "(u.created_at < $2 OR (u.created_at = $2 AND u.order_id < $3)) "
                        "ORDER BY u.created_at DESC, u.order_id DESC LIMIT $4",
                        4, params, &r);
    if (rc < 0)
        return rc;
    int want = atoi(k->limit) - 1; /* one more row than asked tells whether a page follows */
    int n = ms_db_nrows(r);
    ms_buf_adds(&k->out, "{\"items\":[");
    for (int i = 0; i < n && i < want; i++) {
        if (i)
            ms_buf_add(&k->out, ",", 1);
        ms_buf_adds(&k->out, ms_db_get(r, i, 0));
    }
    ms_buf_adds(&k->out, "],\"next_cursor\":");
    if (n > want && want > 0) {
        char cursor[128];
        int len = snprintf(cursor, sizeof cursor, "%s|%s", ms_db_get(r, want - 1, 1),
                           ms_db_get(r, want - 1, 2));
        ms_buf_add(&k->out, "\"", 1);
        ms_base64url_encode(&k->out, cursor, (size_t)len);
        ms_buf_add(&k->out, "\"}", 2);
    } else {
        ms_buf_adds(&k->out, "null}");
    }
    ms_db_result_free(r);
    return 0;
}

static void list_done(int rc, void *arg)
{
    query_call *k = arg;
    if (rc < 0) {
        fail(k, rc);
        return;
    }
    ms_http_respond(k->req, 200, "application/json", k->out.p, k->out.n);
    ms_buf_release(&k->out);
}

static void list_when_projected(int rc, void *arg)
{
    query_call *k = arg;
    if (rc < 0) {
        fail(k, rc);
        return;
    }
    ms_http_request *req = k->req;
    ms_db_pool_run(order_loop_of(req)->read_pool, MS_DB_READ, req->deadline, list_work, list_done,
                   k);
}

/* Reads `limit` and `cursor`; answers 400 naming the parameter and returns false if bad. */
static bool page_params(query_call *k)
{
    ms_http_request *req = k->req;
    const char *limit = ms_http_query_param(req, "limit");
    const char *cursor = ms_http_query_param(req, "cursor");
    json_t *errors = json_array();
    long n = DEFAULT_LIMIT;
    if (limit) {
        char *end;
        n = strtol(limit, &end, 10);
        if (end == limit || *end || n < 1 || n > MAX_LIMIT)
            ms_field_error(errors, "limit", "must be a whole number from 1 to %d", MAX_LIMIT);
    }
    snprintf(k->limit, sizeof k->limit, "%ld", n + 1);
    snprintf(k->after_time, sizeof k->after_time, "~"); /* sorts after every timestamp */
    if (cursor) {
        ms_buf raw;
        ms_buf_init(&raw, 0);
        const char *bar = NULL;
        if (ms_base64url_decode(&raw, cursor, strlen(cursor)) == 0) {
            ms_buf_add(&raw, "", 1);
            bar = strchr(raw.p, '|');
        }
        if (!bar || (size_t)(bar - raw.p) >= sizeof k->after_time || !ms_uuid_valid(bar + 1)) {
            ms_field_error(errors, "cursor", "is not a cursor this service gave out");
        } else {
            memcpy(k->after_time, raw.p, (size_t)(bar - raw.p));
            k->after_time[bar - raw.p] = '\0';
            memcpy(k->after_id, bar + 1, MS_UUID_LEN + 1);
        }
        ms_buf_release(&raw);
    }
    if (json_array_size(errors)) {
        ms_problem_fields_from_error(req, MS_EMALFORMED, "the paging parameters are malformed",
                                     errors);
        return false;
    }
    json_decref(errors);
    return true;
}

void order_list_for_user(ms_http_request *req)
{
    const char *user = ms_http_param(req, "id");
    if (ms_identity_require_self(req, user) < 0)
        return;
    query_call *k = begin(req, false);
    if (!k)
        return;
    if (!ms_uuid_valid(user)) {
        ms_problem_from_error(req, MS_ENOTFOUND, "no such user");
        return;
    }
    for (int i = 0; i < MS_UUID_LEN; i++)
        k->id[i] = (char)(user[i] >= 'A' && user[i] <= 'F' ? user[i] + 32 : user[i]);
    if (!page_params(k))
        return;
    int64_t pos = min_position(req);
    if (pos >= 0)
        order_wait_projected(req, pos, list_when_projected, k);
}

/* ---- GET /api/v1/orders/{id}/events ---- */

static int events_work(ms_db_conn *c, void *arg)
{
    query_call *k = arg;
    char stream[ORDER_STREAM_LEN + 1];
    snprintf(stream, sizeof stream, "%s%s", ORDER_STREAM_PREFIX, k->id);
    ms_es_page page = {0};
    int rc = ms_es_read_stream(c, stream, 1, MAX_EVENTS, &page);
    trim_to_durable(&page);
    if (rc == 0 && page.n == 0)
        rc = MS_ENOTFOUND;
    if (rc == 0) {
        /* the owner is in the first event; the aggregate reads it */
        order_state s;
        order_state_init(&s);
        if (order_evolve(&s, page.events[0].type, page.events[0].data) == 0)
            snprintf(k->owner, sizeof k->owner, "%s", s.user_id);
        order_state_release(&s);
        ms_buf_adds(&k->out, "{\"items\":[");
        for (size_t i = 0; i < page.n; i++) {
            const ms_es_event *e = &page.events[i];
            ms_buf_printf(&k->out, "%s{\"event_id\":\"%s\",\"type\":", i ? "," : "", e->event_id);
            ms_json_put_string(&k->out, e->type);
            ms_buf_printf(&k->out, ",\"version\":%lld,\"position\":%lld,\"data\":%s,",
                          (long long)e->version, (long long)e->position, e->data);
            ms_buf_adds(&k->out, "\"recorded_at\":");
            ms_json_put_string(&k->out, e->recorded_at);
            ms_buf_add(&k->out, "}", 1);
        }
        ms_buf_adds(&k->out, "],\"next_cursor\":null}");
    }
    ms_es_page_release(&page);
    return rc;
}

static void events_done(int rc, void *arg)
{
    query_call *k = arg;
    if (rc == 0 && !k->who.is_admin && strcasecmp(k->who.user_id, k->owner) != 0)
        rc = MS_ENOTFOUND;
    if (rc < 0) {
        fail(k, rc);
        return;
    }
    ms_http_respond(k->req, 200, "application/json", k->out.p, k->out.n);
    ms_buf_release(&k->out);
}

void order_events(ms_http_request *req)
{
    query_call *k = begin(req, true);
    if (k)
        ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, events_work, events_done, k);
}
