/*
 * test_db_pool.c — the connection pool on a real uv loop with real SQLite files (and a real
 * PostgreSQL when MS_TEST_PG_URL is set): completion on the loop, exhaustion ending at the
 * deadline, FIFO service, overflow (kept while busy, given back once idle) and lost connections,
 * recycling, pre-ping, close.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixtures/sqlite_test_db.h"
#include "runtime/core/error.h"
#include "runtime/db/db.h"
#include "runtime/core/banned.h"

typedef struct fixture {
    sqlite_test_db tmp;
    ms_db_config cfg;
    uv_loop_t loop;
    uv_thread_t loop_thread;
} fixture;

/* Blocking work waits on `gate`; it posts `started` once it holds a connection. */
static uv_sem_t gate, started;
static int seq; /* orders callbacks across a test */

typedef struct call {
    fixture *f;
    int rc, value, order;
    bool is_done, done_on_loop, work_ran, work_on_loop;
    uint64_t done_ns;
    void (*then)(struct call *k); /* runs inside `done` */
    ms_db_pool *pool;
    struct call *next;
} call;

static bool on_loop(fixture *f)
{
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &f->loop_thread) != 0;
}

static void enter_work(call *k)
{
    k->work_ran = true;
    k->work_on_loop = on_loop(k->f);
}

static int work_insert(ms_db_conn *c, void *arg)
{
    call *k = arg;
    enter_work(k);
    char v[16];
    snprintf(v, sizeof v, "%d", k->value);
    const char *params[] = {v};
    return ms_db_exec(c, "INSERT INTO t (n) VALUES ($1)", 1, params, NULL);
}

static int work_block(ms_db_conn *c, void *arg)
{
    enter_work(arg);
    uv_sem_post(&started);
    uv_sem_wait(&gate);
    return 0;
}

static int work_count(ms_db_conn *c, void *arg)
{
    call *k = arg;
    enter_work(k);
    ms_db_result *r = NULL;
    int rc = ms_db_exec(c, "SELECT COUNT(*) FROM t", 0, NULL, &r);
    if (rc == 0)
        k->value = atoi(ms_db_get(r, 0, 0));
    ms_db_result_free(r);
    /* The inline read connection must be read-only. */
    if (rc == 0 && ms_db_exec(c, "INSERT INTO t (n) VALUES (1)", 0, NULL, NULL) != MS_EDB)
        rc = MS_EINTERNAL;
    return rc;
}

static int work_make_temp(ms_db_conn *c, void *arg)
{
    enter_work(arg);
    return ms_db_exec(c, "CREATE TEMP TABLE mine (x INTEGER)", 0, NULL, NULL);
}

/* A temp table lives in one connection: reading it tells whether we got the same one back. */
static int work_read_temp(ms_db_conn *c, void *arg)
{
    enter_work(arg);
    return ms_db_exec(c, "SELECT x FROM mine", 0, NULL, NULL);
}

static int work_lose(ms_db_conn *c, void *arg)
{
    int rc = work_read_temp(c, arg);
    return rc == 0 ? MS_ECONN : rc;
}

static int work_pid(ms_db_conn *c, void *arg)
{
    call *k = arg;
    enter_work(k);
    ms_db_result *r = NULL;
    int rc = ms_db_exec(c, "SELECT pg_backend_pid()", 0, NULL, &r);
    if (rc == 0)
        k->value = atoi(ms_db_get(r, 0, 0));
    ms_db_result_free(r);
    return rc;
}

static void done_record(int rc, void *arg)
{
    call *k = arg;
    k->rc = rc;
    k->is_done = true;
    k->done_on_loop = on_loop(k->f);
    k->done_ns = uv_hrtime();
    k->order = ++seq;
    if (k->then)
        k->then(k);
}

static void on_closed(void *arg)
{
    *(int *)arg = ++seq;
}

static void close_pool(fixture *f, ms_db_pool *p)
{
    int closed_at = 0;
    ms_db_pool_close(p, on_closed, &closed_at);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(closed_at > 0);
}

