/*
 * cache_redis.c — tier 2 of the gateway's read cache: one hiredis asynchronous connection on a
 * libuv loop (each gateway loop has its own, and so has the event follower).
 *
 * Every key is microshop:v1:<generation>:<key>, the generation being the value of
 * microshop:v1:gen (0 when absent), read by Redis itself in the same script as the command:
 * an INCR of it drops the whole cache at once for every gateway sharing the Redis.
 *
 * Redis is an optimisation, never a dependency: a get not answered within its budget misses
 * (the caller asks the service); a connection that fails, or that has not answered anything
 * for STALL_MS while commands wait (a PING goes every HEARTBEAT_MS, so an idle one is watched
 * too), is dropped and made again after a backoff (100 ms doubling to 5 s, full jitter). A
 * connection is up (live) once it has answered its first PING: until then every get misses
 * at once; writes are queued while a connection is being made and skipped while there is
 * none.
 *
 * Threading: a connection belongs to its loop's thread. Ownership: gets and sets copy their
 * arguments (hiredis formats the command at once).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "services/gateway/cache_internal.h"
#include "runtime/core/banned.h"

enum {
    BACKOFF_MIN_MS = 100,
    BACKOFF_MAX_MS = 5000,
    CONNECT_TIMEOUT_MS = 2000,
    STALL_MS = 1000,
    HEARTBEAT_MS = 1000,
    MAX_PENDING = 4096, /* commands awaiting an answer: past it, Redis counts as slow */
};

#define KEY_PREFIX "microshop:v1:"
#define GEN_KEY    KEY_PREFIX "gen"
/* ARGV[1] the prefix, ARGV[2] the key, then the command's own arguments */
#define WITH_GEN "local k = ARGV[1] .. (redis.call('GET', KEYS[1]) or '0') .. ':' .. ARGV[2] "
static const char GET_SCRIPT[] = WITH_GEN "return redis.call('GET', k)";
static const char SET_SCRIPT[] = WITH_GEN "return redis.call('SET', k, ARGV[3], 'EX', ARGV[4])";
static const char DEL_SCRIPT[] = WITH_GEN "return redis.call('DEL', k)";

struct cache_redis {
    uv_loop_t *loop;
    cache_redis_config cfg;
    redisAsyncContext *ac; /* NULL while down */
    bool connected;        /* the connect completed */
    bool live;             /* and Redis has answered since: it counts as up */
    bool closing;
    uv_timer_t timer; /* the reconnect backoff, or the connect's timeout */
    uv_timer_t beat;  /* a PING every HEARTBEAT_MS: a wedged server is noticed while idle */
    int open_handles; /* the memory goes when both timers have closed */
    uint32_t backoff_ms;
    int pending;            /* commands sent, not yet answered */
    uint64_t last_progress; /* uv_now() of the last answer, or of a first command */
    void (*on_up)(cache_redis *r, void *arg);
    void *arg;
};

typedef struct redis_get {
    cache_redis_get_cb cb;
    void *arg;
    uv_timer_t budget;
    bool answered;
    int refs; /* the reply's callback and the timer's close */
} redis_get;

static void connect_now(cache_redis *r);

int cache_redis_parse_url(const char *url, cache_redis_config *out)
{
    static const char scheme[] = "redis://";
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url || strncmp(url, scheme, sizeof scheme - 1) != 0)
        return MS_EINVAL;
    const char *host = url + sizeof scheme - 1;
    if (strchr(host, '@'))
        return MS_EINVAL; /* no credentials: a Redis of the deployment's own network */
    size_t n = strcspn(host, ":/");
    if (n == 0 || n >= sizeof out->host)
        return MS_EINVAL;
    memcpy(out->host, host, n);
    const char *p = host + n;
    char *end;
    if (*p == ':') {
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535)
            return MS_EINVAL;
        out->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 1000)
            return MS_EINVAL;
        out->db = (int)db;
        p = end;
    } else if (*p == '/') {
        p++;
    }
    return *p ? MS_EINVAL : 0;
}

