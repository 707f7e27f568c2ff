/* The event bus's consumer, and its HTTP feed transport; see bus_consumer.h. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/http/client.h"
#include "runtime/obs/metrics.h"
#include "services/common/bus_consumer.h"
#include "services/common/bus_consumer_internal.h"
#include "runtime/core/banned.h"

enum {
    DEFAULT_LIMIT = 100,
    DEFAULT_WAIT_MS = 5000,
    SLACK_MS = 5000, /* a long poll's deadline: its wait plus this */
};

static void poll_feed(bus_consumer *b);

void bus_consumer_note_failure(bus_consumer *b)
{
    uv_mutex_lock(&b->mu);
    b->stats.failures_total++;
    uv_mutex_unlock(&b->mu);
}

static void on_timer(uv_timer_t *t)
{
    poll_feed(t->data);
}

unsigned bus_consumer_backoff_ms(bus_consumer *b)
{
    unsigned ceiling = BUS_BACKOFF_MIN_MS << (b->attempt < 6 ? b->attempt : 6);
    if (ceiling > BUS_BACKOFF_MAX_MS)
        ceiling = BUS_BACKOFF_MAX_MS;
    b->attempt++;
    uint32_t rnd;
    ms_random_bytes(&rnd, sizeof rnd);
    return BUS_BACKOFF_MIN_MS + rnd % (ceiling - BUS_BACKOFF_MIN_MS + 1);
}

/* Tries again after a full-jitter backoff. */
static void backoff(bus_consumer *b)
{
    uv_timer_start(&b->timer, on_timer, bus_consumer_backoff_ms(b), 0);
}

void bus_consumer_db_failed(bus_consumer *b, const char *what, int rc)
{
    ms_log(MS_LOG_WARN, "bus consumer: database failed, will retry", "consumer", b->consumer,
           "step", what, "error", b->conn ? ms_db_errmsg(b->conn) : ms_strerror(rc), NULL);
    if (rc == MS_ECONN) { /* a lost connection is opened again at the next try */
        ms_db_close(b->conn);
        b->conn = NULL;
    }
    bus_consumer_note_failure(b);
}

int bus_consumer_prepare(bus_consumer *b)
{
    int rc = 0;
    if (!b->conn && (rc = ms_db_open(&b->db, false, &b->conn)) < 0) {
        ms_db_close(b->conn);
        b->conn = NULL;
        return rc;
    }
    if (b->has_position)
        return 0;
    ms_db_result *r = NULL;
    const char *params[] = {b->consumer, b->producer};
    rc = ms_db_exec(b->conn,
                    "SELECT last_seq FROM bus_checkpoints WHERE consumer = $1 AND producer = $2", 2,
                    params, &r);
    if (rc == 0) {
        int64_t pos = ms_db_nrows(r) ? strtoll(ms_db_get(r, 0, 0), NULL, 10) : 0;
        uv_mutex_lock(&b->mu);
        b->stats.position = pos;
        uv_mutex_unlock(&b->mu);
        b->has_position = true;
    }
    ms_db_result_free(r);
    return rc;
}

static const char *str_of(json_t *item, const char *key)
{
    const char *s = json_string_value(json_object_get(item, key));
    return s ? s : "";
}

