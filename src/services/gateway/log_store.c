/*
 * log_store.c — the gateway's OTLP/HTTP JSON log receiver (POST /v1/logs on the admin listener)
 * and a bounded ring of the records it received, for the ops console to list and filter:
 *   GET /ops/api/logs?trace_id=&service=&level=&limit=   newest first (by time); trace_id: 32
 *       lower-case hex digits; level: the lowest shown (debug, info, warn, error); limit: 1 to
 *       LIST_MAX (LIST_DEFAULT)
 *
 * Bounds: LOGS_MAX records and BYTES_MAX bytes (roughly: strings plus a fixed cost per record);
 * past them the record received longest ago goes first. A record's attributes and strings are
 * capped (otlp_doc.h).
 *
 * The lines of operations traffic ("request" or "access" lines of /health, /ready, /metrics,
 * /v1/..., /admin/..., /ops...) are accepted but not kept: they would push the lines a person
 * looks for out of the ring, and the lines of the exports themselves would feed themselves.
 *
 * A request is answered per OTLP/HTTP, as POST /v1/traces is: 200 {} when every record was
 * kept; 200 with partialSuccess {rejectedLogRecords, errorMessage} when some were malformed
 * and the rest kept; 400 problem+json naming the fields when the document's shape is wrong or
 * every record is; 415 for anything but JSON; 413 past GATEWAY_OTLP_BODY_MAX (or the listener's
 * own body limit when that is lower). The handling is otlp_doc.c's.
 *
 * Threading: the handlers run on the admin loop and the metrics collector on the scraping
 * thread; the ring is behind one mutex, and the JSON it holds is touched only under it.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/obs/metrics.h"
#include "services/gateway/log_store.h"
#include "services/gateway/otlp_doc.h"
#include "runtime/core/banned.h"

enum {
    LOGS_MAX = 5000,
    BYTES_MAX = 16 << 20,
    RECORD_COST = 192, /* bytes of a record besides its strings: its objects and slot */
    LIST_DEFAULT = 200,
    LIST_MAX = 1000,
};

typedef struct log_slot {
    json_t *doc; /* see record_doc */
    size_t bytes;
    uint64_t time_ns;
} log_slot;

static struct {
    pthread_mutex_t lock;
    log_slot ring[LOGS_MAX]; /* ring[head] is the oldest */
    int head, n;
    size_t bytes;
    gateway_otlp_counts counts;
} store = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- the OTLP document ---- */

/* OTLP's SeverityNumber ranges (TRACE 1-4 and DEBUG 5-8 are our debug; FATAL is an error). */
static ms_log_level level_of(json_int_t number, const char *text)
{
    if (number >= 1 && number <= 8)
        return MS_LOG_DEBUG;
    if (number >= 9 && number <= 12)
        return MS_LOG_INFO;
    if (number >= 13 && number <= 16)
        return MS_LOG_WARN;
    if (number >= 17)
        return MS_LOG_ERROR;
    if (text && (strcasecmp(text, "trace") == 0 || strcasecmp(text, "debug") == 0))
        return MS_LOG_DEBUG;
    if (text && (strcasecmp(text, "warn") == 0 || strcasecmp(text, "warning") == 0))
        return MS_LOG_WARN;
    if (text && (strcasecmp(text, "error") == 0 || strcasecmp(text, "fatal") == 0))
        return MS_LOG_ERROR;
    return MS_LOG_INFO;
}

/* An optional id: absent, null or "" is none (NULL in *out); false when malformed. */
static bool optional_id(json_t *v, size_t n, char *buf, const char **out)
{
    *out = NULL;
    if (!v || json_is_null(v) || (json_is_string(v) && !*json_string_value(v)))
        return true;
    if (!gateway_otlp_is_hex(json_string_value(v), n))
        return false;
    gateway_otlp_lower_hex(buf, json_string_value(v), n);
    *out = buf;
    return true;
}

/*
 * One OTLP log record as the console's document:
 *   {time_unix_nano (a decimal string), time_ms (since the epoch, a number for scripts),
 *    service, instance, level (debug|info|warn|error), severity_number, msg (the body; a body
 *    that is not a string as JSON text), trace_id and span_id (null outside a trace),
 *    attributes {}}
 * Or NULL with the problem named. times: its time (the second unused).
 */
