/*
 * batch.c — the batch processor (contract in batch.h). The queue is a ring of (item, enqueue
 * time) under b->mu; only the flusher thread removes from it, and only after a successful
 * flush, so a failed batch simply stays at the head. A process-wide list of running batches
 * feeds the one metrics collector, so each family's HELP and TYPE appear once however many
 * batches run.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/obs/batch.h"
#include "runtime/obs/metrics.h"
#include "runtime/core/banned.h"

typedef struct slot {
    void *item;
    uint64_t at_ms; /* when it was queued */
} slot;

struct ms_batch {
    ms_batch_options o; /* o.name points at `name` */
    char *name;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    ms_batch *next; /* in the process-wide list */

    /* under mu */
    slot *ring;
    size_t head, count;
    bool is_stopping;
    uint64_t stop_deadline_ms;
    ms_batch_stats stats;

    /* flusher thread only */
    void **scratch;
    unsigned attempt;
    size_t unflushed; /* set when the thread ends */
};

static pthread_mutex_t all_mu = PTHREAD_MUTEX_INITIALIZER;
static ms_batch *all_head;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits on b->cond (b->mu held) until `deadline_ms` (monotonic) or a signal. */
static void wait_until(ms_batch *b, uint64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline_ms / 1000),
                          .tv_nsec = (long)(deadline_ms % 1000) * 1000000};
    pthread_cond_timedwait(&b->cond, &b->mu, &ts);
}

/* Full jitter: uniform in [0, min(max, min * 2^attempt)]; at least 1 ms. */
static uint64_t backoff_ms(ms_batch *b)
{
    unsigned shift = b->attempt < 20 ? b->attempt : 20;
    uint64_t ceiling = (uint64_t)b->o.backoff_min_ms << shift;
    if (ceiling > (uint64_t)b->o.backoff_max_ms)
        ceiling = (uint64_t)b->o.backoff_max_ms;
    uint32_t rnd;
    ms_random_bytes(&rnd, sizeof rnd);
    b->attempt++;
    uint64_t d = rnd % (ceiling + 1);
    return d ? d : 1;
}

/* Whether the flusher should flush now (b->mu held); else sets *wake_ms when it should look
 * again (0: only when signalled). */
static bool is_due(ms_batch *b, uint64_t *wake_ms)
{
    *wake_ms = 0;
    if (b->count == 0)
        return false;
    if (b->is_stopping || b->count >= (size_t)b->o.max_items)
        return true;
    uint64_t due = b->ring[b->head].at_ms + (uint64_t)b->o.max_wait_ms;
    if (now_ms() >= due)
        return true;
    *wake_ms = due;
    return false;
}

/* Releases items outside the lock (release may take its time). */
static void release_all(ms_batch *b, void **items, size_t n)
{
    if (!b->o.release)
        return;
    for (size_t i = 0; i < n; i++)
        b->o.release(b->o.arg, items[i]);
}

static void flush_failed(ms_batch *b, int rc)
{
    char attempt[16], queued[24];
    snprintf(attempt, sizeof attempt, "%u", b->attempt + 1);
    snprintf(queued, sizeof queued, "%zu", b->count);
    /* once per outage, not per attempt: a collector down for minutes would flood the log
     * (attempts and failures are in the batch's metrics) */
    if (b->attempt == 0)
        ms_log(MS_LOG_WARN, "batch: flush failed, will retry", "batch", b->name, "error",
               ms_errname(rc), "#attempt", attempt, "#queued", queued, NULL);
    uint64_t until = now_ms() + backoff_ms(b);
    for (;;) { /* a stop shortens the wait to its deadline, nothing else does */
        uint64_t end = until;
        if (b->is_stopping && b->stop_deadline_ms < end)
            end = b->stop_deadline_ms;
        if (now_ms() >= end)
            break;
        wait_until(b, end);
    }
}

