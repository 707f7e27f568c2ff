/* See hash.h. Eight bytes a step: byte by byte (FNV) the statement caches' hashing of a
 * query's text at every run was 4 % of the event-store writer. */
#include <string.h>

#include "runtime/core/hash.h"
#include "runtime/core/banned.h"

uint64_t ms_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, s + i, n - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 29);
}
