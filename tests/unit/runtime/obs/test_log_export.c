/* test_log_export.c — log_export.c: the OTLP JSON of a log line (severity, body, fields as
 * typed attributes, trace ids, strings that are not UTF-8), export to a collector that fails
 * first (retried, exported once), the exporters' own lines kept out of the export, a full
 * queue's drops counted, one attempt at stop, OTEL_LOGS_EXPORTER, and the metrics. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/obs/log_export.h"
#include "fixtures/otlp_collector.h"
#include "runtime/core/banned.h"

static const char *const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
static const char *const SPAN_ID = "00f067aa0ba902b7";

static json_t *attr(json_t *attrs, const char *key)
{
    return collector_attr(attrs, key);
}

static const char *attr_str(json_t *attrs, const char *key)
{
    return json_string_value(json_object_get(attr(attrs, key), "stringValue"));
}

static void test_encode(void **state)
{
    (void)state;
    const char *fields[] = {"order_id", "o-1",    "#items", "3",     "#ms",   "1.5",
                            "quote",    "a\"b\n", "bad",    "x\xff", "empty", NULL};
    ms_log_record line = {
        .level = MS_LOG_WARN,
        .time_unix_ns = 1700000000123456789ull,
        .msg = "order accepted",
        .fields = fields,
        .nfields = 6,
        .trace_id = TRACE_ID,
        .span_id = SPAN_ID,
    };
    ms_log_export_rec *with = ms_log_export_record(&line);
    line.trace_id = line.span_id = NULL;
    line.level = MS_LOG_DEBUG;
    line.nfields = 0;
    ms_log_export_rec *without = ms_log_export_record(&line);
    /* the ids as fields of a line written outside the context (the gateway's access line) */
    const char *named[] = {"method", "GET", "trace_id", TRACE_ID, "span_id", SPAN_ID};
    ms_log_record access = {.level = MS_LOG_INFO, .msg = "access", .fields = named, .nfields = 3};
    ms_log_export_rec *own = ms_log_export_record(&access);
    named[3] = "not-an-id"; /* not ids: plain fields */
    ms_log_export_rec *odd = ms_log_export_record(&access);
    assert_non_null(with);
    assert_non_null(without);
    ms_buf out;
    ms_buf_init(&out, 0);
    void *items[] = {with, without, own, odd};
    ms_log_export_encode(&out, "order", "inst-1", items, 4);
    json_error_t err;
    json_t *doc = json_loadb(out.p, out.n, 0, &err);
    if (!doc)
        fail_msg("not JSON (%s): %.*s", err.text, (int)out.n, out.p);
    json_t *rl = json_array_get(json_object_get(doc, "resourceLogs"), 0);
    json_t *res = json_object_get(json_object_get(rl, "resource"), "attributes");
    assert_string_equal(attr_str(res, "service.name"), "order");
    assert_string_equal(attr_str(res, "service.instance.id"), "inst-1");
    json_t *sl = json_array_get(json_object_get(rl, "scopeLogs"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(sl, "scope"), "name")),
                        "microshop");
    json_t *recs = json_object_get(sl, "logRecords");
    assert_int_equal(json_array_size(recs), 4);

    json_t *r = json_array_get(recs, 0);
    assert_string_equal(json_string_value(json_object_get(r, "timeUnixNano")),
                        "1700000000123456789");
    assert_int_equal(json_integer_value(json_object_get(r, "severityNumber")), 13);
    assert_string_equal(json_string_value(json_object_get(r, "severityText")), "WARN");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r, "body"), "stringValue")),
        "order accepted");
    assert_string_equal(json_string_value(json_object_get(r, "traceId")), TRACE_ID);
    assert_string_equal(json_string_value(json_object_get(r, "spanId")), SPAN_ID);
    json_t *attrs = json_object_get(r, "attributes");
    assert_int_equal(json_array_size(attrs), 6);
    assert_string_equal(attr_str(attrs, "order_id"), "o-1");
    /* a '#' field is a number: its key without the '#' */
    assert_string_equal(json_string_value(json_object_get(attr(attrs, "items"), "intValue")), "3");
    assert_true(json_real_value(json_object_get(attr(attrs, "ms"), "doubleValue")) == 1.5);
    assert_string_equal(attr_str(attrs, "quote"), "a\"b\n");
    assert_string_equal(attr_str(attrs, "bad"), "x\xef\xbf\xbd"); /* U+FFFD */
    assert_int_equal(json_object_size(attr(attrs, "empty")), 0);  /* null: an empty value */

    r = json_array_get(recs, 1);
    assert_int_equal(json_integer_value(json_object_get(r, "severityNumber")), 5);
    assert_string_equal(json_string_value(json_object_get(r, "severityText")), "DEBUG");
    assert_null(json_object_get(r, "traceId"));
    assert_null(json_object_get(r, "spanId"));
    assert_int_equal(json_array_size(json_object_get(r, "attributes")), 0);

    r = json_array_get(recs, 2);
    assert_string_equal(json_string_value(json_object_get(r, "traceId")), TRACE_ID);
    assert_string_equal(json_string_value(json_object_get(r, "spanId")), SPAN_ID);
    attrs = json_object_get(r, "attributes");
    assert_int_equal(json_array_size(attrs), 1);
    assert_string_equal(attr_str(attrs, "method"), "GET");
    r = json_array_get(recs, 3);
    assert_null(json_object_get(r, "traceId"));
    attrs = json_object_get(r, "attributes");
    assert_int_equal(json_array_size(attrs), 3);
    assert_string_equal(attr_str(attrs, "trace_id"), "not-an-id");
    json_decref(doc);
    ms_buf_release(&out);
    free(with);
    free(without);
    free(own);
    free(odd);
}