static void *batch_main(void *arg)
{
    ms_batch *b = arg;
    pthread_setname_np(pthread_self(), "batch");
    pthread_mutex_lock(&b->mu);
    for (;;) {
        uint64_t wake;
        while (!is_due(b, &wake)) {
            if (b->is_stopping) /* and nothing queued */
                break;
            if (wake)
                wait_until(b, wake);
            else
                pthread_cond_wait(&b->cond, &b->mu);
        }
        if (b->count == 0 || (b->is_stopping && now_ms() >= b->stop_deadline_ms))
            break;
        size_t n = b->count < (size_t)b->o.max_items ? b->count : (size_t)b->o.max_items;
        size_t cap = (size_t)b->o.max_queued;
        for (size_t i = 0; i < n; i++)
            b->scratch[i] = b->ring[(b->head + i) % cap].item;
        pthread_mutex_unlock(&b->mu);
        int rc = b->o.flush(b->o.arg, b->scratch, n);
        pthread_mutex_lock(&b->mu);
        if (rc != 0) {
            b->stats.flushes_error++;
            flush_failed(b, rc);
            continue;
        }
        b->attempt = 0;
        b->head = (b->head + n) % cap;
        b->count -= n;
        b->stats.flushes_ok++;
        b->stats.items_total += n;
        b->stats.queued = b->count;
        pthread_mutex_unlock(&b->mu);
        release_all(b, b->scratch, n);
        pthread_mutex_lock(&b->mu);
    }
    /* Stopping: whatever is left could not be flushed in time. */
    size_t left = b->count;
    b->unflushed = left;
    if (left > 0) {
        char n[24];
        snprintf(n, sizeof n, "%zu", left);
        if (b->o.keeps_source)
            ms_log(MS_LOG_INFO, "batch: items left for the next start", "batch", b->name, "#items",
                   n, NULL);
        else
            ms_log(MS_LOG_ERROR, "batch: items not flushed at stop", "batch", b->name, "#items", n,
                   NULL);
    }
    for (; b->count > 0; b->count--) {
        void *item = b->ring[b->head].item;
        b->head = (b->head + 1) % (size_t)b->o.max_queued;
        pthread_mutex_unlock(&b->mu);
        release_all(b, &item, 1);
        pthread_mutex_lock(&b->mu);
    }
    b->stats.queued = 0;
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int ms_batch_start(const ms_batch_options *opt, ms_batch **out)
{
    *out = NULL;
    if (!opt || !opt->name || !*opt->name || !opt->flush)
        return MS_EINVAL;
    ms_batch_options o = *opt;
    if (o.max_items < 0 || o.max_wait_ms < 0 || o.max_queued < 0 || o.backoff_min_ms < 0 ||
        o.backoff_max_ms < 0 || o.stop_timeout_ms < 0)
        return MS_EINVAL;
    o.max_items = o.max_items ? o.max_items : 100;
    o.max_wait_ms = o.max_wait_ms ? o.max_wait_ms : 5000;
    o.max_queued = o.max_queued ? o.max_queued : 10000;
    o.backoff_min_ms = o.backoff_min_ms ? o.backoff_min_ms : 100;
    o.backoff_max_ms = o.backoff_max_ms ? o.backoff_max_ms : 5000;
    o.stop_timeout_ms = o.stop_timeout_ms ? o.stop_timeout_ms : 5000;
    if (o.backoff_min_ms > o.backoff_max_ms)
        return MS_EINVAL;

    ms_batch *b = ms_xcalloc(1, sizeof *b);
    b->name = ms_xstrdup(o.name);
    o.name = b->name;
    b->o = o;
    b->ring = ms_xcalloc((size_t)o.max_queued, sizeof *b->ring);
    b->scratch = ms_xcalloc((size_t)o.max_items, sizeof *b->scratch);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&b->mu, NULL);
    if (pthread_create(&b->thread, NULL, batch_main, b) != 0)
        MS_BUG("cannot start a batch thread");
    pthread_mutex_lock(&all_mu);
    b->next = all_head;
    all_head = b;
    pthread_mutex_unlock(&all_mu);
    *out = b;
    return 0;
}

