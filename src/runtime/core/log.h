/*
 * log.h — structured logs: one JSON object per line on stderr
 * (`ts`, `level`, `service`, `msg`, then `trace_id` and `span_id` when the thread is inside a
 * traced request, then fields). Thread-safe: each line is built in a local buffer and written
 * with one write(2); the minimum level is an atomic that may change at any time. Never pass
 * secrets or passwords as fields.
 */
#ifndef MS_LOG_H
#define MS_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { MS_LOG_DEBUG, MS_LOG_INFO, MS_LOG_WARN, MS_LOG_ERROR } ms_log_level;

/* Sets the `service` field and the lowest level written. Call once at start, before threads. */
void ms_log_init(const char *service, ms_log_level min_level);
/* Parses "debug|info|warn|error"; returns 0 or MS_EINVAL. */
int ms_log_level_parse(const char *s, ms_log_level *out);
/* The name of a level ("debug"...). */
const char *ms_log_level_name(ms_log_level level);
int ms_log_enabled(ms_log_level level);
/* The lowest level written, changeable while running (any thread; takes effect at once). */
void ms_log_set_level(ms_log_level level);
ms_log_level ms_log_get_level(void);
/* The lowest level the calling thread writes, on top of the process's (default debug: no
 * further filter). For a thread whose warnings are told elsewhere, as the log exporter's. */
void ms_log_set_thread_level(ms_log_level level);

/*
 * Where lines find the calling thread's trace context: `fn` fills both ids (lower-case hex,
 * NUL-terminated) and returns true inside a traced request, false elsewhere. Set once at start
 * by the tracing layer (core cannot see it), before threads; NULL: no ids.
 */
typedef bool (*ms_log_context_fn)(char trace_id[33], char span_id[17]);
void ms_log_set_context_fn(ms_log_context_fn fn);

/*
 * One written line as a sink sees it. Everything is borrowed for the call only. `fields` holds
 * the nfields key/value pairs the line carries (fields[2i], fields[2i+1]; a value may be NULL),
 * keys as the caller passed them: '#' first for a value written unquoted. Fields left out of a
 * full line are left out here too. trace_id and span_id are NULL outside a traced request.
 */
typedef struct ms_log_record {
    ms_log_level level;
    uint64_t time_unix_ns;
    const char *msg;
    const char *const *fields;
    size_t nfields;
    const char *trace_id, *span_id;
    const char *line; /* the JSON line as written, ending in "\n" */
    size_t line_len;
} ms_log_record;

/*
 * Where every written line goes besides stderr (an exporter): `fn` runs on the writing thread
 * after the write (or the build, for ms_log_format_fields), so it must not block, and a line it
 * writes itself reaches it again (guard against feeding yourself). Set once at start by a higher
 * layer (core cannot see it), before threads; NULL: none.
 */
typedef void (*ms_log_sink_fn)(const ms_log_record *r);
void ms_log_set_sink_fn(ms_log_sink_fn fn);

/*
 * Writes one line. `fields` are key/value pairs of strings ending with NULL:
 *   ms_log(MS_LOG_INFO, "listening", "addr", "127.0.0.1:8081", NULL);
 * A key starting with '#' writes its value unquoted (a number): "#port", "8081".
 */
void ms_log(ms_log_level level, const char *msg, ...) __attribute__((sentinel));
void ms_logv(ms_log_level level, const char *msg, va_list fields);
/* The same with `n` key/value pairs in an array (fields[2i], fields[2i+1]): for lines whose
 * fields vary. A line is at most 4 KiB: a long value is cut (at a character) and
 * the fields that no longer fit are left out. */
void ms_log_fields(ms_log_level level, const char *msg, const char *const *fields, size_t n);

enum { MS_LOG_LINE_MAX = 4096 };
/* Builds the line ms_log_fields would write (level not checked), without the thread's trace
 * ids (pass them as fields), into out[MS_LOG_LINE_MAX]: its length, the newline included. The
 * sink sees it now, as if written. For a writer that gathers its lines into fewer write(2)s
 * (the gateway's access log). */
size_t ms_log_format_fields(char *out, ms_log_level level, const char *msg,
                            const char *const *fields, size_t n);

#endif