/* The handler applies this type (the config's list, or every type). */
static bool wants(const bus_consumer *b, const char *type)
{
    if (!b->types)
        return true;
    size_t n = type ? strlen(type) : 0;
    if (n == 0)
        return false; /* and b->types starts with a comma: p[-1] below stays inside it */
    for (const char *p = strstr(b->types, type); p; p = strstr(p + 1, type))
        if (p[-1] == ',' && p[n] == ',')
            return true;
    return false;
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

enum { CHECKPOINT_EVERY_MS = 1000 };

int bus_consumer_apply(bus_consumer *b, const bus_event *ev, size_t n, int64_t last_seq,
                       bool forward_only, uint64_t *applied, uint64_t *dups)
{
    /* A page of nothing the handler applies (the inventory's reservations, seen by the
     * low-stock alerts) writes nothing: a transaction per page of them cost the order
     * service's database a commit and a fsync per checkout. */
    size_t wanted = 0;
    for (size_t i = 0; i < n; i++)
        wanted += wants(b, ev[i].type);
    if (wanted == 0 && now_ms() - b->saved_ms < CHECKPOINT_EVERY_MS) {
        b->unsaved_seq = last_seq;
        return 0;
    }
    char now[MS_TIME_LEN + 1];
    ms_time_now(now);
    int rc = ms_db_begin(b->conn);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const bus_event *e = &ev[i];
        if (!wants(b, e->type))
            continue;
        char seq[24];
        snprintf(seq, sizeof seq, "%lld", (long long)e->seq);
        const char *params[] = {b->consumer, e->id, seq, now};
        ms_db_result *r = NULL;
        rc = ms_db_exec(b->conn,
                        "INSERT INTO bus_received (consumer, event_id, seq, received_at)"
                        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        4, params, &r);
        bool is_new = rc == 0 && ms_db_affected(r) > 0;
        ms_db_result_free(r);
        if (rc < 0)
            break;
        if (!is_new) {
            (*dups)++;
            continue;
        }
        if (!json_is_object(e->payload) || !*e->id) {
            rc = MS_EMALFORMED;
            break;
        }
        if ((rc = b->handle(b->conn, e, b->arg)) < 0)
            break;
        (*applied)++;
    }
    if (rc == 0) {
        char seq[24];
        snprintf(seq, sizeof seq, "%lld", (long long)last_seq);
        const char *params[] = {b->consumer, b->producer, seq, now};
        /* a redelivery (JetStream) may end below the stored position: never move it back */
        rc = ms_db_exec(b->conn,
                        forward_only
                            ? "INSERT INTO bus_checkpoints (consumer, producer, last_seq,"
                              " updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (consumer,"
                              " producer) DO UPDATE SET last_seq = CASE WHEN excluded.last_seq >"
                              " bus_checkpoints.last_seq THEN excluded.last_seq ELSE"
                              " bus_checkpoints.last_seq END, updated_at = excluded.updated_at"
                            : "INSERT INTO bus_checkpoints (consumer, producer, last_seq,"
                              " updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (consumer,"
                              " producer) DO UPDATE SET last_seq = excluded.last_seq,"
                              " updated_at = excluded.updated_at",
                        4, params, NULL);
    }
    rc = ms_db_end(b->conn, rc);
    if (rc == 0) {
        b->saved_ms = now_ms();
        b->unsaved_seq = 0;
    }
    return rc;
}

int bus_consumer_flush(bus_consumer *b, bool forward_only)
{
    if (b->unsaved_seq == 0)
        return 0;
    uint64_t applied = 0, dups = 0;
    b->saved_ms = 0; /* due now */
    return bus_consumer_apply(b, NULL, 0, b->unsaved_seq, forward_only, &applied, &dups);
}

/* A page arrived: parse it, apply it, and ask for the next one. */
static int take_page(bus_consumer *b, const ms_http_client_resp *resp)
{
    json_error_t jerr;
    json_t *doc = json_loadb(resp->body, resp->body_len, 0, &jerr);
    json_t *items = json_object_get(doc, "items");
    json_t *next = json_object_get(doc, "next_after");
    json_t *head = json_object_get(doc, "head");
    int rc = 0;
    if (!json_is_array(items) || !json_is_integer(next)) {
        ms_log(MS_LOG_WARN, "bus consumer: the feed answered a malformed page", "consumer",
               b->consumer, NULL);
        rc = MS_EIO;
        goto out;
    }
    uint64_t applied = 0, dups = 0;
    int64_t next_after = (int64_t)json_integer_value(next);
    size_t n = json_array_size(items);
    if (n == 0 && (rc = bus_consumer_flush(b, false)) < 0) { /* idle: write what was passed */
        bus_consumer_db_failed(b, "checkpoint", rc);
        goto out;
    }
    if (n > 0) {
        bus_event *ev = ms_xcalloc(n, sizeof *ev);
        size_t i;
        json_t *item;
        json_array_foreach(items, i, item)
        {
            ev[i] = (bus_event){
                .seq = (int64_t)json_integer_value(json_object_get(item, "seq")),
                .id = str_of(item, "id"),
                .aggregate_type = str_of(item, "aggregate_type"),
                .aggregate_id = str_of(item, "aggregate_id"),
                .type = str_of(item, "type"),
                .created_at = str_of(item, "created_at"),
                .payload = json_object_get(item, "payload"),
            };
        }
        rc = bus_consumer_apply(b, ev, n, next_after, false, &applied, &dups);
        free(ev);
        if (rc < 0) {
            bus_consumer_db_failed(b, "apply", rc);
            goto out;
        }
    }
    uv_mutex_lock(&b->mu);
    if (json_array_size(items) > 0)
        b->stats.position = next_after;
    if (json_is_integer(head))
        b->stats.head = (int64_t)json_integer_value(head);
    b->stats.applied_total += applied;
    b->stats.duplicates_total += dups;
    uv_mutex_unlock(&b->mu);
out:
    json_decref(doc);
    return rc;
}

