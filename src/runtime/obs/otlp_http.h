/*
 * otlp_http.h — what the OTLP/HTTP JSON exporters (trace_export.c, log_export.c) share: the
 * endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) parsed into a small blocking HTTP/1.1 client that POSTs
 * one export at a time, the outcome of an export as a batch flush sees it, the exporter both
 * run (ms_otlp_exporter: the batch settings read from the environment, the start on an
 * endpoint, the flush with its stop deadline, export and counters, the stop), and the JSON
 * pieces of the encoding. What differs between the two is their names and defaults (by
 * ms_otlp_signal) and an ms_otlp_exporter_settings (the encoding, the flush).
 *
 * The client is blocking on purpose: it runs on a batch's flusher thread (batch.h), never on a
 * loop. Every socket operation waits in poll() against the export's deadline.
 *
 * Threading: one ms_otlp_http is used by one thread at a time (its batch's flusher); an
 * exporter is configured, started and stopped by one owner, its batch fed from any thread while
 * started; the JSON helpers are pure. Ownership: the client owns its socket and response
 * buffer until ms_otlp_http_release; a started exporter owns its client, body and batch.
 */
#ifndef MS_OTLP_HTTP_H
#define MS_OTLP_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/core/buf.h"
#include "runtime/core/id.h"
#include "runtime/obs/batch.h"

enum { MS_OTLP_EXPORT_TIMEOUT_MS = 10000 };

typedef struct ms_otlp_http {
    char host[256], port[8], path[512];
    const char *signal; /* "traces" or "logs": the logs' name for it */
    int fd;             /* -1: no connection kept */
    bool warned;        /* the collector's refusal was logged */
    ms_buf resp;
} ms_otlp_http;

/* Monotonic milliseconds (the deadlines' clock). */
uint64_t ms_otlp_now_ms(void);

/*
 * Parses http://host[:port][/path] (port 4318 by default, OTLP/HTTP's) and appends
 * "/v1/<signal>" to the path. 0, or MS_EINVAL with `why` set to a sentence (static).
 */
int ms_otlp_http_init(ms_otlp_http *c, const char *endpoint, const char *signal, const char **why);
void ms_otlp_http_release(ms_otlp_http *c);

/* One POST of `body` (application/json): the status, or a negative MS_E* for a transport
 * failure. A kept connection the collector closed meanwhile is retried once on a fresh one. */
int ms_otlp_http_post(ms_otlp_http *c, const char *body, size_t n, uint64_t deadline_ms);

/*
 * An export as a batch flush returns it: 0 when the batch is done with the items, either sent
 * (2xx: *sent is true) or refused for good (a 4xx but 429: *sent is false, logged once per
 * client, since sending them again would not help); else a negative MS_E* and the batch
 * retries them (429, 5xx, no answer).
 */
int ms_otlp_http_export(ms_otlp_http *c, const ms_buf *body, uint64_t deadline_ms, bool *sent);

/* An exporter's counters (process lifetime: they survive a shutdown so the last scrape still
 * reports them). */
typedef struct ms_otlp_counters {
    atomic_ullong exported, dropped, failures;
} ms_otlp_counters;

/* Encodes n items as one export document into out. */
typedef void (*ms_otlp_encode_fn)(ms_buf *out, const char *service, const char *instance,
                                  void *const *items, size_t n);

/* The exporters, by what they export: their names and defaults (the endpoint's path, the
 * batch's name, the message of a bad setting, OTel's variables for the batch and their
 * defaults, the export document's members) are a row each in otlp_http.c. */
typedef enum ms_otlp_signal { MS_OTLP_TRACES, MS_OTLP_LOGS } ms_otlp_signal;

/* What else tells one exporter from the other. */
typedef struct ms_otlp_exporter_settings {
    ms_otlp_signal signal;
    ms_otlp_encode_fn encode;
    /* stopping, a failed export is dropped at once rather than retried until the deadline */
    bool once_when_stopping;
    /* The batch's flush, arg the exporter: ms_otlp_flush after what the flusher thread needs. */
    ms_batch_flush_fn flush;
} ms_otlp_exporter_settings;

