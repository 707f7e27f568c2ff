/*
 * arena.h — a per-request bump allocator: everything a request allocates is freed in one go
 * when its response is done, so handlers rarely call free. What lives outside the arena (a
 * JSON tree, a heap string, a database result) can be tied to it with a cleanup that runs
 * at the same moment, so a handler never releases it by hand on each of its paths.
 * Single-threaded: the arena, its allocations and its cleanups belong to one thread.
 */
#ifndef MS_ARENA_H
#define MS_ARENA_H

#include <stddef.h>

typedef struct ms_arena_chunk ms_arena_chunk;
typedef struct ms_arena_cleanup ms_arena_cleanup;
typedef struct ms_arena {
    ms_arena_chunk *head; /* newest chunk first */
    char *pos, *end;
    ms_arena_cleanup *cleanups; /* newest first; the records live in the chunks */
} ms_arena;

void ms_arena_init(ms_arena *a);
/* Runs the cleanups, then frees every chunk but the first, kept for the next request. */
void ms_arena_reset(ms_arena *a);
/* Runs the cleanups, then frees every chunk. */
void ms_arena_release(ms_arena *a);
/*
 * Calls fn(arg) when the arena is next reset or released, before its memory goes (so `arg`
 * may point into the arena). Cleanups run newest first, like unwinding a stack: something
 * registered later may still use what was registered before it. A cleanup may register
 * another; it runs in the same reset.
 */
void ms_arena_on_reset(ms_arena *a, void (*fn)(void *arg), void *arg);
/* The common cleanup: free(p) at reset; returns p. NULL is fine. */
void *ms_arena_own(ms_arena *a, void *p);
/* 16-byte aligned, never NULL (out of memory aborts). */
void *ms_arena_alloc(ms_arena *a, size_t n);
char *ms_arena_strndup(ms_arena *a, const char *s, size_t n);
char *ms_arena_printf(ms_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