static void on_page(int err, const ms_http_client_resp *resp, void *arg)
{
    bus_consumer *b = arg;
    if (atomic_load(&b->stopping))
        return;
    if (err == 0 && resp->status == 200 && take_page(b, resp) == 0) {
        b->attempt = 0;
        poll_feed(b); /* a long poll: asks again at once, the producer waits for news */
        return;
    }
    if (err != 0 || resp->status != 200) {
        if (b->attempt == 0)
            ms_log(MS_LOG_WARN, "bus consumer: the producer's feed failed, will retry", "consumer",
                   b->consumer, "producer", b->producer, "error",
                   err ? ms_strerror(err) : ms_http_reason(resp->status), NULL);
        bus_consumer_note_failure(b);
    }
    backoff(b);
}

static void poll_feed(bus_consumer *b)
{
    if (atomic_load(&b->stopping))
        return;
    int rc = bus_consumer_prepare(b);
    if (rc < 0) {
        bus_consumer_db_failed(b, "checkpoint", rc);
        backoff(b);
        return;
    }
    uv_mutex_lock(&b->mu);
    int64_t after = b->stats.position;
    uv_mutex_unlock(&b->mu);
    char path[128];
    snprintf(path, sizeof path, "/internal/v1/events?after=%lld&limit=%d&wait_ms=%d",
             (long long)after, b->limit, b->wait_ms);
    ms_http_client_req req = {
        .upstream = b->producer,
        .method = HTTP_GET,
        .path = path,
        .deadline = uv_now(&b->loop) + (uint64_t)b->wait_ms + SLACK_MS,
    };
    if ((rc = ms_http_client_request(b->client, &req, on_page, b)) < 0) {
        ms_log(MS_LOG_WARN, "bus consumer: the poll was refused", "consumer", b->consumer, "error",
               ms_strerror(rc), NULL);
        bus_consumer_note_failure(b);
        backoff(b);
    }
}

static void on_wake(uv_async_t *a)
{
    bus_consumer *b = a->data;
    if (!atomic_load(&b->stopping))
        return;
    ms_http_client_free(b->client); /* on_page sees `stopping` and asks for nothing more */
    b->client = NULL;
    uv_close((uv_handle_t *)&b->timer, NULL);
    uv_close((uv_handle_t *)&b->wake, NULL);
}

static void consumer_main(void *arg)
{
    bus_consumer *b = arg;
    pthread_setname_np(pthread_self(), "bus-consumer");
    poll_feed(b);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    ms_db_close(b->conn);
    b->conn = NULL;
}

/* What start allocated and stop frees last: the strings, the mutex, the consumer. */
static void consumer_free(bus_consumer *b)
{
    uv_mutex_destroy(&b->mu);
    free(b->consumer);
    free(b->producer);
    free(b->types);
    free(b);
}

