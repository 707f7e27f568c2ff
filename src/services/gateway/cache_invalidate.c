/*
 * cache_invalidate.c — the gateway's cache follows the user and inventory services' event
 * feeds (event_feed.h: GET /internal/v1/events long polls) and drops what each event names:
 * the product or user of its aggregate (aggregate_type "product" / "user"), a payload's
 * product_id or user_id, and the product_id of each of a payload's items (reservations).
 *
 * Unlike bus_consumer.c it keeps its position in memory only (the gateway has no database):
 * it starts at the feed's head. What was cached before the follower saw the feed may be stale,
 * so it flushes (cache_flush: the LRU, and Redis's generation) when it first reaches a feed,
 * when it reaches it again after failed polls, when the feed's head is behind its position
 * (another outbox), and whenever its own Redis connection (re)connects (deletes sent while
 * Redis was away were lost). A feed that fails is polled again after a backoff (100 ms
 * doubling to 5 s, full jitter). With NATS_URL set the feeds are still followed over HTTP.
 *
 * Threading: one thread with its own uv loop, HTTP client and Redis connection; start and stop
 * from the gateway's start and stop.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/http/client.h"
#include "services/gateway/cache_internal.h"
#include "services/gateway/gateway_internal.h"
#include "runtime/core/banned.h"

enum {
    WAIT_MS = 5000, /* a long poll */
    SLACK_MS = 3000,
    PAGE = 500,
    BACKOFF_MIN_MS = 100,
    BACKOFF_MAX_MS = 5000,
    MAX_FEEDS = 2,
};

typedef struct feed {
    const char *producer; /* the upstream's name: "user", "inventory" */
    int64_t position;     /* the last seq seen */
    bool started;         /* the head is known */
    bool failed;          /* the last poll failed: the next answer follows a gap */
    uint32_t backoff_ms;
    uv_timer_t retry;
} feed;

static struct {
    bool running;
    atomic_bool stopping;
    uv_loop_t loop;
    uv_async_t wake;
    uv_thread_t thread;
    ms_http_client *client;
    cache_redis *redis;
    feed feeds[MAX_FEEDS];
    int nfeeds;
} fl;

static void poll_feed(feed *f);

static void on_retry(uv_timer_t *t)
{
    poll_feed(t->data);
}

static void failed(feed *f, const char *why)
{
    if (!f->failed)
        ms_log(MS_LOG_WARN, "gateway cache: an event feed cannot be followed; retrying", "producer",
               f->producer, "error", why, NULL);
    f->failed = true;
    uint32_t rnd;
    ms_random_bytes(&rnd, sizeof rnd);
    uint32_t wait = BACKOFF_MIN_MS + rnd % f->backoff_ms;
    f->backoff_ms = f->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : f->backoff_ms * 2;
    uv_timer_start(&f->retry, on_retry, wait, 0);
}

static void drop_named(const char *resource, json_t *id)
{
    if (json_is_string(id))
        cache_invalidate(fl.redis, resource, json_string_value(id), CACHE_BY_EVENT);
}

static void apply(json_t *item)
{
    const char *type = json_string_value(json_object_get(item, "aggregate_type"));
    json_t *aggregate = json_object_get(item, "aggregate_id");
    if (type && strcmp(type, "product") == 0)
        drop_named("products", aggregate);
    else if (type && strcmp(type, "user") == 0)
        drop_named("users", aggregate);
    json_t *payload = json_object_get(item, "payload");
    if (!json_is_object(payload))
        return;
    drop_named("products", json_object_get(payload, "product_id"));
    drop_named("users", json_object_get(payload, "user_id"));
    json_t *lines = json_object_get(payload, "items");
    for (size_t i = 0; i < json_array_size(lines); i++)
        drop_named("products", json_object_get(json_array_get(lines, i), "product_id"));
}

static void flush(feed *f, const char *why)
{
    ms_log(MS_LOG_INFO, "gateway cache: flushed", "producer", f->producer, "reason", why, NULL);
    cache_flush(fl.redis);
}

