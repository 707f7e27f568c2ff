/*
 * test_eventstore.c — the event store (eventstore.h) against real SQLite in a temporary
 * directory and, when MS_TEST_PG_URL names a PostgreSQL superuser URL, a real PostgreSQL (a
 * fresh database per run, dropped at the end; tests/lib/pg.sh starts a throwaway server).
 * Every case runs on both backends, except the crash test (SQLite: kill -9 of a writing
 * process) and the late-commit reader (PostgreSQL: out-of-order commit visibility).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "eventstore/eventstore.h"
#include "eventstore/eventstore_internal.h"
#include "fixtures/pg_test_db.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

typedef struct fixture {
    bool is_ready;
    sqlite_test_db tmp;
    ms_db_config cfg;
    ms_es *es;
    ms_db_conn *c; /* for reads and checks */
} fixture;

/* ---- helpers ---- */

static ms_es *open_es(const ms_db_config *cfg, const ms_es_options *opt)
{
    ms_es *es = NULL;
    int rc = ms_es_open(cfg, opt, &es);
    if (rc != 0)
        fail_msg("ms_es_open: %s", ms_errname(rc));
    return es;
}

static void new_event(ms_es_event *e, const char *type, const char *data)
{
    memset(e, 0, sizeof *e);
    ms_uuid_new(e->event_id);
    e->type = type;
    e->data = data;
}

static void new_outbox(ms_es_outbox_row *o, const char *aggregate_id, const char *type)
{
    memset(o, 0, sizeof *o);
    ms_uuid_new(o->id);
    o->aggregate_type = "order";
    o->aggregate_id = aggregate_id;
    o->type = type;
    o->payload = "{\"k\":1}";
}

static ms_es_append_req req(const char *stream, int64_t expected, const ms_es_event *events,
                            size_t n)
{
    return (ms_es_append_req){
        .stream_id = stream, .expected_version = expected, .events = events, .nevents = n};
}

/* Holds the store's write lock from another connection, so queued appends pile up. */
static ms_db_conn *hold_writers(const ms_db_config *cfg)
{
    ms_db_conn *c = open_conn(cfg);
    assert_int_equal(ms_db_begin(c), 0);
    if (cfg->backend == MS_DB_POSTGRES) /* SQLite: BEGIN IMMEDIATE took the write lock */
        x(c, "SELECT pg_advisory_xact_lock(" MS_ES__APPEND_LOCK_KEY ")");
    return c;
}

static void release_writers(ms_db_conn *c)
{
    assert_int_equal(ms_db_rollback(c), 0);
    ms_db_close(c);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Polls until the store's queue holds exactly `n` appends (a generous deadline). After an
 * ms_es_append (it queues before it returns), 0 means the writer has taken it into a batch. */
static void wait_queued(ms_es *es, size_t n)
{
    for (int i = 0; i < 30000; i++) {
        uv_mutex_lock(&es->mu);
        size_t queued = es->queued;
        uv_mutex_unlock(&es->mu);
        if (queued == n)
            return;
        sleep_ms(1);
    }
    fail_msg("the store's queue never held %zu appends", n);
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
    return pg_test_db_create("ms_es");
}

static int group_teardown(void **state)
{
    return pg_test_db_drop();
}

static int setup(void **state)
{
    ms_db_backend backend = *(ms_db_backend *)*state;
    fixture *f = calloc(1, sizeof *f);
    f->cfg.backend = backend;
    f->cfg.busy_timeout_ms = 10000;
    *state = f;
    int rc = test_db_fresh(&f->cfg, &f->tmp, "/tmp/ms_test_es_XXXXXX", "es.db", &f->c);
    if (rc <= 0)
        return rc;
    migrate(f->c, ms_es_migrations, ms_es_nmigrations);
    f->es = open_es(&f->cfg, NULL);
    f->is_ready = true;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms_es_close(f->es);
    ms_db_close(f->c);
    sqlite_test_db_remove(&f->tmp);
    free(f);
    return 0;
}

static fixture *ready(void **state)
{
    fixture *f = *state;
    if (!f->is_ready)
        skip(); /* PostgreSQL case without MS_TEST_PG_URL */
    return f;
}

/* ---- cases ---- */

static void test_append_read_back(void **state)
{
    fixture *f = ready(state);
    ms_es_event ev[3];
    new_event(&ev[0], "OrderCreated", "{\"total\":100}");
    new_event(&ev[1], "OrderPaid", "{\"paid\":true}");
    new_event(&ev[2], "OrderShipped", "{}");
    ev[1].metadata = "{\"trace\":\"abc\"}";
    ms_es_append_req a = req("order-1", MS_ES_NO_STREAM, ev, 3);
    assert_int_equal(ms_es_append_wait(f->es, &a), 0);
    assert_int_equal(a.version, 3);
    assert_true(a.first_position > 0);
    assert_int_equal(a.last_position, a.first_position + 2);
    assert_int_equal(ms_es_committed_position(f->es), a.last_position);

    ms_es_page page;
    assert_int_equal(ms_es_read_stream(f->c, "order-1", 1, 100, &page), 0);
    assert_int_equal(page.n, 3);
    for (size_t i = 0; i < 3; i++) {
        const ms_es_event *e = &page.events[i];
        assert_string_equal(e->event_id, ev[i].event_id);
        assert_string_equal(e->stream_id, "order-1");
        assert_string_equal(e->type, ev[i].type);
        assert_string_equal(e->data, ev[i].data);
        assert_int_equal(e->version, (int64_t)i + 1);
        assert_int_equal(e->position, a.first_position + (int64_t)i);
        assert_int_equal(strlen(e->recorded_at), MS_TIME_LEN);
    }
    assert_string_equal(page.events[0].metadata, "{}");
    assert_string_equal(page.events[1].metadata, "{\"trace\":\"abc\"}");
    ms_es_page_release(&page);

    assert_int_equal(ms_es_read_stream(f->c, "order-1", 2, 1, &page), 0);
    assert_int_equal(page.n, 1);
    assert_int_equal(page.events[0].version, 2);
    ms_es_page_release(&page);
    assert_int_equal(ms_es_read_stream(f->c, "nobody", 1, 10, &page), 0);
    assert_int_equal(page.n, 0);
    ms_es_page_release(&page);

    int64_t v = -1;
    assert_int_equal(ms_es_stream_version(f->c, "order-1", &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(ms_es_stream_version(f->c, "nobody", &v), 0);
    assert_int_equal(v, 0);

    assert_int_equal(ms_es_read_all(f->c, 0, 10, &page), 0);
    assert_int_equal(page.n, 3);
    assert_int_equal(page.events[2].position, a.last_position);
    ms_es_page_release(&page);
    assert_int_equal(ms_es_read_all(f->c, a.last_position, 10, &page), 0);
    assert_int_equal(page.n, 0);
    ms_es_page_release(&page);

    ms_es_stats st;
    ms_es_get_stats(f->es, &st);
    assert_int_equal(st.appends_total, 1);
    assert_int_equal(st.events_total, 3);
    assert_int_equal(st.batches_total, 1);
    assert_int_equal(st.batch_size_hist[0], 1);
    assert_int_equal(st.committed_position, a.last_position);
    assert_true(st.append_seconds_sum > 0);

    /* A reopened store knows what is committed. */
    ms_es_close(f->es);
    f->es = open_es(&f->cfg, NULL);
    assert_int_equal(ms_es_committed_position(f->es), a.last_position);
}

static int append1(ms_es *es, const char *stream, int64_t expected, ms_es_append_req *out)
{
    ms_es_event e;
    new_event(&e, "E", "{}");
    *out = req(stream, expected, &e, 1);
    return ms_es_append_wait(es, out);
}

static void test_expected_versions(void **state)
{
    fixture *f = ready(state);
    ms_es_append_req a;
    assert_int_equal(append1(f->es, "s", MS_ES_STREAM_EXISTS, &a), MS_ECONFLICT);
    assert_int_equal(a.version, 0);
    assert_int_equal(a.first_position, 0);
    assert_int_equal(append1(f->es, "s", 3, &a), MS_ECONFLICT);
    assert_int_equal(append1(f->es, "s", MS_ES_NO_STREAM, &a), 0);
    assert_int_equal(a.version, 1);
    assert_int_equal(append1(f->es, "s", MS_ES_NO_STREAM, &a), MS_ECONFLICT);
    assert_int_equal(a.version, 1); /* where the stream is */
    assert_int_equal(append1(f->es, "s", 0, &a), MS_ECONFLICT);
    assert_int_equal(append1(f->es, "s", MS_ES_STREAM_EXISTS, &a), 0);
    assert_int_equal(a.version, 2);
    assert_int_equal(append1(f->es, "s", 2, &a), 0);
    assert_int_equal(a.version, 3);
    assert_int_equal(append1(f->es, "s", 2, &a), MS_ECONFLICT);
    assert_int_equal(append1(f->es, "s", 4, &a), MS_ECONFLICT);
    assert_int_equal(append1(f->es, "s", MS_ES_ANY, &a), 0);
    assert_int_equal(a.version, 4);
    assert_int_equal(append1(f->es, "t", MS_ES_ANY, &a), 0);
    assert_int_equal(a.version, 1);
    assert_int_equal(append1(f->es, "u", 0, &a), 0); /* exact 0: a new stream */
    assert_int_equal(a.version, 1);

    /* Malformed requests never reach the writer. */
    assert_int_equal(append1(f->es, "s", -4, &a), MS_EINVAL);
    assert_int_equal(append1(f->es, "", MS_ES_ANY, &a), MS_EINVAL);
    ms_es_event e[2];
    new_event(&e[0], "E", "{}");
    a = req("s", MS_ES_ANY, e, 0);
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_EINVAL);
    memcpy(e[0].event_id, "not-a-uuid", 11);
    a = req("s", MS_ES_ANY, e, 1);
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_EINVAL);
    new_event(&e[0], "E", "{}");
    e[1] = e[0]; /* the same id twice */
    a = req("s", MS_ES_ANY, e, 2);
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_EINVAL);
    new_event(&e[1], NULL, "{}");
    a = req("s", MS_ES_ANY, e, 2);
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_EINVAL);

    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), 6);
    ms_es_stats st;
    ms_es_get_stats(f->es, &st);
    assert_int_equal(st.conflicts_total, 6);
    assert_int_equal(st.appends_total, 12); /* refused requests are not appends */
}

