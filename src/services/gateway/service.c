/*
 * service.c — the gateway (`microshop serve gateway`, :8080): the one public edge. Its route
 * table is every service's own `/api/v1/...` routes, read from the services themselves, so a
 * route a service adds is public at once and `/internal/...` is never reachable: an unknown
 * path is a 404 here, before any service sees it, and metrics carry the route template.
 *
 * Each route is forwarded (proxy.c, after the stages of gateway_internal.h) to the service
 * that owns it, through the service client: per-loop keep-alive pools over the instances of
 * MICROSHOP_<SERVICE>_URL, least-request balancing, ejection, health checks and a breaker
 * per service (MICROSHOP_GATEWAY_*), the route's deadline on the call.
 *
 * Threading: the route table and the upstream lists are written at start, then read-only; a
 * client belongs to its loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/upstream_watch.h"
#include "runtime/obs/metrics.h"
#include "services/gateway/gateway_admin.h"
#include "services/gateway/gateway_internal.h"
#include "services/service.h"
#include "runtime/core/banned.h"

gateway_process gateway_proc;

/* The services behind the gateway, each with the variable naming its instances. */
static const struct backend {
    const ms_service *svc;
    const char *env;
} backends[GATEWAY_NBACKENDS] = {
    {&ms_user_service, "MICROSHOP_USER_URL"},
    {&ms_order_service, "MICROSHOP_ORDER_URL"},
    {&ms_inventory_service, "MICROSHOP_INVENTORY_URL"},
    {&ms_payment_service, "MICROSHOP_PAYMENT_URL"},
};

static const char PUBLIC_PREFIX[] = "/api/v1/";

/* A route's deadline, from the request's arrival. A checkout or a cancel waits for its saga:
 * the order service answers 202 before its own 10 s deadline, so the gateway waits longer
 * (Envoy's route default, 15 s) to pass that answer on rather than cut it off. Every other
 * route gets what a service's request gets (10 s): reads may wait for a projection. */
static uint32_t route_deadline_ms(const char *method, const char *template)
{
    if (strcmp(method, "POST") == 0 &&
        (strcmp(template, "/api/v1/orders") == 0 || strstr(template, "/cancel")))
        return 15000;
    return 10000;
}

/* A service's public routes, added to the gateway's table with the proxy as handler. */
static int add_backend_routes(ms_router *r, int b)
{
    ms_router *own = ms_router_new();
    int rc = backends[b].svc->add_routes(own) < 0 ? MS_EINVAL : 0;
    for (int i = 0; rc == 0 && i < ms_router_count(own); i++) {
        const ms_route *route = ms_router_route(own, i);
        if (strncmp(route->template, PUBLIC_PREFIX, sizeof PUBLIC_PREFIX - 1) != 0)
            continue; /* internal, health, metrics: the service's own, never the gateway's */
        int index = ms_router_count(r);
        if (index >= MS_ROUTER_MAX_ROUTES ||
            ms_router_add(r, route->method, route->template, gateway_proxy) < 0) {
            rc = MS_EINVAL;
            continue;
        }
        gateway_route *gr = &gateway_proc.routes[index];
        gr->backend = b;
        gr->route = ms_router_route(r, index);
        gr->access = gateway_route_access(route->method, route->template);
        gr->deadline_ms = route_deadline_ms(route->method, route->template);
    }
    ms_router_free(own);
    return rc;
}

static int add_routes(ms_router *r)
{
    int rc = 0;
    for (int b = 0; rc == 0 && b < GATEWAY_NBACKENDS; b++)
        rc = add_backend_routes(r, b);
    return rc;
}

const char *gateway_backend_name(int backend)
{
    return backends[backend].svc->name;
}

/* The service client's settings for every loop, read from the environment at start. */
static ms_http_client_config client_cfg;

/* A whole number from the environment within [1, max], or `dflt` when unset; a bad one stops
 * the gateway before anything starts. */
static uint32_t env_number(const char *name, uint32_t dflt, uint32_t max)
{
    long n;
    char err[160];
    if (ms_config_env_long(name, (long)dflt, 1, (long)max, &n, err, sizeof err) < 0)
        ms_config_refuse("gateway: a setting is malformed", err);
    return (uint32_t)n;
}

/*
 * The gateway balances by least request and ejects outliers; the times and thresholds, small
 * in tests, come from MICROSHOP_GATEWAY_* (read below); active health checks
 * GET each instance's /health (MICROSHOP_GATEWAY_HEALTH_PATH="" or "off" turns them off).
 */
