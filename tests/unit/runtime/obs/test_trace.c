/* test_trace.c — trace_context.c, span.c, trace_export.c: traceparent parsing and formatting,
 * children, the ratio sampler, the OTLP JSON of a span, export to a collector that fails first
 * (retried, exported once), a full queue's drops counted, and the metrics. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/core/error.h"
#include "runtime/obs/batch.h"
#include "runtime/obs/metrics.h"
#include "runtime/obs/trace_internal.h"
#include "fixtures/otlp_collector.h"
#include "runtime/core/banned.h"

enum { DEADLINE_MS = OTLP_COLLECTOR_DEADLINE_MS };

static const char *const GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static void test_parse_format(void **state)
{
    (void)state;
    ms_trace_ctx c;
    assert_int_equal(ms_traceparent_parse(GOOD, &c), 0);
    assert_true(c.valid);
    assert_int_equal(c.flags, 1);
    assert_int_equal(c.trace_id[0], 0x4b);
    assert_int_equal(c.span_id[7], 0xb7);
    char out[MS_TRACEPARENT_LEN + 1];
    ms_traceparent_format(&c, out);
    assert_string_equal(out, GOOD);
    assert_int_equal(
        ms_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c), 0);
    assert_int_equal(c.flags, 0);
    assert_false(ms_trace_sampled(&c));

    const char *bad[] = {
        NULL,
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero span id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* not version 00 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* too long */
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",   /* too short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",  /* flags */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c.valid = true;
        assert_int_equal(ms_traceparent_parse(bad[i], &c), MS_EINVAL);
        assert_false(c.valid);
    }
}

static void test_child(void **state)
{
    (void)state;
    ms_trace_sampler_set(true, 1.0);
    ms_trace_ctx p, c;
    assert_int_equal(ms_traceparent_parse(GOOD, &p), 0);
    ms_trace_child(&p, &c);
    assert_true(c.valid);
    assert_memory_equal(c.trace_id, p.trace_id, 16);
    assert_memory_not_equal(c.span_id, p.span_id, 8);
    assert_int_equal(c.flags, p.flags);
    /* an unsampled parent decides for its child, whatever the ratio */
    p.flags = 0;
    ms_trace_child(&p, &c);
    assert_int_equal(c.flags, 0);

    ms_trace_ctx r1, r2;
    ms_trace_child(NULL, &r1); /* a root */
    ms_trace_child(NULL, &r2);
    assert_true(r1.valid);
    assert_true(ms_trace_sampled(&r1));
    assert_memory_not_equal(r1.trace_id, r2.trace_id, 16);
    ms_trace_ctx invalid = {0};
    ms_trace_child(&invalid, &r2); /* an invalid parent: a root too */
    assert_memory_not_equal(r1.trace_id, r2.trace_id, 16);

    /* tracestate goes on with a valid traceparent only, and only when short enough */
    char long_state[MS_TRACESTATE_MAX + 2];
    memset(long_state, 'a', sizeof long_state - 1);
    long_state[sizeof long_state - 1] = '\0';
    assert_string_equal(ms_tracestate_pass("k=v", &p), "k=v");
    assert_null(ms_tracestate_pass("k=v", &invalid));
    assert_null(ms_tracestate_pass("k=v", NULL));
    assert_null(ms_tracestate_pass(long_state, &p));
    long_state[MS_TRACESTATE_MAX] = '\0';
    assert_non_null(ms_tracestate_pass(long_state, &p));
}