static void test_conflict_writes_nothing(void **state)
{
    fixture *f = ready(state);
    ms_es_append_req a;
    assert_int_equal(append1(f->es, "order-9", MS_ES_NO_STREAM, &a), 0);
    long long events = scalar(f->c, "SELECT COUNT(*) FROM events");
    long long outbox = scalar(f->c, "SELECT COUNT(*) FROM outbox");

    ms_es_event ev[3];
    ms_es_outbox_row ob[2];
    for (int i = 0; i < 3; i++)
        new_event(&ev[i], "E", "{}");
    new_outbox(&ob[0], "order-9", "order.updated");
    new_outbox(&ob[1], "order-9", "order.paid");
    a = req("order-9", 0, ev, 3);
    a.outbox = ob;
    a.noutbox = 2;
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_ECONFLICT);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), events);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox"), outbox);

    /* A conflict found only by a failing statement (the second event's id is stored) writes
     * nothing either: the batch is rolled back and run again without it. */
    ms_es_event reused[2];
    new_event(&reused[0], "E", "{}");
    ms_es_page page;
    assert_int_equal(ms_es_read_stream(f->c, "order-9", 1, 1, &page), 0);
    new_event(&reused[1], "E", "{}");
    memcpy(reused[1].event_id, page.events[0].event_id, sizeof reused[1].event_id);
    ms_es_page_release(&page);
    a = req("order-10", MS_ES_ANY, reused, 2);
    a.outbox = ob;
    a.noutbox = 1;
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_ECONFLICT);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), events);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox"), outbox);
    int64_t v = -1;
    assert_int_equal(ms_es_stream_version(f->c, "order-10", &v), 0);
    assert_int_equal(v, 0);
}

static void test_idempotent_reappend(void **state)
{
    fixture *f = ready(state);
    ms_es_event ev[2];
    ms_es_outbox_row ob;
    new_event(&ev[0], "OrderCreated", "{}");
    new_event(&ev[1], "OrderConfirmed", "{}");
    new_outbox(&ob, "order-2", "order.created");
    ms_es_append_req a = req("order-2", MS_ES_NO_STREAM, ev, 2);
    a.outbox = &ob;
    a.noutbox = 1;
    assert_int_equal(ms_es_append_wait(f->es, &a), 0);
    assert_false(a.is_replay);
    ms_es_append_req later;
    assert_int_equal(append1(f->es, "order-2", 2, &later), 0); /* the stream moves on */

    long long events = scalar(f->c, "SELECT COUNT(*) FROM events");
    long long outbox = scalar(f->c, "SELECT COUNT(*) FROM outbox");
    ms_es_stats before;
    ms_es_get_stats(f->es, &before);
    const int64_t retry_expected[] = {MS_ES_NO_STREAM, 0, MS_ES_ANY};
    for (int i = 0; i < 3; i++) {
        ms_es_append_req r = req("order-2", retry_expected[i], ev, 2);
        r.outbox = &ob;
        r.noutbox = 1;
        assert_int_equal(ms_es_append_wait(f->es, &r), 0);
        assert_int_equal(r.first_position, a.first_position);
        assert_int_equal(r.last_position, a.last_position);
        assert_int_equal(r.version, 2); /* the version this append gave the stream */
        assert_true(r.is_replay);
    }
    /* The same ids in upper case are the same ids. */
    ms_es_event upper[2] = {ev[0], ev[1]};
    for (int k = 0; k < 2; k++)
        for (char *p = upper[k].event_id; *p; p++)
            if (*p >= 'a' && *p <= 'f')
                *p = (char)(*p - 'a' + 'A');
    ms_es_append_req r = req("order-2", MS_ES_NO_STREAM, upper, 2);
    assert_int_equal(ms_es_append_wait(f->es, &r), 0);
    assert_int_equal(r.first_position, a.first_position);

    /* Not a retry of that append: another expected version, a subset in another order, a
     * different set. */
    r = req("order-2", 1, ev, 2);
    assert_int_equal(ms_es_append_wait(f->es, &r), MS_ECONFLICT);
    r = req("order-2", MS_ES_STREAM_EXISTS, ev, 2);
    assert_int_equal(ms_es_append_wait(f->es, &r), MS_ECONFLICT);
    ms_es_event swapped[2] = {ev[1], ev[0]};
    r = req("order-2", MS_ES_ANY, swapped, 2);
    assert_int_equal(ms_es_append_wait(f->es, &r), MS_ECONFLICT);
    ms_es_event extra[3] = {ev[0], ev[1]};
    new_event(&extra[2], "E", "{}");
    r = req("order-2", MS_ES_NO_STREAM, extra, 3);
    assert_int_equal(ms_es_append_wait(f->es, &r), MS_ECONFLICT);

    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), events);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox"), outbox);
    ms_es_stats after;
    ms_es_get_stats(f->es, &after);
    assert_int_equal(after.events_total, before.events_total);
    assert_int_equal(after.committed_position, before.committed_position);
}

typedef struct batch_answers {
    int n;
    int rc[8];
} batch_answers;

static void on_batch_answer(int rc, ms_es_append_req *a, void *arg)
{
    batch_answers *ans = arg;
    ans->rc[ans->n++] = rc;
}

static void test_event_id_reuse_elsewhere(void **state)
{
    fixture *f = ready(state);
    ms_es_event ev;
    new_event(&ev, "E", "{}");
    ms_es_append_req a = req("stream-a", MS_ES_ANY, &ev, 1);
    assert_int_equal(ms_es_append_wait(f->es, &a), 0);
    a = req("stream-b", MS_ES_ANY, &ev, 1); /* another stream */
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_ECONFLICT);
    ms_es_append_req other;
    assert_int_equal(append1(f->es, "stream-a", 1, &other), 0);
    a = req("stream-a", 2, &ev, 1); /* same stream, another version */
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_ECONFLICT);
    ms_es_event two[2];
    new_event(&two[0], "E", "{}");
    two[1] = ev; /* stored, but not first: found by the failing INSERT */
    a = req("stream-a", 2, two, 2);
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_ECONFLICT);

    /* An outbox id already used sinks its own append, not the others of its batch. */
    ms_es_outbox_row ob;
    new_outbox(&ob, "stream-c", "x");
    ms_es_event e1;
    new_event(&e1, "E", "{}");
    a = req("stream-c", MS_ES_ANY, &e1, 1);
    a.outbox = &ob;
    a.noutbox = 1;
    assert_int_equal(ms_es_append_wait(f->es, &a), 0);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), 3);

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    ms_es_port *port;
    assert_int_equal(ms_es_port_open(f->es, &loop, &port), 0);
    ms_es_event e[6];
    ms_es_append_req b[5];
    batch_answers ans = {0};
    ms_db_conn *holder = hold_writers(&f->cfg);
    for (int i = 0; i < 5; i++) {
        new_event(&e[i], "E", "{}");
        b[i] = req(i == 0 ? "first" : "stream-d", MS_ES_ANY, &e[i], 1);
        if (i == 2) { /* reuses the outbox id: found by a failing INSERT */
            b[i].outbox = &ob;
            b[i].noutbox = 1;
        }
        if (i == 4) { /* its second event reuses an id: found by a failing INSERT */
            e[5] = e1;
            b[i].events = &e[4];
            b[i].nevents = 2;
        }
        ms_es_append(port, &b[i], on_batch_answer, &ans);
        if (i == 0)
            wait_queued(f->es, 0); /* the writer takes it and waits for the lock */
    }
    wait_queued(f->es, 4);
    release_writers(holder);
    ms_es_port_close(port, NULL, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(ans.n, 5);
    const int want[] = {0, 0, MS_ECONFLICT, 0, MS_ECONFLICT};
    for (int i = 0; i < 5; i++)
        assert_int_equal(ans.rc[i], want[i]);
    assert_int_equal(b[1].version, 1);
    assert_int_equal(b[3].version, 2); /* the rerun of the batch kept b[1] */
    assert_int_equal(b[4].version, 0);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), 6);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox"), 1);
    ms_es_stats st;
    ms_es_get_stats(f->es, &st);
    assert_true(st.batch_size_hist[2] >= 1); /* the four went in one batch */
}

