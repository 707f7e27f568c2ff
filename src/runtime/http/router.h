/*
 * router.h — method + path templates ("/api/v1/users/{id}/profile") to handlers.
 * Built once at start, then read-only and shared by every loop thread.
 * The template is what metrics and traces use as `endpoint`/`http.route`, never the raw path.
 */
#ifndef MS_ROUTER_H
#define MS_ROUTER_H

#include "runtime/http/http.h"

enum { MS_ROUTER_MAX_ROUTES = 64 };

struct ms_route {
    const char *method;   /* "GET", ... */
    const char *template; /* "/api/v1/users/{id}" */
    ms_http_handler handler;
    int index; /* 0..n-1, dense: metrics index by it */
};

typedef struct ms_router ms_router;

ms_router *ms_router_new(void);
void ms_router_free(ms_router *r);
/* Adds a route; MS_EINVAL for a malformed template or too many routes/params. */
int ms_router_add(ms_router *r, const char *method, const char *template, ms_http_handler h);
int ms_router_count(const ms_router *r);
const ms_route *ms_router_route(const ms_router *r, int index);

typedef enum { MS_ROUTE_FOUND, MS_ROUTE_NOT_FOUND, MS_ROUTE_BAD_METHOD } ms_route_result;

/*
 * Matches a path. On MS_ROUTE_FOUND sets *route and fills the request's path parameters
 * (values point into the arena). On MS_ROUTE_BAD_METHOD writes the allowed methods
 * ("GET, PATCH") into `allow` (size `allow_n`). HEAD matches a GET route.
 */
ms_route_result ms_router_match(const ms_router *r, ms_http_request *req, const ms_route **route,
                                char *allow, size_t allow_n);

#endif
