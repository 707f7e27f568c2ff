/*
 * test_db_query.c — ms_db_pool_query, the read path without a thread, on a real uv loop: on
 * SQLite (inline) and, when MS_TEST_PG_URL is set, on PostgreSQL's pipelined connections:
 * answers in order, parameters, errors, deadlines, lost connections, close with statements in
 * flight, and a CLIENT span per statement under the caller's context. Waits poll a condition with a
 * generous deadline; nothing asserts on speed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixtures/otlp_collector.h"
#include "fixtures/pg_test_db.h"
#include "runtime/core/error.h"
#include "runtime/db/db.h"
#include "runtime/obs/trace_internal.h"
#include "runtime/core/banned.h"

enum { WAIT_MS = 20000, N = 200 };

typedef struct fixture {
    sqlite_test_db tmp;
    ms_db_config cfg;
    uv_loop_t loop;
    bool is_ready;
} fixture;

static int seq; /* orders answers across a case */

typedef struct answer {
    bool is_done, had_ctx;
    uint8_t ctx_span[8]; /* the current context's span inside `done` */
    int rc, order, nrows;
    char value[64]; /* the first cell, "(null)" for SQL NULL */
    char value2[64];
} answer;

static void on_answer(int rc, ms_db_result *r, void *arg)
{
    answer *a = arg;
    if (a->is_done)
        fail_msg("answered twice");
    a->is_done = true;
    a->rc = rc;
    const ms_trace_ctx *cur = ms_trace_current();
    a->had_ctx = cur != NULL;
    if (cur)
        memcpy(a->ctx_span, cur->span_id, 8);
    a->order = ++seq;
    if (rc == 0) {
        assert_non_null(r);
        a->nrows = ms_db_nrows(r);
        const char *v = a->nrows ? ms_db_get(r, 0, 0) : NULL;
        snprintf(a->value, sizeof a->value, "%s", v ? v : "(null)");
        if (ms_db_ncols(r) > 1 && a->nrows) {
            v = ms_db_get(r, 0, 1);
            snprintf(a->value2, sizeof a->value2, "%s", v ? v : "(null)");
        }
    } else {
        assert_null(r);
    }
    ms_db_result_free(r);
}

static uint64_t deadline_in(fixture *f, uint64_t ms)
{
    uv_update_time(&f->loop);
    return uv_now(&f->loop) + ms;
}

static void on_tick(uv_timer_t *t) {}

/* Runs the loop until every answer of `a` is in. The pool's connections keep the loop alive,
 * and an answer given by a timer does not end a UV_RUN_ONCE that then waits for I/O: a tick
 * wakes it to look again. */
static void wait_all(fixture *f, answer *a, int n)
{
    uint64_t until = deadline_in(f, WAIT_MS);
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++)
            left += !a[i].is_done;
        if (!left)
            break;
        if (uv_now(&f->loop) > until)
            fail_msg("%d answers missing", left);
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void on_closed(void *arg)
{
    *(bool *)arg = true;
}

