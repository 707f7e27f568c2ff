/* The outbox as a catch-up feed; see event_feed.h. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/problem.h"
#include "runtime/http/server.h"
#include "runtime/json/json.h"
#include "services/common/event_feed.h"
#include "runtime/core/banned.h"

enum {
    POLL_MS = 50,    /* a long poll re-reads the outbox this often */
    DURABLE_MS = 5,  /* and looks this often whether the store made a read durable */
    MARGIN_MS = 100, /* a long poll answers this long before the request's deadline */
};

static _Atomic(ms_es *) feed_store;

void event_feed_set_store(ms_es *es)
{
    atomic_store(&feed_store, es);
}

typedef struct feed_call {
    ms_http_request *req; /* NULL once answered */
    uv_timer_t timer;
    ms_es *es;
    char after_text[24], limit_text[24];
    int64_t after;
    uint64_t until;     /* uv_now() at which a long poll answers empty */
    int64_t durable_at; /* the store's visible position after the read (SQLite with a store) */
    ms_buf items;       /* the items' JSON, comma-separated */
    int n;
    int64_t last, head;
    int backend;
} feed_call;

static const char SELECT_OUTBOX[] =
    "SELECT seq, id, aggregate_type, aggregate_id, type, payload, created_at, published_at"
    " FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2";
static const char SELECT_MESSAGES[] =
    "SELECT seq, id, aggregate_type, aggregate_id, type, payload, created_at, published_at"
    " FROM outbox_messages WHERE seq > $1 ORDER BY seq LIMIT $2";

/* Reads the next rows and writes those that may be served. Worker thread (or inline). */
static int read_work(ms_db_conn *c, void *arg)
{
    feed_call *k = arg;
    const char *params[] = {k->after_text, k->limit_text};
    ms_db_result *r = NULL;
    int rc = ms_db_exec(c, k->es ? SELECT_MESSAGES : SELECT_OUTBOX, 2, params, &r);
    k->backend = ms_db_backend_of(c);
    k->items.n = 0;
    k->n = 0;
    k->last = k->after;
    int rows = rc == 0 ? ms_db_nrows(r) : 0;
    for (int i = 0; i < rows; i++) {
        int64_t seq = strtoll(ms_db_get(r, i, 0), NULL, 10);
        /* PostgreSQL: the services' writers commit in seq order (ms_outbox_begin's lock), so
         * a gap is a rollback; still, a writer outside that lock could commit the gap's row
         * later, and a consumer checkpointing past it would never see it. The relay waits out
         * gaps and publishes in order: a published row has every earlier one decided. */
        if (k->backend == MS_DB_POSTGRES && seq != k->last + 1 && !ms_db_get(r, i, 7))
            break;
        static const char *const keys[] = {
            ",\"id\":", ",\"aggregate_type\":", ",\"aggregate_id\":", ",\"type\":"};
        ms_buf_adds(&k->items, k->n ? ",{\"seq\":" : "{\"seq\":");
        ms_buf_add_int(&k->items, seq);
        for (int col = 1; col <= 4; col++) {
            ms_buf_adds(&k->items, keys[col - 1]);
            ms_json_put_string(&k->items, ms_db_get(r, i, col));
        }
        /* the payload is JSON our own services wrote (json_dumps): served as the object */
        const char *payload = ms_db_get(r, i, 5);
        ms_buf_adds(&k->items, ",\"payload\":");
        ms_buf_adds(&k->items, payload && *payload ? payload : "null");
        ms_buf_adds(&k->items, ",\"created_at\":");
        ms_json_put_string(&k->items, ms_db_get(r, i, 6));
        ms_buf_add(&k->items, "}", 1);
        k->n++;
        k->last = seq;
    }
    ms_db_result_free(r);
    /* the newest seq, for the consumers' lag (a row behind a gap counts: lag is a gauge) */
    r = NULL;
    if (rc == 0 && (rc = ms_db_exec(c, "SELECT MAX(seq) FROM outbox", 0, NULL, &r)) == 0) {
        const char *v = ms_db_nrows(r) ? ms_db_get(r, 0, 0) : NULL;
        k->head = v ? strtoll(v, NULL, 10) : 0;
    }
    ms_db_result_free(r);
    return rc;
}

static void on_timer_closed(uv_handle_t *h)
{
    feed_call *k = h->data;
    ms_buf_release(&k->items);
    free(k);
}