static void test_long_values_are_capped(void **state)
{
    (void)state;
    static char big[8192];
    memset(big, 'v', sizeof big - 1);
    const char *fields[2 * 40];
    for (int i = 0; i < 40; i++) {
        fields[2 * i] = "k";
        fields[2 * i + 1] = big;
    }
    ms_log_record line = {.level = MS_LOG_INFO, .msg = big, .fields = fields, .nfields = 40};
    ms_log_export_rec *rec = ms_log_export_record(&line);
    assert_non_null(rec);
    ms_buf out;
    ms_buf_init(&out, 0);
    void *items[] = {rec};
    ms_log_export_encode(&out, "s", "i", items, 1);
    json_t *doc = json_loadb(out.p, out.n, 0, NULL);
    assert_non_null(doc);
    json_t *r = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(doc, "resourceLogs"), 0),
                                           "scopeLogs"),
                           0),
            "logRecords"),
        0);
    assert_int_equal(
        strlen(json_string_value(json_object_get(json_object_get(r, "body"), "stringValue"))),
        1024);
    json_t *attrs = json_object_get(r, "attributes");
    /* the record holds 16 KiB of text: the fields past it are left out, whole */
    assert_true(json_array_size(attrs) > 0 && json_array_size(attrs) < 40);
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a)
    {
        assert_int_equal(
            strlen(json_string_value(json_object_get(json_object_get(a, "value"), "stringValue"))),
            1024);
    }
    json_decref(doc);
    ms_buf_release(&out);
    free(rec);
}

/* ---- export ---- */

static bool in_request;

static bool context(char trace_id[33], char span_id[17])
{
    if (!in_request)
        return false;
    memcpy(trace_id, TRACE_ID, 33);
    memcpy(span_id, SPAN_ID, 17);
    return true;
}

static double metric(const char *name)
{
    return collector_metric(ms_log_export_collect, name);
}

static char endpoint[64];

static void use(collector *c)
{
    collector_start(c);
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", c->port);
    setenv("OTEL_BLRP_SCHEDULE_DELAY", "10", 1);
    unsetenv("OTEL_BLRP_MAX_QUEUE_SIZE");
    unsetenv("OTEL_LOGS_EXPORTER");
}