/* ---- one big batch: checks in memory, multi-row writes ---- */

typedef struct mixed_answer {
    int rc;
    bool is_done;
} mixed_answer;

static void on_mixed_answer(int rc, ms_es_append_req *a, void *arg)
{
    mixed_answer *ans = arg;
    ans->rc = rc;
    ans->is_done = true;
}

enum { MIXED_SAME = 150 };

static void test_batch_mixed(void **state)
{
    fixture *f = ready(state);
    ms_es_event pre;
    new_event(&pre, "Pre", "{}");
    ms_es_append_req pre_req = req("pre", MS_ES_NO_STREAM, &pre, 1);
    assert_int_equal(ms_es_append_wait(f->es, &pre_req), 0);

    enum { N = MIXED_SAME + 6 };
    ms_es_event *ev = calloc(N + 8, sizeof *ev);
    ms_es_append_req *a = calloc(N, sizeof *a);
    mixed_answer *ans = calloc(N, sizeof *ans);
    ms_es_outbox_row ob[2];
    new_outbox(&ob[0], "multi", "a");
    new_outbox(&ob[1], "multi", "b");
    const char *weird = "we\"ird\\,{x} 'y' \xc3\xa9";
    const char *weird_data = "{\"s\":\"q\\\"b\\\\s,{}\",\"u\":\"\xc3\xa9\"}";
    size_t ne = 0;
    /* 0..149: one stream, each with the exact expected version */
    for (int i = 0; i < MIXED_SAME; i++) {
        new_event(&ev[ne], "Same", "{\"i\":1}");
        a[i] = req("same", i == 0 ? MS_ES_NO_STREAM : i, &ev[ne++], 1);
    }
    int k = MIXED_SAME;
    /* a stale expected version: fails alone, told where the stream is */
    new_event(&ev[ne], "Stale", "{}");
    a[k++] = req("same", 5, &ev[ne++], 1);
    /* a retry of an append stored before the batch */
    a[k++] = req("pre", MS_ES_NO_STREAM, &pre, 1);
    /* a retry of an append earlier in this batch (the 11th of "same") */
    a[k++] = req("same", 10, &ev[10], 1);
    /* text that needs quoting in any array or list syntax */
    new_event(&ev[ne], "Weird", weird_data);
    a[k++] = req(weird, MS_ES_ANY, &ev[ne++], 1);
    /* several events and outbox rows */
    for (int i = 0; i < 3; i++)
        new_event(&ev[ne + (size_t)i], "Multi", "{}");
    a[k] = req("multi", MS_ES_NO_STREAM, &ev[ne], 3);
    a[k].outbox = ob;
    a[k++].noutbox = 2;
    ne += 3;
    /* a conflict after a successful append of the same stream in this batch */
    new_event(&ev[ne], "Late", "{}");
    a[k++] = req("multi", MS_ES_NO_STREAM, &ev[ne++], 1);
    assert_int_equal(k, N);

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    ms_es_port *port;
    assert_int_equal(ms_es_port_open(f->es, &loop, &port), 0);
    ms_es_event first;
    new_event(&first, "First", "{}");
    ms_es_append_req first_req = req("first", MS_ES_ANY, &first, 1);
    mixed_answer first_ans = {0};
    ms_db_conn *holder = hold_writers(&f->cfg);
    ms_es_append(port, &first_req, on_mixed_answer, &first_ans);
    wait_queued(f->es, 0); /* the writer takes it and waits for the lock */
    for (int i = 0; i < N; i++)
        ms_es_append(port, &a[i], on_mixed_answer, &ans[i]);
    wait_queued(f->es, N);
    release_writers(holder);
    ms_es_port_close(port, NULL, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(first_ans.rc, 0);

    int64_t last = 0;
    for (int i = 0; i < MIXED_SAME; i++) {
        assert_true(ans[i].is_done);
        assert_int_equal(ans[i].rc, 0);
        assert_false(a[i].is_replay);
        assert_int_equal(a[i].version, i + 1);
        assert_true(a[i].first_position > last);
        assert_int_equal(a[i].first_position, a[i].last_position);
        last = a[i].first_position;
    }
    k = MIXED_SAME;
    assert_int_equal(ans[k].rc, MS_ECONFLICT); /* stale */
    assert_int_equal(a[k].version, MIXED_SAME);
    assert_int_equal(a[k].first_position, 0);
    k++;
    assert_int_equal(ans[k].rc, 0); /* retry of "pre" */
    assert_true(a[k].is_replay);
    assert_int_equal(a[k].first_position, pre_req.first_position);
    assert_int_equal(a[k].version, 1);
    k++;
    assert_int_equal(ans[k].rc, 0); /* retry within the batch */
    assert_true(a[k].is_replay);
    assert_int_equal(a[k].first_position, a[10].first_position);
    assert_int_equal(a[k].version, 11);
    k++;
    assert_int_equal(ans[k].rc, 0); /* weird */
    assert_int_equal(a[k].version, 1);
    k++;
    assert_int_equal(ans[k].rc, 0); /* multi */
    assert_int_equal(a[k].version, 3);
    assert_int_equal(a[k].last_position - a[k].first_position, 2);
    assert_true(a[k].first_position > last);
    k++;
    assert_int_equal(ans[k].rc, MS_ECONFLICT); /* late */
    assert_int_equal(a[k].version, 3);

    ms_es_stats st;
    ms_es_get_stats(f->es, &st);
    assert_true(st.batch_size_hist[7] >= 1); /* they went in one batch */

    ms_es_page page;
    assert_int_equal(ms_es_read_stream(f->c, "same", 1, 1000, &page), 0);
    assert_int_equal(page.n, MIXED_SAME);
    for (size_t i = 0; i < page.n; i++) {
        assert_int_equal(page.events[i].version, (int64_t)i + 1);
        assert_string_equal(page.events[i].event_id, ev[i].event_id);
        assert_int_equal(page.events[i].position, a[i].first_position);
        assert_string_equal(page.events[i].data, "{\"i\":1}");
    }
    ms_es_page_release(&page);
    assert_int_equal(ms_es_read_stream(f->c, weird, 1, 10, &page), 0);
    assert_int_equal(page.n, 1);
    assert_string_equal(page.events[0].data, weird_data);
    assert_string_equal(page.events[0].stream_id, weird);
    ms_es_page_release(&page);
    assert_int_equal(ms_es_read_stream(f->c, "multi", 1, 10, &page), 0);
    assert_int_equal(page.n, 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(page.events[i].position, a[MIXED_SAME + 4].first_position + (int64_t)i);
    ms_es_page_release(&page);
    /* pre, first, same, weird, multi */
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), 1 + 1 + MIXED_SAME + 1 + 3);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox"), 2);
    free(ev);
    free(a);
    free(ans);
}

/* A batch rolled back (an append's statement failed) and run again: what the writer learnt of
 * stream versions in the undone transaction must not survive it (SQLite's version cache). */
