/* Growable buffers: doubling growth, abort on out-of-memory (see error.h). */
#include <stdio.h>
#include <stdlib.h>

#include "runtime/core/buf.h"
#include "runtime/core/error.h"
#include "runtime/core/banned.h"

bool ms_str_ieq(ms_str a, const char *lit)
{
    size_t n = strlen(lit);
    if (a.n != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a.p[i], y = (unsigned char)lit[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y + 32);
        if (x != y)
            return false;
    }
    return true;
}

void ms_buf_init(ms_buf *b, size_t cap)
{
    b->p = cap ? ms_xmalloc(cap) : NULL;
    b->n = 0;
    b->cap = cap;
}

void ms_buf_release(ms_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

char *ms_buf_reserve(ms_buf *b, size_t extra)
{
    if (b->cap - b->n < extra) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < extra)
            cap *= 2;
        b->p = ms_xrealloc(b->p, cap);
        b->cap = cap;
    }
    return b->p + b->n;
}

void ms_buf_add(ms_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(ms_buf_reserve(b, n), p, n);
    b->n += n;
}

void ms_buf_add_int(ms_buf *b, int64_t v)
{
    char digits[24], *p = digits + sizeof digits;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do
        *--p = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        *--p = '-';
    ms_buf_add(b, p, (size_t)(digits + sizeof digits - p));
}

void ms_buf_printf(ms_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *w = ms_buf_reserve(b, 128);
    int n = vsnprintf(w, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= b->cap - b->n) {
        w = ms_buf_reserve(b, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(w, b->cap - b->n, fmt, ap);
        va_end(ap);
    }
    b->n += (size_t)n;
}

void ms_buf_consume(ms_buf *b, size_t n)
{
    if (n >= b->n) {
        memset(b->p, 0, b->n);
        b->n = 0;
        return;
    }
    memmove(b->p, b->p + n, b->n - n);
    /* clear the vacated tail: request bytes (passwords) must not linger in a reused buffer */
    memset(b->p + b->n - n, 0, n);
    b->n -= n;
}
