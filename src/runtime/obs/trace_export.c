/*
 * trace_export.c — the process's tracer (see trace.h): settings from the environment, the
 * batch processor (batch.h) that carries ended spans to the flusher thread, the OTLP/HTTP JSON
 * encoding, and a small blocking HTTP/1.1 client that POSTs each batch on the flusher thread.
 *
 * The client is blocking on purpose: it runs on the batch's own thread, never on a loop, and a
 * flush is one request at a time. Every socket operation waits in poll() against the flush's
 * deadline (10 s, or the shutdown's, whichever comes first).
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/obs/batch.h"
#include "runtime/obs/metrics.h"
#include "runtime/obs/trace_internal.h"
#include "runtime/core/banned.h"

enum { EXPORT_TIMEOUT_MS = 10000, RESPONSE_MAX = 64 * 1024 };

static struct {
    atomic_bool recording;
    ms_batch *batch;
    char service[128], instance[MS_UUID_LEN + 1];
    char host[256], port[8], path[512];
    atomic_ullong stop_by_ms; /* 0: not stopping */
    /* flusher thread only */
    int fd;
    bool warned;
    ms_buf body, resp;
} tr = {.fd = -1};

/* Process lifetime: they survive a shutdown so the last scrape still reports them. */
static atomic_ullong exported, dropped, failures;
/* Spans started, striped: every loop bumps it for every span, and one shared counter bounced
 * its cache line between the loops (~0.7 % of a process's CPU). A thread takes a stripe on its
 * first span; the collector adds them up. */
enum { STARTED_STRIPES = 16 };
static struct {
    _Alignas(64) atomic_ullong n;
} started[STARTED_STRIPES];
static atomic_uint started_next;
static _Thread_local int started_stripe = -1;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

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
    ms_batch *b = tr.batch;
    if (!b || ms_batch_enqueue(b, s) < 0) {
        atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
        free(s);
    }
}

/* ---- OTLP JSON ---- */

/* The encoder runs on the flusher thread for every span (~80k a second at 100 % sampling on
 * the gateway's path): it appends runs of bytes and writes numbers and ids by hand, never a
 * printf or a byte-by-byte append (they made encoding three times costlier). */

#define ADD_LIT(out, lit) ms_buf_add((out), (lit), sizeof(lit) - 1)

static void json_str(ms_buf *out, const char *s)
{
    static const char digits[] = "0123456789abcdef";
    ms_buf_add(out, "\"", 1);
    const unsigned char *p = (const unsigned char *)s, *run = p;
    for (; *p; p++) {
        if (*p != '"' && *p != '\\' && *p >= 0x20)
            continue;
        ms_buf_add(out, run, (size_t)(p - run));
        run = p + 1;
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            ms_buf_add(out, e, 2);
        } else {
            char e[6] = {'\\', 'u', '0', '0', digits[*p >> 4], digits[*p & 15]};
            ms_buf_add(out, e, 6);
        }
    }
    ms_buf_add(out, run, (size_t)(p - run));
    ms_buf_add(out, "\"", 1);
}

static void json_kv_str(ms_buf *out, const char *key, const char *value)
{
    ADD_LIT(out, "{\"key\":");
    json_str(out, key);
    ADD_LIT(out, ",\"value\":{\"stringValue\":");
    json_str(out, value);
    ADD_LIT(out, "}}");
}

/* An int64 as OTLP JSON writes one: a decimal string. */
static void json_i64(ms_buf *out, int64_t v)
{
    ms_buf_add(out, "\"", 1);
    ms_buf_add_int(out, v);
    ms_buf_add(out, "\"", 1);
}

static void json_u64(ms_buf *out, uint64_t v)
{
    json_i64(out, (int64_t)v); /* Unix ns fit until 2262 */
}

/* `bytes` as a quoted lower-case hex string. */
static void json_hex(ms_buf *out, const uint8_t *bytes, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char *w = ms_buf_reserve(out, 2 * n + 2);
    *w++ = '"';
    for (size_t i = 0; i < n; i++) {
        *w++ = digits[bytes[i] >> 4];
        *w++ = digits[bytes[i] & 15];
    }
    *w = '"';
    out->n += 2 * n + 2;
}

