/* The OTLP/HTTP JSON exporters' shared client and encoding pieces; see otlp_http.h. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/utf8.h"
#include "runtime/obs/otlp_http.h"
#include "runtime/obs/trace_internal.h"
#include "runtime/core/banned.h"

enum { RESPONSE_MAX = 64 * 1024 };

uint64_t ms_otlp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Each exporter's names and defaults: the endpoint's /v1/<path>, the batch's name, the message
 * of a bad setting, its batch processor's variables by OTel's names (max queue size, max export
 * batch size, schedule delay: their defaults are 2048, 512 and delay_ms), and the members of
 * its export document (resources, scopes, items). */
static const struct {
    const char *path, *batch, *bad_setting, *queue_env, *batch_env, *delay_env;
    long delay_ms;
    const char *resources, *scopes, *items;
} signals[] = {
    [MS_OTLP_TRACES] = {"traces", "trace", "bad tracing setting", "OTEL_BSP_MAX_QUEUE_SIZE",
                        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_SCHEDULE_DELAY", 5000,
                        "resourceSpans", "scopeSpans", "spans"},
    [MS_OTLP_LOGS] = {"logs", "log", "bad log export setting", "OTEL_BLRP_MAX_QUEUE_SIZE",
                      "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "OTEL_BLRP_SCHEDULE_DELAY", 1000,
                      "resourceLogs", "scopeLogs", "logRecords"},
};

/* ---- JSON ---- */

/* Bytes that are not UTF-8 become U+FFFD: a collector refuses a document that is not UTF-8,
 * and with it every other item of the export. The encoders run for every span and line on the
 * exporters' threads (~80k spans a second at 100 % sampling on the gateway's path), so runs of
 * plain bytes are appended at once and numbers written by hand: a printf or a byte-by-byte
 * append made encoding three times costlier. */
void ms_otlp_json_str(ms_buf *out, const char *s)
{
    static const char digits[] = "0123456789abcdef";
    ms_buf_add(out, "\"", 1);
    const unsigned char *p = (const unsigned char *)s, *run = p;
    while (*p) {
        if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') {
            p++;
            continue;
        }
        size_t n = *p >= 0x80 ? ms_utf8_len(p) : 0;
        if (n > 0) { /* valid UTF-8 stays in the run */
            p += n;
            continue;
        }
        ms_buf_add(out, run, (size_t)(p - run));
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            ms_buf_add(out, e, 2);
        } else if (*p < 0x80) {
            char e[6] = {'\\', 'u', '0', '0', digits[*p >> 4], digits[*p & 15]};
            ms_buf_add(out, e, 6);
        } else {
            ms_buf_add(out, "\\ufffd", 6);
        }
        run = ++p;
    }
    ms_buf_add(out, run, (size_t)(p - run));
    ms_buf_add(out, "\"", 1);
}

void ms_otlp_json_kv_str(ms_buf *out, const char *key, const char *value)
{
    ms_buf_adds(out, "{\"key\":");
    ms_otlp_json_str(out, key);
    ms_buf_adds(out, ",\"value\":{\"stringValue\":");
    ms_otlp_json_str(out, value);
    ms_buf_adds(out, "}}");
}

void ms_otlp_json_i64(ms_buf *out, int64_t v)
{
    ms_buf_add(out, "\"", 1);
    ms_buf_add_int(out, v);
    ms_buf_add(out, "\"", 1);
}

void ms_otlp_json_u64(ms_buf *out, uint64_t v)
{
    ms_otlp_json_i64(out, (int64_t)v); /* Unix ns fit until 2262 */
}

void ms_otlp_json_hex(ms_buf *out, const uint8_t *bytes, size_t n)
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

void ms_otlp_json_resource(ms_buf *out, const char *service, const char *instance)
{
    ms_buf_adds(out, "\"resource\":{\"attributes\":[");
    ms_otlp_json_kv_str(out, "service.name", service);
    ms_buf_adds(out, ",");
    ms_otlp_json_kv_str(out, "service.instance.id", instance);
    ms_buf_adds(out, ",");
    ms_otlp_json_kv_str(out, "telemetry.sdk.name", "microshop");
    ms_buf_adds(out, ",");
    ms_otlp_json_kv_str(out, "telemetry.sdk.language", "c");
    ms_buf_adds(out, ",");
    ms_otlp_json_kv_str(out, "telemetry.sdk.version", MS_VERSION);
    ms_buf_adds(out, "]}");
}

void ms_otlp_json_export(ms_buf *out, ms_otlp_signal signal, const char *service,
                         const char *instance, void *const *items, size_t n,
                         ms_otlp_encode_item_fn one)
{
    ms_buf_printf(out, "{\"%s\":[{", signals[signal].resources);
    ms_otlp_json_resource(out, service, instance);
    ms_buf_printf(out, ",\"%s\":[{\"scope\":{\"name\":\"microshop\"},\"%s\":[",
                  signals[signal].scopes, signals[signal].items);
    for (size_t i = 0; i < n; i++) {
        if (i)
            ms_buf_adds(out, ",");
        one(out, items[i]);
    }
    ms_buf_adds(out, "]}]}]}");
}