static void test_sampler(void **state)
{
    (void)state;
    ms_trace_ctx c;
    ms_trace_sampler_set(true, 0.0);
    for (int i = 0; i < 200; i++) {
        ms_trace_child(NULL, &c);
        assert_false(ms_trace_sampled(&c));
    }
    ms_trace_sampler_set(true, 1.0);
    for (int i = 0; i < 200; i++) {
        ms_trace_child(NULL, &c);
        assert_true(ms_trace_sampled(&c));
    }
    /* 0.5: the decision follows the trace id's low 8 bytes, so it is the same every time (and
     * in every process) for one trace, and ids on either side of the middle go either way */
    ms_trace_sampler_set(true, 0.5);
    uint8_t id[16] = {0};
    id[8] = 0x7f;
    assert_true(ms_trace_ratio_sampled(id));
    id[8] = 0x80;
    assert_false(ms_trace_ratio_sampled(id));
    int sampled = 0;
    for (int i = 0; i < 400; i++) {
        ms_trace_child(NULL, &c);
        assert_int_equal(ms_trace_sampled(&c), ms_trace_ratio_sampled(c.trace_id));
        assert_int_equal(ms_trace_sampled(&c), ms_trace_ratio_sampled(c.trace_id));
        sampled += ms_trace_sampled(&c);
    }
    assert_true(sampled > 0 && sampled < 400);
    /* not parent-based: the ratio decides a child too, the same way as for its root */
    ms_trace_sampler_set(false, 0.0);
    ms_trace_ctx p;
    assert_int_equal(ms_traceparent_parse(GOOD, &p), 0);
    ms_trace_child(&p, &c);
    assert_false(ms_trace_sampled(&c));
    ms_trace_sampler_set(true, 1.0);
}

static json_t *attr(json_t *attrs, const char *key)
{
    return collector_attr(attrs, key);
}