static void encode_span(ms_buf *out, const ms_span *s)
{
    ADD_LIT(out, "{\"traceId\":");
    json_hex(out, s->ctx.trace_id, sizeof s->ctx.trace_id);
    ADD_LIT(out, ",\"spanId\":");
    json_hex(out, s->ctx.span_id, sizeof s->ctx.span_id);
    if (s->has_parent) {
        ADD_LIT(out, ",\"parentSpanId\":");
        json_hex(out, s->parent_span_id, sizeof s->parent_span_id);
    }
    ADD_LIT(out, ",\"name\":");
    json_str(out, s->text + s->name);
    /* OTLP's SpanKind: 0 is unspecified, so ours (internal first) is one less */
    ADD_LIT(out, ",\"kind\":");
    ms_buf_add_int(out, (int)s->kind + 1);
    ADD_LIT(out, ",\"startTimeUnixNano\":");
    json_u64(out, s->start_ns);
    ADD_LIT(out, ",\"endTimeUnixNano\":");
    json_u64(out, s->end_ns);
    ADD_LIT(out, ",\"attributes\":[");
    for (int i = 0; i < s->nattrs; i++) {
        const ms_span_attr *a = &s->attrs[i];
        if (i)
            ms_buf_add(out, ",", 1);
        if (a->is_int) {
            ADD_LIT(out, "{\"key\":");
            json_str(out, s->text + a->key);
            ADD_LIT(out, ",\"value\":{\"intValue\":");
            json_i64(out, a->i);
            ADD_LIT(out, "}}");
        } else {
            json_kv_str(out, s->text + a->key, s->text + a->value);
        }
    }
    ms_buf_add(out, "]", 1);
    if (s->is_error) {
        ADD_LIT(out, ",\"status\":{\"code\":2,\"message\":");
        json_str(out, s->text + s->message);
        ADD_LIT(out, "},\"events\":[{\"name\":\"exception\",\"timeUnixNano\":");
        json_u64(out, s->error_ns);
        ADD_LIT(out, ",\"attributes\":[");
        json_kv_str(out, "exception.message", s->text + s->message);
        ADD_LIT(out, "]}]");
    }
    ms_buf_add(out, "}", 1);
}

void ms_trace_encode(ms_buf *out, const char *service, const char *instance, void *const *spans,
                     size_t n)
{
    ms_buf_adds(out, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    json_kv_str(out, "service.name", service);
    ms_buf_adds(out, ",");
    json_kv_str(out, "service.instance.id", instance);
    ms_buf_adds(out, ",");
    json_kv_str(out, "telemetry.sdk.name", "microshop");
    ms_buf_adds(out, ",");
    json_kv_str(out, "telemetry.sdk.language", "c");
    ms_buf_adds(out, ",");
    json_kv_str(out, "telemetry.sdk.version", MS_VERSION);
    ms_buf_adds(out, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"microshop\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            ms_buf_adds(out, ",");
        encode_span(out, spans[i]);
    }
    ms_buf_adds(out, "]}]}]}");
}

/* ---- the blocking HTTP/1.1 client (flusher thread) ---- */

static void conn_close(void)
{
    if (tr.fd >= 0)
        close(tr.fd);
    tr.fd = -1;
}

/* Waits for `events` on the connection until `deadline` (monotonic ms): 0 or MS_ETIMEDOUT. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline)
            return MS_ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, (int)(deadline - now));
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return MS_EIO;
    }
}

static int conn_open(uint64_t deadline)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(tr.host, tr.port, &hints, &res) != 0)
        return MS_ECONN;
    int rc = MS_ECONN;
    for (struct addrinfo *a = res; a && rc < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 ||
            (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 0)) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
                tr.fd = fd;
                rc = 0;
                continue;
            }
        }
        close(fd);
    }
    freeaddrinfo(res);
    return rc;
}

static int send_all(const char *p, size_t n, uint64_t deadline)
{
    while (n) {
        ssize_t w = send(tr.fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(tr.fd, POLLOUT, deadline);
            if (rc < 0)
                return rc;
        } else {
            return MS_ECONN;
        }
    }
    return 0;
}

/* Finds a header's value in the head (lines end with \r\n); NULL when absent. */
static const char *head_value(const char *head, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line && line[2] != '\r';
         line = strstr(line + 2, "\r\n")) {
        const char *l = line + 2;
        if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
            const char *v = l + n + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *end = strstr(v, "\r\n");
            *len = end ? (size_t)(end - v) : strlen(v);
            return v;
        }
    }
    return NULL;
}

/* Reads one response: its status, and whether the connection may be kept. A body without a
 * Content-Length (chunked, or up to the close) is read to the close and the connection is not
 * kept: the collector's answer is small and its content is not used. */
