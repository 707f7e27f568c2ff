/* test_metrics.c — metrics.c: format, escaping, HTTP shards, histograms, promtool check */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <math.h>

#include <cmocka.h>

#include "runtime/http/http_metrics.h"
#include "runtime/http/router.h"
#include "runtime/core/banned.h"

static void h_noop(ms_http_request *req)
{
    (void)req;
}

/* The buffer's text as a NUL-terminated string (kept inside the buffer). */
static const char *text_of(ms_buf *b)
{
    ms_buf_add(b, "", 1);
    b->n--;
    return b->p;
}

/* The value of the line "<series> <value>" (series includes labels), or NAN when absent. */
static double value_of(ms_buf *b, const char *series)
{
    const char *t = text_of(b);
    size_t n = strlen(series);
    for (const char *line = t; *line;) {
        const char *eol = strchr(line, '\n');
        if (!eol)
            eol = line + strlen(line);
        if ((size_t)(eol - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = *eol ? eol + 1 : eol;
    }
    return NAN;
}

static void assert_value(ms_buf *b, const char *series, double want)
{
    double got = value_of(b, series);
    if (isnan(got))
        fail_msg("no line for %s in:\n%s", series, text_of(b));
    if (got != want)
        fail_msg("%s: expected %g, got %g", series, want, got);
}

/* ---- the format ---- */

static void test_escape(void **state)
{
    ms_buf b;
    ms_buf_init(&b, 0);
    ms_metrics_escape(&b, "a\\b\"c\nd");
    assert_string_equal(text_of(&b), "a\\\\b\\\"c\\nd");
    b.n = 0;
    ms_metrics_escape(&b, "");
    assert_int_equal(b.n, 0);
    ms_metrics_escape(&b, "plain /api/v1/users/{id} é");
    assert_string_equal(text_of(&b), "plain /api/v1/users/{id} é");
    ms_buf_release(&b);
}

static void test_sample_without_labels(void **state)
{
    ms_buf b;
    ms_buf_init(&b, 0);
    ms_metrics_sample(&b, "up", 1, NULL);
    assert_string_equal(text_of(&b), "up 1\n");
    ms_buf_release(&b);
}

static void test_sample_with_labels(void **state)
{
    ms_buf b;
    ms_buf_init(&b, 0);
    ms_metrics_sample(&b, "requests_total", 12, "service", "user", "endpoint", "/a\"b", NULL);
    assert_string_equal(text_of(&b), "requests_total{service=\"user\",endpoint=\"/a\\\"b\"} 12\n");
    b.n = 0;
    ms_metrics_sample(&b, "x", 0, "k", (const char *)NULL, NULL); /* NULL value: empty */
    assert_string_equal(text_of(&b), "x{k=\"\"} 0\n");
    ms_buf_release(&b);
}

static void test_histogram_writer(void **state)
{
    static const double bounds[] = {0.1, 1};
    const uint64_t counts[] = {2, 0, 3}; /* per bucket; the last above every bound */
    const char *labels[] = {"upstream", "inv\"x"};
    ms_buf b;
    ms_buf_init(&b, 0);
    ms_metrics_histogram(&b, "d", labels, 1, bounds, 2, counts, 7.5);
    assert_string_equal(text_of(&b), "d_bucket{upstream=\"inv\\\"x\",le=\"0.1\"} 2\n"
                                     "d_bucket{upstream=\"inv\\\"x\",le=\"1\"} 2\n"
                                     "d_bucket{upstream=\"inv\\\"x\",le=\"+Inf\"} 5\n"
                                     "d_sum{upstream=\"inv\\\"x\"} 7.5\n"
                                     "d_count{upstream=\"inv\\\"x\"} 5\n");
    b.n = 0;
    ms_metrics_histogram(&b, "n", NULL, 0, bounds, 2, counts, 0);
    assert_string_equal(text_of(&b), "n_bucket{le=\"0.1\"} 2\nn_bucket{le=\"1\"} 2\n"
                                     "n_bucket{le=\"+Inf\"} 5\nn_sum 0\nn_count 5\n");
    ms_buf_release(&b);
    /* a value on a bound belongs to that bound's bucket (le is "less or equal") */
    assert_int_equal(ms_metrics_bucket(bounds, 2, 0.05), 0);
    assert_int_equal(ms_metrics_bucket(bounds, 2, 0.1), 0);
    assert_int_equal(ms_metrics_bucket(bounds, 2, 0.5), 1);
    assert_int_equal(ms_metrics_bucket(bounds, 2, 1.5), 2);
}

static void test_sample_values(void **state)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0, "v 0\n"},
        {42, "v 42\n"},
        {-7, "v -7\n"},
        {123456789012, "v 123456789012\n"},
        {0.5, "v 0.5\n"},
        {2.25, "v 2.25\n"},
        {1e20, "v 1e+20\n"},
        {INFINITY, "v +Inf\n"},
        {-INFINITY, "v -Inf\n"},
        {NAN, "v NaN\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ms_buf b;
        ms_buf_init(&b, 0);
        ms_metrics_sample(&b, "v", cases[i].v, NULL);
        if (strcmp(text_of(&b), cases[i].want) != 0)
            fail_msg("expected '%s', got '%s'", cases[i].want, text_of(&b));
        ms_buf_release(&b);
    }
    /* a fraction keeps enough digits to read back exactly */
    ms_buf b;
    ms_buf_init(&b, 0);
    ms_metrics_sample(&b, "v", 0.1, NULL);
    assert_true(strtod(text_of(&b) + 2, NULL) == 0.1);
    ms_buf_release(&b);
}

