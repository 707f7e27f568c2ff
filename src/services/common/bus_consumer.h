/*
 * bus_consumer.h — the local event bus's consumer side: a thread that follows a producer's
 * feed (event_feed.h, long polls) and applies each page in ONE transaction on the consumer's
 * own database, together with the page's event ids in bus_received (a repeat is skipped:
 * each event is applied once) and the position in bus_checkpoints. A crash between the
 * producer's answer and the commit only reads the page again.
 *
 * The producer being down or answering errors is retried with backoff (100 ms doubling to
 * 5 s, full jitter); so is a failing transaction. The consuming service keeps running.
 *
 * With NATS_URL set in the process, the consumer follows the producer's JetStream stream
 * instead (bus_consumer_nats.c): a durable pull consumer named after `consumer` with '.' as
 * '_' ("order_user_directory") on MICROSHOP_<PRODUCER>, filter "<producer>.>"; each fetched
 * batch (up to `limit`, waiting up to `wait_ms`) is applied the same way, event ids being the
 * Nats-Msg-Id (the outbox id, as the feed's), the checkpoint the stream sequence, and acked
 * after the commit (nak'ed when it failed). `url` is then only checked.
 *
 * Threading: the consumer runs its own thread with its own uv loop, HTTP client and database
 * connection; the handler runs there. start and stop from one owner; bus_consumer_render
 * from any thread. Ownership: start copies the config's strings; stop joins the thread and
 * frees everything.
 */
#ifndef MS_BUS_CONSUMER_H
#define MS_BUS_CONSUMER_H

#include <jansson.h>
#include <stdint.h>

#include "runtime/core/buf.h"
#include "runtime/db/db.h"

/* The consumer's tables, in the consumer's database (the same SQL on both backends). */
#define BUS_CONSUMER_TABLES_SQL                                                                    \
    "CREATE TABLE bus_received (consumer TEXT NOT NULL, event_id TEXT NOT NULL,"                   \
    " seq BIGINT NOT NULL, received_at TEXT NOT NULL, PRIMARY KEY (consumer, event_id));"          \
    "CREATE TABLE bus_checkpoints (consumer TEXT NOT NULL, producer TEXT NOT NULL,"                \
    " last_seq BIGINT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (consumer, producer));"

/* One event of a page, borrowed for the handler's call. */
typedef struct bus_event {
    int64_t seq;
    const char *id, *aggregate_type, *aggregate_id, *type, *created_at;
    json_t *payload; /* the object the producer wrote */
} bus_event;

/* Applies one new event on `c`, inside the page's transaction: 0, or MS_E* to roll the page
 * back (it is retried after a backoff). Events of types it does not know it ignores. */
typedef int (*bus_consumer_fn)(ms_db_conn *c, const bus_event *e, void *arg);

typedef struct bus_consumer_config {
    const char *consumer;   /* the checkpoint's name and metrics label: "order.user_directory" */
    const char *producer;   /* the producing service: "user" */
    const char *url;        /* its base URL(s): "http://127.0.0.1:8081" (ms_http_upstream_parse) */
    const ms_db_config *db; /* the consumer's database (migrated: BUS_CONSUMER_TABLES_SQL) */
    bus_consumer_fn handle;
    void *arg;
    /* the event types the handler applies, comma-separated ("user.created,user.updated"), or
     * NULL for every type. Others are passed over: no row, no transaction, only the position
     * moves (written with the next applied event, or within a second when idle) */
    const char *types;
    int limit;   /* events per page (default 100) */
    int wait_ms; /* the long poll (default 5000) */
} bus_consumer_config;

typedef struct bus_consumer bus_consumer;

/* Checks the URL and starts the thread; 0, MS_EINVAL (bad URL or config) or MS_EIO (NATS_URL
 * set but libnats cannot be loaded). */
int bus_consumer_start(const bus_consumer_config *cfg, bus_consumer **out);
/* Stops the thread (a long poll under way is abandoned) and frees the consumer. NULL is fine. */
void bus_consumer_stop(bus_consumer *b);

/* The checkpoint and last error, a consistent snapshot; any thread. */
typedef struct bus_consumer_stats {
    int64_t position;          /* the last seq applied and committed (NATS: stream sequence) */
    int64_t head;              /* the producer's newest seq at the last answer (NATS: the
                                * last message's sequence plus its pending count) */
    uint64_t applied_total;    /* events applied */
    uint64_t duplicates_total; /* events skipped as already received */
    uint64_t failures_total;   /* polls or transactions that failed */
} bus_consumer_stats;
void bus_consumer_get_stats(bus_consumer *b, bus_consumer_stats *out);

/* The metrics of a process's consumers (`list`: n of them, NULL entries skipped, at most 8),
 * each family once: bus_consumer_position, bus_consumer_lag_events,
 * bus_consumer_applied_total, bus_consumer_duplicates_total, bus_consumer_failures_total,
 * labelled consumer=<name>. For a collector registered once (ms_metrics_register). */
void bus_consumer_render(ms_buf *out, bus_consumer *const *list, int n);

#endif
