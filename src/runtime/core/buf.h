/*
 * buf.h — length-carrying strings and a growable byte buffer.
 * ms_str borrows its bytes (no NUL assumed); ms_buf owns its heap storage (ms_buf_release).
 * Single-threaded: a buffer belongs to whoever made it.
 */
#ifndef MS_BUF_H
#define MS_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct ms_str {
    const char *p;
    size_t n;
} ms_str;

#define MS_STR(lit) ((ms_str){(lit), sizeof(lit) - 1})

static inline bool ms_str_eq(ms_str a, const char *lit)
{
    size_t n = strlen(lit);
    return a.n == n && memcmp(a.p, lit, n) == 0;
}
/* ASCII case-insensitive comparison, for header names and tokens. */
bool ms_str_ieq(ms_str a, const char *lit);

typedef struct ms_buf {
    char *p;
    size_t n, cap;
} ms_buf;

void ms_buf_init(ms_buf *b, size_t cap);
void ms_buf_release(ms_buf *b);
/* Makes room for `extra` more bytes; returns the write position. */
char *ms_buf_reserve(ms_buf *b, size_t extra);
void ms_buf_add(ms_buf *b, const void *p, size_t n);
static inline void ms_buf_adds(ms_buf *b, const char *s)
{
    ms_buf_add(b, s, strlen(s));
}
/* Appends v in decimal: for hot paths, where a printf call costs more than what it writes. */
void ms_buf_add_int(ms_buf *b, int64_t v);
void ms_buf_printf(ms_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (what a parser consumed). */
void ms_buf_consume(ms_buf *b, size_t n);

#endif