static void test_dirty_batch_forgets_versions(void **state)
{
    fixture *f = ready(state);
    ms_es_outbox_row taken;
    new_outbox(&taken, "t", "T");
    ms_es_event e0, e1, e2, e3;
    new_event(&e0, "Pre", "{}");
    ms_es_append_req pre = req("pre", MS_ES_ANY, &e0, 1);
    pre.outbox = &taken;
    pre.noutbox = 1;
    assert_int_equal(ms_es_append_wait(f->es, &pre), 0);

    new_event(&e1, "A", "{}");
    new_event(&e2, "B", "{}");
    new_event(&e3, "A", "{}");
    ms_es_append_req a[3] = {req("x", MS_ES_ANY, &e1, 1), req("y", MS_ES_ANY, &e2, 1),
                             req("x", MS_ES_ANY, &e3, 1)};
    a[1].outbox = &taken; /* an outbox id stored already: its INSERT fails */
    a[1].noutbox = 1;
    mixed_answer ans[3] = {{0}};
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    ms_es_port *port;
    assert_int_equal(ms_es_port_open(f->es, &loop, &port), 0);
    ms_db_conn *holder = hold_writers(&f->cfg);
    for (int i = 0; i < 3; i++)
        ms_es_append(port, &a[i], on_mixed_answer, &ans[i]);
    sleep_ms(50);
    release_writers(holder);
    ms_es_port_close(port, NULL, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(ans[0].rc, 0);
    assert_int_equal(a[0].version, 1);
    assert_int_equal(ans[1].rc, MS_ECONFLICT);
    assert_int_equal(ans[2].rc, 0);
    assert_int_equal(a[2].version, 2);
    ms_es_page page;
    assert_int_equal(ms_es_read_stream(f->c, "x", 1, 10, &page), 0);
    assert_int_equal(page.n, 2);
    assert_int_equal(page.events[0].version, 1);
    assert_int_equal(page.events[1].version, 2);
    ms_es_page_release(&page);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events WHERE stream_id = 'y'"), 0);
}

/* An event written by another connection, behind the store's back. */
static void write_behind(fixture *f, const char *stream, const char *version)
{
    char id[MS_UUID_LEN + 1];
    ms_uuid_new(id);
    const char *params[] = {id, stream, version};
    assert_int_equal(
        ms_db_exec(f->c,
                   "INSERT INTO events (event_id, stream_id, version, type, data, "
                   "recorded_at) VALUES ($1, $2, CAST($3 AS BIGINT), 'E', '{}', 'now')",
                   3, params, NULL),
        0);
}

/* Another writer (another process, a tool) appends to a stream behind the store's back: the
 * store's next append to it sees the stream as it is, not as the store last wrote it. */
static void test_other_writer_seen(void **state)
{
    fixture *f = ready(state);
    ms_es_append_req a;
    assert_int_equal(append1(f->es, "s", MS_ES_NO_STREAM, &a), 0);
    assert_int_equal(a.version, 1);
    write_behind(f, "s", "2");
    assert_int_equal(append1(f->es, "s", 1, &a), MS_ECONFLICT);
    assert_int_equal(a.version, 2);
    assert_int_equal(append1(f->es, "s", MS_ES_ANY, &a), 0);
    assert_int_equal(a.version, 3);
    assert_int_equal(append1(f->es, "s", 3, &a), 0);
    assert_int_equal(a.version, 4);
    assert_int_equal(scalar(f->c, "SELECT MAX(version) FROM events WHERE stream_id = 's'"), 4);
    /* Taken versions are caught by the INSERT anyway; a stream emptied (a tool resetting a
     * store) is seen because another connection's commit makes the store forget what it knew. */
    x(f->c, "DELETE FROM events WHERE stream_id = 's'");
    assert_int_equal(append1(f->es, "s", MS_ES_ANY, &a), 0);
    assert_int_equal(a.version, 1);
}

/* A new stream's append goes straight to its INSERT (no probe), even when the store knows
 * nothing of the stream: the constraints still turn away a stream that has events (written
 * by another connection here, so the store's cache has never seen it) and recognise a retry,
 * writing nothing either way. */
static void test_new_stream_append_without_probe(void **state)
{
    fixture *f = ready(state);
    write_behind(f, "elsewhere", "1");
    ms_es_append_req a;
    const int64_t as_new[] = {MS_ES_NO_STREAM, 0};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(append1(f->es, "elsewhere", as_new[i], &a), MS_ECONFLICT);
        assert_int_equal(a.version, 1);
        assert_int_equal(a.first_position, 0);
    }
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), 1);

    /* a retry of a stored first event under another store (a restart: nothing cached) */
    ms_es_event ev;
    new_event(&ev, "OrderCreated", "{}");
    a = req("fresh", MS_ES_NO_STREAM, &ev, 1);
    assert_int_equal(ms_es_append_wait(f->es, &a), 0);
    assert_false(a.is_replay);
    ms_es_close(f->es);
    f->es = open_es(&f->cfg, NULL);
    ms_es_append_req r = req("fresh", MS_ES_NO_STREAM, &ev, 1);
    assert_int_equal(ms_es_append_wait(f->es, &r), 0);
    assert_true(r.is_replay);
    assert_int_equal(r.first_position, a.first_position);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), 2);
}

typedef struct each_seen {
    ms_es_event ev[8];
    char strs[8][4][64]; /* copies: the event's strings die with the call */
    size_t n, stop_at;
} each_seen;

static int on_each(const ms_es_event *e, void *arg)
{
    each_seen *s = arg;
    assert_true(s->n < 8);
    ms_es_event *c = &s->ev[s->n];
    *c = *e;
    const char *src[] = {e->stream_id, e->type, e->data, e->metadata};
    for (int i = 0; i < 4; i++)
        snprintf(s->strs[s->n][i], sizeof s->strs[0][0], "%s", src[i]);
    c->stream_id = s->strs[s->n][0];
    c->type = s->strs[s->n][1];
    c->data = s->strs[s->n][2];
    c->metadata = s->strs[s->n][3];
    c->recorded_at = NULL;
    assert_int_equal(strlen(e->recorded_at), MS_TIME_LEN);
    return ++s->n == s->stop_at ? MS_ECONFLICT : 0;
}

/* ms_es_each shows what ms_es_read_all pages hold, field by field, in position order. */
static void test_each_matches_read_all(void **state)
{
    fixture *f = ready(state);
    ms_es_event ev[5];
    for (int i = 0; i < 5; i++)
        new_event(&ev[i], i % 2 ? "Odd" : "Even", i % 2 ? "{\"i\":1}" : "{\"s\":\"\\\"q\"}");
    ev[3].metadata = "{\"m\":true}";
    ms_es_append_req a1 = req("one", MS_ES_NO_STREAM, ev, 2);
    ms_es_append_req a2 = req("two", MS_ES_ANY, ev + 2, 3);
    assert_int_equal(ms_es_append_wait(f->es, &a1), 0);
    assert_int_equal(ms_es_append_wait(f->es, &a2), 0);

    each_seen seen = {0};
    assert_int_equal(ms_es_each(f->c, 0, 100, on_each, &seen), 0);
    assert_int_equal(seen.n, 5);
    ms_es_page page;
    assert_int_equal(ms_es_read_all(f->c, 0, 100, &page), 0);
    assert_int_equal(page.n, 5);
    for (size_t i = 0; i < 5; i++) {
        const ms_es_event *p = &page.events[i], *e = &seen.ev[i];
        assert_string_equal(e->event_id, p->event_id);
        assert_string_equal(e->event_id, ev[i].event_id);
        assert_string_equal(e->stream_id, p->stream_id);
        assert_string_equal(e->type, p->type);
        assert_string_equal(e->data, p->data);
        assert_string_equal(e->metadata, p->metadata);
        assert_int_equal(e->version, p->version);
        assert_int_equal(e->position, p->position);
    }
    assert_string_equal(seen.ev[3].metadata, "{\"m\":true}");
    assert_string_equal(seen.ev[0].metadata, "{}");
    assert_int_equal(seen.ev[4].version, 3);

    /* after and max; fn's nonzero return stops the walk */
    each_seen part = {0};
    assert_int_equal(ms_es_each(f->c, page.events[1].position, 2, on_each, &part), 0);
    assert_int_equal(part.n, 2);
    assert_int_equal(part.ev[0].position, page.events[2].position);
    each_seen stop = {.stop_at = 1};
    assert_int_equal(ms_es_each(f->c, 0, 100, on_each, &stop), MS_ECONFLICT);
    assert_int_equal(stop.n, 1);
    each_seen none = {0};
    assert_int_equal(ms_es_each(f->c, page.events[4].position, 100, on_each, &none), 0);
    assert_int_equal(none.n, 0);
    ms_es_page_release(&page);
}

/*
 * SQLite: the WAL is bounded by design (checkpoint.c, "The bound"): before each write
 * transaction the writer checkpoints a WAL larger than its limit, so the file never exceeds the
 * limit plus one transaction's frames, however fast the appends come. Made small here; the
 * appends go one at a time (ms_es_append_wait), so each transaction is a batch of one append.
 */
static void test_sqlite_wal_bounded(void **state)
{
    fixture *f = ready(state);
    if (f->cfg.backend != MS_DB_SQLITE)
        skip();
    enum { N = 1500, DATA = 8000, PAGE = 4096, FRAME = PAGE + 24, LIMIT = 64 * FRAME };
    /* One append of one event writes, as WAL frames: the event's overflow pages, page 1 and
     * sqlite_sequence's page, and for each b-tree it inserts into (events and its two unique
     * indexes) its leaf or, when that splits, the up to 5 leaves a rebalance spreads its cells
     * over, their parent and the root above (depth at most 3 for these 1500 rows): 7 each. */
    enum { ONE_TXN = (DATA / (PAGE - 4) + 1 + 2 + 3 * 7) * FRAME };
    uv_mutex_lock(&f->es->mu);
    f->es->wal_limit_bytes = LIMIT;
    uv_mutex_unlock(&f->es->mu);
    int64_t page_size = scalar(f->c, "PRAGMA page_size");
    assert_int_equal(page_size, PAGE);
    char *data = malloc(DATA + 16);
    snprintf(data, DATA + 16, "{\"pad\":\"%0*d\"}", DATA, 7);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f->tmp.path);
    off_t biggest = 0;
    for (int i = 0; i < N; i++) {
        ms_es_event e;
        new_event(&e, "Big", data);
        ms_es_append_req a = req("big", MS_ES_ANY, &e, 1);
        assert_int_equal(ms_es_append_wait(f->es, &a), 0);
        struct stat st;
        if (stat(wal, &st) == 0 && st.st_size > biggest)
            biggest = st.st_size;
    }
    /* Unchecked, the WAL would hold every commit's pages: more than all the data appended
     * (12 MB here). The file only grows between truncations, so its largest size is seen. */
    if (biggest > LIMIT + ONE_TXN)
        fail_msg("WAL reached %lld bytes; the bound is %d", (long long)biggest, LIMIT + ONE_TXN);
    uv_mutex_lock(&f->es->mu);
    uint64_t truncates = f->es->truncates_total;
    uv_mutex_unlock(&f->es->mu);
    /* every LIMIT bytes of WAL written cost one truncation: far more than one here */
    assert_true(truncates >= (uint64_t)N * DATA / (LIMIT + ONE_TXN) / 2);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), N);
    free(data);
}