static int read_response(uint64_t deadline, int *status, bool *keep)
{
    ms_buf *r = &tr.resp;
    r->n = 0;
    size_t head_len = 0, want = 0;
    bool to_close = false;
    for (;;) {
        if (head_len && (to_close ? false : r->n >= head_len + want))
            break;
        if (r->n >= RESPONSE_MAX)
            return MS_ETOOBIG;
        char *w = ms_buf_reserve(r, 4096);
        ssize_t got = recv(tr.fd, w, 4095, 0);
        if (got > 0) {
            r->n += (size_t)got;
        } else if (got == 0) {
            if (head_len && to_close)
                break;
            return MS_ECONN;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(tr.fd, POLLIN, deadline);
            if (rc < 0)
                return rc;
            continue;
        } else {
            return MS_ECONN;
        }
        if (head_len)
            continue;
        r->p[r->n] = '\0';
        const char *end = strstr(r->p, "\r\n\r\n");
        if (!end)
            continue;
        head_len = (size_t)(end - r->p) + 4;
        int minor = 0;
        if (sscanf(r->p, "HTTP/1.%d %d", &minor, status) != 2 || *status < 100 || *status > 599)
            return MS_EIO;
        size_t vlen = 0;
        const char *cl = head_value(r->p, "Content-Length", &vlen);
        const char *conn = head_value(r->p, "Connection", &vlen);
        *keep = minor == 1 && !(conn && strncasecmp(conn, "close", 5) == 0);
        if (cl) {
            want = strtoul(cl, NULL, 10);
        } else if (*status == 204 || *status == 304) {
            want = 0;
        } else {
            to_close = true;
            *keep = false;
        }
    }
    return 0;
}

/* One POST of tr.body: the status, or a negative MS_E* for a transport failure. */
static int post(uint64_t deadline)
{
    char head[1024];
    int hn = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nUser-Agent: microshop/%s\r\n\r\n",
                      tr.path, tr.host, tr.port, tr.body.n, MS_VERSION);
    /* a kept connection the collector closed meanwhile fails at once: one fresh try then */
    for (int fresh = tr.fd < 0; fresh < 2; fresh++) {
        if (tr.fd < 0) {
            int rc = conn_open(deadline);
            if (rc < 0)
                return rc;
            fresh = 1;
        }
        int status = 0;
        bool keep = false;
        int rc = send_all(head, (size_t)hn, deadline);
        if (rc == 0)
            rc = send_all(tr.body.p, tr.body.n, deadline);
        if (rc == 0)
            rc = read_response(deadline, &status, &keep);
        if (rc == 0) {
            if (!keep)
                conn_close();
            return status;
        }
        conn_close();
        if (fresh || rc == MS_ETIMEDOUT)
            return rc;
    }
    return MS_ECONN;
}

static int flush(void *arg, void *const *items, size_t n)
{
    (void)arg;
    uint64_t stop_by = atomic_load(&tr.stop_by_ms), now = now_ms();
    if (stop_by && now >= stop_by) { /* shutting down and out of time: let them go */
        atomic_fetch_add_explicit(&dropped, n, memory_order_relaxed);
        return 0;
    }
    uint64_t deadline = now + EXPORT_TIMEOUT_MS;
    if (stop_by && stop_by < deadline)
        deadline = stop_by;
    tr.body.n = 0;
    ms_trace_encode(&tr.body, tr.service, tr.instance, items, n);
    int status = post(deadline);
    if (status >= 200 && status < 300) {
        atomic_fetch_add_explicit(&exported, n, memory_order_relaxed);
        return 0;
    }
    atomic_fetch_add_explicit(&failures, 1, memory_order_relaxed);
    if (status >= 400 && status < 500 && status != 429) {
        /* the collector refuses these spans for good: sending them again would not help */
        if (!tr.warned) {
            char st[16];
            snprintf(st, sizeof st, "%d", status);
            ms_log(MS_LOG_WARN, "the trace collector refused spans; they are dropped", "status", st,
                   NULL);
            tr.warned = true;
        }
        atomic_fetch_add_explicit(&dropped, n, memory_order_relaxed);
        return 0;
    }
    return status < 0 ? status : MS_EIO;
}

static void release(void *arg, void *item)
{
    (void)arg;
    free(item);
}

/* ---- settings ---- */

static int refuse(const char *name, const char *why)
{
    ms_log(MS_LOG_ERROR, "bad tracing setting", "variable", name, "error", why, NULL);
    return MS_EINVAL;
}

