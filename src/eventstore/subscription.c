/* Catch-up subscriptions; see subscription.h. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventstore/subscription.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

enum { RETRY_MS = 200 };

struct ms_es_subscription {
    ms_es *es;
    ms_es_subscriber sub;
    char name[16];
    ms_db_conn *conn;
    uv_thread_t thread;
    int64_t position; /* atomic */
    bool stop;        /* atomic */
};

int64_t ms_es_subscription_position(ms_es_subscription *s)
{
    return __atomic_load_n(&s->position, __ATOMIC_ACQUIRE);
}

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void run(void *arg)
{
    ms_es_subscription *s = arg;
    pthread_setname_np(pthread_self(), s->name);
    while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        int64_t after = ms_es_subscription_position(s);
        ms_es_page page = {0};
        int rc = ms_es_read_all(s->conn, after, (size_t)s->sub.page_size, &page);
        /* On SQLite this process's appends are visible a moment before they are durable
         * (writer.c): what lies beyond the durable position waits for the next page. On
         * PostgreSQL what a read returns is committed, so durable, and may be another
         * process's: this process's position says nothing about it. */
        if (rc == 0 && s->es && ms_db_backend_of(s->conn) == MS_DB_SQLITE) {
            int64_t durable = ms_es_committed_position(s->es);
            while (page.n > 0 && page.events[page.n - 1].position > durable)
                page.n--;
        }
        if (rc == 0 && page.n > 0 && (rc = s->sub.handle(s->sub.arg, &page)) == 0) {
            int64_t last = page.events[page.n - 1].position;
            __atomic_store_n(&s->position, last, __ATOMIC_RELEASE);
            if (s->sub.advanced)
                s->sub.advanced(s->sub.arg, last);
        }
        size_t n = page.n;
        ms_es_page_release(&page);
        if (rc < 0) {
            ms_log(MS_LOG_ERROR, "subscription failed a page; retrying", "subscription", s->name,
                   "error", ms_strerror(rc), NULL);
            nap(RETRY_MS);
        } else if (n < (size_t)s->sub.page_size) {
            /* caught up (a short page reads the end): a commit of this process wakes us;
             * others are found by polling */
            int64_t at = ms_es_subscription_position(s);
            if (!s->es)
                nap(s->sub.poll_ms);
            else if (ms_es_wait_committed(s->es, at + 1, s->sub.poll_ms) == 0 &&
                     s->sub.linger_ms > 0)
                nap(s->sub.linger_ms);
        }
    }
}

int ms_es_subscribe(ms_es *es, const ms_db_config *db, const ms_es_subscriber *sub,
                    ms_es_subscription **out)
{
    *out = NULL;
    if (!sub->handle || !sub->load_checkpoint)
        return MS_EINVAL;
    ms_es_subscription *s = ms_xcalloc(1, sizeof *s);
    s->es = es;
    s->sub = *sub;
    if (s->sub.page_size <= 0)
        s->sub.page_size = 500;
    if (s->sub.poll_ms <= 0)
        s->sub.poll_ms = 100;
    if (s->sub.linger_ms < 0)
        s->sub.linger_ms = 0;
    snprintf(s->name, sizeof s->name, "%s", sub->name ? sub->name : "subscription");
    int rc = ms_db_open(db, db->backend == MS_DB_SQLITE, &s->conn);
    int64_t at = 0;
    if (rc == 0)
        rc = sub->load_checkpoint(sub->arg, &at);
    if (rc < 0) {
        ms_db_close(s->conn);
        free(s);
        return rc;
    }
    s->position = at;
    if (uv_thread_create(&s->thread, run, s) != 0)
        MS_BUG("cannot start a subscription thread");
    *out = s;
    return 0;
}

void ms_es_subscription_stop(ms_es_subscription *s)
{
    if (!s)
        return;
    __atomic_store_n(&s->stop, true, __ATOMIC_RELEASE);
    uv_thread_join(&s->thread);
    ms_db_close(s->conn);
    free(s);
}