/* SQLite: the checkpointer's target, kept on time: once a passive checkpoint finds the WAL
 * longer than wal_restart_frames, the writer restarts it before its next batch. Whether a
 * checkpointer run falls inside the appends depends on time, so the test waits for one. */
static void test_sqlite_wal_restarts(void **state)
{
    fixture *f = ready(state);
    if (f->cfg.backend != MS_DB_SQLITE)
        skip();
    uv_mutex_lock(&f->es->mu);
    f->es->wal_restart_frames = 8;
    uv_mutex_unlock(&f->es->mu);
    char data[2048];
    snprintf(data, sizeof data, "{\"pad\":\"%0*d\"}", 2000, 7);
    uint64_t restarts = 0;
    /* appends until a restart is seen (a checkpointer run every 50 ms): a generous deadline */
    for (int i = 0; i < 100000 && restarts == 0; i++) {
        ms_es_event e;
        new_event(&e, "Big", data);
        ms_es_append_req a = req("big", MS_ES_ANY, &e, 1);
        assert_int_equal(ms_es_append_wait(f->es, &a), 0);
        if (i % 20 == 19)
            usleep(10000);
        uv_mutex_lock(&f->es->mu);
        restarts = f->es->restarts_total;
        uv_mutex_unlock(&f->es->mu);
    }
    assert_true(restarts > 0);
    uv_mutex_lock(&f->es->mu);
    uint64_t checkpoints = f->es->ckpt_total;
    uv_mutex_unlock(&f->es->mu);
    assert_true(checkpoints > restarts);
}

/* Batches of many sizes (PostgreSQL: arrays of as many rows), each append to its own stream with
 * two events and an outbox row: every position, version and row lands where it should. */
static void test_batch_chunk_boundaries(void **state)
{
    fixture *f = ready(state);
    const int sizes[] = {1, 2, 3, 7, 8, 9, 31, 33, 63, 64, 65, 127, 128, 129, 200};
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    long long want_events = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int n = sizes[s];
        ms_es_event *ev = calloc((size_t)n * 2, sizeof *ev);
        ms_es_outbox_row *ob = calloc((size_t)n, sizeof *ob);
        ms_es_append_req *a = calloc((size_t)n, sizeof *a);
        mixed_answer *ans = calloc((size_t)n, sizeof *ans);
        char(*names)[32] = calloc((size_t)n, sizeof *names);
        ms_es_port *port;
        assert_int_equal(ms_es_port_open(f->es, &loop, &port), 0);
        ms_db_conn *holder = hold_writers(&f->cfg);
        ms_es_event first;
        new_event(&first, "First", "{}");
        ms_es_append_req first_req = req("first", MS_ES_ANY, &first, 1);
        mixed_answer first_ans = {0};
        ms_es_append(port, &first_req, on_mixed_answer, &first_ans);
        wait_queued(f->es, 0); /* the writer takes it and waits for the lock */
        for (int i = 0; i < n; i++) {
            snprintf(names[i], sizeof names[i], "chunk-%d-%d", n, i);
            new_event(&ev[2 * i], "A", "{\"n\":1}");
            new_event(&ev[2 * i + 1], "B", "{\"n\":2}");
            new_outbox(&ob[i], names[i], "x");
            a[i] = req(names[i], MS_ES_NO_STREAM, &ev[2 * i], 2);
            a[i].outbox = &ob[i];
            a[i].noutbox = 1;
            ms_es_append(port, &a[i], on_mixed_answer, &ans[i]);
        }
        wait_queued(f->es, (size_t)n);
        release_writers(holder);
        ms_es_port_close(port, NULL, NULL);
        assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
        want_events += 1 + 2 * n;
        for (int i = 0; i < n; i++) {
            assert_int_equal(ans[i].rc, 0);
            assert_int_equal(a[i].version, 2);
            assert_int_equal(a[i].last_position, a[i].first_position + 1);
            ms_es_page page;
            assert_int_equal(ms_es_read_stream(f->c, names[i], 1, 10, &page), 0);
            assert_int_equal(page.n, 2);
            assert_string_equal(page.events[0].event_id, ev[2 * i].event_id);
            assert_string_equal(page.events[1].event_id, ev[2 * i + 1].event_id);
            assert_int_equal(page.events[0].position, a[i].first_position);
            assert_int_equal(page.events[1].position, a[i].last_position);
            ms_es_page_release(&page);
        }
        assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), want_events);
        free(ev);
        free(ob);
        free(a);
        free(ans);
        free(names);
    }
    assert_int_equal(uv_loop_close(&loop), 0);
    /* 15 sizes: one "first" event each, two events and one outbox row per append */
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox"), (want_events - 15) / 2);
}

/* ---- several threads ---- */

typedef struct racer {
    ms_es *es;
    int id, nversions;
    int *wins; /* per version, shared: only the winner of a version writes its slot */
    int conflicts;
    int errors;
} racer;

static void race_thread(void *arg)
{
    racer *r = arg;
    for (int v = 0; v < r->nversions; v++) {
        ms_es_event e;
        char data[32];
        snprintf(data, sizeof data, "{\"racer\":%d}", r->id);
        new_event(&e, "Raced", data);
        ms_es_append_req a = req("contended", v, &e, 1);
        int rc = ms_es_append_wait(r->es, &a);
        if (rc == 0) {
            __atomic_add_fetch(&r->wins[v], 1, __ATOMIC_RELAXED);
            if (a.version != v + 1)
                r->errors++;
        } else if (rc == MS_ECONFLICT) {
            r->conflicts++;
        } else {
            r->errors++;
        }
    }
}

static void test_concurrent_writers_one_stream(void **state)
{
    fixture *f = ready(state);
    enum { T = 6, N = 40 };
    int wins[N] = {0};
    racer r[T];
    uv_thread_t t[T];
    for (int i = 0; i < T; i++) {
        r[i] = (racer){f->es, i, N, wins, 0, 0};
        assert_int_equal(uv_thread_create(&t[i], race_thread, &r[i]), 0);
    }
    int conflicts = 0;
    for (int i = 0; i < T; i++) {
        uv_thread_join(&t[i]);
        assert_int_equal(r[i].errors, 0);
        conflicts += r[i].conflicts;
    }
    for (int v = 0; v < N; v++)
        assert_int_equal(wins[v], 1); /* exactly one winner per version */
    assert_int_equal(conflicts, (T - 1) * N);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events WHERE stream_id = 'contended'"), N);
    assert_int_equal(scalar(f->c, "SELECT MIN(version) FROM events"), 1);
    assert_int_equal(scalar(f->c, "SELECT MAX(version) FROM events"), N);
    ms_es_stats st;
    ms_es_get_stats(f->es, &st);
    assert_int_equal(st.conflicts_total, (uint64_t)conflicts);
    assert_int_equal(st.appends_total, (uint64_t)T * N);
}

typedef struct loader {
    ms_es *es;
    int id, nappends;
    int64_t *positions; /* first position of each append */
    int failures;
} loader;

static void load_thread(void *arg)
{
    loader *l = arg;
    for (int i = 0; i < l->nappends; i++) {
        ms_es_event e[2];
        new_event(&e[0], "Loaded", "{}");
        new_event(&e[1], "Loaded", "{}");
        char stream[32];
        snprintf(stream, sizeof stream, "load-%d-%d", l->id, i % 3);
        ms_es_append_req a = req(stream, MS_ES_ANY, e, 1 + (size_t)(i % 2));
        if (ms_es_append_wait(l->es, &a) != 0)
            l->failures++;
        if (l->positions)
            l->positions[i] = a.first_position;
    }
}

static void run_loaders(ms_es *es, int nthreads, int nappends)
{
    loader l[16];
    uv_thread_t t[16];
    for (int i = 0; i < nthreads; i++) {
        l[i] = (loader){es, i, nappends, NULL, 0};
        assert_int_equal(uv_thread_create(&t[i], load_thread, &l[i]), 0);
    }
    for (int i = 0; i < nthreads; i++) {
        uv_thread_join(&t[i]);
        assert_int_equal(l[i].failures, 0);
    }
}

static void print_batches(const char *what, const ms_es_stats *st)
{
    print_message(
        "  %s: %llu appends in %llu batches; sizes 1:%llu 2-3:%llu 4-7:%llu 8-15:%llu "
        "16-31:%llu 32-63:%llu 64-127:%llu 128+:%llu\n",
        what, (unsigned long long)st->appends_total, (unsigned long long)st->batches_total,
        (unsigned long long)st->batch_size_hist[0], (unsigned long long)st->batch_size_hist[1],
        (unsigned long long)st->batch_size_hist[2], (unsigned long long)st->batch_size_hist[3],
        (unsigned long long)st->batch_size_hist[4], (unsigned long long)st->batch_size_hist[5],
        (unsigned long long)st->batch_size_hist[6], (unsigned long long)st->batch_size_hist[7]);
}

