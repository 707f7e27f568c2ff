/*
 * cache.c — the cache stage: GET /api/v1/products/{id} and GET /api/v1/users/{id} (without a
 * query) answered from the cache when it holds the service's 200, else forwarded; every answer
 * of those routes says X-Cache: hit, miss or bypass.
 *
 * A cached user is served only to an admin or to that user (auth has run: c->user_id,
 * c->is_admin); anyone else is forwarded and the service answers 403. A hit honours
 * If-None-Match (304). An answer without an ETag gets a weak one from its body, the same on a
 * miss and a hit, so clients can revalidate either way.
 *
 * Lookups go to the LRU (cache_lru.c), then to Redis when REDIS_URL is set (cache_redis.c,
 * one connection per loop, made at the loop's first request, closed when the loop drains); a Redis
 * hit fills the LRU, a service's 200 fills both. A 2xx write to /api/v1/products/{id}... or
 * /api/v1/users/{id}... drops that resource from both at once; events do the same from the follower
 * (cache_invalidate.c).
 *
 * A caller who wrote to the user or inventory service within the last minute
 * (gateway_session_wrote, consistency.c: in this process or by a signed cookie from any gateway)
 * reads that service's resources from the service itself, neither looking in nor filling
 * either tier (X-Cache: bypass): another gateway's LRU may still hold the old answer until the
 * event reaches it, and the writer must see its write. Everyone else keeps the cache.
 *
 * Settings (environment): MICROSHOP_CACHE_TTL_MS (5000), MICROSHOP_CACHE_ENTRIES (10000; 0: no
 * LRU), MICROSHOP_CACHE_MAX_BYTES (64 MiB), REDIS_URL (redis://host:port[/db]; unset: no Redis
 * tier), MICROSHOP_REDIS_TTL_S (3600), MICROSHOP_REDIS_TIMEOUT_MS (50: a lookup's budget).
 *
 * Threading: a call runs on its loop; the per-loop state is its loop's; counters are atomic.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/core/hash.h"
#include "runtime/core/log.h"
#include "runtime/http/server.h"
#include "runtime/obs/metrics.h"
#include "services/gateway/cache_internal.h"
#include "services/gateway/gateway_internal.h"
#include "runtime/core/banned.h"

enum { MAX_LOOPS = 256 };

/* A read on its way to Redis or the service, linked in its loop's list until its request's
 * arena goes: observe finds what the call began with. */
typedef struct flight {
    struct flight *prev, *next;
    struct cache_loop *owner;
    gateway_call *c;
    const char *key;
    uint64_t epoch; /* cache_epoch() when the read began */
} flight;

typedef struct cache_loop {
    ms_loop *l;
    cache_redis *redis; /* NULL: no Redis tier, or the loop drains */
    uv_check_t drain_watch;
    bool closed;
    flight *flights;
} cache_loop;

static struct {
    bool redis_on;
    cache_redis_config redis;
    cache_loop *loops[MAX_LOOPS]; /* each its loop's; freed at stop */
    atomic_uint_fast64_t epoch;
    atomic_uint_fast64_t requests[2][2]; /* [tier][hit] */
    atomic_uint_fast64_t invalidations[3];
    atomic_uint_fast64_t bypass_own_write;
    atomic_int redis_up;
} cache;

uint64_t cache_epoch(void)
{
    return atomic_load(&cache.epoch);
}

void cache_count_request(cache_tier tier, bool hit)
{
    atomic_fetch_add(&cache.requests[tier][hit ? 1 : 0], 1);
}

void cache_redis_up_add(int delta)
{
    atomic_fetch_add(&cache.redis_up, delta);
}

bool cache_key(const char *resource, const char *id, char out[CACHE_KEY_MAX])
{
    size_t n = strlen(id);
    if (n == 0 || n > 64)
        return false;
    char lower[65];
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '/')
            return false;
        lower[i] = (char)tolower(ch);
    }
    lower[n] = '\0';
    int w =
        snprintf(out, CACHE_KEY_MAX, "/api/v1/%s/{id} /api/v1/%s/%s", resource, resource, lower);
    return w > 0 && w < CACHE_KEY_MAX;
}

void cache_invalidate(cache_redis *r, const char *resource, const char *id, cache_source source)
{
    char key[CACHE_KEY_MAX];
    if (!cache_key(resource, id, key))
        return;
    atomic_fetch_add(&cache.epoch, 1);
    cache_lru_drop(key);
    cache_redis_del(r, key);
    atomic_fetch_add(&cache.invalidations[source], 1);
}

void cache_flush(cache_redis *r)
{
    atomic_fetch_add(&cache.epoch, 1);
    cache_lru_clear();
    cache_redis_bump_generation(r);
    atomic_fetch_add(&cache.invalidations[CACHE_BY_FLUSH], 1);
}