static uint64_t deadline_in(fixture *f, uint64_t ms)
{
    uv_update_time(&f->loop);
    return uv_now(&f->loop) + ms;
}

static ms_db_pool *new_pool(fixture *f, int size, int overflow)
{
    f->cfg.pool_size = size;
    f->cfg.pool_overflow = overflow;
    ms_db_pool *p = NULL;
    assert_int_equal(ms_db_pool_new(&f->loop, &f->cfg, 1, &p), 0);
    return p;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (sqlite_test_db_make(&f->tmp, "/tmp/ms_test_pool_XXXXXX", "pool.db") != 0) {
        free(f);
        return -1;
    }
    f->cfg = (ms_db_config){.backend = MS_DB_SQLITE,
                            .sqlite_path = f->tmp.path,
                            .busy_timeout_ms = 5000,
                            .pool_size = 2,
                            .pool_overflow = 2,
                            .pool_timeout_ms = 10000,
                            .pool_recycle_s = 3600,
                            .pool_pre_ping = true,
                            .pool_idle_ms = 20};
    ms_db_conn *c = NULL;
    assert_int_equal(ms_db_open(&f->cfg, false, &c), 0);
    assert_int_equal(ms_db_exec(c, "CREATE TABLE t (n INTEGER)", 0, NULL, NULL), 0);
    ms_db_close(c);
    uv_loop_init(&f->loop);
    f->loop_thread = uv_thread_self();
    uv_sem_init(&gate, 0);
    uv_sem_init(&started, 0);
    seq = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    /* Every handle the pool made must be closed, or the loop cannot be closed. */
    int rc = uv_loop_close(&f->loop);
    sqlite_test_db_remove(&f->tmp);
    uv_sem_destroy(&gate);
    uv_sem_destroy(&started);
    free(f);
    return rc == 0 ? 0 : -1;
}

static int count_rows(fixture *f)
{
    ms_db_conn *c = NULL;
    ms_db_result *r = NULL;
    assert_int_equal(ms_db_open(&f->cfg, true, &c), 0);
    assert_int_equal(ms_db_exec(c, "SELECT COUNT(*) FROM t", 0, NULL, &r), 0);
    int n = atoi(ms_db_get(r, 0, 0));
    ms_db_result_free(r);
    ms_db_close(c);
    return n;
}

static void test_works_complete_on_loop(void **state)
{
    fixture *f = *state;
    ms_db_pool *p = new_pool(f, 2, 2);
    enum { N = 20 };
    call k[N];
    for (int i = 0; i < N; i++) {
        k[i] = (call){.f = f, .value = i};
        ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 10000), work_insert, done_record, &k[i]);
    }
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.open, 2); /* a cold pool opens two at a time, not size + overflow */
    assert_int_equal(st.in_use, 2);
    assert_int_equal(st.waiting, N - 2);
    assert_false(k[0].is_done); /* writes never complete inside ms_db_pool_run */

    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N; i++) {
        assert_true(k[i].is_done);
        assert_int_equal(k[i].rc, 0);
        assert_true(k[i].done_on_loop);
        assert_true(k[i].work_ran);
        assert_false(k[i].work_on_loop);
    }
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.checkouts_total, N);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.timeouts_total, 0);
    assert_int_equal(st.open, 2); /* the overflow was closed once idle */
    assert_true(st.wait_seconds_sum > 0);
    assert_int_equal(count_rows(f), N);
    close_pool(f, p);
}

/* Overflow connections are not closed the moment nobody waits, which under load reopened one
 * per burst, but once they have idled pool_idle_ms. */