int ms_batch_enqueue(ms_batch *b, void *item)
{
    return ms_batch_enqueue_many(b, &item, 1);
}

int ms_batch_enqueue_many(ms_batch *b, void *const *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!items[i])
            return MS_EINVAL;
    if (n == 0)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    if (b->is_stopping) {
        rc = MS_ESHUTDOWN;
        goto out;
    }
    size_t cap = (size_t)b->o.max_queued;
    if (n > cap - b->count) {
        b->stats.dropped_total += n;
        rc = MS_EBUSY;
        goto out;
    }
    size_t before = b->count;
    uint64_t at = now_ms();
    for (size_t i = 0; i < n; i++)
        b->ring[(b->head + b->count++) % cap] = (slot){.item = items[i], .at_ms = at};
    b->stats.queued = b->count;
    /* the flusher needs to know of the first item (its timer starts) and of a full batch */
    size_t full = (size_t)b->o.max_items;
    if (before == 0 || (before < full && b->count >= full))
        pthread_cond_signal(&b->cond);
out:
    pthread_mutex_unlock(&b->mu);
    return rc;
}

size_t ms_batch_stop(ms_batch *b)
{
    if (!b)
        return 0;
    pthread_mutex_lock(&all_mu);
    for (ms_batch **p = &all_head; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    pthread_mutex_unlock(&all_mu);
    pthread_mutex_lock(&b->mu);
    b->is_stopping = true;
    b->stop_deadline_ms = now_ms() + (uint64_t)b->o.stop_timeout_ms;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    size_t left = b->unflushed;
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->mu);
    free(b->scratch);
    free(b->ring);
    free(b->name);
    free(b);
    return left;
}

void ms_batch_get_stats(ms_batch *b, ms_batch_stats *out)
{
    pthread_mutex_lock(&b->mu);
    *out = b->stats;
    pthread_mutex_unlock(&b->mu);
}

void ms_batch_collect(ms_buf *out, void *unused)
{
    (void)unused;
    pthread_mutex_lock(&all_mu);
    if (!all_head)
        goto out;
    ms_metrics_family(out, "batch_flushes_total", "counter", "Batch flush calls, by result.");
    for (ms_batch *b = all_head; b; b = b->next) {
        ms_batch_stats s;
        ms_batch_get_stats(b, &s);
        ms_metrics_sample(out, "batch_flushes_total", (double)s.flushes_ok, "batch", b->name,
                          "result", "ok", NULL);
        ms_metrics_sample(out, "batch_flushes_total", (double)s.flushes_error, "batch", b->name,
                          "result", "error", NULL);
    }
    ms_metrics_family(out, "batch_items_total", "counter", "Items flushed successfully.");
    for (ms_batch *b = all_head; b; b = b->next) {
        ms_batch_stats s;
        ms_batch_get_stats(b, &s);
        ms_metrics_sample(out, "batch_items_total", (double)s.items_total, "batch", b->name, NULL);
    }
    ms_metrics_family(out, "batch_dropped_total", "counter",
                      "Items refused to their caller because the queue was full.");
    for (ms_batch *b = all_head; b; b = b->next) {
        ms_batch_stats s;
        ms_batch_get_stats(b, &s);
        ms_metrics_sample(out, "batch_dropped_total", (double)s.dropped_total, "batch", b->name,
                          NULL);
    }
    ms_metrics_family(out, "batch_queue_items", "gauge", "Items queued, awaiting a flush.");
    for (ms_batch *b = all_head; b; b = b->next) {
        ms_batch_stats s;
        ms_batch_get_stats(b, &s);
        ms_metrics_sample(out, "batch_queue_items", (double)s.queued, "batch", b->name, NULL);
    }
out:
    pthread_mutex_unlock(&all_mu);
}
