/*
 * http_metrics.h — requests_total, request_duration_seconds and active_connections (the seed's
 * names), labelled by route template. One shard per loop thread, so the hot path touches only
 * its own memory (a per-shard mutex that only the scraper ever contends); a scrape sums shards.
 */
#ifndef MS_HTTP_METRICS_H
#define MS_HTTP_METRICS_H

#include "runtime/core/buf.h"
#include "runtime/http/router.h"
#include "runtime/obs/metrics.h"

/* ---- HTTP request metrics (the seed's names) ---- */
typedef struct ms_http_metrics ms_http_metrics;
ms_http_metrics *ms_http_metrics_new(void);
void ms_http_metrics_free(ms_http_metrics *m);
/* Records one answered request. route_index -1 means no route matched. */
void ms_http_metrics_observe(ms_http_metrics *m, int route_index, int method, int status,
                             double seconds);
void ms_http_metrics_connections(ms_http_metrics *m, int delta);
/* Writes requests_total, request_duration_seconds and active_connections summed over shards. */
void ms_http_metrics_render(ms_buf *out, const char *service, const ms_router *router,
                            ms_http_metrics *const *shards, int nshards);

#endif
