/*
 * trace_export.c — the process's tracer (see trace.h): its settings from the environment (the
 * sampler; OTEL_BSP_* for the batch), the OTLP/HTTP JSON encoding of spans and the metrics. The
 * rest is otlp_http.h's exporter: its batch (batch.h) carries ended spans to the flusher
 * thread, which POSTs each batch with the blocking client (deadline: 10 s, or the shutdown's,
 * whichever comes first). It starts and stops the log exporter (log_export.h) with it: logs go
 * where spans go.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/obs/batch.h"
#include "runtime/obs/log_export.h"
#include "runtime/obs/metrics.h"
#include "runtime/obs/otlp_http.h"
#include "runtime/obs/trace_internal.h"
#include "runtime/core/banned.h"

static struct {
    atomic_bool recording;
    ms_otlp_exporter ex;
} tr;
/* Spans started, striped: every loop bumps it for every span, and one shared counter bounced
 * its cache line between the loops (~0.7 % of a process's CPU). A thread takes a stripe on its
 * first span; the collector adds them up. */
enum { STARTED_STRIPES = 16 };
static struct {
    _Alignas(64) atomic_ullong n;
} started[STARTED_STRIPES];
static atomic_uint started_next;
static _Thread_local int started_stripe = -1;

bool ms_trace_recording(void)
{
    return atomic_load_explicit(&tr.recording, memory_order_relaxed);
}

void ms_trace_count_started(void)
{
    if (started_stripe < 0)
        started_stripe = (int)(atomic_fetch_add_explicit(&started_next, 1, memory_order_relaxed) %
                               STARTED_STRIPES);
    atomic_fetch_add_explicit(&started[started_stripe].n, 1, memory_order_relaxed);
}

void ms_trace_export_span(ms_span *s)
{
    ms_batch *b = tr.ex.batch;
    if (!b || ms_batch_enqueue(b, s) < 0) {
        atomic_fetch_add_explicit(&tr.ex.counts.dropped, 1, memory_order_relaxed);
        free(s);
    }
}

/* ---- OTLP JSON ---- */

/* Every span passes here on the flusher thread: literal runs are appended with their size
 * known, never measured (see ms_otlp_json_str). */
#define ADD_LIT(out, lit) ms_buf_add((out), (lit), sizeof(lit) - 1)

static void encode_span(ms_buf *out, const void *item)
{
    const ms_span *s = item;
    ADD_LIT(out, "{\"traceId\":");
    ms_otlp_json_hex(out, s->ctx.trace_id, sizeof s->ctx.trace_id);
    ADD_LIT(out, ",\"spanId\":");
    ms_otlp_json_hex(out, s->ctx.span_id, sizeof s->ctx.span_id);
    if (s->has_parent) {
        ADD_LIT(out, ",\"parentSpanId\":");
        ms_otlp_json_hex(out, s->parent_span_id, sizeof s->parent_span_id);
    }
    ADD_LIT(out, ",\"name\":");
    ms_otlp_json_str(out, s->text + s->name);
    /* OTLP's SpanKind: 0 is unspecified, so ours (internal first) is one less */
    ADD_LIT(out, ",\"kind\":");
    ms_buf_add_int(out, (int)s->kind + 1);
    ADD_LIT(out, ",\"startTimeUnixNano\":");
    ms_otlp_json_u64(out, s->start_ns);
    ADD_LIT(out, ",\"endTimeUnixNano\":");
    ms_otlp_json_u64(out, s->end_ns);
    ADD_LIT(out, ",\"attributes\":[");
    for (int i = 0; i < s->nattrs; i++) {
        const ms_span_attr *a = &s->attrs[i];
        if (i)
            ms_buf_add(out, ",", 1);
        if (a->is_int) {
            ADD_LIT(out, "{\"key\":");
            ms_otlp_json_str(out, s->text + a->key);
            ADD_LIT(out, ",\"value\":{\"intValue\":");
            ms_otlp_json_i64(out, a->i);
            ADD_LIT(out, "}}");
        } else {
            ms_otlp_json_kv_str(out, s->text + a->key, s->text + a->value);
        }
    }
    ms_buf_add(out, "]", 1);
    if (s->is_error) {
        ADD_LIT(out, ",\"status\":{\"code\":2,\"message\":");
        ms_otlp_json_str(out, s->text + s->message);
        ADD_LIT(out, "},\"events\":[{\"name\":\"exception\",\"timeUnixNano\":");
        ms_otlp_json_u64(out, s->error_ns);
        ADD_LIT(out, ",\"attributes\":[");
        ms_otlp_json_kv_str(out, "exception.message", s->text + s->message);
        ADD_LIT(out, "]}]");
    }
    ms_buf_add(out, "}", 1);
}

void ms_trace_encode(ms_buf *out, const char *service, const char *instance, void *const *spans,
                     size_t n)
{
    ms_otlp_json_export(out, MS_OTLP_TRACES, service, instance, spans, n, encode_span);
}

