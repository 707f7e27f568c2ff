/*
 * gateway_internal.h — shared by the gateway's files only.
 *
 * A request passes stages, each in its own file, and each either answers it (and stops) or
 * hands the call on:
 *   proxy.c        request id, per-route deadline, headers to forward
 *   ratelimit.c    per-client token buckets (429 + Retry-After)
 *   auth.c         who the caller is (401), what the route allows them (403), the identity
 *                  forwarded to the service
 *   cache.c        product and user reads answered from the cache (else forwarded), and the
 *                  answers that fill or invalidate it
 *   consistency.c  a client's own writes in its lists (X-Min-Position from its last write)
 *                  and in cached reads (which skip the cache for a minute after a write)
 *   proxy.c        the call to the service (gateway_forward) and its answer back
 *
 * Process-wide state (gateway_proc) is written at start, then read-only but for what the
 * stages guard themselves. A loop's service client is its l->service.
 */
#ifndef MS_GATEWAY_INTERNAL_H
#define MS_GATEWAY_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/http/client.h"
#include "runtime/http/router.h"

enum { GATEWAY_NBACKENDS = 4, GATEWAY_MAX_FORWARDED = 72 };

typedef enum {
    GATEWAY_PUBLIC,   /* anyone, no token needed */
    GATEWAY_CUSTOMER, /* any signed-in caller; the service checks ownership */
    GATEWAY_ADMIN,    /* admins only */
} gateway_access;

/* What the gateway knows of one of its routes. */
typedef struct gateway_route {
    int backend;           /* index of the owning service */
    const ms_route *route; /* method and template */
    gateway_access access; /* set by gateway_route_access at start */
    uint32_t deadline_ms;  /* the whole call, from the request's arrival */
} gateway_route;

typedef struct gateway_process {
    ms_http_upstream_list upstreams[GATEWAY_NBACKENDS]; /* n == 0: not configured */
    gateway_route routes[MS_ROUTER_MAX_ROUTES];         /* by route index */
    ms_http_client_metrics *client_metrics;
} gateway_process;

extern gateway_process gateway_proc;

/* One request on its way through the stages (in the request's arena). */
typedef struct gateway_call {
    ms_http_request *req;
    const gateway_route *route;
    const char *request_id;
    const char *user_id; /* the caller once auth has run; NULL: anonymous */
    bool is_admin;
    const char *cache;    /* "HIT", "MISS" or "BYPASS" for a cacheable read; NULL: not one */
    const char *upstream; /* the instance that answered ("host:port"); NULL: none */
    uint64_t deadline;    /* uv_now() ms: the route's deadline from the request's arrival */
    ms_http_header *fwd;  /* headers to forward; room for GATEWAY_MAX_FORWARDED */
    int nfwd;
} gateway_call;

/* The service name of a backend: the client's upstream name. */
const char *gateway_backend_name(int backend);

/* The handler of every route: runs the stages. */
void gateway_proxy(ms_http_request *req);

/* Adds a header to forward; name and value must live as long as the request (its arena, or
 * static). Past the room, the header is dropped and false returned. */
bool gateway_call_add_header(gateway_call *c, const char *name, const char *value);

/* ---- stages ---- */
/* ratelimit.c: 0 to go on; MS_EBUSY after answering 429. */
int gateway_ratelimit(gateway_call *c);
int gateway_ratelimit_start(void);
void gateway_ratelimit_stop(void);

/* auth.c: the access a route needs, decided once at start from its method and template. */
gateway_access gateway_route_access(const char *method, const char *template);
/* Identifies the caller and checks the route's access: 0 to go on (c->user_id, c->is_admin
 * set, the identity headers added to c->fwd), or MS_EUNAUTHENTICATED / MS_EFORBIDDEN after
 * answering 401 / 403. Identity headers the client sent itself are never forwarded. */
int gateway_auth(gateway_call *c);
/* True for the headers only the gateway may send to a service (the forwarded identity). */
bool gateway_is_identity_header(const char *name);
int gateway_auth_start(void);
void gateway_auth_stop(void);

/* cache.c: answers a cacheable read from the cache, or calls gateway_forward(c) (perhaps
 * later, after an asynchronous lookup). */
void gateway_cache_get(gateway_call *c);
/* Sees every answer of a service before it goes back: fills the cache with a cacheable
 * read's 200, drops what a successful write changed. */
void gateway_cache_observe(gateway_call *c, const ms_http_client_resp *resp);
/* The bit of a backend whose reads the cache holds (user 1, inventory 2), else 0. */
unsigned gateway_cache_backend_bit(int backend);
int gateway_cache_start(void);
void gateway_cache_stop(void);

/* consistency.c: adds X-Min-Position to a list read of a caller who wrote before. */
void gateway_session_apply(gateway_call *c);
/* True while the caller's own write to the route's cached backend is recent (a minute, by
 * the signed ms_fresh cookie or in this process): its cacheable reads skip the cache. */
bool gateway_session_wrote(const gateway_call *c);
/* Records a caller's successful write: its X-Position (ms_pos), and a write to a cached
 * backend (ms_fresh). */
void gateway_session_observe(gateway_call *c, const ms_http_client_resp *resp);
int gateway_session_start(void);
void gateway_session_stop(void);

/* proxy.c: sends the call to its service; the answer goes back to the client. */
void gateway_forward(gateway_call *c);

/* access_log.c: one INFO line "access" per answer of the public listener, whoever gave it (a
 * stage, a service, the router's 404): the ms_loop_hooks.answered of the gateway's loops. The
 * request's gateway_call, when it reached the stages, is its handler_data. Never logs headers,
 * the query string or bodies (they carry tokens). */
void gateway_access_log(ms_http_request *req, int status, size_t body_bytes, uint64_t elapsed_ns,
                        void *arg);

/* ---- the ops console (admin listener) ---- */
/* trace_store.c: POST /v1/traces (OTLP/HTTP JSON), GET /ops/api/traces and
 * /ops/api/traces/{trace_id}; start registers its metrics, stop forgets every span. */
void gateway_otlp_receive(ms_http_request *req);
void gateway_traces_list(ms_http_request *req);
void gateway_trace_get(ms_http_request *req);
void gateway_traces_start(void);
void gateway_traces_stop(void);
/* console.c: GET /ops, /ops/app.js, /ops/app.css, /ops/chart.js, embedded in the binary. */
void gateway_console_page(ms_http_request *req);
void gateway_console_app_js(ms_http_request *req);
void gateway_console_app_css(ms_http_request *req);
void gateway_console_chart_js(ms_http_request *req);

#endif
