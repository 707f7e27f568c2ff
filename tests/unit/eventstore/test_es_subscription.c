/* test_es_subscription.c — catch-up subscriptions on a real SQLite store: history then live,
 * starting after a checkpoint, a failing page retried (never skipped), stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "eventstore/relay.h"
#include "eventstore/subscription.h"
#include "fixtures/sqlite_test_db.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/banned.h"

typedef struct fixture {
    sqlite_test_db tmp;
    ms_db_config cfg;
    ms_es *es;
} fixture;

typedef struct seen {
    uv_mutex_t mu;
    int64_t positions[256];
    int n, pages, fail_first; /* fail_first: refuse that many pages before taking any */
    int64_t start_at, advanced_to;
    ms_es *es;  /* when set: every event handled must be durable already */
    int beyond; /* events handed out beyond the store's committed (durable) position */
} seen;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (sqlite_test_db_make(&f->tmp, "/tmp/ms_test_sub_XXXXXX", "es.db") != 0)
        return -1;
    f->cfg = (ms_db_config){
        .backend = MS_DB_SQLITE, .sqlite_path = f->tmp.path, .busy_timeout_ms = 5000};
    ms_db_conn *c = NULL;
    if (ms_db_open(&f->cfg, false, &c) < 0 ||
        ms_db_migrate(c, ms_es_migrations, ms_es_nmigrations, NULL) < 0)
        return -1;
    ms_db_close(c);
    if (ms_es_open(&f->cfg, NULL, &f->es) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms_es_close(f->es);
    sqlite_test_db_remove(&f->tmp);
    free(f);
    return 0;
}

static void append_n(fixture *f, const char *stream, int n)
{
    for (int i = 0; i < n; i++) {
        ms_es_event e;
        memset(&e, 0, sizeof e);
        ms_uuid_new(e.event_id);
        e.type = "Happened";
        e.data = "{}";
        e.metadata = "{}";
        ms_es_append_req a = {
            .stream_id = stream, .expected_version = MS_ES_ANY, .events = &e, .nevents = 1};
        assert_int_equal(ms_es_append_wait(f->es, &a), 0);
    }
}

static int load(void *arg, int64_t *position)
{
    *position = ((seen *)arg)->start_at;
    return 0;
}

static int handle(void *arg, const ms_es_page *page)
{
    seen *s = arg;
    uv_mutex_lock(&s->mu);
    int rc = 0;
    if (s->fail_first > 0) {
        s->fail_first--;
        rc = MS_EDB;
    } else {
        int64_t durable = s->es ? ms_es_committed_position(s->es) : INT64_MAX;
        for (size_t i = 0; i < page->n; i++)
            s->beyond += page->events[i].position > durable;
        for (size_t i = 0; i < page->n && s->n < 256; i++)
            s->positions[s->n++] = page->events[i].position;
        s->pages++;
    }
    uv_mutex_unlock(&s->mu);
    return rc;
}

static void advanced(void *arg, int64_t position)
{
    seen *s = arg;
    uv_mutex_lock(&s->mu);
    s->advanced_to = position;
    uv_mutex_unlock(&s->mu);
}

static int count(seen *s)
{
    uv_mutex_lock(&s->mu);
    int n = s->n;
    uv_mutex_unlock(&s->mu);
    return n;
}

/* Waits up to `ms` for `n` events; returns how many came. */
static int wait_for_ms(seen *s, int n, int ms)
{
    for (int i = 0; i < ms / 10 && count(s) < n; i++)
        usleep(10000);
    return count(s);
}

/* Waits (a generous 30 s) for `n` events; returns how many came. */
static int wait_for(seen *s, int n)
{
    return wait_for_ms(s, n, 30000);
}

static ms_es_subscriber subscriber(seen *s, int page_size)
{
    return (ms_es_subscriber){.name = "test-sub",
                              .load_checkpoint = load,
                              .handle = handle,
                              .advanced = advanced,
                              .arg = s,
                              .page_size = page_size,
                              .poll_ms = 5000 /* live delivery must not need the poll */};
}

static void test_history_then_live_in_order(void **state)
{
    fixture *f = *state;
    seen s = {0};
    uv_mutex_init(&s.mu);
    append_n(f, "a-1", 7);
    ms_es_subscriber sub = subscriber(&s, 3);
    ms_es_subscription *sp = NULL;
    assert_int_equal(ms_es_subscribe(f->es, &f->cfg, &sub, &sp), 0);
    assert_int_equal(wait_for(&s, 7), 7);
    assert_true(s.pages >= 3); /* pages of at most 3 */
    append_n(f, "a-2", 5);     /* live: woken by the commits, not by the 5 s poll */
    assert_int_equal(wait_for_ms(&s, 12, 4900), 12);
    for (int i = 0; i < 12; i++)
        assert_int_equal(s.positions[i], i + 1);
    assert_int_equal(ms_es_subscription_position(sp), 12);
    assert_int_equal(s.advanced_to, 12);
    ms_es_subscription_stop(sp);
    uv_mutex_destroy(&s.mu);
}

static void test_starts_after_its_checkpoint(void **state)
{
    fixture *f = *state;
    seen s = {.start_at = 4};
    uv_mutex_init(&s.mu);
    append_n(f, "b-1", 6);
    ms_es_subscriber sub = subscriber(&s, 100);
    ms_es_subscription *sp = NULL;
    assert_int_equal(ms_es_subscribe(f->es, &f->cfg, &sub, &sp), 0);
    assert_int_equal(wait_for(&s, 2), 2);
    usleep(50000);
    assert_int_equal(count(&s), 2); /* nothing at or below the checkpoint */
    assert_int_equal(s.positions[0], 5);
    assert_int_equal(s.positions[1], 6);
    ms_es_subscription_stop(sp);
    uv_mutex_destroy(&s.mu);
}