static void test_family_lines(void **state)
{
    ms_buf b;
    ms_buf_init(&b, 0);
    ms_metrics_family(&b, "requests_total", "counter", "HTTP requests answered.");
    assert_string_equal(text_of(&b), "# HELP requests_total HTTP requests answered.\n"
                                     "# TYPE requests_total counter\n");
    b.n = 0;
    /* HELP escapes backslash and newline only; quotes stay */
    ms_metrics_family(&b, "g", "gauge", "a \"b\" c\\d\ne");
    assert_string_equal(text_of(&b), "# HELP g a \"b\" c\\\\d\\ne\n# TYPE g gauge\n");
    ms_buf_release(&b);
}

/* ---- HTTP shards ---- */

typedef struct fixture {
    ms_router *router;
    ms_http_metrics *shards[2];
    ms_buf out;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->router = ms_router_new();
    ms_router_add(f->router, "GET", "/api/v1/users/{id}", h_noop);  /* 0 */
    ms_router_add(f->router, "POST", "/api/v1/users", h_noop);      /* 1 */
    ms_router_add(f->router, "GET", "/api/v1/orders/{id}", h_noop); /* 2: never observed */
    f->shards[0] = ms_http_metrics_new();
    f->shards[1] = ms_http_metrics_new();
    ms_buf_init(&f->out, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms_metrics_reset();
    ms_buf_release(&f->out);
    ms_http_metrics_free(f->shards[0]);
    ms_http_metrics_free(f->shards[1]);
    ms_router_free(f->router);
    free(f);
    return 0;
}

#define USERS_GET "service=\"user\",method=\"GET\",endpoint=\"/api/v1/users/{id}\""

static void render(fixture *f)
{
    f->out.n = 0;
    ms_http_metrics_render(&f->out, "user", f->router, f->shards, 2);
}

static void test_shards_summed(void **state)
{
    fixture *f = *state;
    ms_http_metrics_observe(f->shards[0], 0, HTTP_GET, 200, 0.003);
    ms_http_metrics_observe(f->shards[0], 0, HTTP_GET, 200, 0.004);
    ms_http_metrics_observe(f->shards[1], 0, HTTP_GET, 200, 0.2);
    ms_http_metrics_observe(f->shards[1], 0, HTTP_GET, 404, 0.001);
    ms_http_metrics_observe(f->shards[1], 1, HTTP_POST, 201, 0.05);
    render(f);
    assert_value(&f->out, "requests_total{" USERS_GET ",status=\"200\"}", 3);
    assert_value(&f->out, "requests_total{" USERS_GET ",status=\"404\"}", 1);
    assert_value(&f->out,
                 "requests_total{service=\"user\",method=\"POST\",endpoint=\"/api/v1/users\","
                 "status=\"201\"}",
                 1);
    assert_value(&f->out, "request_duration_seconds_count{" USERS_GET "}", 4);
    double sum = value_of(&f->out, "request_duration_seconds_sum{" USERS_GET "}");
    assert_true(fabs(sum - 0.208) < 1e-9);
    /* a route never observed, and a method never used, write nothing */
    assert_null(strstr(text_of(&f->out), "/api/v1/orders/{id}"));
    assert_null(strstr(text_of(&f->out), "method=\"DELETE\""));
    /* one family header each */
    assert_non_null(strstr(text_of(&f->out), "# TYPE requests_total counter\n"));
    assert_non_null(strstr(text_of(&f->out), "# TYPE request_duration_seconds histogram\n"));
    assert_non_null(strstr(text_of(&f->out), "# TYPE active_connections gauge\n"));
}

static void test_histogram_cumulative(void **state)
{
    fixture *f = *state;
    ms_http_metrics_observe(f->shards[0], 0, HTTP_GET, 200, 0.0002); /* le 0.0005 */
    ms_http_metrics_observe(f->shards[0], 0, HTTP_GET, 200, 0.0005); /* le 0.0005 (inclusive) */
    ms_http_metrics_observe(f->shards[1], 0, HTTP_GET, 200, 0.003);  /* le 0.005 */
    ms_http_metrics_observe(f->shards[1], 0, HTTP_GET, 200, 0.7);    /* le 1 */
    ms_http_metrics_observe(f->shards[0], 0, HTTP_GET, 500, 42.0);   /* only +Inf */
    render(f);
    static const struct {
        const char *le;
        double want;
    } want[] = {
        {"0.0005", 2}, {"0.001", 2}, {"0.0025", 2}, {"0.005", 3}, {"0.01", 3},
        {"0.025", 3},  {"0.05", 3},  {"0.1", 3},    {"0.25", 3},  {"0.5", 3},
        {"1", 4},      {"2.5", 4},   {"5", 4},      {"10", 4},    {"+Inf", 5},
    };
    double prev = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char series[256];
        snprintf(series, sizeof series, "request_duration_seconds_bucket{" USERS_GET ",le=\"%s\"}",
                 want[i].le);
        double v = value_of(&f->out, series);
        if (isnan(v))
            fail_msg("no bucket le=%s in:\n%s", want[i].le, text_of(&f->out));
        if (v != want[i].want)
            fail_msg("le=%s: expected %g, got %g", want[i].le, want[i].want, v);
        assert_true(v >= prev);
        prev = v;
    }
    double inf = value_of(&f->out, "request_duration_seconds_bucket{" USERS_GET ",le=\"+Inf\"}");
    assert_value(&f->out, "request_duration_seconds_count{" USERS_GET "}", inf);
}