static void schedule_retry(uv_timer_t *t, void (*fn)(uv_timer_t *), cache_redis *r)
{
    uint32_t rnd;
    ms_random_bytes(&rnd, sizeof rnd);
    uint32_t wait = BACKOFF_MIN_MS + rnd % r->backoff_ms;
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
    uv_timer_start(t, fn, wait, 0);
}

static void send_ping(cache_redis *r);
static void on_beat(uv_timer_t *t);

static void on_retry(uv_timer_t *t)
{
    connect_now(t->data);
}

static void went_down(cache_redis *r)
{
    if (r->live) {
        cache_redis_up_add(-1);
        ms_log(MS_LOG_WARN, "gateway cache: Redis connection lost; reads go to the services", NULL);
    }
    r->connected = r->live = false;
    r->ac = NULL;
    r->pending = 0;
    if (!r->closing)
        schedule_retry(&r->timer, on_retry, r);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    cache_redis *r = ac->data;
    if (status != REDIS_OK) {
        went_down(r); /* hiredis frees the context after this */
        return;
    }
    uv_timer_stop(&r->timer);
    r->connected = true;
    r->last_progress = uv_now(r->loop); /* what was queued while connecting goes now */
    send_ping(r);                       /* its answer makes the connection live */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    went_down(ac->data);
}

/* Drops the connection now (pending commands answer NULL) and reconnects later. */
static void drop_connection(cache_redis *r)
{
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    bool was_connected = r->connected;
    redisAsyncFree(ac); /* a connected context calls on_disconnect */
    if (!was_connected)
        went_down(r);
}

static void on_connect_timeout(uv_timer_t *t)
{
    cache_redis *r = t->data;
    if (r->ac && !r->connected)
        drop_connection(r);
}

static void connect_now(cache_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->cfg.host, r->cfg.port);
    if (ac && !ac->err && redisLibuvAttach(ac, r->loop) != REDIS_OK && !ac->ev.data)
        ac->ev.cleanup = NULL; /* the adapter set it before failing: nothing to clean up */
    if (!ac || ac->err || !ac->ev.data) {
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(&r->timer, on_retry, r);
        return;
    }
    ac->data = r;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->pending = 0;
    uv_timer_start(&r->timer, on_connect_timeout, CONNECT_TIMEOUT_MS, 0);
    if (r->cfg.db > 0)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", r->cfg.db);
}

cache_redis *cache_redis_new(uv_loop_t *loop, const cache_redis_config *cfg,
                             void (*on_up)(cache_redis *r, void *arg), void *arg)
{
    cache_redis *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->loop = loop;
    r->cfg = *cfg;
    r->on_up = on_up;
    r->arg = arg;
    r->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_timer_init(loop, &r->beat);
    r->beat.data = r;
    r->open_handles = 2;
    uv_timer_start(&r->beat, on_beat, HEARTBEAT_MS, HEARTBEAT_MS);
    connect_now(r);
    return r;
}

static void on_timer_closed(uv_handle_t *h)
{
    cache_redis *r = h->data;
    if (--r->open_handles == 0)
        free(r);
}

void cache_redis_free(cache_redis *r)
{
    if (!r)
        return;
    r->closing = true;
    drop_connection(r);
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    uv_close((uv_handle_t *)&r->beat, on_timer_closed);
}

bool cache_redis_connected(const cache_redis *r)
{
    return r && r->live && r->ac;
}

/* Whether a command may be sent: a connection made or under way (a get: live), and Redis
 * keeping up. A connection that has answered nothing for a while is dropped (a stopped or
 * wedged server keeps the socket open). Writes are queued while connecting: a delete must
 * not be lost to a loop's first connection or a reconnect. */
static bool usable(cache_redis *r, bool need_live)
{
    if (!r || !r->ac || (need_live && !r->live))
        return false;
    uint64_t now = uv_now(r->loop);
    if (r->connected && r->pending > 0 && now - r->last_progress > STALL_MS) {
        ms_log(MS_LOG_WARN, "gateway cache: Redis stopped answering; reconnecting", NULL);
        drop_connection(r);
        return false;
    }
    return r->pending < MAX_PENDING;
}

