/* The process's log exporter; see log_export.h. */
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/obs/batch.h"
#include "runtime/obs/log_export.h"
#include "runtime/obs/metrics.h"
#include "runtime/obs/otlp_http.h"
#include "runtime/core/banned.h"

enum { FIELDS_MAX = 64, STRING_MAX = 1024, TEXT_MAX = 16384 };

struct ms_log_export_rec {
    uint64_t time_ns;
    ms_log_level level;
    char trace_id[33], span_id[17]; /* "" outside a traced request */
    uint16_t msg;                   /* offsets in text */
    uint16_t nfields;
    uint16_t key[FIELDS_MAX], value[FIELDS_MAX]; /* value 0: null */
    uint64_t raw;                                /* bit i: field i was written unquoted */
    size_t used;                                 /* of text; offset 0 is "" */
    char text[];
};

static struct {
    atomic_bool exporting;
    atomic_int writers;  /* sinks between their check of exporting and their enqueue */
    ms_otlp_exporter ex; /* its batch read by writing threads only while exporting */
} lx;

/* Set on an exporter's flusher thread: what it logs is not exported (see log_export.h). */
static _Thread_local bool on_flusher;

void ms_log_export_ignore_thread(void)
{
    on_flusher = true;
}

/* ---- records ---- */

/* `s` cut to STRING_MAX bytes on a character boundary. */
static size_t capped_len(const char *s)
{
    size_t n = strlen(s);
    if (n <= STRING_MAX)
        return n;
    n = STRING_MAX;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

/* Copies `s` (capped) into the record's text: its offset, or 0 ("") when it does not fit. */
static uint16_t put_text(ms_log_export_rec *rec, const char *s, size_t cap)
{
    size_t n = capped_len(s);
    if (rec->used + n + 1 > cap)
        return 0;
    uint16_t at = (uint16_t)rec->used;
    memcpy(rec->text + at, s, n);
    rec->text[at + n] = '\0';
    rec->used += n + 1;
    return at;
}

static bool is_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* The index of field `key` when its value is n lower-case hex digits, else -1. */
static long id_field(const ms_log_record *r, size_t nf, const char *key, size_t n)
{
    for (size_t i = 0; i < nf; i++)
        if (strcmp(r->fields[2 * i], key) == 0 && is_hex(r->fields[2 * i + 1], n))
            return (long)i;
    return -1;
}

ms_log_export_rec *ms_log_export_record(const ms_log_record *r)
{
    size_t nf = r->nfields < FIELDS_MAX ? r->nfields : FIELDS_MAX;
    size_t need = 1 + capped_len(r->msg) + 1;
    for (size_t i = 0; i < nf; i++) {
        const char *k = r->fields[2 * i], *v = r->fields[2 * i + 1];
        need += capped_len(k) + 1 + (v ? capped_len(v) + 1 : 0);
    }
    if (need > TEXT_MAX)
        need = TEXT_MAX; /* the fields that do not fit are left out, as in the line */
    ms_log_export_rec *rec = malloc(sizeof *rec + need);
    if (!rec)
        return NULL;
    memset(rec, 0, sizeof *rec);
    rec->time_ns = r->time_unix_ns;
    rec->level = r->level;
    /* a line written outside the thread's context may name its request's ids itself (the
     * gateway's access line): they are the record's ids then, not attributes */
    long tf = -1, sf = -1;
    if (!r->trace_id && (tf = id_field(r, nf, "trace_id", 32)) >= 0 &&
        (sf = id_field(r, nf, "span_id", 16)) < 0)
        tf = -1;
    const char *tid = tf >= 0 ? r->fields[2 * tf + 1] : r->trace_id;
    const char *sid = sf >= 0 ? r->fields[2 * sf + 1] : r->span_id;
    if (tid && sid) {
        snprintf(rec->trace_id, sizeof rec->trace_id, "%s", tid);
        snprintf(rec->span_id, sizeof rec->span_id, "%s", sid);
    }
    rec->text[0] = '\0';
    rec->used = 1;
    rec->msg = put_text(rec, r->msg, need);
    for (size_t i = 0; i < nf; i++) {
        const char *k = r->fields[2 * i], *v = r->fields[2 * i + 1];
        if ((long)i == tf || (long)i == sf)
            continue;
        bool raw = k[0] == '#';
        size_t mark = rec->used;
        uint16_t ko = put_text(rec, raw ? k + 1 : k, need);
        uint16_t vo = v ? put_text(rec, v, need) : 0;
        if (!ko || (v && !vo)) {
            rec->used = mark;
            break;
        }
        rec->key[rec->nfields] = ko;
        rec->value[rec->nfields] = vo;
        if (raw)
            rec->raw |= 1ull << rec->nfields;
        rec->nfields++;
    }
    return rec;
}

/* OTLP's SeverityNumber: the first of each range (DEBUG 5, INFO 9, WARN 13, ERROR 17). */
static int severity_number(ms_log_level l)
{
    return 5 + 4 * (int)l;
}

static const char *severity_text(ms_log_level l)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    return (unsigned)l < 4 ? names[l] : "INFO";
}

/* A value written unquoted in the line: an integer, a finite number or a boolean as such, else
 * (never expected) its text. */
static void encode_raw(ms_buf *out, const char *v)
{
    char *end;
    errno = 0;
    long long i = strtoll(v, &end, 10);
    if (*v && !*end && errno == 0) {
        ms_buf_printf(out, "{\"intValue\":\"%lld\"}", i);
        return;
    }
    double d = strtod(v, &end);
    if (*v && !*end && isfinite(d)) {
        ms_buf_printf(out, "{\"doubleValue\":%.17g}", d);
        return;
    }
    if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
        ms_buf_printf(out, "{\"boolValue\":%s}", v);
        return;
    }
    ms_buf_adds(out, "{\"stringValue\":");
    ms_otlp_json_str(out, v);
    ms_buf_adds(out, "}");
}