static void test_encode(void **state)
{
    (void)state;
    ms_span *s = calloc(1, sizeof *s);
    assert_int_equal(ms_traceparent_parse(GOOD, &s->ctx), 0);
    memcpy(s->parent_span_id, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    s->has_parent = true;
    s->kind = MS_SPAN_SERVER;
    s->start_ns = 1700000000123456789ull;
    s->end_ns = 1700000000223456789ull;
    s->error_ns = 1700000000200000000ull;
    s->used = 1;
    /* the fields as span.c lays them out */
    const char *text[] = {"GET /v1/orders/{id}", "http.route", "/v1/orders/{id}", "status",
                          "bad \"quote\"\n"};
    uint16_t at[5];
    for (int i = 0; i < 5; i++) {
        at[i] = (uint16_t)s->used;
        memcpy(s->text + s->used, text[i], strlen(text[i]) + 1);
        s->used += strlen(text[i]) + 1;
    }
    s->name = at[0];
    s->attrs[0] = (ms_span_attr){.key = at[1], .value = at[2]};
    s->attrs[1] = (ms_span_attr){.key = at[3], .is_int = true, .i = 503};
    s->nattrs = 2;
    s->is_error = true;
    s->message = at[4];

    ms_buf out;
    ms_buf_init(&out, 0);
    void *items[] = {s};
    ms_trace_encode(&out, "order", "inst-1", items, 1);
    json_error_t err;
    json_t *doc = json_loadb(out.p, out.n, 0, &err);
    assert_non_null(doc);
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *res = json_object_get(json_object_get(rs, "resource"), "attributes");
    assert_string_equal(
        json_string_value(json_object_get(attr(res, "service.name"), "stringValue")), "order");
    assert_string_equal(
        json_string_value(json_object_get(attr(res, "service.instance.id"), "stringValue")),
        "inst-1");
    assert_non_null(attr(res, "telemetry.sdk.name"));
    assert_non_null(attr(res, "telemetry.sdk.language"));
    assert_non_null(attr(res, "telemetry.sdk.version"));
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")),
                        "microshop");
    json_t *sp = json_array_get(json_object_get(ss, "spans"), 0);
    assert_string_equal(json_string_value(json_object_get(sp, "traceId")),
                        "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(sp, "spanId")), "00f067aa0ba902b7");
    assert_string_equal(json_string_value(json_object_get(sp, "parentSpanId")), "0102030405060708");
    assert_string_equal(json_string_value(json_object_get(sp, "name")), "GET /v1/orders/{id}");
    assert_int_equal(json_integer_value(json_object_get(sp, "kind")), 2);
    assert_string_equal(json_string_value(json_object_get(sp, "startTimeUnixNano")),
                        "1700000000123456789");
    assert_string_equal(json_string_value(json_object_get(sp, "endTimeUnixNano")),
                        "1700000000223456789");
    json_t *attrs = json_object_get(sp, "attributes");
    assert_string_equal(
        json_string_value(json_object_get(attr(attrs, "http.route"), "stringValue")),
        "/v1/orders/{id}");
    assert_string_equal(json_string_value(json_object_get(attr(attrs, "status"), "intValue")),
                        "503");
    json_t *st = json_object_get(sp, "status");
    assert_int_equal(json_integer_value(json_object_get(st, "code")), 2);
    assert_string_equal(json_string_value(json_object_get(st, "message")), "bad \"quote\"\n");
    json_t *ev = json_array_get(json_object_get(sp, "events"), 0);
    assert_string_equal(json_string_value(json_object_get(ev, "name")), "exception");
    assert_string_equal(json_string_value(json_object_get(ev, "timeUnixNano")),
                        "1700000000200000000");
    assert_string_equal(
        json_string_value(json_object_get(
            attr(json_object_get(ev, "attributes"), "exception.message"), "stringValue")),
        "bad \"quote\"\n");
    json_decref(doc);
    ms_buf_release(&out);
    free(s);
}

/* The value of an unlabelled sample in the tracer's metrics. */
static double metric(const char *name)
{
    return collector_metric(ms_trace_collect, name);
}

static void test_export_retries(void **state)
{
    (void)state;
    collector c;
    collector_start(&c);
    c.script[0] = 503;
    c.script[1] = 429;
    c.nscript = 2;
    collector_set_endpoint(&c);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "10", 1);
    unsetenv("OTEL_BSP_MAX_QUEUE_SIZE");
    assert_int_equal(ms_trace_init("test"), 0);
    double exported = metric("trace_spans_exported_total");
    double failures = metric("trace_export_failures_total");

    ms_trace_ctx ctx, child;
    ms_span *s = ms_span_start("GET /things", MS_SPAN_SERVER, NULL, &ctx);
    assert_non_null(s);
    ms_span_set_str(s, "http.request.method", "GET");
    ms_span_set_int(s, "http.response.status_code", 500);
    ms_span_error(s, "boom");
    ms_span *k = ms_span_start("GET", MS_SPAN_CLIENT, &ctx, &child);
    assert_memory_equal(child.trace_id, ctx.trace_id, 16);
    ms_span_end(k);
    ms_span_end(s);
    assert_true(wait_spans(&c, 2));
    ms_trace_shutdown(2000);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.spans, 2); /* exported once, after two refusals */
    assert_int_equal(c.requests, 3);
    pthread_mutex_unlock(&c.mu);
    assert_true(metric("trace_spans_exported_total") == exported + 2);
    assert_true(metric("trace_export_failures_total") == failures + 2);
    collector_stop(&c);
}

static void test_refused_for_good(void **state)
{
    (void)state;
    collector c;
    collector_start(&c);
    c.script[0] = 400; /* a 4xx but 429: dropped, counted, not sent again */
    c.nscript = 1;
    collector_set_endpoint(&c);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "10", 1);
    assert_int_equal(ms_trace_init("test"), 0);
    double dropped = metric("trace_spans_dropped_total");
    double exported = metric("trace_spans_exported_total");
    ms_trace_ctx ctx;
    ms_span_end(ms_span_start("refused", MS_SPAN_INTERNAL, NULL, &ctx));
    for (int waited = 0; waited < DEADLINE_MS && metric("trace_spans_dropped_total") == dropped;
         waited += 5)
        usleep(5000);
    assert_true(metric("trace_spans_dropped_total") == dropped + 1);
    ms_span_end(ms_span_start("next", MS_SPAN_INTERNAL, NULL, &ctx)); /* the next goes out */
    assert_true(wait_spans(&c, 1));
    ms_trace_shutdown(2000);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.requests, 2);
    assert_string_equal(c.last_span, "next");
    pthread_mutex_unlock(&c.mu);
    assert_true(metric("trace_spans_exported_total") == exported + 1);
    collector_stop(&c);
}