static void close_pool(fixture *f, ms_db_pool *p)
{
    bool is_closed = false;
    ms_db_pool_close(p, on_closed, &is_closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(is_closed);
}

static ms_db_pool *new_pool(fixture *f, int pipeline_conns)
{
    f->cfg.pool_size = 2;
    f->cfg.pipeline_conns = pipeline_conns;
    ms_db_pool *p = NULL;
    assert_int_equal(ms_db_pool_new(&f->loop, &f->cfg, 1, &p), 0);
    return p;
}

static int group_setup(void **state)
{
    return pg_test_db_create("ms_query");
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
    f->cfg.busy_timeout_ms = 5000;
    f->cfg.pool_pre_ping = true;
    ms_db_conn *c = NULL;
    int rc = test_db_fresh(&f->cfg, &f->tmp, "/tmp/ms_test_query_XXXXXX", "q.db", &c);
    if (rc < 0) {
        free(f);
        return -1;
    }
    f->is_ready = rc > 0;
    if (c) {
        x(c, "CREATE TABLE t (n INTEGER PRIMARY KEY, name TEXT)");
        x(c, "INSERT INTO t (n, name) WITH RECURSIVE g(v) AS (SELECT 1 UNION ALL SELECT v + 1 "
             "FROM g WHERE v < 50) SELECT v, 'name ' || v FROM g");
        ms_db_close(c);
    }
    uv_loop_init(&f->loop);
    seq = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
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

static fixture *ready_pg(void **state)
{
    fixture *f = ready(state);
    if (f->cfg.backend != MS_DB_POSTGRES)
        skip();
    return f;
}

static const char SELECT_ROW[] = "SELECT n, name FROM t WHERE n = $1";

static void query_row(ms_db_pool *p, fixture *f, int n, answer *a, uint64_t ms)
{
    char v[16];
    snprintf(v, sizeof v, "%d", n);
    const char *params[] = {v}; /* copied: this array is gone when the answer comes */
    ms_db_pool_query(p, deadline_in(f, ms), SELECT_ROW, 1, params, on_answer, a);
}

/* Many statements sent before the loop runs: each gets its own row, in the order sent (one
 * connection: one FIFO). */
static void test_many_answered_in_order(void **state)
{
    fixture *f = ready(state);
    ms_db_pool *p = new_pool(f, 1);
    static answer a[N];
    memset(a, 0, sizeof a);
    for (int i = 0; i < N; i++)
        query_row(p, f, i % 60 + 1, &a[i], WAIT_MS);
    if (f->cfg.backend == MS_DB_POSTGRES)
        assert_false(a[0].is_done); /* never inside the call */
    wait_all(f, a, N);
    for (int i = 0; i < N; i++) {
        int n = i % 60 + 1;
        assert_int_equal(a[i].rc, 0);
        assert_int_equal(a[i].order, i + 1);
        assert_int_equal(a[i].nrows, n <= 50 ? 1 : 0);
        if (n <= 50) {
            char want[32];
            snprintf(want, sizeof want, "name %d", n);
            assert_int_equal(atoi(a[i].value), n);
            assert_string_equal(a[i].value2, want);
        }
    }
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.checkouts_total, N);
    assert_int_equal(st.pipelined_open, f->cfg.backend == MS_DB_POSTGRES ? 1 : 0);
    assert_int_equal(st.pipelined_in_flight, 0);
    close_pool(f, p);
}

/* Several connections: every answer still carries its own statement's rows. */
static void test_spread_over_connections(void **state)
{
    fixture *f = ready(state);
    ms_db_pool *p = new_pool(f, 3);
    static answer a[N];
    memset(a, 0, sizeof a);
    for (int round = 0; round < 2; round++) { /* the second on warm connections */
        for (int i = 0; i < N; i++) {
            a[i] = (answer){0};
            query_row(p, f, i % 50 + 1, &a[i], WAIT_MS);
        }
        wait_all(f, a, N);
        for (int i = 0; i < N; i++) {
            assert_int_equal(a[i].rc, 0);
            assert_int_equal(atoi(a[i].value), i % 50 + 1);
        }
    }
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    if (f->cfg.backend == MS_DB_POSTGRES)
        assert_int_equal(st.pipelined_open, 3);
    close_pool(f, p);
}

static void test_parameters_and_nulls(void **state)
{
    fixture *f = ready(state);
    ms_db_pool *p = new_pool(f, 1);
    answer a = {0}, b = {0};
    const char *params[] = {"it's \"quoted\"", NULL};
    const char *sql =
        f->cfg.backend == MS_DB_POSTGRES ? "SELECT $1::text, $2::text" : "SELECT $1, $2";
    ms_db_pool_query(p, 0, sql, 2, params, on_answer, &a);
    const char *one[] = {"7"};
    ms_db_pool_query(p, deadline_in(f, WAIT_MS), "SELECT name FROM t WHERE n > $1 ORDER BY n", 1,
                     one, on_answer, &b);
    wait_all(f, &a, 1);
    wait_all(f, &b, 1);
    assert_int_equal(a.rc, 0);
    assert_string_equal(a.value, "it's \"quoted\"");
    assert_string_equal(a.value2, "(null)");
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.nrows, 43);
    assert_string_equal(b.value, "name 8");
    close_pool(f, p);
}