static json_t *record_doc(json_t *r, const gateway_otlp_item *it, size_t *bytes, uint64_t times[2])
{
    const char *service = it->service, *instance = it->instance;
    uint64_t *time = &times[0];
    json_t *tj = json_object_get(r, "timeUnixNano"),
           *oj = json_object_get(r, "observedTimeUnixNano");
    json_t *sev = json_object_get(r, "severityNumber"),
           *sevtext = json_object_get(r, "severityText");
    json_t *body = json_object_get(r, "body");
    char tbuf[33], sbuf[17];
    const char *tid = NULL, *sid = NULL, *bad = NULL, *why = NULL;
    uint64_t t = 0, observed = 0;
    if (!json_is_object(r))
        bad = "", why = "must be an object";
    else if (tj && !gateway_otlp_u64(tj, &t))
        bad = "timeUnixNano", why = "must be a decimal string of nanoseconds";
    else if (oj && !gateway_otlp_u64(oj, &observed))
        bad = "observedTimeUnixNano", why = "must be a decimal string of nanoseconds";
    else if (t == 0 && observed == 0)
        bad = "timeUnixNano", why = "is needed (or observedTimeUnixNano)";
    else if (sev && !(json_is_integer(sev) && json_integer_value(sev) >= 0 &&
                      json_integer_value(sev) <= 24))
        bad = "severityNumber", why = "must be an integer from 0 to 24";
    else if (sevtext && !json_is_string(sevtext))
        bad = "severityText", why = "must be a string";
    else if (body && !json_is_object(body))
        bad = "body", why = "must be an AnyValue object";
    else if (!optional_id(json_object_get(r, "traceId"), 32, tbuf, &tid))
        bad = "traceId", why = "must be empty or 32 hex digits, not all zero";
    else if (!optional_id(json_object_get(r, "spanId"), 16, sbuf, &sid))
        bad = "spanId", why = "must be empty or 16 hex digits, not all zero";
    json_t *attrs = gateway_otlp_item_attributes(r, it, bad, why, bytes);
    if (!attrs)
        return NULL;
    *time = t ? t : observed;
    json_t *msg = gateway_otlp_any_value(body, bytes);
    if (msg && !json_is_string(msg)) {
        char *text = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(msg);
        msg = gateway_otlp_string(text ? text : "", bytes);
        free(text);
    }
    json_int_t number = json_integer_value(sev);
    char stime[24];
    snprintf(stime, sizeof stime, "%" PRIu64, *time);
    json_t *doc = json_pack(
        "{s:s, s:f, s:o, s:o, s:s, s:I, s:o, s:s?, s:s?, s:o}", "time_unix_nano", stime, "time_ms",
        (double)*time / 1e6, "service", gateway_otlp_string(service, bytes), "instance",
        instance ? gateway_otlp_string(instance, bytes) : json_null(), "level",
        ms_log_level_name(level_of(number, json_string_value(sevtext))), "severity_number", number,
        "msg", msg ? msg : json_string(""), "trace_id", tid, "span_id", sid, "attributes", attrs);
    if (!tid)
        json_object_set_new(doc, "trace_id", json_null());
    if (!sid)
        json_object_set_new(doc, "span_id", json_null());
    *bytes += RECORD_COST;
    return doc;
}

/* A line about operations traffic (see the top): accepted, not kept. */
static bool operational(json_t *doc)
{
    static const char *const exact[] = {"/health", "/ready", "/metrics", "/ops", NULL};
    static const char *const prefix[] = {"/v1/", "/admin/", "/ops/", NULL};
    static const char *const keys[] = {"endpoint", "route", "path"};
    const char *msg = json_string_value(json_object_get(doc, "msg"));
    if (strcmp(msg, "request") != 0 && strcmp(msg, "access") != 0)
        return false;
    json_t *attrs = json_object_get(doc, "attributes");
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const char *v = json_string_value(json_object_get(attrs, keys[k]));
        if (v && gateway_otlp_route_in(v, exact, prefix))
            return true;
    }
    return false;
}

/* ---- the ring (under store.lock) ---- */

static void drop_oldest(void)
{
    log_slot *s = &store.ring[store.head];
    json_decref(s->doc);
    store.bytes -= s->bytes;
    *s = (log_slot){0};
    store.head = (store.head + 1) % LOGS_MAX;
    store.n--;
    store.counts.evicted++;
}

/* Keeps one record document (consumed); always true (the oldest make room). times: its time. */
static bool keep(json_t *doc, size_t bytes, const uint64_t times[2])
{
    uint64_t time = times[0];
    while (store.n > 0 && (store.n == LOGS_MAX || store.bytes + bytes > BYTES_MAX))
        drop_oldest();
    store.ring[(store.head + store.n) % LOGS_MAX] = (log_slot){doc, bytes, time};
    store.n++;
    store.bytes += bytes;
    return true;
}

/* ---- POST /v1/logs ---- */

static size_t held(void)
{
    return (size_t)store.n;
}