/* One exporter: the batch that carries its items (malloc'ed: released with free) to the
 * flusher thread, which encodes and POSTs them. Zero it once (static storage); counts stay. */
typedef struct ms_otlp_exporter {
    const ms_otlp_exporter_settings *s; /* set by ms_otlp_exporter_configure */
    long queue, batch_size, delay_ms;   /* read by ms_otlp_exporter_configure */
    ms_batch *batch;                    /* NULL: not started */
    char service[128], instance[MS_UUID_LEN + 1];
    atomic_ullong stop_by_ms; /* 0: not stopping; else the shutdown's deadline */
    ms_otlp_counters counts;
    /* the flusher thread's */
    ms_otlp_http http;
    ms_buf body;
} ms_otlp_exporter;

/* Reads the three batch settings of s's signal from the environment into x, which keeps s. 0,
 * or MS_EINVAL for a bad one (logged). Owner thread, x not started. */
int ms_otlp_exporter_configure(ms_otlp_exporter *x, const ms_otlp_exporter_settings *s);

/*
 * Starts x (configured) exporting to `endpoint` (not empty) as `service` (NULL: "microshop";
 * OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES first, see ms_trace_service_name) with a new
 * service.instance.id. 0; MS_EINVAL for a bad endpoint (logged naming
 * OTEL_EXPORTER_OTLP_ENDPOINT); or the batch's error, x left stopped. Owner thread.
 */
int ms_otlp_exporter_start(ms_otlp_exporter *x, const char *service, const char *endpoint);

/* Stops x (started): its batch gets until now + timeout_ms (0 or less: no time) to export what
 * is queued, what is left is counted dropped, and x is stopped (x->batch NULL). Returns that
 * deadline (ms_otlp_now_ms's clock). Owner thread, once nothing enqueues any more. */
uint64_t ms_otlp_exporter_stop(ms_otlp_exporter *x, int timeout_ms);

/*
 * A batch flush of `x` (batch.h's contract), on its flusher thread: past the stop deadline the
 * items are dropped; else one export, against the sooner of MS_OTLP_EXPORT_TIMEOUT_MS and that
 * deadline. Sent: counted exported; refused for good (or failed while stopping, with
 * once_when_stopping): dropped and 0; else a negative MS_E* and the batch retries. Every
 * failure is counted.
 */
int ms_otlp_flush(ms_otlp_exporter *x, void *const *items, size_t n);

/* JSON pieces of OTLP: a string, {"key":k,"value":{"stringValue":v}}, an int64 or fixed64 (a
 * decimal string), bytes as a quoted lower-case hex string (trace and span ids), and the
 * resource {"resource":{"attributes":[service.name, service.instance.id, telemetry.sdk.*]}}
 * without its enclosing braces. */
void ms_otlp_json_str(ms_buf *out, const char *s);
void ms_otlp_json_kv_str(ms_buf *out, const char *key, const char *value);
void ms_otlp_json_i64(ms_buf *out, int64_t v);
void ms_otlp_json_u64(ms_buf *out, uint64_t v);
void ms_otlp_json_hex(ms_buf *out, const uint8_t *bytes, size_t n);
void ms_otlp_json_resource(ms_buf *out, const char *service, const char *instance);
/* One export document of `signal` holding items[0..n), each encoded by `one`:
 * {"resourceSpans":[{<resource>,"scopeSpans":[{"scope":{"name":"microshop"},"spans":[...]}]}]}
 * (resourceLogs, scopeLogs and logRecords for the logs). */
typedef void (*ms_otlp_encode_item_fn)(ms_buf *out, const void *item);
void ms_otlp_json_export(ms_buf *out, ms_otlp_signal signal, const char *service,
                         const char *instance, void *const *items, size_t n,
                         ms_otlp_encode_item_fn one);

#endif