/* An error is mapped as ms_db_exec maps it, and spoils nothing sent beside it. */
static void test_errors_are_mapped(void **state)
{
    fixture *f = ready(state);
    ms_db_pool *p = new_pool(f, 1);
    answer a[6] = {{0}};
    query_row(p, f, 1, &a[0], WAIT_MS);
    ms_db_pool_query(p, 0, "SELECT n FROM no_such_table", 0, NULL, on_answer, &a[1]);
    query_row(p, f, 2, &a[2], WAIT_MS);
    ms_db_pool_query(p, 0, "SELEKT 1", 0, NULL, on_answer, &a[3]);
    query_row(p, f, 3, &a[4], WAIT_MS);
    const char *bad[] = {"not a number"};
    ms_db_pool_query(p, 0, SELECT_ROW, 1, bad, on_answer, &a[5]);
    wait_all(f, a, 6);
    assert_int_equal(a[0].rc, 0);
    assert_int_equal(a[1].rc, MS_EDB);
    assert_int_equal(a[2].rc, 0);
    assert_int_equal(a[3].rc, MS_EDB);
    assert_int_equal(a[4].rc, 0);
    assert_string_equal(a[0].value, "1");
    assert_string_equal(a[2].value, "2");
    assert_string_equal(a[4].value, "3");
    if (f->cfg.backend == MS_DB_POSTGRES)
        assert_int_equal(a[5].rc, MS_EDB); /* 22P02: SQLite compares instead, finding nothing */
    /* the failed statements left the cache sound: they fail again, the good ones still run */
    answer again[2] = {{0}};
    ms_db_pool_query(p, 0, "SELECT n FROM no_such_table", 0, NULL, on_answer, &again[0]);
    query_row(p, f, 4, &again[1], WAIT_MS);
    wait_all(f, again, 2);
    assert_int_equal(again[0].rc, MS_EDB);
    assert_int_equal(again[1].rc, 0);
    close_pool(f, p);
}

/* A statement still running at its deadline is answered MS_ETIMEDOUT while it runs; the one
 * queued behind it on the same connection is still answered, and the loop goes on. */
static void test_deadline_passes(void **state)
{
    fixture *f = ready_pg(state);
    ms_db_pool *p = new_pool(f, 1);
    answer warm = {0}, slow = {0}, behind = {0}, after = {0};
    query_row(p, f, 1, &warm, WAIT_MS); /* connected first, so both go to the same one */
    wait_all(f, &warm, 1);
    ms_db_pool_query(p, deadline_in(f, 200), "SELECT pg_sleep(30)", 0, NULL, on_answer, &slow);
    query_row(p, f, 5, &behind, WAIT_MS);
    wait_all(f, &slow, 1);
    assert_int_equal(slow.rc, MS_ETIMEDOUT);
    wait_all(f, &behind, 1);
    assert_int_equal(behind.rc, 0);
    assert_string_equal(behind.value, "5");
    query_row(p, f, 6, &after, WAIT_MS);
    wait_all(f, &after, 1);
    assert_int_equal(after.rc, 0);
    /* a deadline already past is answered by the loop, not inside the call */
    answer late = {0};
    uv_update_time(&f->loop);
    ms_db_pool_query(p, uv_now(&f->loop) - 1, SELECT_ROW, 1, (const char *[]){"1"}, on_answer,
                     &late);
    assert_false(late.is_done);
    wait_all(f, &late, 1);
    assert_int_equal(late.rc, MS_ETIMEDOUT);
    close_pool(f, p);
}

static void terminate_backend(fixture *f, const char *pid)
{
    ms_db_conn *c = open_conn(&f->cfg);
    const char *params[] = {pid};
    ms_db_result *r = NULL;
    assert_int_equal(ms_db_exec(c, "SELECT pg_terminate_backend($1::integer)", 1, params, &r), 0);
    assert_string_equal(ms_db_get(r, 0, 0), "t");
    ms_db_result_free(r);
    ms_db_close(c);
}

