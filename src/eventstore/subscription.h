/*
 * subscription.h — catch-up subscriptions: a thread that hands every event after a checkpoint
 * to a subscriber, in position order and page by page — first the history, then live, woken by
 * this process's commits (ms_es_wait_committed) and polling for other processes'.
 *
 * The subscriber owns its checkpoint: `handle` stores the page's effects and the position of
 * its last event in one transaction of its own, so a crash never applies an event twice or
 * skips one; the subscription starts after what `load_checkpoint` returns. A page that fails
 * is retried (after 200 ms) until it succeeds or the subscription stops: events are never
 * skipped. Positions are the store's global positions (see eventstore.h).
 *
 * Threading: callbacks run on the subscription's thread; the other functions from any thread.
 */
#ifndef MS_ES_SUBSCRIPTION_H
#define MS_ES_SUBSCRIPTION_H

#include "eventstore/eventstore.h"

typedef struct ms_es_subscriber {
    const char *name; /* the thread's name and the logs' (at most 15 characters) */
    /* Where to start: the position of the last event already handled (0: from the start). */
    int (*load_checkpoint)(void *arg, int64_t *position);
    /* Applies a page (never empty) and stores its last position with it. 0 or an MS_E* code
     * (then the same page comes again). */
    int (*handle)(void *arg, const ms_es_page *page);
    /* Optional: the position has moved to `position` (readable through
     * ms_es_subscription_position): wake whoever waits for it. */
    void (*advanced)(void *arg, int64_t position);
    void *arg;
    int page_size; /* events per page (default 500) */
    int poll_ms;   /* longest sleep when caught up (default 100) */
    /* When caught up and woken by a commit, wait this long before reading (default 0): under
     * load one page then carries many commits, and a page's fixed costs (its transaction, its
     * query) are paid once for all of them, for at most this much more lag. */
    int linger_ms;
} ms_es_subscriber;

typedef struct ms_es_subscription ms_es_subscription;

/* Opens its own connection to the store's database `db` and starts the thread. `es` (may be
 * NULL) is this process's store, whose commits wake the subscription at once. */
int ms_es_subscribe(ms_es *es, const ms_db_config *db, const ms_es_subscriber *sub,
                    ms_es_subscription **out);
/* The position of the last event handled. */
int64_t ms_es_subscription_position(ms_es_subscription *s);
/* Stops after the page in hand, joins the thread, frees. NULL is fine. */
void ms_es_subscription_stop(ms_es_subscription *s);

#endif