static const gateway_otlp_kind logs = {
    .what = "log",
    .item = "log record",
    .resources = "resourceLogs",
    .scopes = "scopeLogs",
    .items = "logRecords",
    .rejected_name = "rejectedLogRecords",
    .doc = record_doc,
    .operational = operational,
    .keep = keep,
    .lock = &store.lock,
    .counts = &store.counts,
    .held = held,
    .received = {"otlp_receiver_log_records_total",
                 "Log records received at POST /v1/logs, by outcome (ignored: a line about a "
                 "probe, scrape, export or console request; rejected: malformed)."},
    .evicted = {"otlp_receiver_log_records_evicted_total",
                "Log records dropped from the console's ring to make room for newer ones."},
    .stored = {"otlp_receiver_stored_log_records", "Log records the console's ring holds now."},
};

void gateway_logs_receive(ms_http_request *req)
{
    gateway_otlp_receive_export(req, &logs, NULL);
}

/* ---- GET /ops/api/logs ---- */

static void bad_param(ms_http_request *req, const char *name, const char *why)
{
    json_t *errors = json_array();
    ms_field_error(errors, name, "%s", why);
    char detail[96];
    snprintf(detail, sizeof detail, "%s is malformed", name);
    ms_problem_fields(req, 400, detail, errors);
}

static int by_time_desc(const void *a, const void *b)
{
    const log_slot *x = *(const log_slot *const *)a, *y = *(const log_slot *const *)b;
    if (x->time_ns != y->time_ns)
        return x->time_ns < y->time_ns ? 1 : -1;
    return x < y ? 1 : x > y ? -1 : 0; /* the same time: the later received first */
}

void gateway_logs_list(ms_http_request *req)
{
    const char *trace_id = ms_http_query_param(req, "trace_id");
    const char *service = ms_http_query_param(req, "service");
    const char *level_s = ms_http_query_param(req, "level");
    const char *limit_s = ms_http_query_param(req, "limit");
    if (trace_id && !*trace_id)
        trace_id = NULL;
    if (service && !*service)
        service = NULL;
    if (level_s && !*level_s)
        level_s = NULL;
    bool ok = !trace_id || strlen(trace_id) == 32;
    for (const char *p = trace_id; ok && p && *p; p++)
        ok = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f');
    if (!ok) {
        bad_param(req, "trace_id", "must be 32 lowercase hex digits");
        return;
    }
    ms_log_level min = MS_LOG_DEBUG;
    if (level_s && ms_log_level_parse(level_s, &min) < 0) {
        bad_param(req, "level", "must be debug, info, warn or error (the lowest shown)");
        return;
    }
    long limit = LIST_DEFAULT;
    if (limit_s) {
        char *end;
        limit = strtol(limit_s, &end, 10);
        if (!*limit_s || *end || limit < 1 || limit > LIST_MAX) {
            bad_param(req, "limit", "must be an integer from 1 to 1000");
            return;
        }
    }
    pthread_mutex_lock(&store.lock);
    log_slot **match = malloc((size_t)(store.n ? store.n : 1) * sizeof *match);
    json_t *services = json_object();
    size_t n = 0;
    for (int i = 0; i < store.n; i++) {
        log_slot *s = &store.ring[(store.head + i) % LOGS_MAX];
        const char *svc = json_string_value(json_object_get(s->doc, "service"));
        json_object_set_new(services, svc, json_true());
        ms_log_level l = MS_LOG_INFO;
        ms_log_level_parse(json_string_value(json_object_get(s->doc, "level")), &l);
        const char *tid = json_string_value(json_object_get(s->doc, "trace_id"));
        if ((service && strcmp(svc, service) != 0) || l < min ||
            (trace_id && !(tid && strcmp(tid, trace_id) == 0)))
            continue;
        match[n++] = s;
    }
    if (n > 1)
        qsort(match, n, sizeof *match, by_time_desc);
    json_t *list = json_array(), *names = json_array();
    for (size_t i = 0; i < n && i < (size_t)limit; i++)
        json_array_append(list, match[i]->doc);
    const char *name;
    json_t *v;
    json_object_foreach(services, name, v)
    {
        json_array_append_new(names, json_string(name));
    }
    json_decref(services);
    free(match);
    json_t *doc = json_pack("{s:o, s:I, s:I, s:o}", "logs", list, "matched", (json_int_t)n,
                            "stored_logs", (json_int_t)store.n, "services", names);
    /* serialised under the lock: the stored documents are shared with the ring */
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    pthread_mutex_unlock(&store.lock);
    ms_http_respond(req, 200, "application/json", text, strlen(text));
    free(text);
}

/* ---- metrics and life ---- */

void gateway_logs_start(void)
{
    ms_metrics_register(gateway_otlp_collect, (void *)&logs);
}

void gateway_logs_stop(void)
{
    pthread_mutex_lock(&store.lock);
    while (store.n > 0)
        drop_oldest();
    store.head = 0;
    store.bytes = 0;
    store.counts = (gateway_otlp_counts){0};
    pthread_mutex_unlock(&store.lock);
}
