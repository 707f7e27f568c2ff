/*
 * service.c — the order service's wiring: routes, the write database (the event store's
 * tables), the read database (views), the event store and the projector for the process, and
 * per loop an event-store port, a read-database pool and the read-your-writes waiters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/relay.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/obs/metrics.h"
#include "runtime/http/client.h"
#include "runtime/http/upstream_watch.h"
#include "services/common/bus_consumer.h"
#include "services/common/event_feed.h"
#include "services/common/outbox_feed.h"
#include "services/order/order_internal.h"
#include "services/service.h"
#include "runtime/core/banned.h"

order_process order_proc;

/* ---- metrics: orders_created_total, order_amount (the seed's names) ---- */

static const double amount_bounds[] = {10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
enum { NAMOUNT = sizeof amount_bounds / sizeof amount_bounds[0] };
static struct {
    uv_mutex_t lock;
    uint64_t created, buckets[NAMOUNT + 1];
    double sum;
} order_stats;

void order_metrics_created(int64_t total_cents)
{
    double amount = (double)total_cents / 100.0; /* in the currency's major unit */
    int b = ms_metrics_bucket(amount_bounds, NAMOUNT, amount);
    uv_mutex_lock(&order_stats.lock);
    order_stats.created++;
    order_stats.buckets[b]++;
    order_stats.sum += amount;
    uv_mutex_unlock(&order_stats.lock);
}

static void collect_orders(ms_buf *out, void *arg)
{
    (void)arg;
    uv_mutex_lock(&order_stats.lock);
    uint64_t created = order_stats.created, buckets[NAMOUNT + 1];
    memcpy(buckets, order_stats.buckets, sizeof buckets);
    double sum = order_stats.sum;
    uv_mutex_unlock(&order_stats.lock);
    ms_metrics_family(out, "orders_created_total", "counter", "Orders created.");
    ms_metrics_sample(out, "orders_created_total", (double)created, "service", "order", NULL);
    ms_metrics_family(out, "order_amount", "histogram",
                      "Order totals in the currency's major unit.");
    const char *labels[] = {"service", "order"};
    ms_metrics_histogram(out, "order_amount", labels, 1, amount_bounds, NAMOUNT, buckets, sum);
}

/* A histogram over ms_es_stats's latency buckets. */
static void put_seconds(ms_buf *out, const char *name, const char *help, const uint64_t hist[12],
                        double sum)
{
    ms_metrics_family(out, name, "histogram", help);
    ms_metrics_histogram(out, name, NULL, 0, ms_es_latency_bounds, MS_ES_LATENCY_BOUNDS, hist, sum);
}

static void collect_eventstore(ms_buf *out, void *arg)
{
    (void)arg;
    ms_es_stats st;
    ms_es_get_stats(order_proc.es, &st);
    ms_metrics_family(out, "eventstore_appends_total", "counter", "Appends answered.");
    ms_metrics_sample(out, "eventstore_appends_total", (double)st.appends_total, NULL);
    ms_metrics_family(out, "eventstore_conflicts_total", "counter",
                      "Appends refused for an expected version that did not match.");
    ms_metrics_sample(out, "eventstore_conflicts_total", (double)st.conflicts_total, NULL);
    ms_metrics_family(out, "eventstore_events_total", "counter", "Events appended.");
    ms_metrics_sample(out, "eventstore_events_total", (double)st.events_total, NULL);
    ms_metrics_family(out, "eventstore_group_commit_size", "histogram",
                      "Appends committed together in one transaction (one fsync).");
    ms_metrics_histogram(out, "eventstore_group_commit_size", NULL, 0, ms_es_batch_bounds,
                         MS_ES_BATCH_BOUNDS, st.batch_size_hist, (double)st.appends_total);
    put_seconds(out, "eventstore_append_duration_seconds",
                "From queueing an append to its answer (after the commit).", st.append_seconds_hist,
                st.append_seconds_sum);
    put_seconds(out, "eventstore_fsync_duration_seconds",
                "The WAL's fdatasync for a group of commits: what an append waits on the disk "
                "(SQLite; PostgreSQL's commit includes its own flush).",
                st.fsync_seconds_hist, st.fsync_seconds_sum);
    ms_metrics_family(out, "eventstore_committed_position", "gauge",
                      "Highest global position this process committed.");
    ms_metrics_sample(out, "eventstore_committed_position", (double)st.committed_position, NULL);
}

/* ---- process ---- */

void order_read_db_config(const char *data_dir, const ms_db_config *write_db, ms_db_config *out,
                          char *path, size_t path_size)
{
    *out = *write_db;
    out->is_derived = true; /* views and their checkpoint are rebuilt from the event store */
    if (write_db->backend == MS_DB_SQLITE) {
        /* the read model lives in a file of its own: a separate database, as CQRS wants */
        snprintf(path, path_size, "%s/order_read.db", data_dir);
        out->sqlite_path = path;
    } else {
        const char *url = getenv("READ_DATABASE_URL");
        if (url && *url)
            out->pg_conninfo = url;
    }
}

static int migrate_more(const ms_service_env *env)
{
    ms_db_config read_db;
    char path[4096];
    order_read_db_config(env->data_dir, env->db, &read_db, path, sizeof path);
    ms_db_conn *c = NULL;
    int rc = ms_db_open(&read_db, false, &c);
    if (rc == 0)
        rc = ms_db_migrate(c, order_view_migrations, order_view_nmigrations, NULL);
    if (rc < 0)
        ms_log(MS_LOG_ERROR, "cannot prepare the read database", "error",
               c ? ms_db_errmsg(c) : ms_strerror(rc), NULL);
    ms_db_close(c);
    c = NULL;
    /* the user directory and its bus tables, in the write database (user_directory.c) */
    if (rc == 0 && (rc = ms_db_open(env->db, false, &c)) == 0)
        rc = ms_db_migrate(c, order_directory_migrations, order_directory_nmigrations, NULL);
    if (rc < 0)
        ms_log(MS_LOG_ERROR, "cannot prepare the user directory", "error",
               c ? ms_db_errmsg(c) : ms_strerror(rc), NULL);
    ms_db_close(c);
    return rc;
}

/* The bus consumers: each follows a producer the process knows the URL of. */
static const struct consumer_spec {
    const char *consumer, *producer, *env, *what, *types;
    bus_consumer_fn handle;
} consumer_specs[ORDER_NCONSUMERS] = {
    {"order.user_directory", "user", "MICROSHOP_USER_URL", "user directory",
     "user.created,user.updated", order_directory_apply},
    {"order.low_stock", "inventory", "MICROSHOP_INVENTORY_URL", "low-stock alerts", "stock.low",
     order_stock_alert_apply},
};

static int start_consumers(void)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < ORDER_NCONSUMERS; i++) {
        const struct consumer_spec *c = &consumer_specs[i];
        const char *url = getenv(c->env);
        if (!url || !*url)
            continue;
        bus_consumer_config cfg = {
            .consumer = c->consumer,
            .producer = c->producer,
            .url = url,
            .db = &order_proc.write_db,
            .handle = c->handle,
            .types = c->types,
        };
        rc = bus_consumer_start(&cfg, &order_proc.consumers[i]);
        if (rc == 0)
            ms_log(MS_LOG_INFO, "bus: following a producer", "consumer", c->what, "producer",
                   c->producer, "url", url, NULL);
    }
    return rc;
}