/* ---- the endpoint ---- */

int ms_otlp_http_init(ms_otlp_http *c, const char *e, const char *signal, const char **why)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->signal = signal;
    if (strncasecmp(e, "http://", 7) != 0) {
        *why = "only http://host:port is supported";
        return MS_EINVAL;
    }
    const char *h = e + 7, *slash = strchr(h, '/');
    size_t hn = slash ? (size_t)(slash - h) : strlen(h);
    const char *colon = memchr(h, ':', hn);
    size_t name_len = colon ? (size_t)(colon - h) : hn;
    if (name_len == 0 || name_len >= sizeof c->host || memchr(h, '@', hn) || memchr(h, '[', hn)) {
        *why = "a host name or IPv4 address is needed";
        return MS_EINVAL;
    }
    memcpy(c->host, h, name_len);
    c->host[name_len] = '\0';
    const char *port = colon ? colon + 1 : "4318";
    size_t pn = colon ? hn - name_len - 1 : 4;
    long p = 0;
    for (size_t i = 0; i < pn; i++) {
        if (port[i] < '0' || port[i] > '9' || p > 65535) {
            *why = "the port must be a number";
            return MS_EINVAL;
        }
        p = p * 10 + (port[i] - '0');
    }
    if (pn == 0 || p < 1 || p > 65535) {
        *why = "the port must be 1 to 65535";
        return MS_EINVAL;
    }
    snprintf(c->port, sizeof c->port, "%ld", p);
    const char *base = slash ? slash : "";
    size_t bn = strlen(base);
    while (bn && base[bn - 1] == '/')
        bn--;
    if (bn + sizeof "/v1/" + strlen(signal) > sizeof c->path) {
        *why = "the path is too long";
        return MS_EINVAL;
    }
    snprintf(c->path, sizeof c->path, "%.*s/v1/%s", (int)bn, base, signal);
    ms_buf_init(&c->resp, 4096);
    return 0;
}

static void conn_close(ms_otlp_http *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

void ms_otlp_http_release(ms_otlp_http *c)
{
    conn_close(c);
    ms_buf_release(&c->resp);
}

/* ---- the blocking HTTP/1.1 client ---- */

/* Waits for `events` on fd until `deadline` (monotonic ms): 0 or MS_ETIMEDOUT. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = ms_otlp_now_ms();
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

static int conn_open(ms_otlp_http *c, uint64_t deadline)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(c->host, c->port, &hints, &res) != 0)
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
                c->fd = fd;
                rc = 0;
                continue;
            }
        }
        close(fd);
    }
    freeaddrinfo(res);
    return rc;
}

static int send_all(ms_otlp_http *c, const char *p, size_t n, uint64_t deadline)
{
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(c->fd, POLLOUT, deadline);
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
static int read_response(ms_otlp_http *c, uint64_t deadline, int *status, bool *keep)
{
    ms_buf *r = &c->resp;
    r->n = 0;
    size_t head_len = 0, want = 0;
    bool to_close = false;
    for (;;) {
        if (head_len && (to_close ? false : r->n >= head_len + want))
            break;
        if (r->n >= RESPONSE_MAX)
            return MS_ETOOBIG;
        char *w = ms_buf_reserve(r, 4096);
        ssize_t got = recv(c->fd, w, 4095, 0);
        if (got > 0) {
            r->n += (size_t)got;
        } else if (got == 0) {
            if (head_len && to_close)
                break;
            return MS_ECONN;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(c->fd, POLLIN, deadline);
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

int ms_otlp_http_post(ms_otlp_http *c, const char *body, size_t n, uint64_t deadline)
{
    char head[1024];
    int hn = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nUser-Agent: microshop/%s\r\n\r\n",
                      c->path, c->host, c->port, n, MS_VERSION);
    /* a kept connection the collector closed meanwhile fails at once: one fresh try then */
    for (int fresh = c->fd < 0; fresh < 2; fresh++) {
        if (c->fd < 0) {
            int rc = conn_open(c, deadline);
            if (rc < 0)
                return rc;
            fresh = 1;
        }
        int status = 0;
        bool keep = false;
        int rc = send_all(c, head, (size_t)hn, deadline);
        if (rc == 0)
            rc = send_all(c, body, n, deadline);
        if (rc == 0)
            rc = read_response(c, deadline, &status, &keep);
        if (rc == 0) {
            if (!keep)
                conn_close(c);
            return status;
        }
        conn_close(c);
        if (fresh || rc == MS_ETIMEDOUT)
            return rc;
    }
    return MS_ECONN;
}