/* The bodies of every record the collector accepted, in order, joined by '|'. */
static void bodies(collector *c, char *out, size_t cap)
{
    out[0] = '\0';
    pthread_mutex_lock(&c->mu);
    size_t i, j;
    json_t *doc, *r;
    json_array_foreach(c->logs, i, doc)
    {
        json_array_foreach(collector_items(doc, "resourceLogs", "scopeLogs", "logRecords"), j, r)
        {
            const char *b =
                json_string_value(json_object_get(json_object_get(r, "body"), "stringValue"));
            size_t n = strlen(out);
            snprintf(out + n, cap - n, "%s%s", n ? "|" : "", b);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

static void test_export_retries(void **state)
{
    (void)state;
    collector c;
    use(&c);
    c.log_script[0] = 503;
    c.log_script[1] = 429;
    c.nlog_script = 2;
    ms_log_set_context_fn(context);
    assert_int_equal(ms_log_export_init("order", endpoint), 0);
    double exported = metric("log_records_exported_total");
    double failures = metric("log_export_failures_total");
    in_request = true;
    ms_log(MS_LOG_INFO, "order accepted", "order_id", "o-1", "#total_cents", "1999", NULL);
    in_request = false;
    ms_log(MS_LOG_ERROR, "outside", NULL);
    assert_true(collector_wait(&c, &c.records, 2));
    ms_log_export_shutdown(2000);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.records, 2); /* exported once, after two refusals */
    assert_int_equal(c.log_requests, 3);
    assert_int_equal(c.requests, 0); /* no span */
    json_t *doc = json_array_get(c.logs, 0);
    json_t *res =
        json_object_get(json_array_get(json_object_get(doc, "resourceLogs"), 0), "resource");
    assert_string_equal(attr_str(json_object_get(res, "attributes"), "service.name"), "order");
    json_t *recs = collector_items(doc, "resourceLogs", "scopeLogs", "logRecords");
    json_t *r = json_array_get(recs, 0);
    assert_string_equal(json_string_value(json_object_get(r, "traceId")), TRACE_ID);
    assert_string_equal(json_string_value(json_object_get(r, "spanId")), SPAN_ID);
    assert_int_equal(json_integer_value(json_object_get(r, "severityNumber")), 9);
    json_t *attrs = json_object_get(r, "attributes");
    assert_string_equal(attr_str(attrs, "order_id"), "o-1");
    assert_string_equal(json_string_value(json_object_get(attr(attrs, "total_cents"), "intValue")),
                        "1999");
    r = json_array_get(recs, 1);
    assert_int_equal(json_integer_value(json_object_get(r, "severityNumber")), 17);
    assert_null(json_object_get(r, "traceId"));
    pthread_mutex_unlock(&c.mu);
    /* the flusher's "flush failed" line went to stderr only */
    char all[4096];
    bodies(&c, all, sizeof all);
    assert_string_equal(all, "order accepted|outside");
    assert_true(metric("log_records_exported_total") == exported + 2);
    assert_true(metric("log_export_failures_total") == failures + 2);
    ms_log_set_context_fn(NULL);
    collector_stop(&c);
}

static void test_refused_for_good(void **state)
{
    (void)state;
    collector c;
    use(&c);
    c.log_script[0] = 400; /* a 4xx but 429: dropped, counted, not sent again */
    c.nlog_script = 1;
    assert_int_equal(ms_log_export_init("test", endpoint), 0);
    double dropped = metric("log_records_dropped_total");
    ms_log(MS_LOG_INFO, "refused", NULL);
    for (int waited = 0;
         waited < OTLP_COLLECTOR_DEADLINE_MS && metric("log_records_dropped_total") == dropped;
         waited += 5)
        usleep(5000);
    assert_true(metric("log_records_dropped_total") == dropped + 1);
    ms_log(MS_LOG_INFO, "next", NULL); /* the next goes out */
    assert_true(collector_wait(&c, &c.records, 1));
    ms_log_export_shutdown(2000);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.log_requests, 2);
    pthread_mutex_unlock(&c.mu);
    /* the warning about the refusal was written on the flusher thread: not exported */
    char all[4096];
    bodies(&c, all, sizeof all);
    assert_string_equal(all, "next");
    collector_stop(&c);
}

static void test_queue_full_drops(void **state)
{
    (void)state;
    collector c;
    use(&c);
    setenv("OTEL_BLRP_SCHEDULE_DELAY", "3600000", 1); /* nothing leaves before the shutdown */
    setenv("OTEL_BLRP_MAX_QUEUE_SIZE", "3", 1);
    assert_int_equal(ms_log_export_init("test", endpoint), 0);
    double dropped = metric("log_records_dropped_total");
    for (int i = 0; i < 5; i++)
        ms_log(MS_LOG_INFO, "line", NULL);
    assert_true(metric("log_records_dropped_total") == dropped + 2);
    ms_log_export_shutdown(5000); /* the three queued go out */
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.records, 3);
    pthread_mutex_unlock(&c.mu);
    unsetenv("OTEL_BLRP_MAX_QUEUE_SIZE");
    collector_stop(&c);
}

