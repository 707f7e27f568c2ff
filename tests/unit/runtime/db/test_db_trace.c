/*
 * test_db_trace.c — database spans (db_trace.c) and the trace context the pool carries, on
 * SQLite and, when MS_TEST_PG_URL is set, PostgreSQL, exported to a collector in a thread: a
 * statement inside a sampled context is a CLIENT span under the current span with the database
 * attributes, an error is recorded, a thread without a sampled context makes none, and a
 * parameter's value never leaves; the pool's worker and done callback see the queuing thread's
 * context. Also the SQL summary and masking, and the resource's service name from the
 * environment.
 */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixtures/otlp_collector.h"
#include "fixtures/pg_test_db.h"
#include "runtime/core/error.h"
#include "runtime/db/db_internal.h"
#include "runtime/obs/trace_internal.h"
#include "runtime/core/banned.h"

enum { DEADLINE_MS = 20000 };

/* A parameter's value that must never be exported. */
static const char *const SECRET = "s3cret-value-4711";

/* ---- the tracer exporting to a collector in a thread (fixtures/otlp_collector.h) ---- */

/* Starts a collector and the tracer exporting to it every 10 ms. */
static void tracer_start(collector *c)
{
    collector_start(c);
    collector_set_endpoint(c);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "10", 1);
    ms_trace_sampler_set(true, 1.0);
    assert_int_equal(ms_trace_init("dbtest"), 0);
}

/* Stops the tracer (what is queued goes out first) and the collector. */
static void tracer_stop(collector *c)
{
    ms_trace_shutdown(5000);
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    collector_stop(c);
}

