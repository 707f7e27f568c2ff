/*
 * trace_store.c — the gateway's OTLP/HTTP JSON receiver (POST /v1/traces on the admin listener)
 * and the bounded memory of the spans it received, for the ops console to list and draw:
 *   GET /ops/api/traces?service=&limit=&background=   newest first (by start), a summary
 *                                         each; background=0: only traces a request began
 *   GET /ops/api/traces/{trace_id}        every span of one trace, by start
 *
 * Bounds: TRACES_MAX traces, SPANS_MAX spans, BYTES_MAX bytes (roughly: strings plus a fixed
 * cost per span), TRACE_SPANS_MAX spans per trace; past them the trace updated longest ago is
 * dropped whole (a trace still receiving spans stays). A span's attributes and strings are
 * capped too (otlp_doc.h), so one exporter cannot fill the store with one span.
 *
 * Root SERVER spans of operations routes (/health, /ready, /metrics, /v1/traces, /v1/logs,
 * /admin/..., /ops...) are accepted but not kept (see operational).
 *
 * A request is answered per OTLP/HTTP: 200 {} when every span was kept; 200 with
 * partialSuccess {rejectedSpans, errorMessage} when some were malformed and the rest kept; 400
 * problem+json naming the fields when the document's shape is wrong or every span is; 415 for
 * anything but JSON (protobuf is not spoken); 413 past GATEWAY_OTLP_BODY_MAX (or the listener's
 * own body limit, --max-body-bytes, when that is lower). The handling is otlp_doc.c's.
 *
 * Threading: the handlers run on the admin loop and the metrics collector on the scraping
 * thread; the store is behind one mutex, and the JSON it holds is touched only under it.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/obs/metrics.h"
#include "services/gateway/gateway_internal.h"
#include "services/gateway/otlp_doc.h"
#include "runtime/core/banned.h"

enum {
    TRACES_MAX = 1000,
    SPANS_MAX = 20000,
    TRACE_SPANS_MAX = 2000,
    BYTES_MAX = 48 << 20,
    SPAN_COST = 256, /* bytes of a span besides its strings: its objects and slot */
    LIST_DEFAULT = 50,
};

typedef struct trace_rec {
    char id[33];
    uint64_t touched; /* store.clock when a span last arrived: the oldest goes first */
    uint64_t start_ns, end_ns;
    json_t *spans; /* array of span documents (see span_doc) */
    size_t bytes;
    bool error;
} trace_rec;

static struct {
    pthread_mutex_t lock;
    trace_rec traces[TRACES_MAX];
    int n;
    size_t spans, bytes;
    uint64_t clock;
    gateway_otlp_counts counts;
} store = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- the OTLP document ---- */

static const char *kind_name(json_int_t k)
{
    static const char *const names[] = {"unspecified", "internal", "server",
                                        "client",      "producer", "consumer"};
    return k >= 0 && k <= 5 ? names[k] : "unspecified";
}

/*
 * One OTLP span as the console's document:
 *   {trace_id, span_id, parent_span_id (null for a root), service, instance, name, kind,
 *    start_unix_nano, end_unix_nano (decimal strings), start_ms (since the epoch, a number for
 *    scripts), duration_ms, attributes {}, status {code: unset|ok|error, message}, error}
 * Or NULL with the problem named. times: start, end.
 */