static void encode_record(ms_buf *out, const void *item)
{
    const ms_log_export_rec *r = item;
    ms_buf_adds(out, "{\"timeUnixNano\":");
    ms_otlp_json_u64(out, r->time_ns);
    ms_buf_adds(out, ",\"observedTimeUnixNano\":");
    ms_otlp_json_u64(out, r->time_ns);
    ms_buf_printf(out, ",\"severityNumber\":%d,\"severityText\":\"%s\",\"body\":{\"stringValue\":",
                  severity_number(r->level), severity_text(r->level));
    ms_otlp_json_str(out, r->text + r->msg);
    ms_buf_adds(out, "},\"attributes\":[");
    for (int i = 0; i < r->nfields; i++) {
        if (i)
            ms_buf_adds(out, ",");
        ms_buf_adds(out, "{\"key\":");
        ms_otlp_json_str(out, r->text + r->key[i]);
        ms_buf_adds(out, ",\"value\":");
        if (!r->value[i]) {
            ms_buf_adds(out, "{}"); /* null: an empty AnyValue */
        } else if (r->raw & (1ull << i)) {
            encode_raw(out, r->text + r->value[i]);
        } else {
            ms_buf_adds(out, "{\"stringValue\":");
            ms_otlp_json_str(out, r->text + r->value[i]);
            ms_buf_adds(out, "}");
        }
        ms_buf_adds(out, "}");
    }
    ms_buf_adds(out, "]");
    if (r->trace_id[0])
        ms_buf_printf(out, ",\"traceId\":\"%s\",\"spanId\":\"%s\"", r->trace_id, r->span_id);
    ms_buf_adds(out, "}");
}

void ms_log_export_encode(ms_buf *out, const char *service, const char *instance, void *const *recs,
                          size_t n)
{
    ms_otlp_json_export(out, MS_OTLP_LOGS, service, instance, recs, n, encode_record);
}

/* ---- the sink and the batch ---- */

static void sink(const ms_log_record *r)
{
    if (on_flusher)
        return;
    /* counted before the check, so a shutdown that saw no writer cannot free the batch under
     * one that saw exporting still true */
    atomic_fetch_add(&lx.writers, 1);
    if (atomic_load(&lx.exporting)) {
        ms_log_export_rec *rec = ms_log_export_record(r);
        if (!rec || ms_batch_enqueue(lx.ex.batch, rec) < 0) {
            atomic_fetch_add_explicit(&lx.ex.counts.dropped, 1, memory_order_relaxed);
            free(rec);
        }
    }
    atomic_fetch_sub(&lx.writers, 1);
}

static int flush(void *arg, void *const *items, size_t n)
{
    on_flusher = true;
    /* its warnings (a flush failed, will retry) stay unwritten: the collector is the spans',
     * whose exporter tells of an outage once, and log_export_failures_total counts them; a
     * refused export is an error, still written */
    ms_log_set_thread_level(MS_LOG_ERROR);
    return ms_otlp_flush(arg, items, n);
}

static const ms_otlp_exporter_settings settings = {
    .signal = MS_OTLP_LOGS,
    .encode = ms_log_export_encode,
    /* stopping: the lines are on stderr already, and a collector that cannot be reached now
     * (often the gateway, stopping too) is not waited for */
    .once_when_stopping = true,
    .flush = flush,
};

int ms_log_export_init(const char *service, const char *endpoint)
{
    const char *which = getenv("OTEL_LOGS_EXPORTER");
    if (which && *which && strcmp(which, "otlp") != 0 && strcmp(which, "none") != 0) {
        ms_log(MS_LOG_ERROR, "bad log export setting", "variable", "OTEL_LOGS_EXPORTER", "error",
               "otlp or none is needed", NULL);
        return MS_EINVAL;
    }
    int rc = ms_otlp_exporter_configure(&lx.ex, &settings);
    if (rc < 0 || (which && strcmp(which, "none") == 0) || !endpoint || !*endpoint)
        return rc;
    if ((rc = ms_otlp_exporter_start(&lx.ex, service, endpoint)) < 0)
        return rc;
    atomic_store(&lx.exporting, true);
    ms_log_set_sink_fn(sink);
    return 0;
}

void ms_log_export_shutdown(int timeout_ms)
{
    if (!lx.ex.batch)
        return;
    /* lines written from now on are not exported (the batch's own report of what it could
     * not flush among them); a line being queued meanwhile is waited for, so the batch is not
     * freed under it */
    atomic_store(&lx.exporting, false);
    while (atomic_load(&lx.writers) > 0) /* a line being queued now: a copy and a lock away */
        sched_yield();
    ms_otlp_exporter_stop(&lx.ex, timeout_ms);
}

void ms_log_export_collect(ms_buf *out)
{
    ms_metrics_family(out, "log_records_exported_total", "counter",
                      "Log records the collector accepted.");
    ms_metrics_sample(out, "log_records_exported_total",
                      (double)atomic_load(&lx.ex.counts.exported), NULL);
    ms_metrics_family(out, "log_records_dropped_total", "counter",
                      "Log records lost: the export queue was full, the collector refused them, "
                      "or they were still queued at shutdown.");
    ms_metrics_sample(out, "log_records_dropped_total", (double)atomic_load(&lx.ex.counts.dropped),
                      NULL);
    ms_metrics_family(out, "log_export_failures_total", "counter",
                      "Log export requests that failed (retried unless the collector refused "
                      "them).");
    ms_metrics_sample(out, "log_export_failures_total", (double)atomic_load(&lx.ex.counts.failures),
                      NULL);
}
