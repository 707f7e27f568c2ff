/*
 * hash.h — a fast non-cryptographic hash of bytes, for in-memory tables (statement caches,
 * the event store's maps, the projector's page of views). Equal keys must still be compared:
 * it spreads keys, it does not identify them. Thread-safe (pure).
 */
#ifndef MS_HASH_H
#define MS_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

uint64_t ms_hash(const void *p, size_t n);

static inline uint64_t ms_hash_text(const char *s)
{
    return ms_hash(s, strlen(s));
}

#endif
