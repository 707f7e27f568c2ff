/*
 * metrics.h — Prometheus text exposition (format 0.0.4) written directly: no maintained C
 * client exists, and the format is small.
 *
 * HTTP request metrics live in one shard per loop thread, so the hot path touches only its
 * own memory (a per-shard mutex that only the scraper ever contends); a scrape sums shards.
 * Collectors are registered before threads start and run on the scraping thread.
 */
#ifndef MS_METRICS_H
#define MS_METRICS_H

#include "runtime/buf.h"
#include "runtime/router.h"

#define MS_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- writing the format ---- */
/* "# HELP" and "# TYPE" lines of a family. */
void ms_metrics_family(ms_buf *out, const char *name, const char *type, const char *help);
/* One sample: name{k1="v1",k2="v2"} value. `labels` alternates keys and values, NULL-ended;
 * values are escaped. */
void ms_metrics_sample(ms_buf *out, const char *name, double value, ...) __attribute__((sentinel));
/* Appends a label value escaped as the format wants (\\, \", \n). */
void ms_metrics_escape(ms_buf *out, const char *value);

/* ---- collectors ---- */
typedef void (*ms_metrics_collect_fn)(ms_buf *out, void *arg);
/* Registers a collector (at start, before any thread runs). */
void ms_metrics_register(ms_metrics_collect_fn fn, void *arg);
/* The whole exposition: every collector plus process_* metrics. */
void ms_metrics_render(ms_buf *out);
/* Forgets every collector (tests, shutdown). */
void ms_metrics_reset(void);

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