static json_t *span_doc(json_t *s, const gateway_otlp_item *it, size_t *bytes, uint64_t times[2])
{
    const char *tid = json_string_value(json_object_get(s, "traceId"));
    const char *sid = json_string_value(json_object_get(s, "spanId"));
    json_t *pj = json_object_get(s, "parentSpanId");
    const char *pid = json_string_value(pj);
    const char *name = json_string_value(json_object_get(s, "name"));
    json_t *kind = json_object_get(s, "kind");
    json_t *status = json_object_get(s, "status");
    const char *service = it->service, *instance = it->instance;
    uint64_t *start = &times[0], *end = &times[1];
    const char *bad = NULL, *why = NULL;
    if (!json_is_object(s))
        bad = "", why = "must be an object";
    else if (!gateway_otlp_is_hex(tid, 32))
        bad = "traceId", why = "must be 32 hex digits, not all zero";
    else if (!gateway_otlp_is_hex(sid, 16))
        bad = "spanId", why = "must be 16 hex digits, not all zero";
    else if (pj && !json_is_null(pj) && !(pid && (!*pid || gateway_otlp_is_hex(pid, 16))))
        bad = "parentSpanId", why = "must be empty or 16 hex digits";
    else if (!name)
        bad = "name", why = "must be a string";
    else if (kind && !(json_is_integer(kind) && json_integer_value(kind) >= 0 &&
                       json_integer_value(kind) <= 5))
        bad = "kind", why = "must be an integer from 0 to 5";
    else if (!gateway_otlp_u64(json_object_get(s, "startTimeUnixNano"), start))
        bad = "startTimeUnixNano", why = "must be a decimal string of nanoseconds";
    else if (!gateway_otlp_u64(json_object_get(s, "endTimeUnixNano"), end))
        bad = "endTimeUnixNano", why = "must be a decimal string of nanoseconds";
    else if (*end < *start)
        bad = "endTimeUnixNano", why = "must not be before startTimeUnixNano";
    else if (status && !json_is_object(status))
        bad = "status", why = "must be an object";
    json_t *attrs = gateway_otlp_item_attributes(s, it, bad, why, bytes);
    if (!attrs)
        return NULL;
    char t[33], sp[17], p[17];
    gateway_otlp_lower_hex(t, tid, 32);
    gateway_otlp_lower_hex(sp, sid, 16);
    if (pid && *pid)
        gateway_otlp_lower_hex(p, pid, 16);
    json_int_t code = json_integer_value(json_object_get(status, "code"));
    const char *msg = json_string_value(json_object_get(status, "message"));
    char s_start[24], s_end[24];
    snprintf(s_start, sizeof s_start, "%" PRIu64, *start);
    snprintf(s_end, sizeof s_end, "%" PRIu64, *end);
    json_t *doc = json_pack(
        "{s:s, s:s, s:s?, s:o, s:o, s:o, s:s, s:s, s:s, s:f, s:f, s:o, s:{s:s, s:o}, s:b}",
        "trace_id", t, "span_id", sp, "parent_span_id", pid && *pid ? p : NULL, "service",
        gateway_otlp_string(service, bytes), "instance",
        instance ? gateway_otlp_string(instance, bytes) : json_null(), "name",
        gateway_otlp_string(name, bytes), "kind", kind_name(json_integer_value(kind)),
        "start_unix_nano", s_start, "end_unix_nano", s_end, "start_ms", (double)*start / 1e6,
        "duration_ms", (double)(*end - *start) / 1e6, "attributes", attrs, "status", "code",
        code == 1   ? "ok"
        : code == 2 ? "error"
                    : "unset",
        "message", msg ? gateway_otlp_string(msg, bytes) : json_string(""), "error", code == 2);
    *bytes += SPAN_COST;
    return doc;
}

/* ---- the store (under store.lock) ---- */

static void drop_trace(int i)
{
    trace_rec *t = &store.traces[i];
    store.spans -= json_array_size(t->spans);
    store.bytes -= t->bytes;
    json_decref(t->spans);
    store.traces[i] = store.traces[--store.n];
    store.counts.evicted++;
}

static void drop_oldest(void)
{
    int oldest = 0;
    for (int i = 1; i < store.n; i++)
        if (store.traces[i].touched < store.traces[oldest].touched)
            oldest = i;
    drop_trace(oldest);
}

static trace_rec *find_trace(const char *id)
{
    for (int i = 0; i < store.n; i++)
        if (memcmp(store.traces[i].id, id, 32) == 0)
            return &store.traces[i];
    return NULL;
}

/* Keeps one span document (consumed); false when its trace is full. times: start, end. */
static bool keep(json_t *doc, size_t bytes, const uint64_t times[2])
{
    uint64_t start = times[0], end = times[1];
    const char *id = json_string_value(json_object_get(doc, "trace_id"));
    trace_rec *t = find_trace(id);
    if (t && json_array_size(t->spans) >= TRACE_SPANS_MAX) {
        json_decref(doc);
        return false;
    }
    while (store.n > 0 && (store.spans + 1 > SPANS_MAX || store.bytes + bytes > BYTES_MAX ||
                           (!t && store.n == TRACES_MAX))) {
        drop_oldest();
        t = find_trace(id); /* the oldest may have been this one, and slots move */
    }
    if (!t) {
        t = &store.traces[store.n++];
        memset(t, 0, sizeof *t);
        memcpy(t->id, id, 33);
        t->spans = json_array();
        t->start_ns = start;
        t->end_ns = end;
    }
    t->touched = ++store.clock;
    t->start_ns = start < t->start_ns ? start : t->start_ns;
    t->end_ns = end > t->end_ns ? end : t->end_ns;
    t->error |= json_is_true(json_object_get(doc, "error"));
    t->bytes += bytes;
    store.bytes += bytes;
    store.spans++;
    json_array_append_new(t->spans, doc);
    return true;
}

/* ---- POST /v1/traces ---- */

