/*
 * log.h — structured logs: one JSON object per line on stderr
 * (`ts`, `level`, `service`, `msg`, then fields). Thread-safe: each line is built in a local
 * buffer and written with one write(2). Never pass secrets or passwords as fields.
 */
#ifndef MS_LOG_H
#define MS_LOG_H

#include <stdarg.h>

typedef enum { MS_LOG_DEBUG, MS_LOG_INFO, MS_LOG_WARN, MS_LOG_ERROR } ms_log_level;

/* Sets the `service` field and the lowest level written. Call once at start, before threads. */
void ms_log_init(const char *service, ms_log_level min_level);
/* Parses "debug|info|warn|error"; returns 0 or MS_EINVAL. */
int ms_log_level_parse(const char *s, ms_log_level *out);
int ms_log_enabled(ms_log_level level);

/*
 * Writes one line. `fields` are key/value pairs of strings ending with NULL:
 *   ms_log(MS_LOG_INFO, "listening", "addr", "127.0.0.1:8081", NULL);
 * A key starting with '#' writes its value unquoted (a number): "#port", "8081".
 */
void ms_log(ms_log_level level, const char *msg, ...) __attribute__((sentinel));
void ms_logv(ms_log_level level, const char *msg, va_list fields);

#endif
