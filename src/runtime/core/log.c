#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/utf8.h"
#include "runtime/core/banned.h"

static const char *log_service = "microshop";
/* relaxed: a line racing a change may go either way, and nothing else depends on it */
static atomic_int log_min = MS_LOG_INFO;
static _Thread_local int thread_min = MS_LOG_DEBUG;
static ms_log_context_fn log_context;
static ms_log_sink_fn log_sink;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ms_log_init(const char *service, ms_log_level min_level)
{
    log_service = service;
    ms_log_set_level(min_level);
}

void ms_log_set_level(ms_log_level level)
{
    atomic_store_explicit(&log_min, (int)level, memory_order_relaxed);
}

ms_log_level ms_log_get_level(void)
{
    return (ms_log_level)atomic_load_explicit(&log_min, memory_order_relaxed);
}

const char *ms_log_level_name(ms_log_level level)
{
    return (unsigned)level < 4 ? level_names[level] : "info";
}

void ms_log_set_context_fn(ms_log_context_fn fn)
{
    log_context = fn;
}

void ms_log_set_sink_fn(ms_log_sink_fn fn)
{
    log_sink = fn;
}

int ms_log_level_parse(const char *s, ms_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (ms_log_level)i;
            return 0;
        }
    }
    return MS_EINVAL;
}

int ms_log_enabled(ms_log_level level)
{
    return (int)level >= atomic_load_explicit(&log_min, memory_order_relaxed) &&
           (int)level >= thread_min;
}

void ms_log_set_thread_level(ms_log_level level)
{
    thread_min = (int)level;
}

typedef struct {
    char *p;
    size_t n, cap; /* cap leaves room for the closing "}\n" */
    bool full;     /* a put did not fit: the field being written is to be dropped */
} line_buf;

