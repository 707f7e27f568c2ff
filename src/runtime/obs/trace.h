/*
 * trace.h — distributed tracing: W3C trace context (traceparent/tracestate), spans with
 * OpenTelemetry semantic-convention attributes, parent-based ratio sampling, and batched export
 * as OTLP/HTTP JSON to OTEL_EXPORTER_OTLP_ENDPOINT (`/v1/traces` appended).
 *
 * Contexts: a request's context comes from its traceparent (an invalid or absent header starts a
 * new trace: a fresh trace id, sampled by the ratio). A child context keeps the trace id and
 * flags and takes a new span id. The sampler is parent-based: a parent's sampled flag decides;
 * a root is sampled with probability OTEL_TRACES_SAMPLER_ARG (default 1.0).
 *
 * Spans: ms_span_start returns NULL when the span is not recorded (not sampled, or tracing off);
 * every ms_span_* function accepts NULL and does nothing, so callers never branch. A span is
 * owned by its caller until ms_span_end, which hands it to the exporter and never blocks: when
 * the exporter's bounded queue is full the span is dropped and counted.
 *
 * Current context: a thread-local pointer set around a request's handler, a client call's
 * callback, and a database pool's work (on its worker) and done callback; read by the logs
 * (trace_id/span_id in every line inside a request) and by the database's statement spans.
 *
 * Threading: everything may be called from any thread; a span is used by one thread at a time.
 */
#ifndef MS_TRACE_H
#define MS_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/core/buf.h"

enum {
    MS_TRACEPARENT_LEN = 55, /* "00-" 32 hex "-" 16 hex "-" 2 hex */
    MS_TRACESTATE_MAX = 512, /* a longer tracestate is dropped, not truncated */
    MS_TRACE_ID_HEX = 32,
    MS_SPAN_ID_HEX = 16,
    MS_TRACE_SAMPLED = 1, /* the flags' sampled bit */
};

typedef struct ms_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags; /* bit 0: sampled */
    bool valid;    /* false: no context (ids all zero) */
} ms_trace_ctx;

/* Parses a traceparent header (version 00; lower-case hex; ids not all zero); 0 or MS_EINVAL. */
int ms_traceparent_parse(const char *header, ms_trace_ctx *out);
/* Writes `ctx` as a traceparent (NUL-terminated). */
void ms_traceparent_format(const ms_trace_ctx *ctx, char out[MS_TRACEPARENT_LEN + 1]);
/* A child of `parent` (same trace and flags, a new span id); a root when parent is NULL or not
 * valid (new trace id, flags from the ratio sampler). */
void ms_trace_child(const ms_trace_ctx *parent, ms_trace_ctx *out);
/* True when `ctx` is valid and sampled (its spans are recorded). */
static inline bool ms_trace_sampled(const ms_trace_ctx *ctx)
{
    return ctx && ctx->valid && (ctx->flags & MS_TRACE_SAMPLED);
}
/* The tracestate to send on: `tracestate` when `parent` (the incoming traceparent's context) is
 * valid and it is at most MS_TRACESTATE_MAX bytes, else NULL (dropped, never truncated). */
const char *ms_tracestate_pass(const char *tracestate, const ms_trace_ctx *parent);
/* The sampler (ms_trace_init sets it from the environment; tests call it directly, before
 * threads): parent-based, or every span decided by its trace id; `ratio` 0 never, 1 always. */
void ms_trace_sampler_set(bool parent_based, double ratio);
/* The ratio sampler's decision for a trace id: its low 8 bytes (big-endian) < ratio x 2^64, so
 * every process decides the same for one trace. */
bool ms_trace_ratio_sampled(const uint8_t trace_id[16]);
/* The ids as lower-case hex (NUL-terminated). */
void ms_trace_ids_hex(const ms_trace_ctx *ctx, char trace_id[MS_TRACE_ID_HEX + 1],
                      char span_id[MS_SPAN_ID_HEX + 1]);

/* The calling thread's current context, or NULL. Set borrows `ctx` until it is set again. */
const ms_trace_ctx *ms_trace_current(void);
void ms_trace_set_current(const ms_trace_ctx *ctx);
/* Makes every log line written inside a current context carry its trace_id and span_id
 * (ms_log_set_context_fn). Call once at start, before threads. */
void ms_trace_log_hook_install(void);

/* ---- spans ---- */

typedef enum {
    MS_SPAN_INTERNAL,
    MS_SPAN_SERVER,
    MS_SPAN_CLIENT,
    MS_SPAN_PRODUCER,
    MS_SPAN_CONSUMER,
} ms_span_kind;

typedef struct ms_span ms_span;

/*
 * Starts a span named `name` (copied) as a child of `parent` (NULL or invalid: a root). *ctx
 * receives the span's own context whether or not it is recorded, to propagate and to parent
 * further spans. NULL when not recorded.
 */
ms_span *ms_span_start(const char *name, ms_span_kind kind, const ms_trace_ctx *parent,
                       ms_trace_ctx *ctx);
/* Whether spans are recorded at all (tracing on, with an endpoint). A caller whose span's
 * context goes nowhere else (a database statement's) checks it, with ms_trace_sampled, before
 * it spends anything on naming and describing a span that ms_span_start would not record. */
bool ms_trace_recording(void);
/* Attributes (key and value copied); a span keeps at most 32, later ones are dropped. */
void ms_span_set_str(ms_span *s, const char *key, const char *value);
void ms_span_set_int(ms_span *s, const char *key, int64_t value);
/* Status ERROR with `message` (copied) and an "exception" event carrying it. */
void ms_span_error(ms_span *s, const char *message);
/* Ends the span now and hands it to the exporter (or drops it, counted). */
void ms_span_end(ms_span *s);

/* ---- the process's tracer ---- */

/*
 * Starts tracing for `service` (service.name, unless OTEL_SERVICE_NAME or a service.name in
 * OTEL_RESOURCE_ATTRIBUTES names it otherwise; OTEL_SERVICE_NAME wins). Reads OTEL_SDK_DISABLED,
 * OTEL_TRACES_SAMPLER (parentbased_traceidratio, parentbased_always_on, parentbased_always_off,
 * always_on, always_off), OTEL_TRACES_SAMPLER_ARG, OTEL_EXPORTER_OTLP_ENDPOINT (no endpoint: spans
 * are sampled and propagated but not exported), OTEL_BSP_MAX_QUEUE_SIZE (2048),
 * OTEL_BSP_MAX_EXPORT_BATCH_SIZE (512), OTEL_BSP_SCHEDULE_DELAY (5000 ms). 0 or MS_EINVAL (a
 * bad setting, logged naming it). Call once at start, before threads.
 */
int ms_trace_init(const char *service);
/* Exports what is queued (within timeout_ms, at most 5 s) and stops the exporter; what is left
 * is dropped and counted. Call after the threads that end spans have stopped. A later
 * ms_trace_init starts again (tests). */
void ms_trace_shutdown(int timeout_ms);
/* Appends the tracer's metrics (spans started, exported, dropped; export failures). */
void ms_trace_collect(ms_buf *out);

#endif