static void on_page(int err, const ms_http_client_resp *resp, void *arg)
{
    feed *f = arg;
    if (atomic_load(&fl.stopping))
        return;
    if (err < 0 || resp->status != 200) {
        failed(f, err < 0 ? ms_strerror(err) : "the feed did not answer 200");
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(resp->body, resp->body_len, 0, &jerr);
    json_t *items = json_object_get(doc, "items");
    json_t *next = json_object_get(doc, "next_after"), *head = json_object_get(doc, "head");
    if (!json_is_array(items) || !json_is_integer(next) || !json_is_integer(head)) {
        json_decref(doc);
        failed(f, "the feed's answer is malformed");
        return;
    }
    if (!f->started) {
        f->started = true;
        f->position = json_integer_value(head);
        flush(f, "the feed is reached");
    } else if (json_integer_value(head) < f->position) {
        f->position = json_integer_value(head);
        flush(f, "the feed's head is behind the position: another outbox");
    } else {
        if (f->failed)
            flush(f, "the feed is reached again");
        for (size_t i = 0; i < json_array_size(items); i++)
            apply(json_array_get(items, i));
        f->position = json_integer_value(next);
    }
    f->failed = false;
    f->backoff_ms = BACKOFF_MIN_MS;
    json_decref(doc);
    poll_feed(f);
}

static void poll_feed(feed *f)
{
    char path[128];
    if (f->started)
        snprintf(path, sizeof path, "/internal/v1/events?after=%" PRId64 "&limit=%d&wait_ms=%d",
                 f->position, PAGE, WAIT_MS);
    else /* the head only */
        snprintf(path, sizeof path, "/internal/v1/events?after=0&limit=1&wait_ms=0");
    ms_http_client_req req = {.upstream = f->producer, .method = HTTP_GET, .path = path};
    int rc = ms_http_client_request(fl.client, &req, on_page, f);
    if (rc < 0)
        failed(f, ms_strerror(rc));
}

static void on_redis_up(cache_redis *r, void *arg)
{
    (void)arg;
    ms_log(MS_LOG_INFO, "gateway cache: Redis reached; its cache generation moves on", NULL);
    cache_flush(r);
}

static void on_wake(uv_async_t *a)
{
    (void)a;
    if (!atomic_load(&fl.stopping))
        return;
    ms_http_client_free(fl.client); /* on_page sees `stopping` and asks for nothing more */
    fl.client = NULL;
    cache_redis_free(fl.redis);
    fl.redis = NULL;
    for (int i = 0; i < fl.nfeeds; i++)
        uv_close((uv_handle_t *)&fl.feeds[i].retry, NULL);
    uv_close((uv_handle_t *)&fl.wake, NULL);
}

static void follower_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "cache-follower");
    for (int i = 0; i < fl.nfeeds; i++)
        poll_feed(&fl.feeds[i]);
    uv_run(&fl.loop, UV_RUN_DEFAULT);
}

int cache_follower_start(const cache_redis_config *redis)
{
    static const char *const producers[] = {"user", "inventory"};
    memset(&fl.feeds, 0, sizeof fl.feeds);
    fl.nfeeds = 0;
    atomic_store(&fl.stopping, false);
    uv_loop_init(&fl.loop);
    uv_async_init(&fl.loop, &fl.wake, on_wake);
    ms_http_client_config ccfg;
    ms_http_client_config_defaults(&ccfg);
    ccfg.max_retries = -1; /* the follower's own backoff retries */
    ccfg.default_timeout_ms = WAIT_MS + SLACK_MS;
    fl.client = ms_http_client_new(&fl.loop, &ccfg);
    int rc = 0;
    for (int b = 0; rc == 0 && b < GATEWAY_NBACKENDS; b++) {
        const char *name = gateway_backend_name(b);
        bool wanted = strcmp(name, producers[0]) == 0 || strcmp(name, producers[1]) == 0;
        if (!wanted || gateway_proc.upstreams[b].n == 0)
            continue;
        rc = ms_http_client_add_upstream(fl.client, name, &gateway_proc.upstreams[b]);
        feed *f = &fl.feeds[fl.nfeeds++];
        f->producer = name;
        f->backoff_ms = BACKOFF_MIN_MS;
        uv_timer_init(&fl.loop, &f->retry);
        f->retry.data = f;
    }
    if (rc == 0 && redis)
        fl.redis = cache_redis_new(&fl.loop, redis, on_redis_up, NULL);
    if (rc == 0 && (fl.nfeeds > 0 || fl.redis) &&
        uv_thread_create(&fl.thread, follower_main, NULL) != 0)
        rc = MS_EINTERNAL;
    fl.running = rc == 0 && (fl.nfeeds > 0 || fl.redis);
    if (!fl.running) { /* nothing to follow, or a failure: undo on this thread */
        atomic_store(&fl.stopping, true);
        on_wake(&fl.wake);
        uv_run(&fl.loop, UV_RUN_DEFAULT);
        uv_loop_close(&fl.loop);
    }
    return rc;
}

void cache_follower_stop(void)
{
    if (!fl.running)
        return;
    atomic_store(&fl.stopping, true);
    uv_async_send(&fl.wake);
    uv_thread_join(&fl.thread);
    uv_loop_close(&fl.loop);
    fl.running = false;
}