static void put(line_buf *b, const char *s, size_t n)
{
    if (b->full || b->n + n > b->cap) {
        b->full = true;
        return;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

/* A JSON string. A value longer than the line is cut (at a character), never the line's
 * syntax; bytes that are not UTF-8 become U+FFFD, so the line always parses. */
static void put_escaped(line_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c && !b->full;) {
        /* a run of printable ASCII goes in one copy (most values are all of it) */
        const unsigned char *run = c;
        while (*c >= 0x20 && *c < 0x7f && *c != '"' && *c != '\\')
            c++;
        if (c > run) {
            size_t n = (size_t)(c - run), room = b->cap > b->n + 1 ? b->cap - b->n - 1 : 0;
            if (n > room) /* keep room for the closing quote */
                n = room;
            put(b, (const char *)run, n);
            if (n < (size_t)(c - run))
                break;
            continue;
        }
        char e[6];
        const char *out = e;
        size_t n = 1, adv = 1;
        if (*c == '"' || *c == '\\') {
            e[0] = '\\';
            e[1] = (char)*c;
            n = 2;
        } else if (*c == '\n') {
            memcpy(e, "\\n", 2);
            n = 2;
        } else if (*c < 0x20 || *c == 0x7f) {
            memcpy(e, "\\u00", 4);
            e[4] = hex[*c >> 4];
            e[5] = hex[*c & 15];
            n = 6;
        } else if ((adv = ms_utf8_len(c)) > 0) {
            out = (const char *)c;
            n = adv;
        } else {
            out = "\\ufffd";
            n = 6;
            adv = 1;
        }
        if (b->n + n + 1 > b->cap) /* keep room for the closing quote */
            break;
        put(b, out, n);
        c += adv;
    }
    put(b, "\"", 1);
}

/* The next key and value: from `ap` when kv is NULL, else from kv (n pairs). */
typedef struct {
    va_list *ap;
    const char *const *kv;
    size_t n, i;
} field_src;

static bool next_field(field_src *f, const char **key, const char **val)
{
    if (!f->kv) {
        *key = va_arg(*f->ap, const char *);
        if (!*key)
            return false;
        *val = va_arg(*f->ap, const char *);
        return true;
    }
    if (f->i >= f->n)
        return false;
    *key = f->kv[2 * f->i];
    *val = f->kv[2 * f->i + 1];
    f->i++;
    return true;
}

enum { SINK_FIELDS_MAX = 64 }; /* pairs handed to a sink; a 4 KiB line rarely holds more */

/* A built line as the sink sees it, with the storage its record borrows. */
typedef struct {
    ms_log_record r;
    const char *kept[2 * SINK_FIELDS_MAX];
    char trace_id[33], span_id[17];
} line_record;

/* Builds one line into out[MS_LOG_LINE_MAX] (with the thread's trace ids when `context`) and
 * its record: its length, the newline included. */
static size_t format_line(char *out, ms_log_level level, const char *msg, field_src *f,
                          bool context, line_record *rec)
{
    size_t nkept = 0;
    line_buf b = {out, 0, MS_LOG_LINE_MAX - 2, false};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char head[64];
    int hn = snprintf(head, sizeof head, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                      tm.tm_sec, ts.tv_nsec / 1000000);
    put(&b, head, (size_t)hn);
    put(&b, ",\"level\":", 9);
    put_escaped(&b, level_names[level]);
    put(&b, ",\"service\":", 11);
    put_escaped(&b, log_service);
    put(&b, ",\"msg\":", 7);
    put_escaped(&b, msg);
    bool traced = context && log_context && log_context(rec->trace_id, rec->span_id);
    if (traced) {
        put(&b, ",\"trace_id\":", 12);
        put_escaped(&b, rec->trace_id);
        put(&b, ",\"span_id\":", 11);
        put_escaped(&b, rec->span_id);
    }
    const char *key, *val;
    while (!b.full && next_field(f, &key, &val)) {
        size_t mark = b.n;
        int raw = key[0] == '#';
        put(&b, ",", 1);
        put_escaped(&b, raw ? key + 1 : key);
        put(&b, ":", 1);
        if (!val)
            put(&b, "null", 4);
        else if (raw)
            put(&b, val, strlen(val));
        else
            put_escaped(&b, val);
        if (b.full) {
            b.n = mark; /* a field that does not fit is left out, with those after it */
        } else if (nkept < SINK_FIELDS_MAX) {
            rec->kept[2 * nkept] = key;
            rec->kept[2 * nkept + 1] = val;
            nkept++;
        }
    }
    memcpy(b.p + b.n, "}\n", 2);
    rec->r = (ms_log_record){
        .level = level,
        .time_unix_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
        .msg = msg,
        .fields = rec->kept,
        .nfields = nkept,
        .trace_id = traced ? rec->trace_id : NULL,
        .span_id = traced ? rec->span_id : NULL,
        .line = out,
        .line_len = b.n + 2,
    };
    return b.n + 2;
}

static void write_line(ms_log_level level, const char *msg, field_src *f)
{
    char storage[MS_LOG_LINE_MAX];
    line_record rec;
    size_t n = format_line(storage, level, msg, f, true, &rec);
    ssize_t w = write(STDERR_FILENO, storage, n);
    (void)w;
    if (log_sink)
        log_sink(&rec.r);
}

size_t ms_log_format_fields(char *out, ms_log_level level, const char *msg,
                            const char *const *fields, size_t n)
{
    field_src f = {NULL, fields, n, 0};
    line_record rec;
    size_t len = format_line(out, level, msg, &f, false, &rec);
    if (log_sink)
        log_sink(&rec.r);
    return len;
}

void ms_logv(ms_log_level level, const char *msg, va_list fields)
{
    if (!ms_log_enabled(level))
        return;
    va_list ap;
    va_copy(ap, fields);
    field_src f = {&ap, NULL, 0, 0};
    write_line(level, msg, &f);
    va_end(ap);
}

void ms_log_fields(ms_log_level level, const char *msg, const char *const *fields, size_t n)
{
    if (!ms_log_enabled(level))
        return;
    field_src f = {NULL, fields, n, 0};
    write_line(level, msg, &f);
}

void ms_log(ms_log_level level, const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    ms_logv(level, msg, ap);
    va_end(ap);
}