static int count_trace(collector *c, const ms_trace_ctx *ctx)
{
    char tid[MS_TRACE_ID_HEX + 1], sid[MS_SPAN_ID_HEX + 1];
    ms_trace_ids_hex(ctx, tid, sid);
    int n = 0;
    size_t i;
    json_t *sp;
    pthread_mutex_lock(&c->mu);
    json_array_foreach(c->span_docs, i, sp)
    {
        n += strcmp(json_string_value(json_object_get(sp, "traceId")), tid) == 0;
    }
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* Waits until `n` spans of `ctx`'s trace have arrived. */
static bool wait_trace(collector *c, const ms_trace_ctx *ctx, int n)
{
    for (int waited = 0; waited < DEADLINE_MS; waited += 5) {
        if (count_trace(c, ctx) >= n)
            return true;
        usleep(5000);
    }
    return false;
}

static const char *attr(json_t *sp, const char *key);

/* The span of `ctx`'s trace named `name` whose query text is `text`, failed or not; NULL when
 * there is none or several. */
static json_t *find(collector *c, const ms_trace_ctx *ctx, const char *name, const char *text,
                    bool is_error)
{
    char tid[MS_TRACE_ID_HEX + 1], sid[MS_SPAN_ID_HEX + 1];
    ms_trace_ids_hex(ctx, tid, sid);
    json_t *found = NULL, *sp;
    int n = 0;
    size_t i;
    pthread_mutex_lock(&c->mu);
    json_array_foreach(c->span_docs, i, sp)
    {
        const char *t = attr(sp, "db.query.text");
        bool failed =
            json_integer_value(json_object_get(json_object_get(sp, "status"), "code")) == 2;
        if (strcmp(json_string_value(json_object_get(sp, "traceId")), tid) == 0 &&
            strcmp(json_string_value(json_object_get(sp, "name")), name) == 0 && t &&
            strcmp(t, text) == 0 && failed == is_error) {
            found = sp;
            n++;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return n == 1 ? found : NULL;
}

/* A span's attribute as text (an int's decimal text too), or NULL. */
static const char *attr(json_t *sp, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(sp, "attributes"), i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")), key) == 0) {
            json_t *v = json_object_get(a, "value");
            json_t *s = json_object_get(v, "stringValue");
            return json_string_value(s ? s : json_object_get(v, "intValue"));
        }
    }
    return NULL;
}

static double spans_started(void)
{
    ms_buf out;
    ms_buf_init(&out, 0);
    ms_trace_collect(&out);
    ms_buf_add(&out, "", 1);
    const char *at = strstr(out.p, "\ntrace_spans_started_total ");
    double v = at ? strtod(at + strlen("\ntrace_spans_started_total "), NULL) : -1;
    ms_buf_release(&out);
    return v;
}

/* Checks a database span: kind CLIENT, child of `parent`, and its attributes. */
static void check_db_span(json_t *sp, const ms_db_config *cfg, const ms_trace_ctx *parent,
                          const char *op, const char *table, const char *text)
{
    assert_non_null(sp);
    char tid[MS_TRACE_ID_HEX + 1], sid[MS_SPAN_ID_HEX + 1];
    ms_trace_ids_hex(parent, tid, sid);
    assert_int_equal(json_integer_value(json_object_get(sp, "kind")), 3);
    assert_string_equal(json_string_value(json_object_get(sp, "parentSpanId")), sid);
    assert_string_equal(attr(sp, "db.system.name"),
                        cfg->backend == MS_DB_POSTGRES ? "postgresql" : "sqlite");
    assert_string_equal(attr(sp, "db.operation.name"), op);
    if (table)
        assert_string_equal(attr(sp, "db.collection.name"), table);
    else
        assert_null(attr(sp, "db.collection.name"));
    assert_string_equal(attr(sp, "db.query.text"), text);
    if (cfg->backend == MS_DB_POSTGRES) {
        assert_non_null(attr(sp, "server.address"));
        assert_true(atoi(attr(sp, "server.port")) > 0);
    } else {
        assert_null(attr(sp, "server.address"));
    }
}

/* ---- fixture: a fresh database of the case's backend with a table ---- */

typedef struct fixture {
    bool is_ready;
    sqlite_test_db tmp;
    ms_db_config cfg;
} fixture;

static int group_setup(void **state)
{
    return pg_test_db_create("ms_dbtrace");
}

static int group_teardown(void **state)
{
    return pg_test_db_drop();
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->cfg = (ms_db_config){.backend = *(ms_db_backend *)*state,
                            .busy_timeout_ms = 5000,
                            .pool_size = 2,
                            .pool_timeout_ms = 10000,
                            .pool_recycle_s = 3600,
                            .pool_pre_ping = true};
    ms_db_conn *c = NULL;
    int rc = test_db_fresh(&f->cfg, &f->tmp, "/tmp/ms_test_dbtrace_XXXXXX", "t.db", &c);
    if (rc < 0) {
        free(f);
        return -1;
    }
    f->is_ready = rc > 0;
    if (c) {
        x(c, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)");
        ms_db_close(c);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
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

static int count_row(const ms_db_row *row, void *arg)
{
    (*(int *)arg)++;
    return 0;
}

static void test_statement_spans(void **state)
{
    fixture *f = ready(state);
    collector col;
    tracer_start(&col);
    ms_db_conn *c = open_conn(&f->cfg);
    bool is_pg = f->cfg.backend == MS_DB_POSTGRES;

    ms_trace_ctx req;
    ms_span *server = ms_span_start("POST /items", MS_SPAN_SERVER, NULL, &req);
    assert_non_null(server);
    ms_trace_set_current(&req);
    const char *row[] = {"1", SECRET};
    assert_int_equal(ms_db_begin(c), 0);
    assert_int_equal(ms_db_exec(c, "INSERT INTO items (id, name) VALUES ($1, $2)", 2, row, NULL),
                     0);
    assert_int_equal(ms_db_commit(c), 0);
    int n = 0;
    const char *name_param[] = {SECRET};
    assert_int_equal(ms_db_each(c, "SELECT id, name FROM items WHERE name = $1 AND name <> 'x'", 1,
                                name_param, count_row, &n),
                     0);
    assert_int_equal(n, 1);
    /* a unique violation: recorded as the span's error, its type the SQLSTATE when there is
     * one */
    assert_int_equal(ms_db_exec(c, "INSERT INTO items (id, name) VALUES ($1, $2)", 2, row, NULL),
                     MS_ECONFLICT);
    if (!is_pg) {
        const char *row2[] = {"2", SECRET};
        int64_t rowid = 0;
        assert_int_equal(ms_db_insert_rowid(c, "INSERT INTO \"items\" (id, name) VALUES ($1, $2)",
                                            2, row2, &rowid),
                         0);
        assert_int_equal(rowid, 2);
    }
    ms_trace_set_current(NULL);
    ms_span_end(server);

    assert_true(wait_trace(&col, &req, is_pg ? 6 : 7)); /* with the server span */
    const char *insert = "INSERT INTO items (id, name) VALUES ($1, $2)";
    check_db_span(find(&col, &req, "INSERT items", insert, false), &f->cfg, &req, "INSERT", "items",
                  insert);
    const char *begin = is_pg ? "BEGIN" : "BEGIN IMMEDIATE";
    check_db_span(find(&col, &req, "BEGIN", begin, false), &f->cfg, &req, "BEGIN", NULL, begin);
    check_db_span(find(&col, &req, "COMMIT", "COMMIT", false), &f->cfg, &req, "COMMIT", NULL,
                  "COMMIT");
    /* the literal is masked like any value would be */
    const char *select = "SELECT id, name FROM items WHERE name = $1 AND name <> '?'";
    check_db_span(find(&col, &req, "SELECT items", select, false), &f->cfg, &req, "SELECT", "items",
                  select);
    if (!is_pg) {
        const char *quoted = "INSERT INTO \"items\" (id, name) VALUES ($1, $2)";
        check_db_span(find(&col, &req, "INSERT items", quoted, false), &f->cfg, &req, "INSERT",
                      "items", quoted);
    }
    json_t *failed = find(&col, &req, "INSERT items", insert, true);
    check_db_span(failed, &f->cfg, &req, "INSERT", "items", insert);
    assert_string_equal(attr(failed, "error.type"), is_pg ? "23505" : "ECONFLICT");
    if (is_pg)
        assert_string_equal(attr(failed, "db.response.status_code"), "23505");
    assert_non_null(
        json_string_value(json_object_get(json_object_get(failed, "status"), "message")));

    /* a thread with no context, or an unsampled one: no span at all */
    double started = spans_started();
    assert_int_equal(ms_db_exec(c, "SELECT name FROM items", 0, NULL, NULL), 0);
    ms_trace_ctx unsampled = req;
    unsampled.flags = 0;
    ms_trace_set_current(&unsampled);
    assert_int_equal(ms_db_exec(c, "SELECT name FROM items", 0, NULL, NULL), 0);
    ms_trace_set_current(NULL);
    assert_true(spans_started() == started);

    ms_db_close(c);
    ms_trace_shutdown(5000); /* everything is out: nothing carries the parameter's value */
    pthread_mutex_lock(&col.mu);
    char *all = json_dumps(col.span_docs, JSON_COMPACT);
    pthread_mutex_unlock(&col.mu);
    assert_non_null(all);
    assert_non_null(strstr(all, "INSERT INTO items"));
    assert_null(strstr(all, SECRET));
    free(all);
    tracer_stop(&col);
}

/* What the pool's work and done callback saw. */
typedef struct seen {
    const char *id; /* of the row inserted */
    bool work_has_ctx, done_has_ctx, is_done;
    uint8_t work_span[8], done_span[8];
    int rc;
} seen;

static int insert_work(ms_db_conn *c, void *arg)
{
    seen *k = arg;
    const ms_trace_ctx *cur = ms_trace_current();
    k->work_has_ctx = cur != NULL;
    if (cur)
        memcpy(k->work_span, cur->span_id, 8);
    const char *row[] = {k->id, SECRET};
    return ms_db_exec(c, "INSERT INTO items (id, name) VALUES ($1, $2)", 2, row, NULL);
}

static void insert_done(int rc, void *arg)
{
    seen *k = arg;
    const ms_trace_ctx *cur = ms_trace_current();
    k->done_has_ctx = cur != NULL;
    if (cur)
        memcpy(k->done_span, cur->span_id, 8);
    k->rc = rc;
    k->is_done = true;
}

static void on_closed(void *arg)
{
    *(bool *)arg = true;
}

static void test_pool_carries_the_context(void **state)
{
    fixture *f = ready(state);
    collector col;
    tracer_start(&col);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ms_db_pool *p = NULL;
    assert_int_equal(ms_db_pool_new(&loop, &f->cfg, 1, &p), 0);

    ms_trace_ctx req;
    ms_span *server = ms_span_start("POST /items", MS_SPAN_SERVER, NULL, &req);
    ms_trace_set_current(&req);
    seen traced = {.id = "10"};
    uv_update_time(&loop);
    ms_db_pool_run(p, MS_DB_WRITE, uv_now(&loop) + DEADLINE_MS, insert_work, insert_done, &traced);
    ms_trace_set_current(NULL); /* the loop runs the callbacks outside the request */
    while (!traced.is_done)
        uv_run(&loop, UV_RUN_ONCE);
    ms_span_end(server);
    assert_int_equal(traced.rc, 0);
    assert_true(traced.work_has_ctx);
    assert_memory_equal(traced.work_span, req.span_id, 8);
    assert_true(traced.done_has_ctx);
    assert_memory_equal(traced.done_span, req.span_id, 8);
    assert_null(ms_trace_current()); /* restored after the callback */
    assert_true(wait_trace(&col, &req, 2));
    const char *insert = "INSERT INTO items (id, name) VALUES ($1, $2)";
    check_db_span(find(&col, &req, "INSERT items", insert, false), &f->cfg, &req, "INSERT", "items",
                  insert);

    /* queued outside any context: none on the worker, and no span */
    double started = spans_started();
    seen bare = {.id = "11"};
    ms_db_pool_run(p, MS_DB_WRITE, uv_now(&loop) + DEADLINE_MS, insert_work, insert_done, &bare);
    while (!bare.is_done)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(bare.rc, 0);
    assert_false(bare.work_has_ctx);
    assert_false(bare.done_has_ctx);
    assert_true(spans_started() == started);

    bool closed = false;
    ms_db_pool_close(p, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(closed);
    assert_int_equal(uv_loop_close(&loop), 0);
    tracer_stop(&col);
}

static void test_sql_summary(void **state)
{
    (void)state;
    static const struct {
        const char *sql, *op, *table;
    } cases[] = {
        {"SELECT id FROM users WHERE email = $1", "SELECT", "users"},
        {"  select * from \"orders\" o where o.id = $1", "SELECT", "orders"},
        {"-- why\n/* a note */ INSERT INTO stock (sku, n) VALUES ($1, $2) ON CONFLICT (sku) DO "
         "UPDATE SET n = stock.n + excluded.n",
         "INSERT", "stock"},
        {"UPDATE products SET price = $1 WHERE id = $2 RETURNING id", "UPDATE", "products"},
        {"DELETE FROM sessions WHERE expires < $1", "DELETE", "sessions"},
        {"SELECT * FROM orders FOR UPDATE SKIP LOCKED", "SELECT", "orders"},
        {"SELECT * FROM public.orders AS o WHERE o.id = $1", "SELECT", "public.orders"},
        {"SELECT count(*) FROM orders o JOIN lines l ON l.order_id = o.id", "SELECT", ""},
        {"SELECT * FROM a, b", "SELECT", ""},
        {"SELECT * FROM a x, b y", "SELECT", ""},
        {"INSERT INTO archive SELECT * FROM orders", "INSERT", ""},
        {"SELECT n FROM t WHERE n IN (SELECT n FROM t WHERE n > 1)", "SELECT", "t"},
        {"SELECT extract(epoch FROM created_at) FROM orders", "SELECT", ""},
        {"SELECT 'FROM x' FROM orders", "SELECT", "orders"},
        {"SELECT 1", "SELECT", ""},
        {"BEGIN IMMEDIATE", "BEGIN", ""},
        {"commit", "COMMIT", ""},
        {"", "", ""},
        {"  -- only a comment", "", ""},
        {"(SELECT 1)", "", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char op[24], table[64];
        ms_db__sql_summary(cases[i].sql, op, sizeof op, table, sizeof table);
        if (strcmp(op, cases[i].op) != 0 || strcmp(table, cases[i].table) != 0)
            fail_msg("%s: got \"%s\" \"%s\"", cases[i].sql, op, table);
    }
}

static void test_sql_sanitize(void **state)
{
    (void)state;
    char out[64];
    ms_db__sql_sanitize("SELECT * FROM t WHERE a = 'it''s secret' AND b = $1", out, sizeof out);
    assert_string_equal(out, "SELECT * FROM t WHERE a = '?' AND b = $1");
    ms_db__sql_sanitize("SELECT 'unterminated secret", out, sizeof out);
    assert_string_equal(out, "SELECT '?'");
    /* cut to fit, never inside a character nor with half a literal */
    char small[12];
    ms_db__sql_sanitize("SELECT 'x' || 'y'", small, sizeof small);
    assert_string_equal(small, "SELECT '?' ");
    ms_db__sql_sanitize("SELECT 'abc'", small, 10);
    assert_string_equal(small, "SELECT ");
    ms_db__sql_sanitize("SELECT \xc3\xa9t\xc3\xa9", small, 9); /* "SELECT é" is 9 bytes */
    assert_string_equal(small, "SELECT ");
}

static void test_service_name(void **state)
{
    (void)state;
    char name[64];
    unsetenv("OTEL_SERVICE_NAME");
    unsetenv("OTEL_RESOURCE_ATTRIBUTES");
    ms_trace_service_name("order", name, sizeof name);
    assert_string_equal(name, "order");
    setenv("OTEL_SERVICE_NAME", "", 1); /* empty: as if unset */
    ms_trace_service_name("order", name, sizeof name);
    assert_string_equal(name, "order");
    setenv("OTEL_RESOURCE_ATTRIBUTES",
           "deployment.environment=prod, service.name = shop%20orders ,x=y", 1);
    ms_trace_service_name("order", name, sizeof name);
    assert_string_equal(name, "shop orders");
    setenv("OTEL_SERVICE_NAME", "orders-eu", 1); /* wins over the resource attributes */
    ms_trace_service_name("order", name, sizeof name);
    assert_string_equal(name, "orders-eu");
    unsetenv("OTEL_SERVICE_NAME");
    setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=shop,service.name=", 1);
    ms_trace_service_name("order", name, sizeof name);
    assert_string_equal(name, "order");
    unsetenv("OTEL_RESOURCE_ATTRIBUTES");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sql_summary),
        cmocka_unit_test(test_sql_sanitize),
        cmocka_unit_test(test_service_name),
        cmocka_unit_test_prestate_setup_teardown(test_statement_spans, setup, teardown,
                                                 &backend_sqlite),
        cmocka_unit_test_prestate_setup_teardown(test_statement_spans, setup, teardown,
                                                 &backend_pg),
        cmocka_unit_test_prestate_setup_teardown(test_pool_carries_the_context, setup, teardown,
                                                 &backend_sqlite),
        cmocka_unit_test_prestate_setup_teardown(test_pool_carries_the_context, setup, teardown,
                                                 &backend_pg),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