static void test_group_commit_batches(void **state)
{
    fixture *f = ready(state);
    /* Deterministic: with the write lock held elsewhere, the first append waits for it in a
     * batch of its own while the first appends of 16 threads queue up behind it. */
    enum { T = 17 };
    ms_db_conn *holder = hold_writers(&f->cfg);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    ms_es_port *port;
    assert_int_equal(ms_es_port_open(f->es, &loop, &port), 0);
    ms_es_event first;
    new_event(&first, "First", "{}");
    ms_es_append_req first_req = req("first", MS_ES_ANY, &first, 1);
    mixed_answer first_ans = {0};
    ms_es_append(port, &first_req, on_mixed_answer, &first_ans);
    wait_queued(f->es, 0); /* the first batch blocks on the lock; the rest queue behind it */
    loader l[T];
    uv_thread_t t[T];
    for (int i = 1; i < T; i++) {
        l[i] = (loader){f->es, i, 2, NULL, 0};
        assert_int_equal(uv_thread_create(&t[i], load_thread, &l[i]), 0);
    }
    wait_queued(f->es, T - 1);
    release_writers(holder);
    for (int i = 1; i < T; i++) {
        uv_thread_join(&t[i]);
        assert_int_equal(l[i].failures, 0);
    }
    ms_es_port_close(port, NULL, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_true(first_ans.is_done);
    assert_int_equal(first_ans.rc, 0);
    ms_es_stats st;
    ms_es_get_stats(f->es, &st);
    print_batches("held", &st);
    assert_int_equal(st.appends_total, 2 * T - 1);
    assert_true(st.batches_total <= T + 1);
    assert_int_equal(st.batch_size_hist[0] >= 1, 1);
    assert_true(st.batch_size_hist[4] >= 1); /* a batch of 16-31 */

    /* Natural: concurrent callers share commits without any lock held. */
    ms_es_close(f->es);
    f->es = open_es(&f->cfg, NULL);
    run_loaders(f->es, 16, 25);
    ms_es_get_stats(f->es, &st);
    print_batches("free-running", &st);
    assert_int_equal(st.appends_total, 16 * 25);
    /* How many share a commit here depends on the threads' and the disk's speeds: only the
     * held case above is asserted. */
    assert_true(st.batches_total <= st.appends_total);
}

static void test_outbox_rows(void **state)
{
    fixture *f = ready(state);
    ms_es_event ev;
    ms_es_outbox_row ob[2];
    new_event(&ev, "OrderCreated", "{}");
    new_outbox(&ob[0], "order-5", "order.created");
    new_outbox(&ob[1], "order-5", "order.confirmed");
    ob[1].payload = "{\"id\":\"order-5\"}";
    ms_es_append_req a = req("order-5", MS_ES_NO_STREAM, &ev, 1);
    a.outbox = ob;
    a.noutbox = 2;
    assert_int_equal(ms_es_append_wait(f->es, &a), 0);
    ms_db_result *r = NULL;
    assert_int_equal(ms_db_exec(f->c,
                                "SELECT id, aggregate_type, aggregate_id, type, payload, "
                                "created_at, published_at FROM outbox ORDER BY seq",
                                0, NULL, &r),
                     0);
    assert_int_equal(ms_db_nrows(r), 2);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(ms_db_get(r, i, 0), ob[i].id);
        assert_string_equal(ms_db_get(r, i, 1), "order");
        assert_string_equal(ms_db_get(r, i, 2), "order-5");
        assert_string_equal(ms_db_get(r, i, 3), ob[i].type);
        assert_string_equal(ms_db_get(r, i, 4), ob[i].payload);
        assert_int_equal(strlen(ms_db_get(r, i, 5)), MS_TIME_LEN);
        assert_null(ms_db_get(r, i, 6));
    }
    ms_db_result_free(r);
    /* A bad outbox row refuses the whole append. */
    new_event(&ev, "E", "{}");
    ob[0].aggregate_id = "";
    a = req("order-5", MS_ES_ANY, &ev, 1);
    a.outbox = ob;
    a.noutbox = 1;
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_EINVAL);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), 1);
}

/* A row with of_event references its event: no second copy stored, the view shows the event's
 * data as its payload; a row of its own payload is shown as it is. */
static void test_outbox_row_references_event(void **state)
{
    fixture *f = ready(state);
    ms_es_event ev[2];
    ms_es_outbox_row ob[2];
    new_event(&ev[0], "OrderCreated", "{\"n\":1}");
    new_event(&ev[1], "OrderPaid", "{\"n\":2}");
    new_outbox(&ob[0], "order-7", "OrderPaid");
    ob[0].payload = NULL;
    ob[0].of_event = 2;
    new_outbox(&ob[1], "order-7", "order.note");
    ms_es_append_req a = req("order-7", MS_ES_NO_STREAM, ev, 2);
    a.outbox = ob;
    a.noutbox = 2;
    /* refused whole: an event the append lacks, or a payload as well as an event */
    ob[0].of_event = 3;
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_EINVAL);
    ob[0].of_event = 2;
    ob[0].payload = "{}";
    assert_int_equal(ms_es_append_wait(f->es, &a), MS_EINVAL);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox"), 0);
    ob[0].payload = NULL;
    assert_int_equal(ms_es_append_wait(f->es, &a), 0);

    ms_db_result *r = NULL;
    assert_int_equal(ms_db_exec(f->c,
                                "SELECT o.payload, o.event_position, m.payload, m.id FROM outbox o"
                                " JOIN outbox_messages m ON m.seq = o.seq ORDER BY o.seq",
                                0, NULL, &r),
                     0);
    assert_int_equal(ms_db_nrows(r), 2);
    char second[24];
    snprintf(second, sizeof second, "%lld", (long long)a.last_position);
    assert_string_equal(ms_db_get(r, 0, 0), "");
    assert_string_equal(ms_db_get(r, 0, 1), second);
    assert_string_equal(ms_db_get(r, 0, 2), "{\"n\":2}");
    assert_string_equal(ms_db_get(r, 0, 3), ob[0].id);
    assert_string_equal(ms_db_get(r, 1, 0), "{\"k\":1}");
    assert_null(ms_db_get(r, 1, 1));
    assert_string_equal(ms_db_get(r, 1, 2), "{\"k\":1}");
    ms_db_result_free(r);
}

/* Marks run by the writer: only unpublished rows in the runs, between batches, and a mark
 * never moves a row's first published_at. PostgreSQL: refused (the relay marks itself). */
static void test_mark_published(void **state)
{
    fixture *f = ready(state);
    ms_es_event ev;
    ms_es_outbox_row ob[6];
    new_event(&ev, "OrderCreated", "{}");
    for (int i = 0; i < 6; i++)
        new_outbox(&ob[i], "order-6", "order.created");
    ms_es_append_req a = req("order-6", MS_ES_NO_STREAM, &ev, 1);
    a.outbox = ob;
    a.noutbox = 6;
    assert_int_equal(ms_es_append_wait(f->es, &a), 0);
    int64_t lo = scalar(f->c, "SELECT MIN(seq) FROM outbox");
    int64_t first[] = {lo, lo + 3}, last[] = {lo + 1, lo + 3};
    if (f->cfg.backend == MS_DB_POSTGRES) {
        assert_int_equal(ms_es_mark_published(f->es, first, last, 2, "2026-11-25T10:00:00.000Z"),
                         MS_EINVAL);
        return;
    }
    assert_int_equal(ms_es_mark_published(f->es, first, last, 2, "2026-11-25T10:00:00.000Z"), 0);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"), 3);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at = "
                                  "'2026-11-25T10:00:00.000Z'"),
                     3);
    /* again over all six: the three marked keep their time, the others get the new one */
    int64_t all_first[] = {lo}, all_last[] = {lo + 5};
    assert_int_equal(
        ms_es_mark_published(f->es, all_first, all_last, 1, "2026-11-25T11:00:00.000Z"), 0);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at = "
                                  "'2026-11-25T11:00:00.000Z'"),
                     3);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"), 0);
    /* nothing to mark is no transaction at all; the store still appends after marks */
    assert_int_equal(ms_es_mark_published(f->es, first, last, 0, "2026-11-25T12:00:00.000Z"), 0);
    new_event(&ev, "OrderPaid", "{}");
    a = req("order-6", 1, &ev, 1);
    assert_int_equal(ms_es_append_wait(f->es, &a), 0);
    assert_int_equal(a.version, 2);
}