static void test_failing_page_is_retried_not_skipped(void **state)
{
    fixture *f = *state;
    seen s = {.fail_first = 2};
    uv_mutex_init(&s.mu);
    append_n(f, "c-1", 4);
    ms_es_subscriber sub = subscriber(&s, 100);
    ms_es_subscription *sp = NULL;
    assert_int_equal(ms_es_subscribe(f->es, &f->cfg, &sub, &sp), 0);
    assert_int_equal(wait_for(&s, 4), 4); /* after two refusals, the same page once */
    assert_int_equal(s.fail_first, 0);
    assert_int_equal(s.pages, 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(s.positions[i], i + 1);
    ms_es_subscription_stop(sp);
    uv_mutex_destroy(&s.mu);
}

typedef struct appender {
    fixture *f;
    char stream[16];
    uv_thread_t thread;
} appender;

static void append_thread(void *arg)
{
    appender *a = arg;
    append_n(a->f, a->stream, 30);
}

/* Appends are visible to readers a moment before their fsync ends (writer.c): the
 * subscription must only ever hand out what is durable, whatever the interleaving. */
static void test_hands_out_only_durable_events(void **state)
{
    fixture *f = *state;
    seen s = {.es = f->es};
    uv_mutex_init(&s.mu);
    ms_es_subscriber sub = subscriber(&s, 7);
    ms_es_subscription *sp = NULL;
    assert_int_equal(ms_es_subscribe(f->es, &f->cfg, &sub, &sp), 0);
    appender a[8];
    for (int i = 0; i < 8; i++) {
        a[i].f = f;
        snprintf(a[i].stream, sizeof a[i].stream, "d-%d", i);
        assert_int_equal(uv_thread_create(&a[i].thread, append_thread, &a[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        uv_thread_join(&a[i].thread);
    assert_int_equal(wait_for(&s, 240), 240);
    assert_int_equal(s.beyond, 0);
    for (int i = 1; i < 240; i++) /* in order, no gap */
        assert_int_equal(s.positions[i], s.positions[i - 1] + 1);
    ms_es_subscription_stop(sp);
    uv_mutex_destroy(&s.mu);
}

/* The relay of a store that shows appends before they are durable publishes none early. */
typedef struct durable_check {
    ms_es *es;
    uv_mutex_t mu;
    int published, early;
} durable_check;

static int check_publish(void *self, const ms_outbox_message *msgs, size_t n)
{
    durable_check *d = self;
    /* one event and one outbox row per append, from position 1 and seq 1: seq = position */
    int64_t durable = ms_es_committed_position(d->es);
    uv_mutex_lock(&d->mu);
    for (size_t i = 0; i < n; i++)
        d->early += msgs[i].seq > durable;
    d->published += (int)n;
    uv_mutex_unlock(&d->mu);
    return 0;
}

static void append_with_outbox_thread(void *arg)
{
    appender *a = arg;
    for (int i = 0; i < 30; i++) {
        ms_es_event e;
        memset(&e, 0, sizeof e);
        ms_uuid_new(e.event_id);
        e.type = "Happened";
        e.data = "{}";
        ms_es_outbox_row o = {.aggregate_type = "thing",
                              .aggregate_id = a->stream,
                              .type = "Happened",
                              .payload = "{}"};
        ms_uuid_new(o.id);
        ms_es_append_req r = {.stream_id = a->stream,
                              .expected_version = MS_ES_ANY,
                              .events = &e,
                              .nevents = 1,
                              .outbox = &o,
                              .noutbox = 1};
        assert_int_equal(ms_es_append_wait(a->f->es, &r), 0);
    }
}

static void test_relay_publishes_only_durable_rows(void **state)
{
    fixture *f = *state;
    durable_check d = {.es = f->es};
    uv_mutex_init(&d.mu);
    ms_publisher pub = {.publish = check_publish, .self = &d, .name = "check"};
    ms_relay_options opt = {.service = "test", .es = f->es, .poll_ms = 5, .linger_ms = 1};
    ms_relay *r = NULL;
    assert_int_equal(ms_relay_start(&f->cfg, &pub, &opt, &r), 0);
    appender a[8];
    for (int i = 0; i < 8; i++) {
        a[i].f = f;
        snprintf(a[i].stream, sizeof a[i].stream, "e-%d", i);
        assert_int_equal(uv_thread_create(&a[i].thread, append_with_outbox_thread, &a[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        uv_thread_join(&a[i].thread);
    for (int i = 0; i < 3000; i++) { /* a generous 30 s */
        uv_mutex_lock(&d.mu);
        int done = d.published;
        uv_mutex_unlock(&d.mu);
        if (done >= 240)
            break;
        ms_relay_kick(r);
        usleep(10000);
    }
    ms_relay_stop(r);
    assert_int_equal(d.published, 240);
    assert_int_equal(d.early, 0);
    /* marked by the store's writer (ms_es_mark_published): every row, none left behind */
    ms_db_conn *c = NULL;
    ms_db_result *res = NULL;
    assert_int_equal(ms_db_open(&f->cfg, true, &c), 0);
    assert_int_equal(
        ms_db_exec(c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL", 0, NULL, &res), 0);
    assert_string_equal(ms_db_get(res, 0, 0), "0");
    ms_db_result_free(res);
    ms_db_close(c);
    uv_mutex_destroy(&d.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_history_then_live_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hands_out_only_durable_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_publishes_only_durable_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_starts_after_its_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_page_is_retried_not_skipped, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
