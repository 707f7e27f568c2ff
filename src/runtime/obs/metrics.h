/*
 * metrics.h — Prometheus text exposition (format 0.0.4) written directly: no maintained C
 * client exists, and the format is small.
 *
 * Collectors are registered before threads start and run on the scraping thread.
 */
#ifndef MS_METRICS_H
#define MS_METRICS_H

#include "runtime/core/buf.h"

#define MS_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- writing the format ---- */
/* "# HELP" and "# TYPE" lines of a family. */
void ms_metrics_family(ms_buf *out, const char *name, const char *type, const char *help);
/* One sample: name{k1="v1",k2="v2"} value. `labels` alternates keys and values, NULL-ended;
 * values are escaped. */
void ms_metrics_sample(ms_buf *out, const char *name, double value, ...) __attribute__((sentinel));
/* A histogram's samples: NAME_bucket{labels,le="bound"} cumulative for every bound and for
 * le="+Inf", then NAME_sum and NAME_count. `counts` holds nbounds + 1 per-bucket counts (the
 * last above every bound); `labels` alternates keys and values, `nlabels` pairs (may be 0). */
void ms_metrics_histogram(ms_buf *out, const char *name, const char *const *labels, int nlabels,
                          const double *bounds, int nbounds, const uint64_t *counts, double sum);
/* The bucket of `v` for ms_metrics_histogram: the first bound it does not exceed, or nbounds. */
int ms_metrics_bucket(const double *bounds, int nbounds, double v);
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

#endif