static void test_snapshots(void **state)
{
    fixture *f = ready(state);
    int64_t v = -1;
    char *data = (char *)"x";
    assert_int_equal(ms_es_snapshot_load(f->c, "order-7", &v, &data), 0);
    assert_int_equal(v, 0);
    assert_null(data);
    assert_int_equal(ms_es_snapshot_save(f->c, "order-7", 5, "{\"v\":5}"), 0);
    assert_int_equal(ms_es_snapshot_load(f->c, "order-7", &v, &data), 0);
    assert_int_equal(v, 5);
    assert_string_equal(data, "{\"v\":5}");
    free(data);
    assert_int_equal(ms_es_snapshot_save(f->c, "order-7", 3, "{\"v\":3}"), 0); /* older */
    assert_int_equal(ms_es_snapshot_load(f->c, "order-7", &v, &data), 0);
    assert_int_equal(v, 5);
    free(data);
    assert_int_equal(ms_es_snapshot_save(f->c, "order-7", 10, "{\"v\":10}"), 0);
    assert_int_equal(ms_es_snapshot_load(f->c, "order-7", &v, &data), 0);
    assert_int_equal(v, 10);
    assert_string_equal(data, "{\"v\":10}");
    free(data);
    assert_int_equal(ms_es_snapshot_save(f->c, "order-7", 0, "{}"), MS_EINVAL);

    assert_true(ms_es_snapshot_due(f->es, 49, 50)); /* default: every 50 */
    assert_false(ms_es_snapshot_due(f->es, 50, 51));
    assert_false(ms_es_snapshot_due(f->es, 0, 49));
    assert_true(ms_es_snapshot_due(f->es, 10, 120));
    ms_es_options opt = {.snapshot_every = 5};
    ms_es *five = open_es(&f->cfg, &opt);
    assert_true(ms_es_snapshot_due(five, 4, 5));
    assert_true(ms_es_snapshot_due(five, 3, 6));
    assert_false(ms_es_snapshot_due(five, 5, 9));
    assert_false(ms_es_snapshot_due(five, 5, 5));
    ms_es_close(five);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x1 = *(const int64_t *)a, x2 = *(const int64_t *)b;
    return (x1 > x2) - (x1 < x2);
}

static void test_read_all_pages(void **state)
{
    fixture *f = ready(state);
    enum { T = 4, N = 30 };
    loader l[T];
    uv_thread_t t[T];
    int64_t firsts[T][N];
    for (int i = 0; i < T; i++) {
        l[i] = (loader){f->es, i, N, firsts[i], 0};
        assert_int_equal(uv_thread_create(&t[i], load_thread, &l[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        uv_thread_join(&t[i]);
        assert_int_equal(l[i].failures, 0);
    }
    int64_t total = T * (N / 2) * 3; /* appends alternate 1 and 2 events */
    int64_t *seen = calloc((size_t)total, sizeof *seen);
    int64_t after = 0, n = 0;
    for (;;) {
        ms_es_page page;
        assert_int_equal(ms_es_read_all(f->c, after, 7, &page), 0);
        if (page.n == 0) {
            ms_es_page_release(&page);
            break;
        }
        assert_true(page.n <= 7);
        for (size_t i = 0; i < page.n; i++) {
            assert_true(page.events[i].position > after);
            after = page.events[i].position;
            assert_true(n < total);
            seen[n++] = after;
        }
        ms_es_page_release(&page);
    }
    assert_int_equal(n, total);
    /* No gaps: nothing failed or was rolled back, so positions are 1..total. */
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(seen[i], i + 1);
    /* Each append's first position was read. */
    for (int i = 0; i < T; i++)
        for (int k = 0; k < N; k++)
            assert_non_null(bsearch(&firsts[i][k], seen, (size_t)n, sizeof *seen, cmp_i64));
    free(seen);
}

/* ---- through a port on a loop ---- */

typedef struct port_test {
    uv_thread_t loop_thread;
    ms_es_port *port;
    ms_es_append_req reqs[20];
    ms_es_event events[20];
    int answered, wrong_thread, failures, closed;
    int64_t last_position;
    ms_es_append_req bad;
    int bad_rc;
    bool bad_answered;
} port_test;

static void on_port_closed(void *arg)
{
    port_test *p = arg;
    p->closed++;
}

static void on_appended(int rc, ms_es_append_req *a, void *arg)
{
    port_test *p = arg;
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &p->loop_thread))
        p->wrong_thread++;
    if (rc != 0 || a->version < 1 || a->first_position <= 0)
        p->failures++;
    if (a->last_position > p->last_position)
        p->last_position = a->last_position;
    if (++p->answered == 20)
        ms_es_port_close(p->port, on_port_closed, p); /* from inside a callback */
}

static void on_bad(int rc, ms_es_append_req *a, void *arg)
{
    port_test *p = arg;
    p->bad_rc = rc;
    p->bad_answered = true;
}

static void test_port_on_loop(void **state)
{
    fixture *f = ready(state);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    port_test *p = calloc(1, sizeof *p);
    p->loop_thread = uv_thread_self();
    assert_int_equal(ms_es_port_open(f->es, &loop, &p->port), 0);
    for (int i = 0; i < 20; i++) {
        new_event(&p->events[i], "Ported", "{}");
        char stream[16];
        snprintf(stream, sizeof stream, "port-%d", i % 4);
        p->reqs[i] = req(stream, MS_ES_ANY, &p->events[i], 1);
        /* the stream id is copied: this buffer is gone before the writer runs */
        ms_es_append(p->port, &p->reqs[i], on_appended, p);
        p->reqs[i].stream_id = NULL;
    }
    p->bad = req("", MS_ES_ANY, p->events, 1);
    ms_es_append(p->port, &p->bad, on_bad, p);
    assert_false(p->bad_answered); /* never from inside ms_es_append */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_true(p->bad_answered);
    assert_int_equal(p->bad_rc, MS_EINVAL);
    assert_int_equal(p->answered, 20);
    assert_int_equal(p->wrong_thread, 0);
    assert_int_equal(p->failures, 0);
    assert_int_equal(p->closed, 1);
    assert_int_equal(ms_es_committed_position(f->es), p->last_position);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), 20);

    /* A port closed with nothing pending closes at once; with answers pending, after them. */
    ms_es_port *idle;
    assert_int_equal(ms_es_port_open(f->es, &loop, &idle), 0);
    ms_es_port_close(idle, NULL, NULL);
    assert_int_equal(ms_es_port_open(f->es, &loop, &p->port), 0);
    p->answered = 19;
    p->closed = 0;
    new_event(&p->events[0], "Ported", "{}");
    p->reqs[0] = req("port-x", MS_ES_ANY, &p->events[0], 1);
    ms_es_append(p->port, &p->reqs[0], on_appended, p); /* the 20th answer closes it */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(p->closed, 1);
    assert_int_equal(p->answered, 20);
    assert_int_equal(uv_loop_close(&loop), 0);
    free(p);
}

/* ---- committed position ---- */

typedef struct waiter {
    ms_es *es;
    int64_t position;
    int rc;
} waiter;

static void wait_thread(void *arg)
{
    waiter *w = arg;
    w->rc = ms_es_wait_committed(w->es, w->position, 5000);
}

static void test_wait_committed(void **state)
{
    fixture *f = ready(state);
    ms_es_append_req a;
    assert_int_equal(append1(f->es, "w", MS_ES_ANY, &a), 0);
    assert_int_equal(ms_es_wait_committed(f->es, a.last_position, 0), 0);
    assert_int_equal(ms_es_wait_committed(f->es, a.last_position + 1, 20), MS_ETIMEDOUT);
    waiter w = {f->es, a.last_position + 1, -1};
    uv_thread_t t;
    assert_int_equal(uv_thread_create(&t, wait_thread, &w), 0);
    sleep_ms(20);
    assert_int_equal(append1(f->es, "w", MS_ES_ANY, &a), 0);
    uv_thread_join(&t);
    assert_int_equal(w.rc, 0);
}

/* ---- PostgreSQL: a reader never misses a late commit ---- */

enum { LC_STORES = 4, LC_THREADS = 3, LC_APPENDS = 60, LC_PER_THREAD = LC_APPENDS * 3 };

typedef struct lc_writer {
    ms_es *es;
    int id; /* global thread number */
    int acked[LC_PER_THREAD];
    int failures;
} lc_writer;

typedef struct lc_reader {
    const ms_db_config *cfg;
    int *seen;       /* per event number */
    int is_stopping; /* atomic */
    int pages, errors;
} lc_reader;

static void lc_write_thread(void *arg)
{
    lc_writer *w = arg;
    int n = 0;
    for (int i = 0; i < LC_APPENDS; i++) {
        ms_es_event e[3];
        char data[3][32];
        int k = 1 + i % 3;
        for (int j = 0; j < k; j++) {
            snprintf(data[j], sizeof data[j], "%d", w->id * LC_PER_THREAD + n + j);
            new_event(&e[j], "Late", data[j]);
        }
        char stream[32];
        snprintf(stream, sizeof stream, "late-%d", w->id);
        ms_es_append_req a = req(stream, MS_ES_ANY, e, (size_t)k);
        if (ms_es_append_wait(w->es, &a) != 0) {
            w->failures++;
        } else {
            for (int j = 0; j < k; j++)
                w->acked[n + j] = 1;
        }
        n += k;
    }
}

