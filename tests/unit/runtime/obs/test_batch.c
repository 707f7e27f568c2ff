/* test_batch.c — batch.c: flush by size and by time, retry keeps order and loses nothing,
 * overflow refused and counted, pages queued all or none, stop flushes (or reports what it
 * could not), metrics. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/core/error.h"
#include "runtime/obs/batch.h"
#include "runtime/obs/metrics.h"
#include "runtime/core/banned.h"

enum { MAX_SEEN = 4096, DEADLINE_MS = 20000 };

/* What the flush callback saw, and how it should behave. */
typedef struct sink {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    intptr_t seen[MAX_SEEN]; /* items of successful flushes, in order */
    size_t nseen;
    size_t flushes, sizes[MAX_SEEN]; /* successful flushes and their sizes */
    int fail_next;                   /* fail this many calls */
    bool always_fail;
    bool is_gated; /* flush blocks while set */
    size_t released;
} sink;

static int sink_flush(void *arg, void *const *items, size_t n)
{
    sink *s = arg;
    pthread_mutex_lock(&s->mu);
    while (s->is_gated)
        pthread_cond_wait(&s->cond, &s->mu);
    int rc = 0;
    if (s->always_fail || s->fail_next > 0) {
        if (s->fail_next > 0)
            s->fail_next--;
        rc = MS_EIO;
    } else {
        for (size_t i = 0; i < n && s->nseen < MAX_SEEN; i++)
            s->seen[s->nseen++] = (intptr_t)items[i];
        s->sizes[s->flushes++] = n;
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void sink_release(void *arg, void *item)
{
    sink *s = arg;
    (void)item;
    pthread_mutex_lock(&s->mu);
    s->released++;
    pthread_mutex_unlock(&s->mu);
}

static void gate(sink *s, bool closed)
{
    pthread_mutex_lock(&s->mu);
    s->is_gated = closed;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* Polls until `n` items were flushed, with a generous deadline. */
static bool wait_seen(sink *s, size_t n)
{
    for (int waited = 0; waited < DEADLINE_MS; waited += 5) {
        pthread_mutex_lock(&s->mu);
        bool done = s->nseen >= n;
        pthread_mutex_unlock(&s->mu);
        if (done)
            return true;
        usleep(5000);
    }
    return false;
}

static int setup(void **state)
{
    sink *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    sink *s = *state;
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s);
    ms_metrics_reset();
    return 0;
}

static ms_batch_options opts(sink *s)
{
    return (ms_batch_options){.name = "t",
                              .max_items = 10,
                              .max_wait_ms = 600000, /* never, unless a test sets it */
                              .backoff_min_ms = 5,
                              .backoff_max_ms = 40,
                              .flush = sink_flush,
                              .release = sink_release,
                              .arg = s};
}

static void item_ids_in_order(sink *s, size_t n)
{
    assert_int_equal(s->nseen, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(s->seen[i], (intptr_t)(i + 1));
}

static void test_flush_by_size(void **state)
{
    sink *s = *state;
    ms_batch_options o = opts(s);
    ms_batch *b;
    assert_int_equal(ms_batch_start(&o, &b), 0);
    for (intptr_t i = 1; i <= 30; i++)
        assert_int_equal(ms_batch_enqueue(b, (void *)i), 0);
    /* max_wait is ten minutes: only the size can have flushed them */
    assert_true(wait_seen(s, 30));
    pthread_mutex_lock(&s->mu);
    for (size_t k = 0; k < s->flushes; k++)
        assert_true(s->sizes[k] >= 1 && s->sizes[k] <= 10);
    item_ids_in_order(s, 30);
    pthread_mutex_unlock(&s->mu);
    assert_int_equal(ms_batch_stop(b), 0);
    assert_int_equal(s->released, 30);
}

static void test_flush_by_time(void **state)
{
    sink *s = *state;
    ms_batch_options o = opts(s);
    o.max_items = 100;
    o.max_wait_ms = 30;
    ms_batch *b;
    assert_int_equal(ms_batch_start(&o, &b), 0);
    for (intptr_t i = 1; i <= 3; i++)
        assert_int_equal(ms_batch_enqueue(b, (void *)i), 0);
    /* three items never fill a batch of 100: the oldest item's age flushes them */
    assert_true(wait_seen(s, 3));
    pthread_mutex_lock(&s->mu);
    item_ids_in_order(s, 3);
    pthread_mutex_unlock(&s->mu);
    ms_batch_stats st;
    ms_batch_get_stats(b, &st);
    assert_int_equal(st.items_total, 3);
    assert_int_equal(st.queued, 0);
    assert_int_equal(ms_batch_stop(b), 0);
}

static void test_retry_keeps_order(void **state)
{
    sink *s = *state;
    s->fail_next = 3;
    ms_batch_options o = opts(s);
    o.max_items = 4;
    ms_batch *b;
    assert_int_equal(ms_batch_start(&o, &b), 0);
    /* a multiple of max_items: max_wait is ten minutes, so sizes alone flush them all */
    for (intptr_t i = 1; i <= 48; i++)
        assert_int_equal(ms_batch_enqueue(b, (void *)i), 0);
    assert_true(wait_seen(s, 48));
    pthread_mutex_lock(&s->mu);
    item_ids_in_order(s, 48); /* each once, in enqueue order, despite three failed flushes */
    pthread_mutex_unlock(&s->mu);
    ms_batch_stats st;
    ms_batch_get_stats(b, &st);
    assert_int_equal(st.flushes_error, 3);
    assert_int_equal(st.items_total, 48);
    assert_int_equal(st.dropped_total, 0);
    assert_int_equal(ms_batch_stop(b), 0);
    assert_int_equal(s->released, 48);
}

/* The value of the line "<series> <value>", or -1 when absent. */
static double value_of(ms_buf *out, const char *series)
{
    ms_buf_add(out, "", 1);
    out->n--;
    size_t n = strlen(series);
    for (const char *line = out->p; *line;) {
        const char *eol = strchr(line, '\n');
        if (!eol)
            eol = line + strlen(line);
        if ((size_t)(eol - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = *eol ? eol + 1 : eol;
    }
    return -1;
}

static void test_overflow_refused_and_counted(void **state)
{
    sink *s = *state;
    gate(s, true);
    ms_batch_options o = opts(s);
    o.max_items = 4;
    o.max_queued = 8;
    ms_batch *b;
    assert_int_equal(ms_batch_start(&o, &b), 0);
    for (intptr_t i = 1; i <= 8; i++)
        assert_int_equal(ms_batch_enqueue(b, (void *)i), 0);
    /* a flush under way still holds its items in the queue: eight fill it */
    assert_int_equal(ms_batch_enqueue(b, (void *)9), MS_EBUSY);
    assert_int_equal(ms_batch_enqueue(b, (void *)10), MS_EBUSY);
    ms_batch_stats st;
    ms_batch_get_stats(b, &st);
    assert_int_equal(st.dropped_total, 2);
    assert_int_equal(st.queued, 8);

    ms_buf out;
    ms_buf_init(&out, 1024);
    ms_batch_collect(&out, NULL);
    assert_true(value_of(&out, "batch_dropped_total{batch=\"t\"}") == 2);
    assert_true(value_of(&out, "batch_queue_items{batch=\"t\"}") == 8);
    assert_true(value_of(&out, "batch_flushes_total{batch=\"t\",result=\"error\"}") == 0);
    ms_buf_release(&out);

    gate(s, false);
    assert_true(wait_seen(s, 8));
    pthread_mutex_lock(&s->mu);
    item_ids_in_order(s, 8);
    pthread_mutex_unlock(&s->mu);
    assert_int_equal(ms_batch_stop(b), 0);
}

static void test_enqueue_many_is_all_or_none(void **state)
{
    sink *s = *state;
    gate(s, true);
    ms_batch_options o = opts(s);
    o.max_items = 4;
    o.max_queued = 10;
    ms_batch *b;
    assert_int_equal(ms_batch_start(&o, &b), 0);
    void *page[6];
    for (intptr_t i = 0; i < 6; i++)
        page[i] = (void *)(i + 1);
    assert_int_equal(ms_batch_enqueue_many(b, page, 6), 0);
    /* four more fit, six do not: none of them is queued, all six counted */
    assert_int_equal(ms_batch_enqueue_many(b, page, 6), MS_EBUSY);
    void *bad[2] = {(void *)7, NULL};
    assert_int_equal(ms_batch_enqueue_many(b, bad, 2), MS_EINVAL);
    assert_int_equal(ms_batch_enqueue_many(b, page, 0), 0);
    ms_batch_stats st;
    ms_batch_get_stats(b, &st);
    assert_int_equal(st.queued, 6);
    assert_int_equal(st.dropped_total, 6);
    for (intptr_t i = 0; i < 4; i++)
        page[i] = (void *)(i + 7);
    assert_int_equal(ms_batch_enqueue_many(b, page, 4), 0);
    gate(s, false);
    assert_true(wait_seen(s, 8)); /* two full batches; the last two wait for the stop */
    assert_int_equal(ms_batch_stop(b), 0);
    item_ids_in_order(s, 10);
    for (size_t i = 0; i < s->flushes; i++) /* pages are split at max_items, never above */
        assert_true(s->sizes[i] <= 4);
}

static void test_stop_flushes_queue(void **state)
{
    sink *s = *state;
    ms_batch_options o = opts(s);
    o.max_items = 100;
    ms_batch *b;
    assert_int_equal(ms_batch_start(&o, &b), 0);
    for (intptr_t i = 1; i <= 7; i++)
        assert_int_equal(ms_batch_enqueue(b, (void *)i), 0);
    /* neither size nor time is due: only stop flushes them */
    assert_int_equal(ms_batch_stop(b), 0);
    item_ids_in_order(s, 7);
    assert_int_equal(s->released, 7);
}

static void test_stop_reports_unflushed(void **state)
{
    sink *s = *state;
    s->always_fail = true;
    ms_batch_options o = opts(s);
    o.stop_timeout_ms = 100;
    ms_batch *b;
    assert_int_equal(ms_batch_start(&o, &b), 0);
    for (intptr_t i = 1; i <= 5; i++)
        assert_int_equal(ms_batch_enqueue(b, (void *)i), 0);
    assert_int_equal(ms_batch_stop(b), 5);
    assert_int_equal(s->nseen, 0);
    assert_int_equal(s->released, 5); /* left-overs are released, not leaked */
}

static void test_bad_options(void **state)
{
    sink *s = *state;
    ms_batch *b;
    ms_batch_options o = opts(s);
    o.flush = NULL;
    assert_int_equal(ms_batch_start(&o, &b), MS_EINVAL);
    o = opts(s);
    o.backoff_min_ms = 100;
    o.backoff_max_ms = 10;
    assert_int_equal(ms_batch_start(&o, &b), MS_EINVAL);
    o = opts(s);
    o.max_queued = -1;
    assert_int_equal(ms_batch_start(&o, &b), MS_EINVAL);
}

static void test_promtool_accepts_metrics(void **state)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        skip();
    sink *s = *state;
    ms_batch_options o = opts(s);
    ms_batch *b1, *b2;
    assert_int_equal(ms_batch_start(&o, &b1), 0);
    o.name = "second \"one\"";
    assert_int_equal(ms_batch_start(&o, &b2), 0);
    ms_metrics_register(ms_batch_collect, NULL);
    ms_buf out;
    ms_buf_init(&out, 4096);
    ms_metrics_render(&out);
    char path[] = "/tmp/ms-batch-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, out.p, out.n), (ssize_t)out.n);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    ms_buf_release(&out);
    assert_int_equal(ms_batch_stop(b1), 0);
    assert_int_equal(ms_batch_stop(b2), 0);
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_flush_by_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_by_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_keeps_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_refused_and_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enqueue_many_is_all_or_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_flushes_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_reports_unflushed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_promtool_accepts_metrics, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