/* A root SERVER span of operations traffic: probes, scrapes, this console's own polling and the
 * exports themselves (an export traced and exported would feed itself forever). Kept, such
 * spans would push the traces a person looks for out of the store within minutes. */
static bool operational(json_t *doc)
{
    static const char *const exact[] = {"/health",  "/ready", "/metrics", "/v1/traces",
                                        "/v1/logs", "/ops",   NULL};
    static const char *const prefix[] = {"/admin/", "/ops/", NULL};
    if (!json_is_null(json_object_get(doc, "parent_span_id")) ||
        strcmp(json_string_value(json_object_get(doc, "kind")), "server") != 0)
        return false;
    const char *route =
        json_string_value(json_object_get(json_object_get(doc, "attributes"), "http.route"));
    if (!route) { /* the name is "METHOD /route" by the semantic conventions */
        const char *name = json_string_value(json_object_get(doc, "name"));
        route = strchr(name, ' ') ? strchr(name, ' ') + 1 : name;
    }
    return gateway_otlp_route_in(route, exact, prefix);
}

static size_t held(void)
{
    return store.spans;
}

static const gateway_otlp_kind traces = {
    .what = "trace",
    .item = "span",
    .resources = "resourceSpans",
    .scopes = "scopeSpans",
    .items = "spans",
    .rejected_name = "rejectedSpans",
    .doc = span_doc,
    .operational = operational,
    .keep = keep,
    .lock = &store.lock,
    .counts = &store.counts,
    .held = held,
    .received = {"otlp_receiver_spans_total",
                 "Spans received at POST /v1/traces, by outcome (ignored: the root span of a "
                 "probe, scrape, export or console request; rejected: malformed, or past a "
                 "trace's span limit)."},
    .evicted = {"otlp_receiver_traces_evicted_total",
                "Traces dropped from the console's store to make room for newer ones."},
    .stored = {"otlp_receiver_stored_spans", "Spans the console's store holds now."},
};

void gateway_otlp_receive(ms_http_request *req)
{
    char refused[64];
    snprintf(refused, sizeof refused, "a trace holds at most %d spans", TRACE_SPANS_MAX);
    gateway_otlp_receive_export(req, &traces, refused);
}

/* ---- the console's queries ---- */

static bool involves(const trace_rec *t, const char *service)
{
    size_t i;
    json_t *s;
    json_array_foreach(t->spans, i, s)
    {
        if (strcmp(json_string_value(json_object_get(s, "service")), service) == 0)
            return true;
    }
    return false;
}

/* The span without a parent, else (its root not received yet) the earliest. */
static json_t *root_of(const trace_rec *t)
{
    json_t *root = NULL, *s;
    size_t i;
    json_array_foreach(t->spans, i, s)
    {
        bool is_root = json_is_null(json_object_get(s, "parent_span_id"));
        bool had_root = root && json_is_null(json_object_get(root, "parent_span_id"));
        if (!root || (is_root && !had_root) ||
            (is_root == had_root && json_real_value(json_object_get(s, "start_ms")) <
                                        json_real_value(json_object_get(root, "start_ms"))))
            root = s;
    }
    return root;
}

/* Work no request asked for: a trace whose root is a call or a step of a process's own (a
 * feed's long poll, a relay), not a SERVER or CONSUMER span. */
static bool is_background(json_t *root)
{
    const char *kind = json_string_value(json_object_get(root, "kind"));
    return json_is_null(json_object_get(root, "parent_span_id")) && strcmp(kind, "server") != 0 &&
           strcmp(kind, "consumer") != 0;
}

/* {trace_id, root_name, root_service, root_kind, background, services[] (in order of first
 * span), start_unix_nano, start_ms, duration_ms, span_count, error} */
static json_t *summary(const trace_rec *t)
{
    json_t *root = root_of(t), *services = json_array();
    size_t i, j;
    json_t *s, *have;
    json_array_foreach(t->spans, i, s)
    {
        json_t *svc = json_object_get(s, "service");
        bool seen = false;
        json_array_foreach(services, j, have)
        {
            seen |= json_equal(have, svc);
        }
        if (!seen)
            json_array_append(services, svc);
    }
    char start[24];
    snprintf(start, sizeof start, "%" PRIu64, t->start_ns);
    return json_pack("{s:s, s:O, s:O, s:O, s:b, s:o, s:s, s:f, s:f, s:I, s:b}", "trace_id", t->id,
                     "root_name", json_object_get(root, "name"), "root_service",
                     json_object_get(root, "service"), "root_kind", json_object_get(root, "kind"),
                     "background", is_background(root), "services", services, "start_unix_nano",
                     start, "start_ms", (double)t->start_ns / 1e6, "duration_ms",
                     (double)(t->end_ns - t->start_ns) / 1e6, "span_count",
                     (json_int_t)json_array_size(t->spans), "error", t->error);
}