static void test_overflow_outlives_short_gaps(void **state)
{
    fixture *f = *state;
    /* long enough that no stall of the test between two calls reaches it */
    enum { IDLE_MS = 1000 };
    f->cfg.pool_idle_ms = IDLE_MS;
    ms_db_pool *p = new_pool(f, 1, 1);
    call make[2], read[2];
    for (int i = 0; i < 2; i++) { /* two at once: the pool's one and an overflow */
        make[i] = (call){.f = f};
        ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 10000), work_make_temp, done_record,
                       &make[i]);
    }
    while (!make[0].is_done || !make[1].is_done)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(make[0].rc, 0);
    assert_int_equal(make[1].rc, 0);
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.open, 2);
    assert_int_equal(st.waiting, 0);

    /* nobody waited in between: both connections are still the ones that made their temp
     * table (a reopened one has none) */
    uint64_t idle_from = uv_hrtime();
    for (int i = 0; i < 2; i++) {
        read[i] = (call){.f = f};
        ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 10000), work_read_temp, done_record,
                       &read[i]);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT); /* returns once the overflow is closed: no timer left */
    assert_int_equal(read[0].rc, 0);
    assert_int_equal(read[1].rc, 0);
    assert_true(uv_hrtime() - idle_from >= IDLE_MS * 1000000ULL);
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.open, 1);
    assert_int_equal(st.checkouts_total, 4);
    close_pool(f, p);
}

/* Holds the only connection, then measures how long a second request waits for it. */
static uint64_t measure_exhaustion(fixture *f, int pool_timeout_ms, uint64_t deadline_ms)
{
    f->cfg.pool_timeout_ms = pool_timeout_ms;
    ms_db_pool *p = new_pool(f, 1, 0);
    call a = {.f = f}, b = {.f = f}, c = {.f = f, .value = 7};
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 60000), work_block, done_record, &a);
    uv_sem_wait(&started);
    uint64_t t0 = uv_hrtime();
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, deadline_ms), work_insert, done_record, &b);
    while (!b.is_done)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(b.rc, MS_EPOOLTIMEOUT);
    assert_false(b.work_ran);
    assert_false(a.is_done); /* nothing freed up: the timer alone ended the wait */
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.timeouts_total, 1);
    assert_int_equal(st.waiting, 0);

    uv_sem_post(&gate); /* the pool serves again once the connection is back */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.rc, 0);
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 1000), work_insert, done_record, &c);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.rc, 0);
    assert_int_equal(count_rows(f), 1);
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.checkouts_total, 2);
    close_pool(f, p);
    return (b.done_ns - t0) / 1000000;
}

/* Which limit ended the wait: never before it (a timer does not fire early), and before the
 * other one, far away, could have. How late after it depends on the machine, so is not
 * asserted. */
static void test_exhausted_pool_fails_at_deadline(void **state)
{
    uint64_t waited = measure_exhaustion(*state, 10000, 200);
    assert_in_range(waited, 195, 10000 - 1);
}

static void test_exhausted_pool_fails_at_pool_timeout(void **state)
{
    uint64_t waited = measure_exhaustion(*state, 100, 10000);
    assert_in_range(waited, 95, 10000 - 1);
}

static void test_waiters_expire_at_their_own_deadlines(void **state)
{
    fixture *f = *state;
    ms_db_pool *p = new_pool(f, 1, 0);
    call a = {.f = f}, late = {.f = f}, early = {.f = f};
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 60000), work_block, done_record, &a);
    uv_sem_wait(&started);
    uint64_t t0 = uv_hrtime();
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 300), work_insert, done_record, &late);
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 100), work_insert, done_record, &early);
    while (!late.is_done)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(early.rc, MS_EPOOLTIMEOUT);
    assert_int_equal(late.rc, MS_EPOOLTIMEOUT);
    assert_true(early.order < late.order);
    /* each at its own deadline or after, never before (and `early` first, above) */
    assert_true((early.done_ns - t0) / 1000000 >= 95);
    assert_true((late.done_ns - t0) / 1000000 >= 295);
    uv_sem_post(&gate);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.rc, 0);
    close_pool(f, p);
}