int bus_consumer_start(const bus_consumer_config *cfg, bus_consumer **out)
{
    *out = NULL;
    if (!cfg || !cfg->consumer || !cfg->producer || !cfg->url || !cfg->db || !cfg->handle ||
        cfg->limit < 0 || cfg->wait_ms < 0)
        return MS_EINVAL;
    bus_consumer *b = ms_xcalloc(1, sizeof *b);
    int rc = ms_http_upstream_parse(cfg->url, &b->upstream);
    if (rc < 0) {
        ms_log(MS_LOG_ERROR, "bus consumer: bad producer URL", "consumer", cfg->consumer, "error",
               b->upstream.error, NULL);
        free(b);
        return rc;
    }
    b->consumer = strdup(cfg->consumer);
    b->producer = strdup(cfg->producer);
    if (!b->consumer || !b->producer)
        MS_BUG("bus consumer: out of memory");
    b->db = *cfg->db;
    b->handle = cfg->handle;
    b->arg = cfg->arg;
    if (cfg->types) {
        size_t len = strlen(cfg->types);
        b->types = ms_xcalloc(len + 3, 1);
        b->types[0] = ',';
        memcpy(b->types + 1, cfg->types, len);
        b->types[len + 1] = ',';
    }
    b->limit = cfg->limit ? cfg->limit : DEFAULT_LIMIT;
    b->wait_ms = cfg->wait_ms ? cfg->wait_ms : DEFAULT_WAIT_MS;
    uv_mutex_init(&b->mu);
    const char *nats_url = getenv("NATS_URL");
    if (nats_url && *nats_url) { /* the event bus: the producer's stream, not its feed */
        if ((rc = bus_consumer_nats_start(b, nats_url)) < 0) {
            consumer_free(b);
            return rc;
        }
        *out = b;
        return 0;
    }
    uv_loop_init(&b->loop);
    uv_async_init(&b->loop, &b->wake, on_wake);
    b->wake.data = b;
    uv_timer_init(&b->loop, &b->timer);
    b->timer.data = b;
    ms_http_client_config ccfg;
    ms_http_client_config_defaults(&ccfg);
    ccfg.max_retries = -1; /* the consumer's own backoff retries */
    ccfg.default_timeout_ms = (uint32_t)(b->wait_ms + SLACK_MS);
    b->client = ms_http_client_new(&b->loop, &ccfg);
    rc = ms_http_client_add_upstream(b->client, b->producer, &b->upstream);
    if (rc == 0 && uv_thread_create(&b->thread, consumer_main, b) != 0)
        rc = MS_EINTERNAL;
    if (rc < 0) {
        atomic_store(&b->stopping, true);
        on_wake(&b->wake);
        uv_run(&b->loop, UV_RUN_DEFAULT);
        uv_loop_close(&b->loop);
        consumer_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

void bus_consumer_stop(bus_consumer *b)
{
    if (!b)
        return;
    atomic_store(&b->stopping, true);
    if (b->nats) {
        bus_consumer_nats_stop(b);
    } else {
        uv_async_send(&b->wake);
        uv_thread_join(&b->thread);
        uv_loop_close(&b->loop);
    }
    consumer_free(b);
}

void bus_consumer_get_stats(bus_consumer *b, bus_consumer_stats *out)
{
    uv_mutex_lock(&b->mu);
    *out = b->stats;
    uv_mutex_unlock(&b->mu);
}

void bus_consumer_render(ms_buf *out, bus_consumer *const *list, int n)
{
    static const struct {
        const char *name, *type, *help;
    } families[] = {
        {"bus_consumer_position", "gauge",
         "The producer's last seq this consumer applied and committed."},
        {"bus_consumer_lag_events", "gauge",
         "The producer's newest seq (at its last answer) less the position."},
        {"bus_consumer_applied_total", "counter", "Events applied."},
        {"bus_consumer_duplicates_total", "counter",
         "Events received again and skipped (applied once already)."},
        {"bus_consumer_failures_total", "counter",
         "Polls of the producer and transactions that failed (then retried)."},
    };
    bus_consumer_stats s[8];
    if (n > (int)(sizeof s / sizeof s[0]))
        n = (int)(sizeof s / sizeof s[0]);
    for (int i = 0; i < n; i++)
        if (list[i])
            bus_consumer_get_stats(list[i], &s[i]);
    /* one family at a time, every consumer's sample in it: the format wants a family's lines
     * together, under one HELP and TYPE */
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        ms_metrics_family(out, families[f].name, families[f].type, families[f].help);
        for (int i = 0; i < n; i++) {
            if (!list[i])
                continue;
            double v = f == 0 ? (double)s[i].position
                       : f == 1
                           ? (double)(s[i].head > s[i].position ? s[i].head - s[i].position : 0)
                       : f == 2 ? (double)s[i].applied_total
                       : f == 3 ? (double)s[i].duplicates_total
                                : (double)s[i].failures_total;
            ms_metrics_sample(out, families[f].name, v, "consumer", list[i]->consumer, NULL);
        }
    }
}
