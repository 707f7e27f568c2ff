/*
 * cache_lru.c — tier 1 of the gateway's read cache: one LRU for the process, shared by the
 * loops and the event follower behind one mutex (a lookup is a hash and a copy: the lock is
 * held for microseconds). Bounded three ways: entries, bytes (keys, strings and bodies), and
 * each body (CACHE_MAX_BODY). An entry older than the TTL is a miss and is dropped.
 *
 * Threading: every function but init and free (at start and stop) from any thread.
 * Ownership: the table owns its copies; a get copies into the caller's arena.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/hash.h"
#include "services/gateway/cache_internal.h"
#include "runtime/core/banned.h"

typedef struct lru_node {
    struct lru_node *hnext;       /* the bucket's chain */
    struct lru_node *prev, *next; /* recency: head is the newest */
    uint64_t hash;
    uint64_t expires_ms;
    size_t size; /* bytes charged to the table */
    int status;
    char *key, *content_type, *etag, *body; /* one allocation after the node */
    size_t body_len;
} lru_node;

static struct {
    pthread_mutex_t lock;
    lru_node **buckets;
    size_t nbuckets; /* a power of two */
    lru_node *head, *tail;
    size_t n, bytes;
    size_t max_entries, max_bytes;
    uint32_t ttl_ms;
} lru = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

int cache_lru_init(size_t max_entries, size_t max_bytes, uint32_t ttl_ms)
{
    lru.max_entries = max_entries;
    lru.max_bytes = max_bytes;
    lru.ttl_ms = ttl_ms;
    if (max_entries == 0 || max_bytes == 0 || ttl_ms == 0)
        return 0;
    size_t nb = 16;
    while (nb < max_entries * 2 && nb < ((size_t)1 << 24))
        nb <<= 1;
    lru.buckets = calloc(nb, sizeof *lru.buckets);
    if (!lru.buckets)
        return MS_ENOMEM;
    lru.nbuckets = nb;
    return 0;
}

bool cache_lru_enabled(void)
{
    return lru.buckets != NULL;
}

static lru_node **slot_of(const char *key, uint64_t hash)
{
    lru_node **p = &lru.buckets[hash & (lru.nbuckets - 1)];
    while (*p && !((*p)->hash == hash && strcmp((*p)->key, key) == 0))
        p = &(*p)->hnext;
    return p;
}

static void unlink_recency(lru_node *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        lru.head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        lru.tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(lru_node *e)
{
    e->next = lru.head;
    e->prev = NULL;
    if (lru.head)
        lru.head->prev = e;
    lru.head = e;
    if (!lru.tail)
        lru.tail = e;
}

/* Removes the node *p points at (its bucket's link). Lock held. */
static void remove_at(lru_node **p)
{
    lru_node *e = *p;
    *p = e->hnext;
    unlink_recency(e);
    lru.n--;
    lru.bytes -= e->size;
    free(e);
}

static void remove_node(lru_node *e)
{
    lru_node **p = &lru.buckets[e->hash & (lru.nbuckets - 1)];
    while (*p && *p != e)
        p = &(*p)->hnext;
    if (*p)
        remove_at(p);
}

bool cache_lru_get(const char *key, ms_arena *a, cache_entry *out)
{
    if (!lru.buckets)
        return false;
    uint64_t hash = ms_hash_text(key);
    bool hit = false;
    pthread_mutex_lock(&lru.lock);
    lru_node **p = slot_of(key, hash);
    lru_node *e = *p;
    if (e && e->expires_ms <= now_ms()) {
        remove_at(p);
        e = NULL;
    }
    if (e) {
        unlink_recency(e);
        push_front(e);
        out->status = e->status;
        out->content_type =
            e->content_type ? ms_arena_strndup(a, e->content_type, strlen(e->content_type)) : NULL;
        out->etag = e->etag ? ms_arena_strndup(a, e->etag, strlen(e->etag)) : NULL;
        out->body = ms_arena_strndup(a, e->body, e->body_len);
        out->body_len = e->body_len;
        hit = true;
    }
    pthread_mutex_unlock(&lru.lock);
    return hit;
}

static char *put_string(char **at, const char *s, size_t n)
{
    char *p = *at;
    memcpy(p, s, n);
    p[n] = '\0';
    *at += n + 1;
    return p;
}

void cache_lru_put(const char *key, const cache_entry *e)
{
    if (!lru.buckets || e->body_len > CACHE_MAX_BODY)
        return;
    size_t klen = strlen(key), clen = e->content_type ? strlen(e->content_type) : 0,
           tlen = e->etag ? strlen(e->etag) : 0;
    size_t size = sizeof(lru_node) + klen + clen + tlen + e->body_len + 4;
    if (size > lru.max_bytes)
        return;
    lru_node *n = malloc(size);
    if (!n)
        return; /* a cache may forget */
    memset(n, 0, sizeof *n);
    char *at = (char *)(n + 1);
    n->key = put_string(&at, key, klen);
    n->content_type = e->content_type ? put_string(&at, e->content_type, clen) : NULL;
    n->etag = e->etag ? put_string(&at, e->etag, tlen) : NULL;
    n->body = put_string(&at, e->body, e->body_len);
    n->body_len = e->body_len;
    n->status = e->status;
    n->size = size;
    n->hash = ms_hash(key, klen);
    n->expires_ms = now_ms() + lru.ttl_ms;

    pthread_mutex_lock(&lru.lock);
    lru_node **p = slot_of(key, n->hash);
    if (*p)
        remove_at(p);
    while (lru.tail && (lru.n + 1 > lru.max_entries || lru.bytes + size > lru.max_bytes))
        remove_node(lru.tail);
    p = slot_of(key, n->hash);
    n->hnext = NULL;
    *p = n;
    push_front(n);
    lru.n++;
    lru.bytes += size;
    pthread_mutex_unlock(&lru.lock);
}

void cache_lru_drop(const char *key)
{
    if (!lru.buckets)
        return;
    uint64_t hash = ms_hash_text(key);
    pthread_mutex_lock(&lru.lock);
    lru_node **p = slot_of(key, hash);
    if (*p)
        remove_at(p);
    pthread_mutex_unlock(&lru.lock);
}

void cache_lru_clear(void)
{
    if (!lru.buckets)
        return;
    pthread_mutex_lock(&lru.lock);
    while (lru.tail)
        remove_node(lru.tail);
    pthread_mutex_unlock(&lru.lock);
}

void cache_lru_free(void)
{
    cache_lru_clear();
    free(lru.buckets);
    lru.buckets = NULL;
    lru.nbuckets = 0;
}