static void test_waiters_served_in_order(void **state)
{
    fixture *f = *state;
    ms_db_pool *p = new_pool(f, 1, 0);
    call a = {.f = f}, w[3];
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 60000), work_block, done_record, &a);
    for (int i = 0; i < 3; i++) {
        w[i] = (call){.f = f, .value = i};
        /* Later arrivals with earlier deadlines still queue behind. */
        ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 30000 - 1000 * (uint64_t)i), work_insert,
                       done_record, &w[i]);
    }
    uv_sem_post(&gate);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.order, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(w[i].rc, 0);
        assert_int_equal(w[i].order, i + 2);
    }
    close_pool(f, p);
}

typedef struct stats_probe {
    ms_db_pool *pool;
    ms_db_pool_stats st;
} stats_probe;

static void probe_stats(void *arg)
{
    stats_probe *s = arg;
    ms_db_pool_get_stats(s->pool, &s->st);
}

static void test_close_fails_waiters_and_waits_for_busy(void **state)
{
    fixture *f = *state;
    ms_db_pool *p = new_pool(f, 1, 0);
    call a = {.f = f}, b = {.f = f}, late = {.f = f};
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 60000), work_block, done_record, &a);
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 60000), work_insert, done_record, &b);
    uv_sem_wait(&started);

    stats_probe probe = {p, {0}}; /* read from another thread, as the /metrics scraper does */
    uv_thread_t t;
    assert_int_equal(uv_thread_create(&t, probe_stats, &probe), 0);
    uv_thread_join(&t);
    assert_int_equal(probe.st.open, 1);
    assert_int_equal(probe.st.in_use, 1);
    assert_int_equal(probe.st.waiting, 1);
    assert_int_equal(probe.st.checkouts_total, 1);

    int closed_at = 0;
    ms_db_pool_close(p, on_closed, &closed_at);
    assert_true(b.is_done);
    assert_int_equal(b.rc, MS_ESHUTDOWN);
    assert_false(b.work_ran);
    assert_false(a.is_done);
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 1000), work_insert, done_record, &late);
    assert_int_equal(late.rc, MS_ESHUTDOWN);

    uv_sem_post(&gate);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* returns only when no handle is left */
    assert_int_equal(a.rc, 0);
    assert_true(closed_at > a.order); /* the busy connection was waited for */
    assert_int_equal(count_rows(f), 0);
}

static void test_share_divides_limits(void **state)
{
    fixture *f = *state;
    const struct {
        int size, overflow, share, want_size, want_overflow;
    } cases[] = {{20, 30, 3, 7, 10}, {1, 0, 4, 1, 0}, {0, 1, 2, 1, 1}, {8, 4, 2, 4, 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        f->cfg.pool_size = cases[i].size;
        f->cfg.pool_overflow = cases[i].overflow;
        ms_db_pool *p = NULL;
        assert_int_equal(ms_db_pool_new(&f->loop, &f->cfg, cases[i].share, &p), 0);
        ms_db_pool_stats st;
        ms_db_pool_get_stats(p, &st);
        assert_int_equal(st.size, cases[i].want_size);
        assert_int_equal(st.overflow, cases[i].want_overflow);
        assert_int_equal(st.open, 0); /* connections open on demand */
        close_pool(f, p);
    }
    ms_db_pool *p = (ms_db_pool *)&p;
    assert_int_equal(ms_db_pool_new(&f->loop, &f->cfg, 0, &p), MS_EINVAL);
    assert_null(p);
}

static void test_sqlite_read_runs_inline(void **state)
{
    fixture *f = *state;
    ms_db_pool *p = new_pool(f, 1, 0);
    /* First use before any pool writer exists. */
    call r0 = {.f = f, .value = -1};
    ms_db_pool_run(p, MS_DB_READ, deadline_in(f, 1000), work_count, done_record, &r0);
    assert_true(r0.is_done); /* before ms_db_pool_run returned */
    assert_int_equal(r0.rc, 0);
    assert_int_equal(r0.value, 0);
    assert_true(r0.work_on_loop);

    call w = {.f = f, .value = 1};
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 1000), work_insert, done_record, &w);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(w.rc, 0);

    call r1 = {.f = f, .value = -1};
    ms_db_pool_run(p, MS_DB_READ, deadline_in(f, 1000), work_count, done_record, &r1);
    assert_true(r1.is_done);
    assert_int_equal(r1.rc, 0);
    assert_int_equal(r1.value, 1); /* sees the committed write */
    assert_true(r1.done_on_loop);
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.checkouts_total, 3);
    close_pool(f, p);
}