static void finish(feed_call *k, int rc)
{
    ms_http_request *req = k->req;
    k->req = NULL;
    if (rc < 0) {
        ms_log(MS_LOG_WARN, "event feed: read failed", "error", ms_strerror(rc), NULL);
        ms_problem_from_error(req, rc, "the outbox could not be read");
    } else {
        ms_buf body;
        ms_buf_init(&body, k->items.n + 48);
        ms_buf_adds(&body, "{\"items\":[");
        ms_buf_add(&body, k->items.p, k->items.n);
        ms_buf_adds(&body, "],\"next_after\":");
        ms_buf_add_int(&body, k->last);
        ms_buf_adds(&body, ",\"head\":");
        ms_buf_add_int(&body, k->head > k->last ? k->head : k->last);
        ms_buf_add(&body, "}", 1);
        ms_http_respond(req, 200, "application/json", body.p, body.n);
        ms_buf_release(&body);
    }
    uv_close((uv_handle_t *)&k->timer, on_timer_closed);
}

static void read_done(int rc, void *arg);

static void start_read(feed_call *k)
{
    ms_http_request *req = k->req;
    ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, read_work, read_done, k);
}

static void on_poll(uv_timer_t *t)
{
    feed_call *k = t->data;
    if (k->req->loop->draining)
        finish(k, 0); /* a long poll must not hold up a drain */
    else
        start_read(k);
}

static void on_durable_check(uv_timer_t *t)
{
    feed_call *k = t->data;
    if (ms_es_committed_position(k->es) >= k->durable_at)
        finish(k, 0);
    else
        uv_timer_start(&k->timer, on_durable_check, DURABLE_MS, 0);
}

static void read_done(int rc, void *arg)
{
    feed_call *k = arg;
    if (rc < 0) {
        finish(k, rc);
        return;
    }
    if (k->n > 0) {
        /* SQLite with the event store: every row read lies at or below the visible position
         * read now; once that is committed (synced), so are they. PostgreSQL's commit is
         * durable when it is visible. */
        if (k->es && k->backend == MS_DB_SQLITE) {
            k->durable_at = ms_es_visible_position(k->es);
            if (ms_es_committed_position(k->es) < k->durable_at) {
                uv_timer_start(&k->timer, on_durable_check, DURABLE_MS, 0);
                return;
            }
        }
        finish(k, 0);
        return;
    }
    uint64_t now = uv_now(&k->req->loop->uv);
    if (now >= k->until || k->req->loop->draining) {
        finish(k, 0);
        return;
    }
    uint64_t wait = k->until - now < POLL_MS ? k->until - now : POLL_MS;
    uv_timer_start(&k->timer, on_poll, wait, 0);
}

/* A whole number in [min, max] or the field error naming `name`. */
static int64_t parse_param(ms_http_request *req, const char *name, int64_t dflt, int64_t min,
                           int64_t max, json_t *errors)
{
    const char *s = ms_http_query_param(req, name);
    if (!s)
        return dflt;
    bool ok = *s && strlen(s) <= 18;
    for (const char *p = s; ok && *p; p++)
        ok = *p >= '0' && *p <= '9';
    int64_t v = ok ? strtoll(s, NULL, 10) : -1;
    if (!ok || v < min || v > max) {
        if (max == INT64_MAX)
            ms_field_error(errors, name, "must be a whole number from %lld", (long long)min);
        else
            ms_field_error(errors, name, "must be a whole number from %lld to %lld", (long long)min,
                           (long long)max);
    }
    return v;
}

void event_feed_get(ms_http_request *req)
{
    json_t *errors = json_array();
    int64_t after = parse_param(req, "after", 0, 0, INT64_MAX, errors);
    int64_t limit =
        parse_param(req, "limit", EVENT_FEED_DEFAULT_LIMIT, 1, EVENT_FEED_MAX_LIMIT, errors);
    int64_t wait_ms = parse_param(req, "wait_ms", 0, 0, EVENT_FEED_MAX_WAIT_MS, errors);
    if (json_array_size(errors)) {
        ms_problem_fields_from_error(req, MS_EMALFORMED, "the feed's parameters are malformed",
                                     errors);
        return;
    }
    json_decref(errors);
    if (!req->loop->db) {
        ms_problem_from_error(req, MS_EINTERNAL, "this service has no outbox");
        return;
    }
    feed_call *k = ms_xcalloc(1, sizeof *k);
    k->req = req;
    k->es = atomic_load(&feed_store);
    k->after = after;
    snprintf(k->after_text, sizeof k->after_text, "%lld", (long long)after);
    snprintf(k->limit_text, sizeof k->limit_text, "%lld", (long long)limit);
    ms_buf_init(&k->items, 0);
    uv_timer_init(&req->loop->uv, &k->timer);
    k->timer.data = k;
    uint64_t now = uv_now(&req->loop->uv);
    uint64_t last = req->deadline > now + MARGIN_MS ? req->deadline - MARGIN_MS : now;
    k->until = now + (uint64_t)wait_ms < last ? now + (uint64_t)wait_ms : last;
    start_read(k);
}