static void lc_read_thread(void *arg)
{
    lc_reader *r = arg;
    ms_db_conn *c = NULL;
    if (ms_db_open(r->cfg, false, &c) != 0) {
        r->errors++;
        return;
    }
    int64_t checkpoint = 0;
    for (;;) {
        int is_last = __atomic_load_n(&r->is_stopping, __ATOMIC_ACQUIRE);
        ms_es_page page;
        if (ms_es_read_all(c, checkpoint, 20, &page) != 0) {
            r->errors++;
            break;
        }
        r->pages++;
        for (size_t i = 0; i < page.n; i++) {
            int n = atoi(page.events[i].data);
            if (n >= 0 && n < LC_STORES * LC_THREADS * LC_PER_THREAD)
                r->seen[n]++;
            checkpoint = page.events[i].position;
        }
        size_t got = page.n;
        ms_es_page_release(&page);
        if (is_last && got == 0)
            break; /* the writers were done before this read: it saw everything */
    }
    ms_db_close(c);
}

static void test_pg_reader_never_misses_late_commit(void **state)
{
    fixture *f = ready(state);
    if (f->cfg.backend != MS_DB_POSTGRES)
        skip();
    ms_es *stores[LC_STORES];
    lc_writer *w = calloc(LC_STORES * LC_THREADS, sizeof *w);
    uv_thread_t wt[LC_STORES * LC_THREADS], rt;
    lc_reader r = {&f->cfg, calloc(LC_STORES * LC_THREADS * LC_PER_THREAD, sizeof(int)), 0, 0, 0};
    for (int s = 0; s < LC_STORES; s++)
        stores[s] = open_es(&f->cfg, NULL); /* each its own writer connection */
    assert_int_equal(uv_thread_create(&rt, lc_read_thread, &r), 0);
    for (int i = 0; i < LC_STORES * LC_THREADS; i++) {
        w[i].es = stores[i % LC_STORES];
        w[i].id = i;
        assert_int_equal(uv_thread_create(&wt[i], lc_write_thread, &w[i]), 0);
    }
    for (int i = 0; i < LC_STORES * LC_THREADS; i++)
        uv_thread_join(&wt[i]);
    __atomic_store_n(&r.is_stopping, 1, __ATOMIC_RELEASE);
    uv_thread_join(&rt);
    int missed = 0, twice = 0, acked = 0;
    for (int i = 0; i < LC_STORES * LC_THREADS; i++) {
        assert_int_equal(w[i].failures, 0);
        for (int n = 0; n < LC_PER_THREAD; n++) {
            if (!w[i].acked[n])
                continue;
            acked++;
            int count = r.seen[i * LC_PER_THREAD + n];
            missed += count == 0;
            twice += count > 1;
        }
    }
    ms_es_stats st;
    ms_es_get_stats(stores[0], &st);
    print_batches("store 0", &st);
    print_message("  reader: %d pages, %d events acknowledged, %d missed, %d twice\n", r.pages,
                  acked, missed, twice);
    assert_int_equal(r.errors, 0);
    assert_int_equal(missed, 0);
    assert_int_equal(twice, 0);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM events"), acked);
    for (int s = 0; s < LC_STORES; s++)
        ms_es_close(stores[s]);
    free(r.seen);
    free(w);
}

/* ---- SQLite: kill -9 during a load ---- */

typedef struct crash_writer {
    ms_es *es;
    int id, fd;
} crash_writer;

/* Appends forever; after each acknowledged append writes its event ids, one per line, in one
 * write(2) (under PIPE_BUF: never interleaved with another thread's). */
static void crash_write_thread(void *arg)
{
    crash_writer *w = arg;
    for (int i = 0;; i++) {
        ms_es_event e[3];
        char append_id[MS_UUID_LEN + 1], meta[96], stream[32], line[3 * 40];
        int k = 1 + (i + w->id) % 3;
        ms_uuid_new(append_id);
        snprintf(meta, sizeof meta, "{\"append\":\"%s\",\"n\":%d}", append_id, k);
        for (int j = 0; j < k; j++) {
            new_event(&e[j], "Crash", "{\"payload\":\"0123456789abcdef0123456789abcdef\"}");
            e[j].metadata = meta;
        }
        snprintf(stream, sizeof stream, "crash-%d", (i + w->id) % 5);
        ms_es_append_req a = req(stream, MS_ES_ANY, e, (size_t)k);
        if (ms_es_append_wait(w->es, &a) != 0)
            continue;
        size_t len = 0;
        for (int j = 0; j < k; j++)
            len += (size_t)snprintf(line + len, sizeof line - len, "%s\n", e[j].event_id);
        if (write(w->fd, line, len) != (ssize_t)len)
            _exit(3);
    }
}

static void crash_child(const ms_db_config *cfg, int fd)
{
    ms_es *es = NULL;
    if (ms_es_open(cfg, NULL, &es) != 0)
        _exit(2);
    crash_writer w[4];
    uv_thread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (crash_writer){es, i, fd};
        uv_thread_create(&t[i], crash_write_thread, &w[i]);
    }
    for (;;)
        pause();
}

static void test_sqlite_crash_keeps_acknowledged(void **state)
{
    fixture *f = ready(state);
    if (f->cfg.backend != MS_DB_SQLITE)
        skip();
    ms_es_close(f->es); /* no thread may run in the parent across fork() */
    f->es = NULL;
    ms_db_close(f->c);
    f->c = NULL;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        crash_child(&f->cfg, fds[1]);
    }
    close(fds[1]);
    size_t cap = 1 << 20, len = 0;
    char *acked = malloc(cap);
    uint64_t start = uv_hrtime();
    /* Kill it mid-load: after enough acknowledgements, or after 2 s once it has acknowledged
     * one (a slow start is waited for, up to a generous 60 s). */
    while (len < 400 * 37 && (uv_hrtime() - start < 2000000000ULL || !memchr(acked, '\n', len)) &&
           uv_hrtime() - start < 60000000000ULL) {
        ssize_t n = read(fds[0], acked + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    for (ssize_t n; (n = read(fds[0], acked + len, cap - len - 1)) > 0;)
        len += (size_t)n; /* acknowledged before the kill, read after it */
    close(fds[0]);
    acked[len] = '\0';

    f->c = open_conn(&f->cfg);
    size_t nacked = 0, missing = 0;
    for (char *line = acked; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        const char *params[] = {line};
        ms_db_result *r = NULL;
        assert_int_equal(
            ms_db_exec(f->c, "SELECT 1 FROM events WHERE event_id = $1", 1, params, &r), 0);
        missing += ms_db_nrows(r) != 1;
        ms_db_result_free(r);
        nacked++;
        line = nl + 1;
    }
    free(acked);
    long long stored = scalar(f->c, "SELECT COUNT(*) FROM events");
    print_message("  %zu events acknowledged before kill -9, %lld stored\n", nacked, stored);
    assert_true(nacked > 0);
    assert_int_equal(missing, 0);
    assert_true(stored >= (long long)nacked);
    /* Nothing half-written: every append has all its events, versions are 1..n per stream. */
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM (SELECT json_extract(metadata, '$.n') n, "
                                  "COUNT(*) c FROM events GROUP BY json_extract(metadata, "
                                  "'$.append') HAVING c != n)"),
                     0);
    assert_int_equal(scalar(f->c,
                            "SELECT COUNT(*) FROM (SELECT stream_id FROM events GROUP BY "
                            "stream_id HAVING MIN(version) != 1 OR MAX(version) != COUNT(*))"),
                     0);
    ms_db_result *ok = NULL;
    assert_int_equal(ms_db_exec(f->c, "PRAGMA integrity_check", 0, NULL, &ok), 0);
    assert_string_equal(ms_db_get(ok, 0, 0), "ok");
    ms_db_result_free(ok);
    /* The store opens and appends after the crash, after the last position. */
    f->es = open_es(&f->cfg, NULL);
    long long top = scalar(f->c, "SELECT MAX(position) FROM events");
    assert_int_equal(ms_es_committed_position(f->es), top);
    ms_es_append_req a;
    assert_int_equal(append1(f->es, "crash-0", MS_ES_ANY, &a), 0);
    assert_true(a.first_position > top);
}

#define BOTH(fn)                                                                                   \
    cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &backend_sqlite),                \
        cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &backend_pg)

int main(void)
{
    ms_log_init("test_eventstore", MS_LOG_WARN);
    const struct CMUnitTest tests[] = {
        BOTH(test_append_read_back),
        BOTH(test_expected_versions),
        BOTH(test_conflict_writes_nothing),
        BOTH(test_idempotent_reappend),
        BOTH(test_event_id_reuse_elsewhere),
        BOTH(test_batch_mixed),
        BOTH(test_batch_chunk_boundaries),
        BOTH(test_dirty_batch_forgets_versions),
        BOTH(test_other_writer_seen),
        BOTH(test_new_stream_append_without_probe),
        BOTH(test_each_matches_read_all),
        BOTH(test_sqlite_wal_bounded),
        BOTH(test_sqlite_wal_restarts),
        BOTH(test_concurrent_writers_one_stream),
        BOTH(test_group_commit_batches),
        BOTH(test_outbox_rows),
        BOTH(test_mark_published),
        BOTH(test_outbox_row_references_event),
        BOTH(test_snapshots),
        BOTH(test_read_all_pages),
        BOTH(test_port_on_loop),
        BOTH(test_wait_committed),
        BOTH(test_pg_reader_never_misses_late_commit),
        BOTH(test_sqlite_crash_keeps_acknowledged),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