static int flush(void *arg, void *const *items, size_t n)
{
    ms_log_export_ignore_thread(); /* its failures would fail the same way as lines */
    return ms_otlp_flush(arg, items, n);
}

/* ---- settings ---- */

static const ms_otlp_exporter_settings settings = {
    .signal = MS_OTLP_TRACES,
    .encode = ms_trace_encode,
    .once_when_stopping = false, /* spans are nowhere else: retried until the stop deadline */
    .flush = flush,
};

static int refuse(const char *name, const char *why)
{
    ms_log(MS_LOG_ERROR, "bad tracing setting", "variable", name, "error", why, NULL);
    return MS_EINVAL;
}

static int parse_sampler(void)
{
    const char *name = getenv("OTEL_TRACES_SAMPLER"), *arg = getenv("OTEL_TRACES_SAMPLER_ARG");
    double ratio = 1.0;
    if (arg && *arg) {
        char *end;
        errno = 0;
        ratio = strtod(arg, &end);
        if (errno || *end || !(ratio >= 0.0 && ratio <= 1.0))
            return refuse("OTEL_TRACES_SAMPLER_ARG", "a number from 0 to 1 is needed");
    }
    if (!name || !*name || strcmp(name, "parentbased_traceidratio") == 0)
        ms_trace_sampler_set(true, ratio);
    else if (strcmp(name, "traceidratio") == 0)
        ms_trace_sampler_set(false, ratio);
    else if (strcmp(name, "parentbased_always_on") == 0)
        ms_trace_sampler_set(true, 1.0);
    else if (strcmp(name, "parentbased_always_off") == 0)
        ms_trace_sampler_set(true, 0.0);
    else if (strcmp(name, "always_on") == 0)
        ms_trace_sampler_set(false, 1.0);
    else if (strcmp(name, "always_off") == 0)
        ms_trace_sampler_set(false, 0.0);
    else
        return refuse("OTEL_TRACES_SAMPLER",
                      "one of parentbased_traceidratio, traceidratio, parentbased_always_on, "
                      "parentbased_always_off, always_on, always_off is needed");
    return 0;
}

int ms_trace_init(const char *service)
{
    const char *off = getenv("OTEL_SDK_DISABLED");
    if (off && strcasecmp(off, "true") == 0) {
        ms_trace_sampler_set(true, 0.0); /* nothing sampled: children keep the caller's flag */
        return 0;
    }
    int rc = parse_sampler();
    if (rc < 0 || (rc = ms_otlp_exporter_configure(&tr.ex, &settings)) < 0)
        return rc;
    const char *endpoint = getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    if (!endpoint || !*endpoint)
        return ms_log_export_init(service, NULL); /* its settings checked all the same */
    if ((rc = ms_otlp_exporter_start(&tr.ex, service, endpoint)) < 0)
        return rc;
    atomic_store(&tr.recording, true);
    if ((rc = ms_log_export_init(tr.ex.service, endpoint)) < 0) {
        ms_trace_shutdown(0);
        return rc;
    }
    return 0;
}

void ms_trace_shutdown(int timeout_ms)
{
    if (!tr.ex.batch)
        return;
    atomic_store(&tr.recording, false);
    /* spans ended from now on are dropped and counted (tr.ex.batch is read by other threads
     * only while recording; a span started just before is refused by the stopping batch) */
    uint64_t stop_by = ms_otlp_exporter_stop(&tr.ex, timeout_ms);
    /* the logs last: stopping the spans may log; they get what is left of the time */
    uint64_t now = ms_otlp_now_ms();
    ms_log_export_shutdown(now < stop_by ? (int)(stop_by - now) : 0);
}

void ms_trace_collect(ms_buf *out)
{
    ms_metrics_family(out, "trace_spans_started_total", "counter",
                      "Spans started and recorded (sampled).");
    unsigned long long n = 0;
    for (int i = 0; i < STARTED_STRIPES; i++)
        n += atomic_load_explicit(&started[i].n, memory_order_relaxed);
    ms_metrics_sample(out, "trace_spans_started_total", (double)n, NULL);
    ms_metrics_family(out, "trace_spans_exported_total", "counter",
                      "Spans the collector accepted.");
    ms_metrics_sample(out, "trace_spans_exported_total",
                      (double)atomic_load(&tr.ex.counts.exported), NULL);
    ms_metrics_family(out, "trace_spans_dropped_total", "counter",
                      "Spans lost: the export queue was full, the collector refused them, or "
                      "they were still queued at shutdown.");
    ms_metrics_sample(out, "trace_spans_dropped_total", (double)atomic_load(&tr.ex.counts.dropped),
                      NULL);
    ms_metrics_family(out, "trace_export_failures_total", "counter",
                      "Export requests that failed (retried unless the collector refused them).");
    ms_metrics_sample(out, "trace_export_failures_total",
                      (double)atomic_load(&tr.ex.counts.failures), NULL);
    ms_log_export_collect(out);
}