static void test_unmatched_endpoint(void **state)
{
    fixture *f = *state;
    ms_http_metrics_observe(f->shards[0], -1, HTTP_GET, 404, 0.001);
    ms_http_metrics_observe(f->shards[1], -1, HTTP_GET, 404, 0.001);
    ms_http_metrics_observe(f->shards[1], -1, HTTP_PUT, 405, 0.001);
    ms_http_metrics_observe(f->shards[1], -1, HTTP_MKCOL, 400, 0.001);
    render(f);
    assert_value(&f->out,
                 "requests_total{service=\"user\",method=\"GET\",endpoint=\"unmatched\","
                 "status=\"404\"}",
                 2);
    assert_value(&f->out,
                 "requests_total{service=\"user\",method=\"PUT\",endpoint=\"unmatched\","
                 "status=\"405\"}",
                 1);
    assert_value(&f->out,
                 "requests_total{service=\"user\",method=\"OTHER\",endpoint=\"unmatched\","
                 "status=\"400\"}",
                 1);
    assert_value(&f->out,
                 "request_duration_seconds_count{service=\"user\",method=\"GET\","
                 "endpoint=\"unmatched\"}",
                 2);
}

static void test_requests_total_matches_count_with_many_statuses(void **state)
{
    /* requests_total summed over statuses must equal the histogram's _count */
    fixture *f = *state;
    static const int statuses[] = {200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 408,
                                   409, 412, 413, 415, 422, 429, 500, 502, 503, 504};
    size_t n = sizeof statuses / sizeof statuses[0];
    for (size_t i = 0; i < n; i++)
        ms_http_metrics_observe(f->shards[i % 2], 0, HTTP_GET, statuses[i], 0.001);
    render(f);
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        char series[256];
        snprintf(series, sizeof series, "requests_total{" USERS_GET ",status=\"%d\"}", statuses[i]);
        double v = value_of(&f->out, series);
        if (isnan(v))
            fail_msg("status %d of route 0 is missing from requests_total", statuses[i]);
        total += v;
    }
    assert_value(&f->out, "request_duration_seconds_count{" USERS_GET "}", total);
}

