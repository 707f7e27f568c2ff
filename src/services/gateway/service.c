/*
 * service.c — the gateway (`microshop serve gateway`, :8080): the one public edge. Its route
 * table is every service's own `/api/v1/...` routes, read from the services themselves, so a
 * route a service adds is public at once and `/internal/...` is never reachable: an unknown
 * path is a 404 here, before any service sees it, and metrics carry the route template.
 *
 * Each route is forwarded (proxy.c) to the service that owns it, through the service client:
 * per-loop keep-alive pools, round robin over the instances of MICROSHOP_<SERVICE>_URL, an
 * instance that fails is down for a while and probed back, the request's deadline on the call.
 *
 * Threading: the route table and the upstream lists are written at start, then read-only; a
 * client belongs to its loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A route's deadline: a checkout waits for its saga (the order service answers 202 before its
 * own 10 s deadline), so it gets more than the reads, which a healthy service answers in
 * milliseconds and which are better retried elsewhere than waited for. */
static uint32_t route_deadline_ms(const char *method, const char *template)
{
    if (strcmp(method, "GET") == 0)
        return 5000;
    if (strcmp(template, "/api/v1/orders") == 0 || strstr(template, "/cancel"))
        return 12000;
    return 8000;
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
            ms_log(MS_LOG_ERROR, what, "error", list->error, NULL);
            exit(2); /* a usage error, caught before anything starts */
        }
        if (list->n == 0)
            ms_log(MS_LOG_WARN, "gateway: no instances of a service; its routes answer 503",
                   "service", backends[b].svc->name, "variable", backends[b].env, NULL);
    }
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

static int loop_open(ms_loop *l, void *arg)
{
    (void)arg;
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    cfg.metrics = gateway_proc.client_metrics;
    ms_http_client *c = ms_http_client_new(&l->uv, &cfg);
    for (int b = 0; b < GATEWAY_NBACKENDS; b++)
        if (gateway_proc.upstreams[b].n > 0 &&
            ms_http_client_add_upstream(c, backends[b].svc->name, &gateway_proc.upstreams[b]) < 0)
            MS_BUG("a parsed upstream list was refused");
    l->service = c;
    return 0;
}

/* Each loop's client follows the supervisor's instances file (MICROSHOP_INSTANCES_FILE, set
 * by `microshop run`) when there is one: a scaled service's new instances get traffic. */
static ms_upstream_watch *watches[64];

static int loop_open_watched(ms_loop *l, void *arg)
{
    int rc = loop_open(l, arg);
    const char *file = getenv("MICROSHOP_INSTANCES_FILE");
    if (rc == 0 && file && *file && l->index < (int)(sizeof watches / sizeof watches[0]))
        watches[l->index] = ms_upstream_watch_start(&l->uv, l->service, file, l->index == 0);
    return rc;
}

static void loop_close(ms_loop *l, void (*done)(ms_loop *l), void *arg)
{
    (void)arg;
    if (l->index < (int)(sizeof watches / sizeof watches[0])) {
        ms_upstream_watch_stop(watches[l->index]);
        watches[l->index] = NULL;
    }
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
    .loop_hooks = {.open = loop_open_watched, .close = loop_close},
};