static void stop_consumers(void)
{
    for (int i = 0; i < ORDER_NCONSUMERS; i++) {
        bus_consumer_stop(order_proc.consumers[i]);
        order_proc.consumers[i] = NULL;
    }
}

static void collect_consumers(ms_buf *out, void *arg)
{
    (void)arg;
    bus_consumer_render(out, order_proc.consumers, ORDER_NCONSUMERS);
}

/* The services this one calls (`microshop run` sets them). Unset: the user step and the user
 * directory are skipped; a checkout without inventory or payment answers 503. A malformed
 * value is a usage error, caught before anything starts. */
static const struct upstream_env {
    const char *name, *env;
    ms_http_upstream_list *list;
} upstream_envs[] = {
    {"user", "MICROSHOP_USER_URL", &order_proc.user_up},
    {"inventory", "MICROSHOP_INVENTORY_URL", &order_proc.inventory_up},
    {"payment", "MICROSHOP_PAYMENT_URL", &order_proc.payment_up},
};
enum { NUPSTREAMS = sizeof upstream_envs / sizeof upstream_envs[0] };

static void read_upstreams(void)
{
    for (int i = 0; i < NUPSTREAMS; i++) {
        const char *url = getenv(upstream_envs[i].env);
        memset(upstream_envs[i].list, 0, sizeof *upstream_envs[i].list);
        if (url && *url && ms_http_upstream_parse(url, upstream_envs[i].list) < 0) {
            char what[64];
            snprintf(what, sizeof what, "%s is malformed", upstream_envs[i].env);
            ms_log(MS_LOG_ERROR, what, "error", upstream_envs[i].list->error, NULL);
            exit(2);
        }
    }
}

