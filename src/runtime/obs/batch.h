/*
 * batch.h — a batch processor: items queued from any thread are handed to a flush callback in
 * groups, when max_items are queued or when the oldest has waited max_wait_ms. It lives in obs
 * because it reports itself as metrics (core may not include obs).
 *
 * Delivery: a flush that fails is retried with the same items at the head of the queue (items
 * queued meanwhile may join the retry, behind them), after an exponential backoff with full
 * jitter (backoff_min_ms doubling to backoff_max_ms): items leave the queue, in enqueue order,
 * only when a flush of them returned 0. Nothing is dropped silently: the queue is bounded
 * (max_queued) and an item that does not fit is refused to its caller (MS_EBUSY) and counted.
 * At stop the queue is flushed (retrying until stop_timeout_ms); what is still queued then is
 * counted, logged and released. Users: the trace and log exporters (spans and lines queued by
 * any thread) and the outbox relay (pages of rows read from the outbox table, which stays
 * their durable copy: see relay.c).
 *
 * Threading: one flusher thread per batch calls `flush` (never two flushes at once);
 * ms_batch_enqueue, ms_batch_get_stats and ms_batch_collect may be called from any thread;
 * ms_batch_start and ms_batch_stop by one owner. Do not call ms_batch_enqueue from inside
 * `flush` on the same batch when the queue may be full (it would be refused, not deadlock).
 * Ownership: an accepted item belongs to the batch until it is released (`release`, may be
 * NULL) after its successful flush or at stop; `flush` borrows the items. A refused item stays
 * the caller's. The options' strings are copied.
 */
#ifndef MS_BATCH_H
#define MS_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/core/buf.h"

/* Hands items[0..n) (enqueue order) on: 0 when done with all of them, else a negative MS_E*
 * code and the same items come again after a backoff. Runs on the flusher thread. */
typedef int (*ms_batch_flush_fn)(void *arg, void *const *items, size_t n);
/* Frees an item the batch is done with (flushed, or left over at stop). */
typedef void (*ms_batch_release_fn)(void *arg, void *item);

typedef struct ms_batch_options {
    const char *name;    /* the metrics label batch=... and the logs' name (required) */
    int max_items;       /* flush when this many are queued; most per flush (default 100) */
    int max_wait_ms;     /* flush when the oldest item waited this long (default 5000) */
    int max_queued;      /* refuse items beyond this many queued (default 10000) */
    int backoff_min_ms;  /* first retry delay ceiling (default 100) */
    int backoff_max_ms;  /* largest retry delay (default 5000) */
    int stop_timeout_ms; /* how long stop keeps flushing (default 5000) */
    /* The items are copies of a durable source the next start reads again (the outbox): what
     * is left at stop is logged at INFO as left for then, not at ERROR as lost. */
    bool keeps_source;
    ms_batch_flush_fn flush; /* required */
    ms_batch_release_fn release;
    void *arg; /* passed to flush and release */
} ms_batch_options;

typedef struct ms_batch ms_batch;

/* Starts the flusher thread. Returns 0 or MS_EINVAL (no name or flush, a negative number, or
 * backoff_min_ms above backoff_max_ms). */
int ms_batch_start(const ms_batch_options *opt, ms_batch **out);

/* Queues `item` (non-NULL). 0: the batch owns it; MS_EBUSY: the queue is full (counted in
 * batch_dropped_total), MS_ESHUTDOWN: stopping; either way the caller keeps it. Any thread. */
int ms_batch_enqueue(ms_batch *b, void *item);

/* Queues items[0..n) (each non-NULL) in order, all or none, under one lock: a producer that
 * hands over whole pages gets them flushed together (a page of max_items is one flush). 0,
 * MS_EBUSY (they do not all fit: counted as n dropped), MS_ESHUTDOWN or MS_EINVAL; on error the
 * caller keeps every item. Any thread. */
int ms_batch_enqueue_many(ms_batch *b, void *const *items, size_t n);

/* Flushes what is queued (retrying failures until stop_timeout_ms; a flush under way when the
 * time is up completes), joins the thread, releases what could not be flushed (logged with its
 * count) and frees the batch. Returns that count (0: everything was flushed). NULL: 0. */
size_t ms_batch_stop(ms_batch *b);

typedef struct ms_batch_stats {
    uint64_t flushes_ok, flushes_error; /* flush calls by result */
    uint64_t items_total;               /* items flushed successfully */
    uint64_t dropped_total;             /* items refused because the queue was full */
    size_t queued;                      /* items queued now (including a flush under way) */
} ms_batch_stats;

/* A consistent snapshot; any thread. */
void ms_batch_get_stats(ms_batch *b, ms_batch_stats *out);

/* A metrics collector for every running batch of the process, registered once
 * (ms_metrics_register(ms_batch_collect, NULL)): batch_flushes_total{batch,result="ok|error"},
 * batch_items_total{batch}, batch_dropped_total{batch}, batch_queue_items{batch}. */
void ms_batch_collect(ms_buf *out, void *unused);

#endif