static void sent(cache_redis *r)
{
    if (r->pending++ == 0)
        r->last_progress = uv_now(r->loop);
}

static void answered(redisAsyncContext *ac, void *reply)
{
    cache_redis *r = ac->data;
    if (reply && r->pending > 0) {
        r->pending--;
        r->last_progress = uv_now(r->loop);
    }
}

static void on_reply_ignored(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    answered(ac, reply);
}

static void on_pong(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    answered(ac, reply);
    cache_redis *r = ac->data;
    if (!reply || r->live || !r->connected || r->closing)
        return;
    r->live = true;
    r->backoff_ms = BACKOFF_MIN_MS;
    cache_redis_up_add(1);
    if (r->on_up)
        r->on_up(r, r->arg);
}

static void send_ping(cache_redis *r)
{
    if (usable(r, false) && redisAsyncCommand(r->ac, on_pong, NULL, "PING") == REDIS_OK)
        sent(r);
}

static void on_beat(uv_timer_t *t)
{
    cache_redis *r = t->data;
    if (r->connected)
        send_ping(r); /* finds a stall first */
}

static void on_budget_closed(uv_handle_t *h)
{
    redis_get *g = h->data;
    if (--g->refs == 0)
        free(g);
}

static void on_budget(uv_timer_t *t)
{
    redis_get *g = t->data;
    g->answered = true;
    g->cb(false, NULL, 0, g->arg);
    uv_close((uv_handle_t *)&g->budget, on_budget_closed);
}

static void on_get_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_get *g = privdata;
    answered(ac, reply);
    if (!g->answered) {
        g->answered = true;
        uv_timer_stop(&g->budget);
        const redisReply *rr = reply;
        bool found = rr && rr->type == REDIS_REPLY_STRING;
        g->cb(found, found ? rr->str : NULL, found ? (size_t)rr->len : 0, g->arg);
        uv_close((uv_handle_t *)&g->budget, on_budget_closed);
    }
    if (--g->refs == 0)
        free(g);
}

int cache_redis_get(cache_redis *r, const char *key, cache_redis_get_cb cb, void *arg)
{
    if (!usable(r, true))
        return MS_ECONN;
    redis_get *g = calloc(1, sizeof *g);
    if (!g)
        return MS_ENOMEM;
    g->cb = cb;
    g->arg = arg;
    g->refs = 2;
    if (redisAsyncCommand(r->ac, on_get_reply, g, "EVAL %s 1 %s %s %s", GET_SCRIPT, GEN_KEY,
                          KEY_PREFIX, key) != REDIS_OK) {
        free(g);
        return MS_ECONN;
    }
    sent(r);
    uv_timer_init(r->loop, &g->budget);
    g->budget.data = g;
    uv_timer_start(&g->budget, on_budget, r->cfg.budget_ms, 0);
    return 0;
}

void cache_redis_set(cache_redis *r, const char *key, const char *value, size_t len)
{
    if (usable(r, false) &&
        redisAsyncCommand(r->ac, on_reply_ignored, NULL, "EVAL %s 1 %s %s %s %b %u", SET_SCRIPT,
                          GEN_KEY, KEY_PREFIX, key, value, len, (unsigned)r->cfg.ttl_s) == REDIS_OK)
        sent(r);
}

void cache_redis_del(cache_redis *r, const char *key)
{
    if (!usable(r, false) || redisAsyncCommand(r->ac, on_reply_ignored, NULL, "EVAL %s 1 %s %s %s",
                                               DEL_SCRIPT, GEN_KEY, KEY_PREFIX, key) != REDIS_OK)
        return;
    sent(r);
    /* out now, not at the loop's next turn: before the write's answer reaches its client, so
     * that client's next read (on any connection) cannot find the entry */
    if (r->connected)
        redisAsyncHandleWrite(r->ac);
}

void cache_redis_bump_generation(cache_redis *r)
{
    if (usable(r, false) &&
        redisAsyncCommand(r->ac, on_reply_ignored, NULL, "INCR %s", GEN_KEY) == REDIS_OK)
        sent(r);
}