static void *exporter_thread(void *arg)
{
    (void)arg;
    ms_log_export_ignore_thread(); /* as the spans' exporter's thread does */
    ms_log(MS_LOG_WARN, "from an exporter's thread", NULL);
    return NULL;
}

static void test_exporter_threads_are_not_exported(void **state)
{
    (void)state;
    collector c;
    use(&c);
    assert_int_equal(ms_log_export_init("test", endpoint), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, exporter_thread, NULL), 0);
    pthread_join(t, NULL);
    ms_log(MS_LOG_INFO, "from the application", NULL);
    assert_true(collector_wait(&c, &c.records, 1));
    ms_log_export_shutdown(2000);
    char all[4096];
    bodies(&c, all, sizeof all);
    assert_string_equal(all, "from the application");
    collector_stop(&c);
}

static void test_stopping_does_not_retry(void **state)
{
    (void)state;
    collector c;
    use(&c);
    collector_stop(&c);                               /* nothing listens there now */
    setenv("OTEL_BLRP_SCHEDULE_DELAY", "3600000", 1); /* the first attempt is the stop's */
    assert_int_equal(ms_log_export_init("test", endpoint), 0);
    double dropped = metric("log_records_dropped_total");
    double failures = metric("log_export_failures_total");
    ms_log(MS_LOG_INFO, "one", NULL);
    ms_log(MS_LOG_INFO, "two", NULL);
    ms_log_export_shutdown(5000);
    /* one attempt, then the lines (on stderr already) are dropped and counted */
    assert_true(metric("log_export_failures_total") == failures + 1);
    assert_true(metric("log_records_dropped_total") == dropped + 2);
}

static void test_settings(void **state)
{
    (void)state;
    collector c;
    use(&c);
    setenv("OTEL_LOGS_EXPORTER", "none", 1);
    assert_int_equal(ms_log_export_init("test", endpoint), 0);
    ms_log(MS_LOG_INFO, "not exported", NULL);
    ms_log_export_shutdown(100);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.log_requests, 0);
    pthread_mutex_unlock(&c.mu);
    setenv("OTEL_LOGS_EXPORTER", "console", 1);
    assert_int_equal(ms_log_export_init("test", endpoint), MS_EINVAL);
    unsetenv("OTEL_LOGS_EXPORTER");
    assert_int_equal(ms_log_export_init("test", "https://x:1"), MS_EINVAL);
    setenv("OTEL_BLRP_SCHEDULE_DELAY", "0", 1);
    assert_int_equal(ms_log_export_init("test", endpoint), MS_EINVAL);
    unsetenv("OTEL_BLRP_SCHEDULE_DELAY");
    assert_int_equal(ms_log_export_init("test", NULL), 0); /* no endpoint: nothing started */
    ms_log(MS_LOG_INFO, "not exported either", NULL);
    ms_log_export_shutdown(100);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.log_requests, 0);
    pthread_mutex_unlock(&c.mu);
    collector_stop(&c);
}

static void test_promtool_accepts_metrics(void **state)
{
    (void)state;
    ms_buf out;
    ms_buf_init(&out, 0);
    ms_log_export_collect(&out);
    char path[] = "/tmp/ms-log-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, out.p, out.n), (ssize_t)out.n);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    ms_buf_release(&out);
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_long_values_are_capped),
        cmocka_unit_test(test_export_retries),
        cmocka_unit_test(test_refused_for_good),
        cmocka_unit_test(test_queue_full_drops),
        cmocka_unit_test(test_exporter_threads_are_not_exported),
        cmocka_unit_test(test_stopping_does_not_retry),
        cmocka_unit_test(test_settings),
        cmocka_unit_test(test_promtool_accepts_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