/* ---- per-loop state ---- */

static void on_drain_check(uv_check_t *h)
{
    cache_loop *cl = h->data;
    if (!cl->l->draining)
        return;
    /* the Redis connection would keep a drained loop alive: it goes first */
    cache_redis_free(cl->redis);
    cl->redis = NULL;
    cl->closed = true;
    uv_close((uv_handle_t *)&cl->drain_watch, NULL);
}

static cache_loop *loop_state(ms_loop *l)
{
    if (l->index < 0 || l->index >= MAX_LOOPS)
        return NULL;
    cache_loop *cl = cache.loops[l->index];
    if (cl || l->draining)
        return cl;
    cl = calloc(1, sizeof *cl);
    if (!cl)
        return NULL;
    cl->l = l;
    if (cache.redis_on) {
        cl->redis = cache_redis_new(&l->uv, &cache.redis, NULL, NULL);
        uv_check_init(&l->uv, &cl->drain_watch);
        cl->drain_watch.data = cl;
        uv_check_start(&cl->drain_watch, on_drain_check);
        uv_unref((uv_handle_t *)&cl->drain_watch); /* only watches: never keeps the loop */
    }
    cache.loops[l->index] = cl;
    return cl;
}

static void flight_end(void *arg)
{
    flight *f = arg;
    if (f->prev)
        f->prev->next = f->next;
    else
        f->owner->flights = f->next;
    if (f->next)
        f->next->prev = f->prev;
}

static flight *flight_begin(cache_loop *cl, gateway_call *c, const char *key)
{
    flight *f = ms_arena_alloc(&c->req->arena, sizeof *f);
    f->owner = cl;
    f->c = c;
    f->key = key;
    f->epoch = cache_epoch();
    f->prev = NULL;
    f->next = cl->flights;
    if (f->next)
        f->next->prev = f;
    cl->flights = f;
    ms_arena_on_reset(&c->req->arena, flight_end, f);
    return f;
}

static flight *flight_of(gateway_call *c)
{
    int i = c->req->loop->index;
    cache_loop *cl = i >= 0 && i < MAX_LOOPS ? cache.loops[i] : NULL;
    for (flight *f = cl ? cl->flights : NULL; f; f = f->next)
        if (f->c == c)
            return f;
    return NULL;
}

/* ---- the stage ---- */

/* "products" or "users" for a cacheable read, else NULL. */
static const char *cacheable(const gateway_call *c)
{
    const ms_http_request *req = c->req;
    if (req->method != HTTP_GET || req->query[0])
        return NULL;
    const char *t = c->route->route->template;
    if (strcmp(t, "/api/v1/products/{id}") == 0)
        return "products";
    if (strcmp(t, "/api/v1/users/{id}") == 0)
        return "users";
    return NULL;
}

static void answer_hit(gateway_call *c, const cache_entry *e)
{
    ms_http_request *req = c->req;
    c->cache = "HIT";
    ms_http_set_header(req, "X-Cache", "hit");
    if (e->etag) {
        ms_http_set_header(req, "ETag", e->etag);
        if (ms_http_none_match(ms_http_header_get(req, "If-None-Match"), e->etag)) {
            ms_http_respond(req, 304, NULL, NULL, 0);
            return;
        }
    }
    ms_http_respond(req, e->status, e->content_type, e->body, e->body_len);
}

unsigned gateway_cache_backend_bit(int backend)
{
    const char *name = gateway_backend_name(backend);
    if (strcmp(name, "user") == 0)
        return 1;
    if (strcmp(name, "inventory") == 0)
        return 2;
    return 0;
}

static void forward_miss(gateway_call *c)
{
    c->cache = "MISS";
    ms_http_set_header(c->req, "X-Cache", "miss");
    gateway_forward(c);
}

/* Redis holds "<status>\n<content type>\n<etag>\n<body>". */
static bool decode(ms_arena *a, const char *v, size_t len, cache_entry *e)
{
    const char *end = v + len, *p = v;
    const char *fields[3];
    size_t lens[3];
    for (int i = 0; i < 3; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return false;
        fields[i] = p;
        lens[i] = (size_t)(nl - p);
        p = nl + 1;
    }
    char status[8];
    if (lens[0] == 0 || lens[0] >= sizeof status)
        return false;
    memcpy(status, fields[0], lens[0]);
    status[lens[0]] = '\0';
    e->status = atoi(status);
    if (e->status < 200 || e->status > 299)
        return false;
    e->content_type = lens[1] ? ms_arena_strndup(a, fields[1], lens[1]) : NULL;
    e->etag = lens[2] ? ms_arena_strndup(a, fields[2], lens[2]) : NULL;
    e->body = ms_arena_strndup(a, p, (size_t)(end - p));
    e->body_len = (size_t)(end - p);
    return true;
}