static void client_config_from_env(void)
{
    ms_http_client_config *c = &client_cfg;
    ms_http_client_config_defaults(c);
    const char *b = getenv("MICROSHOP_GATEWAY_BALANCE");
    if (!b || !*b || strcmp(b, "least_request") == 0)
        c->balance = MS_BALANCE_LEAST_REQUEST;
    else if (strcmp(b, "round_robin") == 0)
        c->balance = MS_BALANCE_ROUND_ROBIN;
    else
        ms_config_refuse("gateway: a setting is malformed",
                         "MICROSHOP_GATEWAY_BALANCE must be least_request or round_robin");
    c->slow_ms = env_number("MICROSHOP_GATEWAY_SLOW_MS", c->slow_ms, 3600000);
    c->eject_consecutive = (int)env_number("MICROSHOP_GATEWAY_EJECT_CONSECUTIVE",
                                           (uint32_t)c->eject_consecutive, 1000);
    c->eject_base_ms = env_number("MICROSHOP_GATEWAY_EJECT_BASE_MS", c->eject_base_ms, 3600000);
    c->eject_max_ms = env_number("MICROSHOP_GATEWAY_EJECT_MAX_MS", c->eject_max_ms, 86400000);
    c->eject_max_percent =
        (int)env_number("MICROSHOP_GATEWAY_EJECT_MAX_PERCENT", (uint32_t)c->eject_max_percent, 100);
    c->breaker_open_ms =
        env_number("MICROSHOP_GATEWAY_BREAKER_OPEN_MS", c->breaker_open_ms, 3600000);
    c->health_interval_ms =
        env_number("MICROSHOP_GATEWAY_HEALTH_INTERVAL_MS", c->health_interval_ms, 3600000);
    const char *hp = getenv("MICROSHOP_GATEWAY_HEALTH_PATH");
    if (!hp)
        c->health_path = "/health";
    else if (!*hp || strcmp(hp, "off") == 0)
        c->health_path = NULL;
    else if (hp[0] == '/')
        c->health_path = hp;
    else
        ms_config_refuse("gateway: a setting is malformed",
                         "MICROSHOP_GATEWAY_HEALTH_PATH must be a path starting with /, or off");
}

static int start(const ms_service_env *env)
{
    (void)env;
    for (int b = 0; b < GATEWAY_NBACKENDS; b++) {
        const char *url = getenv(backends[b].env);
        ms_http_upstream_list *list = &gateway_proc.upstreams[b];
        memset(list, 0, sizeof *list);
        if (url && *url && ms_http_upstream_parse(url, list) < 0) {
            char what[64];
            snprintf(what, sizeof what, "%s is malformed", backends[b].env);
            ms_config_refuse(what, list->error);
        }
        if (list->n == 0)
            ms_log(MS_LOG_WARN, "gateway: no instances of a service; its routes answer 503",
                   "service", backends[b].svc->name, "variable", backends[b].env, NULL);
    }
    client_config_from_env();
    gateway_proc.client_metrics = ms_http_client_metrics_new();
    ms_metrics_register(ms_http_client_metrics_render, gateway_proc.client_metrics);
    int rc = gateway_ratelimit_start();
    if (rc == 0)
        rc = gateway_auth_start();
    if (rc == 0)
        rc = gateway_cache_start();
    if (rc == 0)
        rc = gateway_session_start();
    if (rc == 0)
        rc = gateway_admin_start();
    return rc;
}

static void stop(void)
{
    gateway_admin_stop();
    gateway_session_stop();
    gateway_cache_stop();
    gateway_auth_stop();
    gateway_ratelimit_stop();
    ms_http_client_metrics_free(gateway_proc.client_metrics);
    gateway_proc.client_metrics = NULL;
}

/* Each loop's client; under `microshop run` it follows the supervisor's instances file, so a
 * scaled service's new instances get traffic. The watch is kept by loop index (the loop's
 * service state is the client itself). */
static ms_upstream_watch *watches[MS_SERVER_MAX_THREADS];

static int loop_open(ms_loop *l, void *arg)
{
    (void)arg;
    ms_http_client_config cfg = client_cfg;
    cfg.metrics = gateway_proc.client_metrics;
    ms_http_client *c = ms_http_client_new(&l->uv, &cfg);
    for (int b = 0; b < GATEWAY_NBACKENDS; b++)
        if (gateway_proc.upstreams[b].n > 0 &&
            ms_http_client_add_upstream(c, backends[b].svc->name, &gateway_proc.upstreams[b]) < 0)
            MS_BUG("a parsed upstream list was refused");
    l->service = c;
    watches[l->index] = ms_upstream_watch_start(&l->uv, c, l->index == 0);
    return 0;
}

static void loop_close(ms_loop *l, void (*done)(ms_loop *l), void *arg)
{
    (void)arg;
    ms_upstream_watch_stop(watches[l->index]);
    watches[l->index] = NULL;
    ms_http_client_free(l->service); /* calls in flight answer 503; memory goes with the loop */
    l->service = NULL;
    done(l);
}

const ms_service ms_gateway_service = {
    .name = "gateway",
    .summary = "the public edge: every service's /api/v1 routes, balanced over instances",
    .default_port = 8080,
    .add_routes = add_routes,
    .start = start,
    .stop = stop,
    .loop_hooks = {.open = loop_open, .close = loop_close, .answered = gateway_access_log},
};
