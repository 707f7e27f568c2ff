/*
 * bus_consumer_internal.h — what the consumer's two transports share: bus_consumer.c (the
 * producer's HTTP feed) and bus_consumer_nats.c (a JetStream durable pull consumer, when
 * NATS_URL is set). Both apply events with bus_consumer_apply, on the consumer's own thread.
 *
 * Threading: everything here runs on the consumer's thread except the stats (under mu) and
 * `stopping`. Ownership: the bus_consumer owns its strings and its transport's state.
 */
#ifndef MS_BUS_CONSUMER_INTERNAL_H
#define MS_BUS_CONSUMER_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "runtime/http/client.h"
#include "services/common/bus_consumer.h"

enum {
    BUS_BACKOFF_MIN_MS = 100,
    BUS_BACKOFF_MAX_MS = 5000,
};

typedef struct bus_nats bus_nats;

struct bus_consumer {
    char *consumer, *producer;
    ms_db_config db;
    bus_consumer_fn handle;
    void *arg;
    char *types;         /* ",a,b," (commas around each), or NULL: every type */
    uint64_t saved_ms;   /* when the checkpoint was last written (uv_hrtime ms) */
    int64_t unsaved_seq; /* a position passed over and not written yet, or 0 */
    int limit, wait_ms;
    bus_nats *nats; /* the JetStream transport, or NULL for the HTTP feed */
    ms_http_upstream_list upstream;
    /* the thread's own */
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake; /* stop */
    uv_timer_t timer;
    ms_http_client *client;
    ms_db_conn *conn;
    bool has_position; /* the checkpoint was read */
    unsigned attempt;
    atomic_bool stopping;
    /* stats, under mu */
    uv_mutex_t mu;
    bus_consumer_stats stats;
};

/* The next retry's delay (full jitter, BUS_BACKOFF_MIN_MS doubling to BUS_BACKOFF_MAX_MS), and
 * counts the attempt; b->attempt = 0 after a success starts over. */
unsigned bus_consumer_backoff_ms(bus_consumer *b);
void bus_consumer_note_failure(bus_consumer *b);
/* Logs a database failure and counts it; a lost connection is closed, to be opened again. */
void bus_consumer_db_failed(bus_consumer *b, const char *what, int rc);
/* Opens the connection and reads the checkpoint into stats.position, once: 0 or MS_E*. */
int bus_consumer_prepare(bus_consumer *b);

/*
 * Applies the n new events of `ev` (those not in bus_received yet) with the handler, records
 * their ids and sets the checkpoint to last_seq (with `forward_only`, only when it is past the
 * stored one), in one transaction. Counts into *applied and *dups. 0 or MS_E* (rolled back).
 */
int bus_consumer_apply(bus_consumer *b, const bus_event *ev, size_t n, int64_t last_seq,
                       bool forward_only, uint64_t *applied, uint64_t *dups);
/* Writes a position passed over (a page of types the handler does not apply) if there is one:
 * the consumer is idle. 0 or MS_E*. */
int bus_consumer_flush(bus_consumer *b, bool forward_only);

/* The JetStream transport (bus_consumer_nats.c): checks the config and starts the thread.
 * 0, MS_EINVAL (the names cannot make a stream or durable) or MS_EIO (no libnats). */
int bus_consumer_nats_start(bus_consumer *b, const char *url);
/* Stops the thread (a fetch under way is cut short) and frees the transport. */
void bus_consumer_nats_stop(bus_consumer *b);

#endif
