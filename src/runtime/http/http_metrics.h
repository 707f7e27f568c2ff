/*
 * http_metrics.h — requests_total, request_duration_seconds and active_connections (the seed's
 * names), labelled by route template; http_connections_rejected_total{reason} and
 * http_connections_max for the connection cap. One shard per loop thread, so the hot path touches
 * only its own memory (a per-shard mutex that only the scraper ever contends); a scrape sums
 * shards.
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
/* Why a connection was refused: the cap was reached (shed), or no descriptor was left. */
typedef enum { MS_HTTP_REJECT_LIMIT, MS_HTTP_REJECT_EMFILE, MS_HTTP_REJECT_REASONS } ms_http_reject;
void ms_http_metrics_rejected(ms_http_metrics *m, ms_http_reject reason);
/* The shard's loop's connection cap (summed into http_connections_max). */
void ms_http_metrics_set_limit(ms_http_metrics *m, long max_conns);
/* Writes every family above, summed over shards. */
void ms_http_metrics_render(ms_buf *out, const char *service, const ms_router *router,
                            ms_http_metrics *const *shards, int nshards);

#endif
