/*
 * order_internal.h — shared by the order service's files only (design:
 * docs/internals/orders.md).
 *
 * The write side is the event store (one writer thread per process, group commit); the read
 * side is a separate database of views kept by one projector thread. Handlers run on loop
 * threads; *_work functions on pooled connections (worker threads, or inline for SQLite
 * reads); the projector on its own thread.
 */
#ifndef MS_ORDER_INTERNAL_H
#define MS_ORDER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "eventstore/eventstore.h"
#include "runtime/db/db.h"
#include "runtime/http/client.h"
#include "runtime/http/upstream_watch.h"
#include "runtime/http/http.h"
#include "runtime/http/server.h"
#include "services/order/order_aggregate.h"

/* Streams are "order-<id>". */
#define ORDER_STREAM_PREFIX "order-"
enum { ORDER_STREAM_LEN = sizeof(ORDER_STREAM_PREFIX) - 1 + MS_UUID_LEN };

/* ---- process-wide state (service.c) ---- */
enum { ORDER_NCONSUMERS = 2 };
typedef struct order_waiter order_waiter;
typedef struct order_saga order_saga;

/* Per loop: the event-store port, the read-database pool, and the requests waiting for the
 * projector to reach a position (read-your-writes). Loop thread only, except `projected`. */
typedef struct order_loop {
    ms_loop *loop;
    ms_es_port *port;
    ms_db_pool *read_pool;
    uv_async_t projected; /* the projector moved on: look at the waiters */
    order_waiter *waiters;
    ms_http_client *client;   /* the saga's calls: upstreams user, inventory, payment */
    ms_upstream_watch *watch; /* under `microshop run`: the scaled services' instances */
    order_saga *sagas;        /* running on this loop */
    uv_timer_t resumer;       /* the first loop only (has_resumer) */
    bool has_resumer, is_closing;
    struct order_loop *next; /* in the projector's list of loops to wake */
    void (*on_closed)(ms_loop *l);
    int closing; /* handles and pools still closing */
} order_loop;

typedef struct order_process {
    ms_es *es;
    struct ms_relay *relay; /* the outbox relay to the feed */
    ms_db_config write_db, read_db;
    char read_path[4096];
    struct order_projector *projector;
    /* the bus consumers (user directory, low-stock alerts); NULL when not configured */
    struct bus_consumer *consumers[ORDER_NCONSUMERS];
    /* the services a checkout calls (MICROSHOP_<NAME>_URL); n == 0: not configured */
    ms_http_upstream_list user_up, inventory_up, payment_up;
    ms_http_client_metrics *client_metrics;
    uint64_t started_ms; /* uv_now of the first loop at its start */
    char started_at[MS_TIME_LEN + 1];
    int64_t start_head; /* the store's head at start: the views hold every open saga past it */
    bool has_resumer;
} order_process;

extern order_process order_proc;

/* The read database's config: SQLite DATA/order_read.db, or READ_DATABASE_URL (default: the
 * write database) on PostgreSQL. `path` (path_size bytes) holds the SQLite file name. */
void order_read_db_config(const char *data_dir, const ms_db_config *write_db, ms_db_config *out,
                          char *path, size_t path_size);

/* The loop's order state (req->loop->service). */
static inline order_loop *order_loop_of(ms_http_request *req)
{
    return req->loop->service;
}

/* ---- the read side (views.c) ---- */
extern const ms_migration order_view_migrations[];
extern const size_t order_view_nmigrations;
/* Applies one event to the views on `c` (inside the caller's transaction): idempotent, an
 * event at or below a view's version is skipped. Worker or projector thread. */
int order_views_apply(ms_db_conn *c, const ms_es_event *e);
/* The same for a page of events, in order: on PostgreSQL in a few statements for the lot. */
int order_views_apply_page(ms_db_conn *c, const ms_es_page *page);
/* Reads and sets a projector's checkpoint (position of the last event applied). */
int order_views_checkpoint(ms_db_conn *c, const char *name, int64_t *position);
int order_views_set_checkpoint(ms_db_conn *c, const char *name, int64_t position);

/* ---- the projector (projector.c) ---- */
typedef struct order_projector order_projector;
int order_projector_start(ms_es *es, const ms_db_config *write_db, const ms_db_config *read_db,
                          order_projector **out);