static void on_timer_terminate(uv_timer_t *t)
{
    answer *pid = t->data;
    fixture *f = (fixture *)((char *)t->loop - offsetof(fixture, loop));
    terminate_backend(f, pid->value);
    uv_close((uv_handle_t *)t, NULL);
}

/* The backend killed under a running statement: MS_ECONN for what was in flight, then the
 * connection is reopened and later statements succeed. */
static void test_lost_connection_fails_then_recovers(void **state)
{
    fixture *f = ready_pg(state);
    ms_db_pool *p = new_pool(f, 1);
    answer pid = {0}, slow = {0}, behind = {0}, pid2 = {0};
    ms_db_pool_query(p, 0, "SELECT pg_backend_pid()", 0, NULL, on_answer, &pid);
    wait_all(f, &pid, 1);
    assert_int_equal(pid.rc, 0);
    ms_db_pool_query(p, deadline_in(f, WAIT_MS), "SELECT pg_sleep(30)", 0, NULL, on_answer, &slow);
    query_row(p, f, 9, &behind, WAIT_MS);
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    t.data = &pid;
    uv_timer_start(&t, on_timer_terminate, 100, 0); /* the sleep is running by then, or queued */
    wait_all(f, &slow, 1);
    wait_all(f, &behind, 1);
    assert_int_equal(slow.rc, MS_ECONN);
    assert_int_equal(behind.rc, MS_ECONN);
    ms_db_pool_query(p, deadline_in(f, WAIT_MS), "SELECT pg_backend_pid()", 0, NULL, on_answer,
                     &pid2);
    wait_all(f, &pid2, 1);
    assert_int_equal(pid2.rc, 0);
    assert_string_not_equal(pid2.value, pid.value);
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.reconnects_total, 1);
    assert_int_equal(st.pipelined_open, 1);
    close_pool(f, p);
}

