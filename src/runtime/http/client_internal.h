/*
 * client_internal.h — what client.c records into the shared client metrics (client_metrics.c).
 * Thread-safe: any loop's client may record at any time. A mutex guards the lists; the entries
 * a client joins stay at their address until the metrics object is freed, so the hot counters
 * (active requests, the breaker override) are atomics read and written without the lock.
 * Every function accepts NULL entries (no metrics) and does nothing then.
 */
#ifndef MS_HTTP_CLIENT_INTERNAL_H
#define MS_HTTP_CLIENT_INTERNAL_H

#include "runtime/http/client.h"
#include "runtime/http/client_policy.h"

typedef struct ms_http_client__up ms_http_client__up;
typedef struct ms_http_client__inst ms_http_client__inst;

/* One finished call: `status` is the HTTP status, or a label such as "timeout". */
void ms_http_client__observe(ms_http_client_metrics *m, const char *upstream, const char *status,
                             double seconds);
void ms_http_client__retry(ms_http_client_metrics *m, const char *upstream);
/* A retry not made, by reason ("budget"). */
void ms_http_client__retry_skipped(ms_http_client_metrics *m, const char *upstream,
                                   const char *reason);
/* An instance went down (+1) or came back (-1) in one loop's view. */
void ms_http_client__down(ms_http_client_metrics *m, const char *upstream, const char *instance,
                          int delta);

/* A client names an upstream (joins) until it is freed (leaves); NULL when m is NULL. */
ms_http_client__up *ms_http_client__up_join(ms_http_client_metrics *m, const char *upstream);
void ms_http_client__up_leave(ms_http_client__up *u);
/* The process-wide override of the upstream's breaker (MS_BREAKER_AUTO without metrics). */
ms_breaker_override ms_http_client__override(const ms_http_client__up *u);
/* A loop's breaker moved from one state to another (counts loops per state). */
void ms_http_client__breaker(ms_http_client__up *u, ms_breaker_state from, ms_breaker_state to);
/* A client lists an instance (joins) until it removes it or is freed (leaves). */
ms_http_client__inst *ms_http_client__inst_join(ms_http_client__up *u, const char *instance);
void ms_http_client__inst_leave(ms_http_client__inst *i);
/* Attempts in flight on an instance (and its upstream), +1 or -1. */
void ms_http_client__active(ms_http_client__up *u, ms_http_client__inst *i, int delta);
/* A loop ejected an instance (+1), ejected it again after a failed probe (0; both counted in
 * the ejections total), or let it back or dropped it (-1). */
void ms_http_client__ejected(ms_http_client__up *u, ms_http_client__inst *i, int delta);
/* A loop's active checks found an instance unhealthy (+1) or healthy again (-1). */
void ms_http_client__unhealthy(ms_http_client__inst *i, int delta);

#endif