static void test_queue_full_drops(void **state)
{
    (void)state;
    collector c;
    collector_start(&c);
    collector_set_endpoint(&c);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000", 1); /* nothing leaves before the shutdown */
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "3", 1);
    assert_int_equal(ms_trace_init("test"), 0);
    double dropped = metric("trace_spans_dropped_total");
    double started = metric("trace_spans_started_total");
    for (int i = 0; i < 5; i++) {
        ms_trace_ctx ctx;
        ms_span_end(ms_span_start("x", MS_SPAN_INTERNAL, NULL, &ctx));
    }
    assert_true(metric("trace_spans_dropped_total") == dropped + 2);
    assert_true(metric("trace_spans_started_total") == started + 5);
    ms_trace_shutdown(5000); /* the three queued go out */
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.spans, 3);
    pthread_mutex_unlock(&c.mu);
    unsetenv("OTEL_BSP_MAX_QUEUE_SIZE");
    collector_stop(&c);
}

static void test_off_records_nothing(void **state)
{
    (void)state;
    /* no endpoint: contexts propagate, nothing is recorded */
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_int_equal(ms_trace_init("test"), 0);
    ms_trace_ctx ctx;
    assert_null(ms_span_start("x", MS_SPAN_INTERNAL, NULL, &ctx));
    assert_true(ctx.valid);
    ms_span_set_str(NULL, "k", "v"); /* NULL is accepted everywhere */
    ms_span_set_int(NULL, "k", 1);
    ms_span_error(NULL, "m");
    ms_span_end(NULL);
    ms_trace_shutdown(100);
    /* sampled out: no span either */
    collector c;
    collector_start(&c);
    collector_set_endpoint(&c);
    setenv("OTEL_TRACES_SAMPLER_ARG", "0", 1);
    assert_int_equal(ms_trace_init("test"), 0);
    assert_null(ms_span_start("x", MS_SPAN_INTERNAL, NULL, &ctx));
    assert_false(ms_trace_sampled(&ctx));
    ms_trace_shutdown(100);
    setenv("OTEL_TRACES_SAMPLER_ARG", "2", 1);
    assert_int_equal(ms_trace_init("test"), MS_EINVAL);
    unsetenv("OTEL_TRACES_SAMPLER_ARG");
    setenv("OTEL_TRACES_SAMPLER", "sometimes", 1);
    assert_int_equal(ms_trace_init("test"), MS_EINVAL);
    unsetenv("OTEL_TRACES_SAMPLER");
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://x:1", 1);
    assert_int_equal(ms_trace_init("test"), MS_EINVAL);
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    ms_trace_sampler_set(true, 1.0);
    collector_stop(&c);
}

static void test_promtool_accepts_metrics(void **state)
{
    (void)state;
    collector c;
    collector_start(&c);
    collector_set_endpoint(&c);
    assert_int_equal(ms_trace_init("test"), 0); /* running: the batch's families too */
    ms_buf out;
    ms_buf_init(&out, 0);
    ms_trace_collect(&out);
    ms_batch_collect(&out, NULL); /* beside it on /metrics (server.c registers both) */
    ms_buf_add(&out, "", 1);      /* NUL-terminated for strstr, not written */
    out.n--;
    char path[] = "/tmp/ms-trace-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, out.p, out.n), (ssize_t)out.n);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    assert_non_null(strstr(out.p, "batch_queue_items{batch=\"trace\"}"));
    ms_buf_release(&out);
    ms_trace_shutdown(1000);
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    collector_stop(&c);
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_format),
        cmocka_unit_test(test_child),
        cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_export_retries),
        cmocka_unit_test(test_refused_for_good),
        cmocka_unit_test(test_queue_full_drops),
        cmocka_unit_test(test_off_records_nothing),
        cmocka_unit_test(test_promtool_accepts_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