static void test_unreachable_server_fails_with_econn(void **state)
{
    fixture *f = ready_pg(state);
    f->cfg.pg_conninfo = "postgresql://postgres@127.0.0.1:1/postgres";
    ms_db_pool *p = new_pool(f, 2);
    answer a[3] = {{0}};
    for (int i = 0; i < 3; i++)
        query_row(p, f, 1, &a[i], WAIT_MS);
    wait_all(f, a, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(a[i].rc, MS_ECONN);
    close_pool(f, p);
}

/* Closing answers everything in flight with MS_ESHUTDOWN, at once; later calls too. */
static void test_close_with_statements_in_flight(void **state)
{
    fixture *f = ready(state);
    ms_db_pool *p = new_pool(f, 2);
    answer warm[2] = {{0}}, a[10] = {{0}};
    for (int i = 0; i < 2; i++)
        query_row(p, f, 1, &warm[i], WAIT_MS);
    wait_all(f, warm, 2);
    bool is_pg = f->cfg.backend == MS_DB_POSTGRES;
    for (int i = 0; i < 10; i++)
        if (is_pg && i % 2)
            ms_db_pool_query(p, 0, "SELECT pg_sleep(30)", 0, NULL, on_answer, &a[i]);
        else
            query_row(p, f, i + 1, &a[i], WAIT_MS);
    if (is_pg)
        uv_run(&f->loop, UV_RUN_NOWAIT); /* sent */
    bool is_closed = false;
    ms_db_pool_close(p, on_closed, &is_closed);
    for (int i = 0; i < 10; i++) {
        assert_true(a[i].is_done);
        if (is_pg)
            assert_int_equal(a[i].rc, MS_ESHUTDOWN);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(is_closed);
}

/* The spans exported for `parent`'s trace whose name is `name`: their number, the last in *out
 * (a new reference). */
static int find_spans(collector *col, const ms_trace_ctx *parent, const char *name, json_t **out)
{
    char tid[MS_TRACE_ID_HEX + 1], sid[MS_SPAN_ID_HEX + 1];
    ms_trace_ids_hex(parent, tid, sid);
    int n = 0;
    size_t i;
    json_t *sp;
    pthread_mutex_lock(&col->mu);
    json_array_foreach(col->span_docs, i, sp)
    {
        if (strcmp(json_string_value(json_object_get(sp, "traceId")), tid) == 0 &&
            strcmp(json_string_value(json_object_get(sp, "name")), name) == 0) {
            n++;
            json_decref(*out);
            *out = json_incref(sp);
        }
    }
    pthread_mutex_unlock(&col->mu);
    return n;
}

static void wait_span(fixture *f, collector *col, const ms_trace_ctx *parent, const char *name,
                      json_t **out)
{
    uint64_t until = deadline_in(f, WAIT_MS);
    while (find_spans(col, parent, name, out) == 0) {
        if (deadline_in(f, 0) > until)
            fail_msg("no span %s", name);
        usleep(5000);
    }
}

/* Inside a sampled context each statement is a CLIENT span under it, a failed one with its
 * error, without a parameter's value; `done` runs inside the context it was called in. */
static void test_statement_spans(void **state)
{
    fixture *f = ready(state);
    collector col;
    collector_start(&col);
    collector_set_endpoint(&col);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "10", 1);
    ms_trace_sampler_set(true, 1.0);
    assert_int_equal(ms_trace_init("querytest"), 0);
    ms_db_pool *p = new_pool(f, 1);

    ms_trace_ctx req;
    ms_span *server = ms_span_start("GET /t", MS_SPAN_SERVER, NULL, &req);
    ms_trace_set_current(&req);
    answer a[2] = {{0}};
    query_row(p, f, 4711, &a[0], WAIT_MS);
    ms_db_pool_query(p, 0, "SELECT n FROM no_such_table", 0, NULL, on_answer, &a[1]);
    ms_trace_set_current(NULL); /* the loop answers outside the request */
    wait_all(f, a, 2);
    ms_span_end(server);
    assert_int_equal(a[0].rc, 0);
    assert_int_equal(a[1].rc, MS_EDB);
    for (int i = 0; i < 2; i++) {
        assert_true(a[i].had_ctx);
        assert_memory_equal(a[i].ctx_span, req.span_id, 8);
    }
    assert_null(ms_trace_current());

    json_t *ok = NULL, *bad = NULL;
    wait_span(f, &col, &req, "SELECT t", &ok);
    wait_span(f, &col, &req, "SELECT no_such_table", &bad);
    char tid[MS_TRACE_ID_HEX + 1], sid[MS_SPAN_ID_HEX + 1];
    ms_trace_ids_hex(&req, tid, sid);
    assert_int_equal(json_integer_value(json_object_get(ok, "kind")), 3); /* CLIENT */
    assert_string_equal(json_string_value(json_object_get(ok, "parentSpanId")), sid);
    assert_int_not_equal(json_integer_value(json_object_get(json_object_get(ok, "status"), "code")),
                         2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(bad, "status"), "code")),
                     2);
    char *all = json_dumps(ok, JSON_COMPACT);
    assert_non_null(strstr(all, "SELECT n, name FROM t WHERE n = $1"));
    assert_null(strstr(all, "4711"));
    free(all);
    json_decref(ok);
    json_decref(bad);

    close_pool(f, p);
    ms_trace_shutdown(5000);
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    collector_stop(&col);
}

#define BOTH(t)                                                                                    \
    cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, &backend_sqlite),                 \
        cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, &backend_pg)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_many_answered_in_order),
        BOTH(test_spread_over_connections),
        BOTH(test_parameters_and_nulls),
        BOTH(test_errors_are_mapped),
        BOTH(test_deadline_passes),
        BOTH(test_lost_connection_fails_then_recovers),
        BOTH(test_unreachable_server_fails_with_econn),
        BOTH(test_close_with_statements_in_flight),
        BOTH(test_statement_spans),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