static int start(const ms_service_env *env)
{
    read_upstreams();
    uv_mutex_init(&order_stats.lock);
    order_proc.write_db = *env->db;
    order_read_db_config(env->data_dir, env->db, &order_proc.read_db, order_proc.read_path,
                         sizeof order_proc.read_path);
    int rc = ms_es_open(&order_proc.write_db, NULL, &order_proc.es);
    if (rc == 0)
        rc = order_projector_start(order_proc.es, &order_proc.write_db, &order_proc.read_db,
                                   &order_proc.projector);
    if (rc == 0)
        rc = outbox_feed_start(env, "order", order_proc.es, &order_proc.relay);
    if (rc == 0)
        rc = start_consumers();
    if (rc < 0) {
        stop_consumers();
        ms_relay_stop(order_proc.relay);
        order_proc.relay = NULL;
        order_projector_stop(order_proc.projector);
        order_proc.projector = NULL;
        if (order_proc.es)
            ms_es_close(order_proc.es);
        order_proc.es = NULL;
        return rc;
    }
    event_feed_set_store(order_proc.es);
    ms_metrics_register(collect_orders, NULL);
    ms_metrics_register(collect_eventstore, NULL);
    ms_metrics_register(order_projector_collect, order_proc.projector);
    ms_metrics_register(collect_consumers, NULL);
    ms_metrics_register(order_saga_collect, NULL);
    order_proc.client_metrics = ms_http_client_metrics_new();
    ms_metrics_register(ms_http_client_metrics_render, order_proc.client_metrics);
    return 0;
}

static void stop(void)
{
    event_feed_set_store(NULL);
    stop_consumers();
    ms_relay_stop(order_proc.relay);
    order_proc.relay = NULL;
    order_projector_stop(order_proc.projector);
    order_proc.projector = NULL;
    ms_es_close(order_proc.es);
    order_proc.es = NULL;
    uv_mutex_destroy(&order_stats.lock);
    ms_http_client_metrics_free(order_proc.client_metrics);
    order_proc.client_metrics = NULL;
    order_proc.has_resumer = false;
}

/* ---- loops ---- */

static void on_projected(uv_async_t *a)
{
    order_waiters_wake(a->data);
}