static void on_redis(bool found, const char *value, size_t len, void *arg)
{
    flight *f = arg;
    gateway_call *c = f->c;
    cache_entry e;
    found = found && decode(&c->req->arena, value, len, &e);
    cache_count_request(CACHE_TIER_REDIS, found);
    if (!found) {
        forward_miss(c);
        return;
    }
    if (cache_epoch() == f->epoch)
        cache_lru_put(f->key, &e);
    answer_hit(c, &e);
}

void gateway_cache_get(gateway_call *c)
{
    ms_http_request *req = c->req;
    /* the loop's Redis connection is made at its first request of any kind, so that it is up
     * by the time a write's answer has a delete to send */
    cache_loop *cl = loop_state(req->loop);
    const char *resource = cacheable(c);
    const char *id = resource ? ms_http_param(req, "id") : NULL;
    char key[CACHE_KEY_MAX];
    if (!id || !cache_key(resource, id, key)) {
        gateway_forward(c);
        return;
    }
    /* a user is the caller's own or an admin's to read: others hear it from the service */
    if (strcmp(resource, "users") == 0 &&
        !(c->is_admin || (c->user_id && strcasecmp(c->user_id, id) == 0))) {
        forward_miss(c);
        return;
    }
    /* no flight: the service's answer does not fill the cache either */
    if (gateway_session_wrote(c)) {
        atomic_fetch_add(&cache.bypass_own_write, 1);
        c->cache = "BYPASS";
        ms_http_set_header(req, "X-Cache", "bypass");
        gateway_forward(c);
        return;
    }
    cache_entry e;
    if (cache_lru_enabled()) {
        bool hit = cache_lru_get(key, &req->arena, &e);
        cache_count_request(CACHE_TIER_LRU, hit);
        if (hit) {
            answer_hit(c, &e);
            return;
        }
    }
    if (!cl) {
        forward_miss(c);
        return;
    }
    flight *f = flight_begin(cl, c, ms_arena_strndup(&req->arena, key, strlen(key)));
    if (cl->redis && cache_redis_get(cl->redis, f->key, on_redis, f) == 0)
        return;
    if (cl->redis)
        cache_count_request(CACHE_TIER_REDIS, false);
    forward_miss(c);
}

/* The resource a write names: /api/v1/products/{id}[/...] or /api/v1/users/{id}[/...]. */
static const char *written_resource(const char *path, char *id, size_t idn)
{
    static const char *const resources[] = {"products", "users"};
    for (size_t i = 0; i < 2; i++) {
        char prefix[32];
        int w = snprintf(prefix, sizeof prefix, "/api/v1/%s/", resources[i]);
        if (strncmp(path, prefix, (size_t)w) != 0)
            continue;
        const char *s = path + w;
        size_t n = strcspn(s, "/");
        if (n == 0 || n >= idn)
            return NULL;
        memcpy(id, s, n);
        id[n] = '\0';
        return resources[i];
    }
    return NULL;
}

static void fill(gateway_call *c, const ms_http_client_resp *resp)
{
    if (resp->body_len > CACHE_MAX_BODY)
        return;
    ms_http_request *req = c->req;
    cache_entry e = {
        .status = resp->status,
        .content_type = ms_http_client_resp_header(resp, "Content-Type"),
        .etag = ms_http_client_resp_header(resp, "ETag"),
        .body = resp->body,
        .body_len = resp->body_len,
    };
    if (!e.etag) {
        e.etag = ms_arena_printf(&req->arena, "W/\"%016" PRIx64 "\"",
                                 ms_hash(resp->body, resp->body_len));
        ms_http_set_header(req, "ETag", e.etag);
    }
    flight *f = flight_of(c); /* none: a miss without a loop state, or a bypass */
    if (!f)
        return;
    if (cache_epoch() != f->epoch)
        return; /* invalidated while under way: this answer may be older than that */
    cache_lru_put(f->key, &e);
    cache_redis *r = f->owner->redis;
    if (!cache_redis_connected(r))
        return;
    ms_buf v;
    ms_buf_init(&v, resp->body_len + 160);
    ms_buf_printf(&v, "%d\n%s\n%s\n", e.status, e.content_type ? e.content_type : "", e.etag);
    ms_buf_add(&v, e.body, e.body_len);
    cache_redis_set(r, f->key, v.p, v.n);
    ms_buf_release(&v);
}

void gateway_cache_observe(gateway_call *c, const ms_http_client_resp *resp)
{
    ms_http_request *req = c->req;
    if (req->method == HTTP_GET || req->method == HTTP_HEAD) {
        if (resp->status == 200 && cacheable(c))
            fill(c, resp);
        return;
    }
    if (resp->status < 200 || resp->status > 299)
        return;
    char id[80];
    const char *resource = written_resource(req->path, id, sizeof id);
    if (!resource)
        return;
    cache_loop *cl = loop_state(req->loop);
    cache_invalidate(cl ? cl->redis : NULL, resource, id, CACHE_BY_WRITE);
}

