/*
 * json_arena.h — a JSON tree owned by an arena: its reference is dropped when the arena is
 * reset or released (a request's arena: when its answer is done), so a handler that parks a
 * tree in its request never decrefs it on each of its paths.
 * Same thread as the arena; the arena takes the caller's reference.
 */
#ifndef MS_JSON_ARENA_H
#define MS_JSON_ARENA_H

#include <jansson.h>

#include "runtime/core/arena.h"

/* Consumes one reference to `v` (NULL is fine), dropped at the arena's reset; returns `v`,
 * borrowed from then on. */
json_t *ms_json_own(ms_arena *a, json_t *v);

#endif