/* Inserts one row through a connection of its own, as another process would. */
static void insert_elsewhere(fixture *f)
{
    ms_db_conn *c = NULL;
    assert_int_equal(ms_db_open(&f->cfg, false, &c), 0);
    assert_int_equal(ms_db_exec(c, "INSERT INTO t (n) VALUES (7)", 0, NULL, NULL), 0);
    ms_db_close(c);
}

static void test_sqlite_reused_snapshot_sees_every_commit(void **state)
{
    fixture *f = *state;
    ms_db_pool *p = new_pool(f, 1, 0);
    /* Several reads in one loop iteration share a read transaction, but a commit made in
     * between, by any connection, must be visible to the very next read. */
    for (int expect = 0; expect < 3; expect++) {
        call r = {.f = f, .value = -1};
        ms_db_pool_run(p, MS_DB_READ, deadline_in(f, 1000), work_count, done_record, &r);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.value, expect);
        call again = {.f = f, .value = -1};
        ms_db_pool_run(p, MS_DB_READ, deadline_in(f, 1000), work_count, done_record, &again);
        assert_int_equal(again.value, expect);
        insert_elsewhere(f);
    }
    /* The loop ends the read transaction before it waits: a checkpoint that needs every
     * reader gone (TRUNCATE) then completes. */
    uv_run(&f->loop, UV_RUN_NOWAIT);
    ms_db_conn *c = NULL;
    ms_db_result *r = NULL;
    assert_int_equal(ms_db_open(&f->cfg, false, &c), 0);
    assert_int_equal(ms_db_exec(c, "PRAGMA wal_checkpoint(TRUNCATE)", 0, NULL, &r), 0);
    assert_string_equal(ms_db_get(r, 0, 0), "0"); /* not busy */
    ms_db_result_free(r);
    ms_db_close(c);
    close_pool(f, p);
}

static void run_and_wait(fixture *f, ms_db_pool *p, ms_db_work_fn fn, call *k)
{
    ms_db_pool_run(p, MS_DB_WRITE, deadline_in(f, 5000), fn, done_record, k);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(k->is_done);
}

static void test_lost_connection_is_not_reused(void **state)
{
    fixture *f = *state;
    ms_db_pool *p = new_pool(f, 1, 0);
    call a = {.f = f}, b = {.f = f}, c = {.f = f};
    run_and_wait(f, p, work_make_temp, &a);
    run_and_wait(f, p, work_read_temp, &b);
    assert_int_equal(b.rc, 0); /* control: an idle connection is handed out again */
    run_and_wait(f, p, work_lose, &c);
    assert_int_equal(c.rc, MS_ECONN);
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.open, 0);
    call d = {.f = f};
    run_and_wait(f, p, work_read_temp, &d);
    assert_int_equal(d.rc, MS_EDB); /* a new connection: the temp table is gone */
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.open, 1);
    close_pool(f, p);
}

static void test_old_connection_is_recycled(void **state)
{
    fixture *f = *state;
    f->cfg.pool_recycle_s = 1;
    ms_db_pool *p = new_pool(f, 1, 0);
    call a = {.f = f}, b = {.f = f}, c = {.f = f};
    uint64_t t0 = uv_hrtime();
    run_and_wait(f, p, work_make_temp, &a);
    run_and_wait(f, p, work_read_temp, &b);
    /* younger than pool_recycle_s: kept (a stalled run may have aged it; then it is not) */
    if (uv_hrtime() - t0 < 1000 * 1000000ULL)
        assert_int_equal(b.rc, 0);
    usleep(1100 * 1000);
    run_and_wait(f, p, work_read_temp, &c);
    assert_int_equal(c.rc, MS_EDB); /* reopened before use */
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.open, 1);
    close_pool(f, p);
}

