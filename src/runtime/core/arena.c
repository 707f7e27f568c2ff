/* Per-request arena: chunks of 4 KiB (or larger for big allocations), freed on reset after
 * the cleanups registered on it have run. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/arena.h"
#include "runtime/core/error.h"
#include "runtime/core/banned.h"

struct ms_arena_chunk {
    ms_arena_chunk *next;
    size_t size;
    _Alignas(16) char data[];
};

struct ms_arena_cleanup {
    ms_arena_cleanup *next;
    void (*fn)(void *arg);
    void *arg;
};

enum { CHUNK = 4096 };

void ms_arena_init(ms_arena *a)
{
    a->head = NULL;
    a->pos = a->end = NULL;
    a->cleanups = NULL;
}

void ms_arena_on_reset(ms_arena *a, void (*fn)(void *arg), void *arg)
{
    ms_arena_cleanup *c = ms_arena_alloc(a, sizeof *c);
    c->fn = fn;
    c->arg = arg;
    c->next = a->cleanups;
    a->cleanups = c;
}

void *ms_arena_own(ms_arena *a, void *p)
{
    if (p)
        ms_arena_on_reset(a, free, p);
    return p;
}

/* Unlinks each record before calling it: a cleanup that registers another sees a consistent
 * list, and the new one runs in this same loop, before any memory is freed. */
static void run_cleanups(ms_arena *a)
{
    while (a->cleanups) {
        ms_arena_cleanup *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->arg);
    }
}

static void add_chunk(ms_arena *a, size_t need)
{
    size_t size = need > CHUNK ? need : CHUNK;
    ms_arena_chunk *c = ms_xmalloc(sizeof *c + size);
    c->size = size;
    c->next = a->head;
    a->head = c;
    a->pos = c->data;
    a->end = c->data + size;
}

void ms_arena_reset(ms_arena *a)
{
    run_cleanups(a);
    if (!a->head)
        return;
    ms_arena_chunk *c = a->head;
    while (c->next) {
        ms_arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    /* keep the oldest chunk: requests usually fit in one, so steady state allocates nothing */
    a->head = c;
    a->pos = c->data;
    a->end = c->data + c->size;
}

void ms_arena_release(ms_arena *a)
{
    run_cleanups(a);
    for (ms_arena_chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    ms_arena_init(a);
}

void *ms_arena_alloc(ms_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->pos || (size_t)(a->end - a->pos) < n)
        add_chunk(a, n);
    void *p = a->pos;
    a->pos += n;
    return p;
}

char *ms_arena_strndup(ms_arena *a, const char *s, size_t n)
{
    char *p = ms_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *ms_arena_printf(ms_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return ms_arena_strndup(a, "", 0);
    char *p = ms_arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}
