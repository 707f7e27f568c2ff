#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

static const char *log_service = "microshop";
static ms_log_level log_min = MS_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ms_log_init(const char *service, ms_log_level min_level)
{
    log_service = service;
    log_min = min_level;
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
    return level >= log_min;
}

typedef struct {
    char *p;
    size_t n, cap;
} line_buf;

static void put(line_buf *b, const char *s, size_t n)
{
    if (b->n + n >= b->cap)
        n = b->cap - b->n - 1; /* truncate rather than split a line in two writes */
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void put_escaped(line_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char e[2] = {'\\', (char)*c};
            put(b, e, 2);
        } else if (*c == '\n') {
            put(b, "\\n", 2);
        } else if (*c < 0x20 || *c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
            put(b, e, 6);
        } else {
            put(b, (const char *)c, 1);
        }
    }
    put(b, "\"", 1);
}

void ms_logv(ms_log_level level, const char *msg, va_list fields)
{
    if (level < log_min)
        return;
    char storage[4096];
    line_buf b = {storage, 0, sizeof storage - 2}; /* room for the closing "}\n" */
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
    for (;;) {
        const char *key = va_arg(fields, const char *);
        if (!key)
            break;
        const char *val = va_arg(fields, const char *);
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
    }
    memcpy(b.p + b.n, "}\n", 2);
    b.n += 2;
    ssize_t w = write(STDERR_FILENO, b.p, b.n);
    (void)w;
}

void ms_log(ms_log_level level, const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    ms_logv(level, msg, ap);
    va_end(ap);
}
