/*
 * otlp_http.h — what the OTLP/HTTP JSON exporters (trace_export.c, log_export.c) share: the
 * endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) parsed into a small blocking HTTP/1.1 client that POSTs
 * one export at a time, the outcome of an export as a batch flush sees it, and the JSON pieces
 * of the encoding.
 *
 * The client is blocking on purpose: it runs on a batch's flusher thread (batch.h), never on a
 * loop. Every socket operation waits in poll() against the export's deadline.
 *
 * Threading: one ms_otlp_http is used by one thread at a time (its batch's flusher); the JSON
 * helpers are pure. Ownership: the client owns its socket and response buffer until
 * ms_otlp_http_release.
 */
#ifndef MS_OTLP_HTTP_H
#define MS_OTLP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/core/buf.h"

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

#endif