void order_projector_stop(order_projector *p);
/* The last position applied to the views (any thread). */
int64_t order_projector_position(order_projector *p);
/* Loops to wake when the position moves (registered at loop open, removed at close). */
void order_projector_watch(order_projector *p, order_loop *ol);
void order_projector_unwatch(order_projector *p, order_loop *ol);
/* Metrics: projection lag in events and seconds. */
void order_projector_collect(ms_buf *out, void *arg);

/* Waits (without blocking the loop) until the views reached `position`, then calls `then`
 * with 0, or with MS_ETIMEDOUT at the request's deadline. Runs `then` at once when already
 * there. Loop thread. */
void order_wait_projected(ms_http_request *req, int64_t position, void (*then)(int rc, void *arg),
                          void *arg);
/* The loop's `projected` async fired: run the waiters whose position was reached. */
void order_waiters_wake(order_loop *ol);
/* Fails every waiter (shutdown). */
void order_waiters_cancel(order_loop *ol);

/* ---- the write side's shared steps (commands.c) ---- */
/* Loads an order (latest snapshot, then the events after it; with first_metadata: from the
 * first event, keeping its metadata, heap). *top: the newest position seen. 0, MS_ENOTFOUND,
 * or a database/evolve error. Worker thread (or inline). */
int order_load(ms_db_conn *c, const char *stream, order_state *s, char **first_metadata,
               int64_t *top);
/* Answers an order: its view with ETag, X-Position (position > 0) and, for 201/202, Location. */
void order_answer(ms_http_request *req, const order_state *s, int status, int64_t position);
/* Fills an append of a decision's events at `version` (0: a new stream), each with its outbox
 * row; event_id (may be NULL) names the first event, metadata (NULL: "{}") goes on each. */
void order_fill_append(const char *stream, const char *order_id, const order_decision *d,
                       const char *event_id, const char *metadata, ms_es_event *events,
                       ms_es_outbox_row *outbox, int64_t version, ms_es_append_req *out);

/* ---- the checkout saga (saga.c) ---- */
/* One runner per order in a process: 0, or MS_ECONFLICT when it runs already. Any thread. */
int order_saga_claim(const char *order_id);
void order_saga_unclaim(const char *order_id);
/* Runs the saga of the claimed order in *state (moved in) on `ol`'s loop. Attached to req
 * (may be NULL), it answers it with done_status when it ends before the deadline, else 202.
 * card (copied; may be NULL: lost) is needed to pay. position: X-Position for the answer. */
void order_saga_start(order_loop *ol, ms_http_request *req, int done_status, order_state *state,
                      const char *card, int64_t position);
/* Loop closing: sagas end (they resume at the next start). */
void order_sagas_stop(order_loop *ol);
/* Metrics: order_sagas_running, order_sagas_resumed_total, order_sagas_ended_total{outcome},
 * order_saga_steps_total{step,result}, order_saga_step_duration_seconds{step}. */
void order_saga_collect(ms_buf *out, void *arg);
/* The resumer's timer callback (ol->resumer; data = ol). */
void order_saga_resume_tick(uv_timer_t *t);

/* ---- handlers (checkout.c, commands.c, queries.c) ---- */
void order_create(ms_http_request *req);
void order_cancel(ms_http_request *req);
void order_patch_status(ms_http_request *req);
void order_get(ms_http_request *req);
void order_list_for_user(ms_http_request *req);
void order_events(ms_http_request *req);

/* ---- the user directory (user_directory.c), in the write database ---- */
struct bus_consumer;
extern const ms_migration order_directory_migrations[];
extern const size_t order_directory_nmigrations;
struct bus_event;
/* The bus handlers (bus_consumer_fn) of the user directory (user.created, user.updated) and of
 * the low-stock alerts (stock.low into low_stock_alerts); service.c starts their consumers. */
int order_directory_apply(ms_db_conn *c, const struct bus_event *e, void *arg);
int order_stock_alert_apply(ms_db_conn *c, const struct bus_event *e, void *arg);
typedef struct order_directory_user {
    char email[256], name[256];
} order_directory_user;
/* A known user (the saga's validate-user step reads this first): 0 or MS_ENOTFOUND. Any
 * thread, on a write-database connection (the loop's pool). */
int order_directory_lookup(ms_db_conn *c, const char *user_id, order_directory_user *out);

/* ---- metrics (service.c) ---- */
void order_metrics_created(int64_t total_cents);

#endif