/* http://host[:port][/path] (port 4318 by default, OTLP/HTTP's). */
static int parse_endpoint(const char *e)
{
    if (strncasecmp(e, "http://", 7) != 0)
        return refuse("OTEL_EXPORTER_OTLP_ENDPOINT", "only http://host:port is supported");
    const char *h = e + 7, *slash = strchr(h, '/');
    size_t hn = slash ? (size_t)(slash - h) : strlen(h);
    const char *colon = memchr(h, ':', hn);
    size_t name_len = colon ? (size_t)(colon - h) : hn;
    if (name_len == 0 || name_len >= sizeof tr.host || memchr(h, '@', hn) || memchr(h, '[', hn))
        return refuse("OTEL_EXPORTER_OTLP_ENDPOINT", "a host name or IPv4 address is needed");
    memcpy(tr.host, h, name_len);
    tr.host[name_len] = '\0';
    const char *port = colon ? colon + 1 : "4318";
    size_t pn = colon ? hn - name_len - 1 : 4;
    long p = 0;
    for (size_t i = 0; i < pn; i++) {
        if (port[i] < '0' || port[i] > '9' || p > 65535)
            return refuse("OTEL_EXPORTER_OTLP_ENDPOINT", "the port must be a number");
        p = p * 10 + (port[i] - '0');
    }
    if (pn == 0 || p < 1 || p > 65535)
        return refuse("OTEL_EXPORTER_OTLP_ENDPOINT", "the port must be 1 to 65535");
    snprintf(tr.port, sizeof tr.port, "%ld", p);
    const char *base = slash ? slash : "";
    size_t bn = strlen(base);
    while (bn && base[bn - 1] == '/')
        bn--;
    if (bn + sizeof "/v1/traces" > sizeof tr.path)
        return refuse("OTEL_EXPORTER_OTLP_ENDPOINT", "the path is too long");
    snprintf(tr.path, sizeof tr.path, "%.*s/v1/traces", (int)bn, base);
    return 0;
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
    char err[256];
    long queue, batch, delay;
    const char *off = getenv("OTEL_SDK_DISABLED");
    if (off && strcasecmp(off, "true") == 0) {
        ms_trace_sampler_set(true, 0.0); /* nothing sampled: children keep the caller's flag */
        return 0;
    }
    int rc = parse_sampler();
    if (rc < 0)
        return rc;
    if (ms_config_env_long("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1 << 20, &queue, err, sizeof err) <
            0 ||
        ms_config_env_long("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1 << 20, &batch, err,
                           sizeof err) < 0 ||
        ms_config_env_long("OTEL_BSP_SCHEDULE_DELAY", 5000, 1, 3600000, &delay, err, sizeof err) <
            0) {
        ms_log(MS_LOG_ERROR, "bad tracing setting", "error", err, NULL);
        return MS_EINVAL;
    }
    const char *endpoint = getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    if (!endpoint || !*endpoint)
        return 0;
    if ((rc = parse_endpoint(endpoint)) < 0)
        return rc;
    ms_trace_service_name(service ? service : "microshop", tr.service, sizeof tr.service);
    ms_uuid_new(tr.instance);
    ms_buf_init(&tr.body, 4096);
    ms_buf_init(&tr.resp, 4096);
    tr.warned = false;
    atomic_store(&tr.stop_by_ms, 0);
    ms_batch_options o = {
        .name = "trace",
        .max_items = batch > queue ? (int)queue : (int)batch,
        .max_wait_ms = (int)delay,
        .max_queued = (int)queue,
        .backoff_min_ms = 100,
        .backoff_max_ms = 5000,
        .stop_timeout_ms = 5000, /* the most a shutdown takes; its timeout may cut it shorter */
        .flush = flush,
        .release = release,
    };
    if ((rc = ms_batch_start(&o, &tr.batch)) < 0)
        return rc;
    atomic_store(&tr.recording, true);
    return 0;
}

void ms_trace_shutdown(int timeout_ms)
{
    if (!tr.batch)
        return;
    atomic_store(&tr.recording, false);
    atomic_store(&tr.stop_by_ms, now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0));
    /* spans ended from now on are dropped and counted (tr.batch is read by other threads
     * only while recording; a span started just before is refused by the stopping batch) */
    size_t left = ms_batch_stop(tr.batch);
    tr.batch = NULL;
    atomic_fetch_add_explicit(&dropped, left, memory_order_relaxed);
    conn_close();
    ms_buf_release(&tr.body);
    ms_buf_release(&tr.resp);
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
    ms_metrics_sample(out, "trace_spans_exported_total", (double)atomic_load(&exported), NULL);
    ms_metrics_family(out, "trace_spans_dropped_total", "counter",
                      "Spans lost: the export queue was full, the collector refused them, or "
                      "they were still queued at shutdown.");
    ms_metrics_sample(out, "trace_spans_dropped_total", (double)atomic_load(&dropped), NULL);
    ms_metrics_family(out, "trace_export_failures_total", "counter",
                      "Export requests that failed (retried unless the collector refused them).");
    ms_metrics_sample(out, "trace_export_failures_total", (double)atomic_load(&failures), NULL);
    if (tr.batch)
        ms_batch_collect(out, NULL);
}