/* ---- metrics ---- */

static void render(ms_buf *out, void *arg)
{
    (void)arg;
    static const char *const tiers[] = {"lru", "redis"};
    static const char *const sources[] = {"write", "event", "flush"};
    ms_metrics_family(out, "cache_requests_total", "counter",
                      "Gateway cache lookups by tier and result.");
    for (int t = 0; t < 2; t++)
        for (int h = 1; h >= 0; h--)
            ms_metrics_sample(out, "cache_requests_total",
                              (double)atomic_load(&cache.requests[t][h]), "tier", tiers[t],
                              "result", h ? "hit" : "miss", NULL);
    ms_metrics_family(out, "cache_invalidations_total", "counter",
                      "Gateway cache entries dropped, by what dropped them (a flush: all).");
    for (int s = 0; s < 3; s++)
        ms_metrics_sample(out, "cache_invalidations_total",
                          (double)atomic_load(&cache.invalidations[s]), "source", sources[s], NULL);
    ms_metrics_family(out, "cache_bypass_total", "counter",
                      "Gateway cacheable reads sent past both tiers, by why (own_write: the "
                      "caller wrote to that service within the last minute).");
    ms_metrics_sample(out, "cache_bypass_total", (double)atomic_load(&cache.bypass_own_write),
                      "reason", "own_write", NULL);
    ms_metrics_family(out, "cache_redis_up", "gauge",
                      "1 when the gateway has a live Redis connection for its cache.");
    ms_metrics_sample(out, "cache_redis_up", atomic_load(&cache.redis_up) > 0 ? 1.0 : 0.0, NULL);
}

/* ---- start and stop ---- */

/* An unsigned setting from the environment: 0 (its default when unset), or MS_EINVAL. */
static int env_uint(const char *name, unsigned long dflt, unsigned long max, unsigned long *out)
{
    const char *v = getenv(name);
    *out = dflt;
    if (!v || !*v)
        return 0;
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (*end || v[0] == '-' || n > max) {
        ms_log(MS_LOG_ERROR, "gateway cache: a setting is malformed", "variable", name, "value", v,
               NULL);
        return MS_EINVAL;
    }
    *out = n;
    return 0;
}

int gateway_cache_start(void)
{
    unsigned long ttl_ms, entries, max_bytes, redis_ttl, budget;
    int rc = env_uint("MICROSHOP_CACHE_TTL_MS", 5000, 86400000UL, &ttl_ms);
    if (rc == 0)
        rc = env_uint("MICROSHOP_CACHE_ENTRIES", 10000, 10000000UL, &entries);
    if (rc == 0)
        rc = env_uint("MICROSHOP_CACHE_MAX_BYTES", 64UL << 20, 1UL << 40, &max_bytes);
    if (rc == 0)
        rc = env_uint("MICROSHOP_REDIS_TTL_S", 3600, 30UL * 86400, &redis_ttl);
    if (rc == 0)
        rc = env_uint("MICROSHOP_REDIS_TIMEOUT_MS", 50, 10000, &budget);
    if (rc < 0)
        return rc;
    const char *url = getenv("REDIS_URL");
    cache.redis_on = url && *url;
    if (cache.redis_on && cache_redis_parse_url(url, &cache.redis) < 0) {
        ms_log(MS_LOG_ERROR, "gateway cache: REDIS_URL is not redis://host:port[/db]", NULL);
        return MS_EINVAL;
    }
    cache.redis.ttl_s = redis_ttl ? (uint32_t)redis_ttl : 3600;
    cache.redis.budget_ms = budget ? (uint32_t)budget : 50;
    if ((rc = cache_lru_init(entries, max_bytes, (uint32_t)ttl_ms)) < 0)
        return rc;
    ms_metrics_register(render, NULL);
    if ((rc = cache_follower_start(cache.redis_on ? &cache.redis : NULL)) < 0) {
        cache_lru_free();
        return rc;
    }
    char ttl_text[24], entries_text[24];
    snprintf(ttl_text, sizeof ttl_text, "%lu", ttl_ms);
    snprintf(entries_text, sizeof entries_text, "%lu", entries);
    ms_log(MS_LOG_INFO, "gateway cache", "#lru_entries", entries_text, "#lru_ttl_ms", ttl_text,
           "redis", cache.redis_on ? cache.redis.host : "off", NULL);
    return 0;
}

void gateway_cache_stop(void)
{
    cache_follower_stop();
    /* the loops have ended: their arenas, flights and Redis connections are gone */
    for (int i = 0; i < MAX_LOOPS; i++) {
        free(cache.loops[i]);
        cache.loops[i] = NULL;
    }
    cache_lru_free();
}