static void test_active_connections(void **state)
{
    fixture *f = *state;
    ms_http_metrics_connections(f->shards[0], 1);
    ms_http_metrics_connections(f->shards[0], 1);
    ms_http_metrics_connections(f->shards[1], 3);
    ms_http_metrics_connections(f->shards[1], -1);
    render(f);
    assert_value(&f->out, "active_connections{service=\"user\"}", 4);
}

static void test_empty_render(void **state)
{
    fixture *f = *state;
    render(f);
    assert_null(strstr(text_of(&f->out), "requests_total{"));
    assert_null(strstr(text_of(&f->out), "request_duration_seconds_bucket{"));
    assert_value(&f->out, "active_connections{service=\"user\"}", 0);
}

/* ---- the whole exposition ---- */

static void collect_http(ms_buf *out, void *arg)
{
    fixture *f = arg;
    ms_http_metrics_render(out, "us\"er\\\n", f->router, f->shards, 2);
}

static void collect_other(ms_buf *out, void *arg)
{
    (void)arg;
    ms_metrics_family(out, "db_pool_connections", "gauge", "Open database connections.");
    ms_metrics_sample(out, "db_pool_connections", 3, "state", "idle", NULL);
    ms_metrics_sample(out, "db_pool_connections", 1, "state", "busy", NULL);
}

static void test_render_collectors_and_process(void **state)
{
    fixture *f = *state;
    ms_metrics_register(collect_other, NULL);
    ms_metrics_render(&f->out);
    const char *t = text_of(&f->out);
    assert_non_null(strstr(t, "db_pool_connections{state=\"idle\"} 3\n"));
    assert_true(value_of(&f->out, "process_open_fds") > 0);
    assert_true(value_of(&f->out, "process_resident_memory_bytes") > 0);
    assert_true(value_of(&f->out, "process_max_fds") > 0);
    assert_true(value_of(&f->out, "process_start_time_seconds") > 1.6e9);
    /* reset forgets the collectors */
    ms_metrics_reset();
    f->out.n = 0;
    ms_metrics_render(&f->out);
    assert_null(strstr(text_of(&f->out), "db_pool_connections"));
}

static void test_promtool_accepts_exposition(void **state)
{
    if (access("/usr/bin/promtool", X_OK) != 0 && system("command -v promtool >/dev/null 2>&1"))
        skip();
    fixture *f = *state;
    ms_http_metrics_observe(f->shards[0], 0, HTTP_GET, 200, 0.003);
    ms_http_metrics_observe(f->shards[1], 0, HTTP_HEAD, 200, 0.3);
    ms_http_metrics_observe(f->shards[1], 1, HTTP_POST, 422, 0.01);
    ms_http_metrics_observe(f->shards[0], -1, HTTP_GET, 404, 0.0001);
    ms_http_metrics_connections(f->shards[0], 2);
    ms_metrics_register(collect_http, f);
    ms_metrics_register(collect_other, NULL);
    ms_metrics_render(&f->out);

    char path[] = "/tmp/ms-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, f->out.p, f->out.n), (ssize_t)f->out.n);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
        fail_msg("promtool check metrics refused:\n%s", text_of(&f->out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_sample_without_labels),
        cmocka_unit_test(test_sample_with_labels),
        cmocka_unit_test(test_sample_values),
        cmocka_unit_test(test_histogram_writer),
        cmocka_unit_test(test_family_lines),
        cmocka_unit_test_setup_teardown(test_shards_summed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_cumulative, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmatched_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requests_total_matches_count_with_many_statuses, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_active_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_render, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_collectors_and_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_promtool_accepts_exposition, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