static int loop_open(ms_loop *l, void *arg)
{
    (void)arg;
    order_loop *ol = ms_xcalloc(1, sizeof *ol);
    ol->loop = l;
    int rc = ms_es_port_open(order_proc.es, &l->uv, &ol->port);
    if (rc == 0)
        rc = ms_db_pool_new(&l->uv, &order_proc.read_db, l->cfg->threads, &ol->read_pool);
    if (rc < 0) {
        free(ol);
        return rc;
    }
    uv_async_init(&l->uv, &ol->projected, on_projected);
    ol->projected.data = ol;
    ms_http_client_config cc;
    ms_http_client_config_defaults(&cc);
    cc.metrics = order_proc.client_metrics;
    ol->client = ms_http_client_new(&l->uv, &cc);
    for (int i = 0; i < NUPSTREAMS; i++)
        if (upstream_envs[i].list->n > 0 &&
            ms_http_client_add_upstream(ol->client, upstream_envs[i].name, upstream_envs[i].list) <
                0)
            MS_BUG("a parsed upstream list was refused");
    /* under `microshop run`, a scaled user, inventory or payment service's instances */
    ol->watch = ms_upstream_watch_start(&l->uv, ol->client, l->index == 0);
    /* the first loop resumes the sagas a crash or a restart left open (saga.c) */
    if (!order_proc.has_resumer) {
        order_proc.has_resumer = ol->has_resumer = true;
        order_proc.started_ms = uv_now(&l->uv);
        ms_time_now(order_proc.started_at);
        order_proc.start_head = ms_es_committed_position(order_proc.es);
        uv_timer_init(&l->uv, &ol->resumer);
        ol->resumer.data = ol;
        uv_timer_start(&ol->resumer, order_saga_resume_tick, 100, 0);
    }
    order_projector_watch(order_proc.projector, ol);
    l->service = ol;
    return 0;
}

static void part_closed(order_loop *ol)
{
    if (--ol->closing > 0)
        return;
    ms_loop *l = ol->loop;
    void (*done)(ms_loop *) = ol->on_closed;
    l->service = NULL;
    free(ol);
    done(l);
}

static void on_async_closed(uv_handle_t *h)
{
    part_closed(h->data);
}

static void on_part_closed(void *arg)
{
    part_closed(arg);
}

static void loop_close(ms_loop *l, void (*done)(ms_loop *l), void *arg)
{
    (void)arg;
    order_loop *ol = l->service;
    ol->on_closed = done;
    order_projector_unwatch(order_proc.projector, ol);
    order_waiters_cancel(ol);
    order_sagas_stop(ol);
    ms_upstream_watch_stop(ol->watch);
    ol->watch = NULL;
    ms_http_client_free(ol->client); /* fails the calls in flight: their sagas end */
    ol->client = NULL;
    ol->closing = ol->has_resumer ? 4 : 3;
    if (ol->has_resumer) {
        ol->resumer.data = ol;
        uv_close((uv_handle_t *)&ol->resumer, on_async_closed);
    }
    uv_close((uv_handle_t *)&ol->projected, on_async_closed);
    ms_es_port_close(ol->port, on_part_closed, ol);
    ms_db_pool_close(ol->read_pool, on_part_closed, ol);
}

static int add_routes(ms_router *r)
{
    int rc = 0;
    rc |= ms_router_add(r, "GET", "/internal/v1/events", event_feed_get);
    rc |= ms_router_add(r, "POST", "/api/v1/orders", order_create);
    rc |= ms_router_add(r, "GET", "/api/v1/orders/{id}", order_get);
    rc |= ms_router_add(r, "POST", "/api/v1/orders/{id}/cancel", order_cancel);
    rc |= ms_router_add(r, "PATCH", "/api/v1/orders/{id}/status", order_patch_status);
    rc |= ms_router_add(r, "GET", "/api/v1/orders/{id}/events", order_events);
    rc |= ms_router_add(r, "GET", "/api/v1/users/{id}/orders", order_list_for_user);
    return rc ? -1 : 0;
}

const ms_service ms_order_service = {
    .name = "order",
    .summary = "orders: event store, CQRS views, outbox",
    .default_port = 8082,
    .migrations = ms_es_migrations,
    .nmigrations = MS_ES_NMIGRATIONS,
    .add_routes = add_routes,
    .migrate_more = migrate_more,
    .start = start,
    .stop = stop,
    .loop_hooks = {.open = loop_open, .close = loop_close},
};