static int by_start_desc(const void *a, const void *b)
{
    const trace_rec *x = *(const trace_rec *const *)a, *y = *(const trace_rec *const *)b;
    if (x->start_ns != y->start_ns)
        return x->start_ns < y->start_ns ? 1 : -1;
    return strcmp(x->id, y->id);
}

static void respond_locked_doc(ms_http_request *req, json_t *doc)
{
    /* serialised under the lock: the stored documents are shared with the store */
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    pthread_mutex_unlock(&store.lock);
    ms_http_respond(req, 200, "application/json", text, strlen(text));
    free(text);
}

void gateway_traces_list(ms_http_request *req)
{
    const char *service = ms_http_query_param(req, "service");
    const char *limit_s = ms_http_query_param(req, "limit");
    long limit = LIST_DEFAULT;
    if (limit_s) {
        char *end;
        limit = strtol(limit_s, &end, 10);
        if (!*limit_s || *end || limit < 1 || limit > TRACES_MAX) {
            json_t *errors = json_array();
            ms_field_error(errors, "limit", "must be an integer from 1 to %d", TRACES_MAX);
            ms_problem_fields(req, 400, "limit is out of range", errors);
            return;
        }
    }
    const char *bg = ms_http_query_param(req, "background");
    if (bg && strcmp(bg, "0") != 0 && strcmp(bg, "1") != 0) {
        json_t *errors = json_array();
        ms_field_error(errors, "background", "must be 0 (requests only) or 1");
        ms_problem_fields(req, 400, "background is neither 0 nor 1", errors);
        return;
    }
    bool requests_only = bg && strcmp(bg, "0") == 0;
    if (service && !*service)
        service = NULL;
    pthread_mutex_lock(&store.lock);
    trace_rec *order[TRACES_MAX];
    int n = 0;
    for (int i = 0; i < store.n; i++)
        if ((!service || involves(&store.traces[i], service)) &&
            !(requests_only && is_background(root_of(&store.traces[i]))))
            order[n++] = &store.traces[i];
    if (n > 1)
        qsort(order, (size_t)n, sizeof order[0], by_start_desc);
    json_t *list = json_array();
    for (int i = 0; i < n && i < limit; i++)
        json_array_append_new(list, summary(order[i]));
    respond_locked_doc(req,
                       json_pack("{s:o, s:I, s:I}", "traces", list, "stored_traces",
                                 (json_int_t)store.n, "stored_spans", (json_int_t)store.spans));
}

static int by_start(const void *a, const void *b)
{
    double x = json_real_value(json_object_get(*(json_t *const *)a, "start_ms"));
    double y = json_real_value(json_object_get(*(json_t *const *)b, "start_ms"));
    return x < y ? -1 : x > y ? 1 : 0;
}

void gateway_trace_get(ms_http_request *req)
{
    const char *id = ms_http_param(req, "trace_id");
    bool ok = strlen(id) == 32;
    for (const char *p = id; ok && *p; p++)
        ok = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f');
    if (!ok) {
        json_t *errors = json_array();
        ms_field_error(errors, "trace_id", "must be 32 lowercase hex digits");
        ms_problem_fields(req, 400, "trace_id is malformed", errors);
        return;
    }
    pthread_mutex_lock(&store.lock);
    trace_rec *t = find_trace(id);
    if (!t) {
        pthread_mutex_unlock(&store.lock);
        ms_problem_from_error(req, MS_ENOTFOUND,
                              "no trace with that id was received, or it was dropped to make "
                              "room for newer ones");
        return;
    }
    size_t n = json_array_size(t->spans);
    json_t **spans = malloc(n * sizeof *spans);
    for (size_t i = 0; i < n; i++)
        spans[i] = json_array_get(t->spans, i);
    qsort(spans, n, sizeof *spans, by_start);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(list, spans[i]);
    free(spans);
    json_t *doc = summary(t);
    json_object_set_new(doc, "spans", list);
    respond_locked_doc(req, doc);
}

/* ---- metrics and life ---- */

void gateway_traces_start(void)
{
    ms_metrics_register(gateway_otlp_collect, (void *)&traces);
}

void gateway_traces_stop(void)
{
    pthread_mutex_lock(&store.lock);
    for (int i = 0; i < store.n; i++)
        json_decref(store.traces[i].spans);
    store.n = 0;
    store.spans = store.bytes = 0;
    store.counts = (gateway_otlp_counts){0};
    pthread_mutex_unlock(&store.lock);
}
