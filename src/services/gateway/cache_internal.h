/*
 * cache_internal.h — the gateway's read cache, shared by its files only.
 *
 *   cache.c             the stage: which reads are cacheable, the keys, answering a hit,
 *                       filling from a service's 200, invalidating on writes; settings;
 *                       metrics; each loop's Redis connection (made at the loop's first request)
 *   cache_lru.c         tier 1: one in-process LRU with TTL for the process, behind a mutex
 *   cache_redis.c       tier 2: a Redis connection on a libuv loop (hiredis), reconnecting by
 *                       itself, every key under microshop:v1:<generation>:
 *   cache_invalidate.c  the follower of the user and inventory event feeds, on its own thread
 *
 * A key names one representation: "<route template> <path, lower-cased>"
 * ("/api/v1/products/{id} /api/v1/products/5f0c..."); the generation is Redis's only.
 *
 * Invalidation races: a read forwarded before an invalidation may come back after it with the
 * old representation. Every invalidation moves a process-wide epoch; a read fills the cache
 * only when the epoch has not moved since it began (cache_epoch()).
 */
#ifndef MS_GATEWAY_CACHE_INTERNAL_H
#define MS_GATEWAY_CACHE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/core/arena.h"

/* What is kept of an answer. Strings may be NULL but for the body. */
typedef struct cache_entry {
    int status;
    const char *content_type, *etag;
    const char *body;
    size_t body_len;
} cache_entry;

typedef enum { CACHE_TIER_LRU, CACHE_TIER_REDIS } cache_tier;
typedef enum { CACHE_BY_WRITE, CACHE_BY_EVENT, CACHE_BY_FLUSH } cache_source;

enum {
    CACHE_MAX_BODY = 64 * 1024, /* larger answers are not cached */
    CACHE_KEY_MAX = 256,
};

/* ---- cache.c: shared by the tiers and the follower ---- */
/* The process's invalidation epoch (any thread). */
uint64_t cache_epoch(void);
void cache_count_request(cache_tier tier, bool hit);
/* Redis connections up, moved by cache_redis.c (any thread). */
void cache_redis_up_add(int delta);
/* Writes a resource's key ("products"|"users", an id) into out; false when it does not fit. */
bool cache_key(const char *resource, const char *id, char out[CACHE_KEY_MAX]);

typedef struct cache_redis cache_redis;
/* Drops one resource from the LRU and from Redis (through r, which may be NULL), moving the
 * epoch. Any thread; r belongs to the caller's loop. */
void cache_invalidate(cache_redis *r, const char *resource, const char *id, cache_source source);
/* Drops everything: the LRU, and Redis's generation (through r, when up). */
void cache_flush(cache_redis *r);

/* ---- cache_lru.c: thread-safe ---- */
/* max_entries 0 disables the tier (every get misses, puts are ignored). */
int cache_lru_init(size_t max_entries, size_t max_bytes, uint32_t ttl_ms);
void cache_lru_free(void);
bool cache_lru_enabled(void);
/* A fresh entry's copy in `a`, or false. */
bool cache_lru_get(const char *key, ms_arena *a, cache_entry *out);
/* Stores a copy (replacing the key's); too big an entry is not stored. */
void cache_lru_put(const char *key, const cache_entry *e);
void cache_lru_drop(const char *key);
void cache_lru_clear(void);

/* ---- cache_redis.c: one connection on one loop; every call on that loop's thread ---- */
typedef struct cache_redis_config {
    char host[256];
    int port;
    int db;
    uint32_t ttl_s;     /* of what set stores */
    uint32_t budget_ms; /* a get's longest wait, then it misses */
} cache_redis_config;

/* Parses redis://host:port[/db] (port 6379 when absent). 0 or MS_EINVAL. */
int cache_redis_parse_url(const char *url, cache_redis_config *out);

/* Connects (in the background) and keeps reconnecting with backoff (100 ms doubling to 5 s)
 * until freed. `on_up`, when set, runs on the loop each time a connection becomes live (has
 * answered its first PING). */
cache_redis *cache_redis_new(uv_loop_t *loop, const cache_redis_config *cfg,
                             void (*on_up)(cache_redis *r, void *arg), void *arg);
/* Fails pending gets (a miss), closes the connection and its timers; the memory goes with
 * the last close callback, so let the loop run. NULL is fine. */
void cache_redis_free(cache_redis *r);
/* Live: gets are sent (false for NULL). */
bool cache_redis_connected(const cache_redis *r);

/* found: the value (valid during the call), or false for a miss, an error or a timeout. */
typedef void (*cache_redis_get_cb)(bool found, const char *value, size_t len, void *arg);
/* Asks for a key; cb runs once, later (within the budget). MS_ECONN when not connected (then
 * no callback comes). */
int cache_redis_get(cache_redis *r, const char *key, cache_redis_get_cb cb, void *arg);
/* Fire and forget: queued while a connection is being made, dropped when there is none. */
void cache_redis_set(cache_redis *r, const char *key, const char *value, size_t len);
void cache_redis_del(cache_redis *r, const char *key);
/* INCR of the generation: every key before it is unreachable (and expires by its TTL). */
void cache_redis_bump_generation(cache_redis *r);

/* ---- cache_invalidate.c ---- */
/* Starts the follower thread for the configured user and inventory services (none: no
 * thread). `redis` NULL: no Redis tier. */
int cache_follower_start(const cache_redis_config *redis);
void cache_follower_stop(void);

#endif
