/*
 * arena.h — a per-request bump allocator: everything a request allocates is freed in one go
 * when its response is done, so handlers rarely call free. Single-threaded.
 */
#ifndef MS_ARENA_H
#define MS_ARENA_H

#include <stddef.h>

typedef struct ms_arena_chunk ms_arena_chunk;
typedef struct ms_arena {
    ms_arena_chunk *head; /* newest chunk first */
    char *pos, *end;
} ms_arena;

void ms_arena_init(ms_arena *a);
/* Frees every chunk but the first, which is kept for the next request. */
void ms_arena_reset(ms_arena *a);
void ms_arena_release(ms_arena *a);
/* 16-byte aligned, never NULL (out of memory aborts). */
void *ms_arena_alloc(ms_arena *a, size_t n);
char *ms_arena_strndup(ms_arena *a, const char *s, size_t n);
char *ms_arena_printf(ms_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