int ms_otlp_http_export(ms_otlp_http *c, const ms_buf *body, uint64_t deadline, bool *sent)
{
    *sent = false;
    int status = ms_otlp_http_post(c, body->p, body->n, deadline);
    if (status >= 200 && status < 300) {
        *sent = true;
        return 0;
    }
    if (status >= 400 && status < 500 && status != 429) {
        if (!c->warned) {
            char st[16];
            snprintf(st, sizeof st, "%d", status);
            ms_log(MS_LOG_ERROR, "the collector refused an export; it is dropped", "signal",
                   c->signal, "status", st, NULL);
            c->warned = true;
        }
        return 0;
    }
    return status < 0 ? status : MS_EIO;
}

/* ---- the exporter ---- */

int ms_otlp_exporter_configure(ms_otlp_exporter *x, const ms_otlp_exporter_settings *s)
{
    char err[256];
    x->s = s;
    const ms_otlp_signal g = s->signal;
    if (ms_config_env_long(signals[g].queue_env, 2048, 1, 1 << 20, &x->queue, err, sizeof err) <
            0 ||
        ms_config_env_long(signals[g].batch_env, 512, 1, 1 << 20, &x->batch_size, err, sizeof err) <
            0 ||
        ms_config_env_long(signals[g].delay_env, signals[g].delay_ms, 1, 3600000, &x->delay_ms, err,
                           sizeof err) < 0) {
        ms_log(MS_LOG_ERROR, signals[g].bad_setting, "error", err, NULL);
        return MS_EINVAL;
    }
    return 0;
}

static void release(void *arg, void *item)
{
    (void)arg;
    free(item);
}

int ms_otlp_exporter_start(ms_otlp_exporter *x, const char *service, const char *endpoint)
{
    const ms_otlp_exporter_settings *s = x->s;
    const char *why = NULL;
    if (ms_otlp_http_init(&x->http, endpoint, signals[s->signal].path, &why) < 0) {
        ms_log(MS_LOG_ERROR, signals[s->signal].bad_setting, "variable",
               "OTEL_EXPORTER_OTLP_ENDPOINT", "error", why, NULL);
        return MS_EINVAL;
    }
    ms_trace_service_name(service ? service : "microshop", x->service, sizeof x->service);
    ms_uuid_new(x->instance);
    ms_buf_init(&x->body, 4096);
    atomic_store(&x->stop_by_ms, 0);
    ms_batch_options o = {
        .name = signals[s->signal].batch,
        .max_items = x->batch_size > x->queue ? (int)x->queue : (int)x->batch_size,
        .max_wait_ms = (int)x->delay_ms,
        .max_queued = (int)x->queue,
        .backoff_min_ms = 100,
        .backoff_max_ms = 5000,
        .stop_timeout_ms = 5000, /* the most a shutdown takes; its timeout may cut it shorter */
        .flush = s->flush,
        .release = release,
        .arg = x,
    };
    int rc = ms_batch_start(&o, &x->batch);
    if (rc < 0) {
        ms_otlp_http_release(&x->http);
        ms_buf_release(&x->body);
    }
    return rc;
}

uint64_t ms_otlp_exporter_stop(ms_otlp_exporter *x, int timeout_ms)
{
    uint64_t stop_by = ms_otlp_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    atomic_store(&x->stop_by_ms, stop_by);
    size_t left = ms_batch_stop(x->batch);
    x->batch = NULL;
    atomic_fetch_add_explicit(&x->counts.dropped, left, memory_order_relaxed);
    ms_otlp_http_release(&x->http);
    ms_buf_release(&x->body);
    return stop_by;
}

int ms_otlp_flush(ms_otlp_exporter *x, void *const *items, size_t n)
{
    uint64_t stop_by = atomic_load(&x->stop_by_ms), now = ms_otlp_now_ms();
    if (stop_by && now >= stop_by) { /* shutting down and out of time: let them go */
        atomic_fetch_add_explicit(&x->counts.dropped, n, memory_order_relaxed);
        return 0;
    }
    uint64_t deadline = now + MS_OTLP_EXPORT_TIMEOUT_MS;
    if (stop_by && stop_by < deadline)
        deadline = stop_by;
    x->body.n = 0;
    x->s->encode(&x->body, x->service, x->instance, items, n);
    bool sent;
    int rc = ms_otlp_http_export(&x->http, &x->body, deadline, &sent);
    if (sent) {
        atomic_fetch_add_explicit(&x->counts.exported, n, memory_order_relaxed);
        return 0;
    }
    atomic_fetch_add_explicit(&x->counts.failures, 1, memory_order_relaxed);
    if (rc == 0 || (stop_by && x->s->once_when_stopping)) {
        atomic_fetch_add_explicit(&x->counts.dropped, n, memory_order_relaxed);
        return 0;
    }
    return rc;
}