/* ---- PostgreSQL ---- */

static void use_pg(fixture *f)
{
    const char *url = getenv("MS_TEST_PG_URL");
    if (!url || !*url)
        skip();
    f->cfg.backend = MS_DB_POSTGRES;
    f->cfg.pg_conninfo = url;
}

static void terminate_backend(fixture *f, int pid)
{
    ms_db_conn *c = NULL;
    assert_int_equal(ms_db_open(&f->cfg, false, &c), 0);
    char v[16];
    snprintf(v, sizeof v, "%d", pid);
    const char *params[] = {v};
    ms_db_result *r = NULL;
    assert_int_equal(ms_db_exec(c, "SELECT pg_terminate_backend($1::integer)", 1, params, &r), 0);
    assert_string_equal(ms_db_get(r, 0, 0), "t");
    ms_db_result_free(r);
    ms_db_close(c);
}

static void test_pg_pre_ping_reconnects(void **state)
{
    fixture *f = *state;
    use_pg(f);
    ms_db_pool *p = new_pool(f, 1, 0);
    call a = {.f = f}, b = {.f = f};
    run_and_wait(f, p, work_pid, &a);
    assert_int_equal(a.rc, 0);
    terminate_backend(f, a.value);
    usleep(1200 * 1000); /* idle long enough to be pinged */
    run_and_wait(f, p, work_pid, &b);
    assert_int_equal(b.rc, 0);
    assert_true(b.value > 0 && b.value != a.value);
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.reconnects_total, 1);
    assert_int_equal(st.open, 1);
    close_pool(f, p);
}

static void test_pg_lost_connection_without_pre_ping(void **state)
{
    fixture *f = *state;
    use_pg(f);
    f->cfg.pool_pre_ping = false;
    ms_db_pool *p = new_pool(f, 1, 0);
    call a = {.f = f}, b = {.f = f}, c = {.f = f};
    run_and_wait(f, p, work_pid, &a);
    terminate_backend(f, a.value);
    run_and_wait(f, p, work_pid, &b);
    assert_int_equal(b.rc, MS_ECONN);
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.open, 0);
    run_and_wait(f, p, work_pid, &c);
    assert_int_equal(c.rc, 0);
    assert_true(c.value != a.value);
    close_pool(f, p);
}

static void test_pg_reads_use_the_pool(void **state)
{
    fixture *f = *state;
    use_pg(f);
    ms_db_pool *p = new_pool(f, 2, 0);
    call k[6];
    for (int i = 0; i < 6; i++) {
        k[i] = (call){.f = f};
        ms_db_pool_run(p, MS_DB_READ, deadline_in(f, 5000), work_pid, done_record, &k[i]);
        assert_false(k[i].is_done);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(k[i].rc, 0);
        assert_false(k[i].work_on_loop);
        assert_true(k[i].done_on_loop);
        assert_true(k[i].value > 0);
    }
    ms_db_pool_stats st;
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.checkouts_total, 6);
    assert_int_equal(st.open, 2);
    close_pool(f, p);

    f->cfg.pg_conninfo = "postgresql://postgres@127.0.0.1:1/postgres";
    p = new_pool(f, 1, 0);
    call bad = {.f = f};
    run_and_wait(f, p, work_pid, &bad);
    assert_int_equal(bad.rc, MS_ECONN);
    assert_false(bad.work_ran);
    ms_db_pool_get_stats(p, &st);
    assert_int_equal(st.open, 0);
    close_pool(f, p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_works_complete_on_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_outlives_short_gaps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exhausted_pool_fails_at_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exhausted_pool_fails_at_pool_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiters_expire_at_their_own_deadlines, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_waiters_served_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_fails_waiters_and_waits_for_busy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_share_divides_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_read_runs_inline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_reused_snapshot_sees_every_commit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lost_connection_is_not_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_connection_is_recycled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_pre_ping_reconnects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_lost_connection_without_pre_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_reads_use_the_pool, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
