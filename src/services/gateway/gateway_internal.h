/*
 * gateway_internal.h — shared by the gateway's files only: the process-wide upstreams (set at
 * start, then read-only) and which service owns each route of the table (by route index).
 * A loop's service client is its l->service.
 */
#ifndef MS_GATEWAY_INTERNAL_H
#define MS_GATEWAY_INTERNAL_H

#include "runtime/http/client.h"
#include "runtime/http/router.h"

enum { GATEWAY_NBACKENDS = 4 };

typedef struct gateway_process {
    ms_http_upstream_list upstreams[GATEWAY_NBACKENDS]; /* n == 0: not configured */
    int backend_of[MS_ROUTER_MAX_ROUTES];               /* route index -> backend */
    ms_http_client_metrics *client_metrics;
} gateway_process;

extern gateway_process gateway_proc;

/* The service name of a backend: the client's upstream name. */
const char *gateway_backend_name(int backend);

/* The handler of every route: forwards the request to its service, answers what it answers
 * (503 when it cannot be reached, 504 at the request's deadline). */
void gateway_proxy(ms_http_request *req);

#endif
