/* The seed's HTTP request metrics in one shard per loop thread; see http_metrics.h. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/http/http_metrics.h"
#include "runtime/core/banned.h"

/* ---- HTTP shards ---- */
static const double bucket_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                       0.1,    0.25,  0.5,    1,     2.5,  5,     10};
enum {
    NBUCKETS = sizeof bucket_bounds / sizeof bucket_bounds[0],
    NMETHODS = 8,
    NROUTES = MS_ROUTER_MAX_ROUTES + 1, /* the last one is "no route matched" */
};
static const char *const method_names[NMETHODS] = {"GET",   "HEAD",   "POST",    "PUT",
                                                   "PATCH", "DELETE", "OPTIONS", "OTHER"};

typedef struct {
    uint64_t buckets[NBUCKETS + 1]; /* per bucket, not cumulative; the last is +Inf */
    double sum;
    uint64_t count;
    int nstatus, status_cap; /* the statuses seen, in first-seen order */
    int *status;
    uint64_t *status_count;
} series;

/* Adds `count` answers with `status` to a series' status list. */
static void add_status(series *s, int status, uint64_t count)
{
    for (int i = 0; i < s->nstatus; i++) {
        if (s->status[i] == status) {
            s->status_count[i] += count;
            return;
        }
    }
    if (s->nstatus == s->status_cap) {
        s->status_cap = s->status_cap ? s->status_cap * 2 : 4;
        s->status = ms_xrealloc(s->status, (size_t)s->status_cap * sizeof *s->status);
        s->status_count =
            ms_xrealloc(s->status_count, (size_t)s->status_cap * sizeof *s->status_count);
    }
    s->status[s->nstatus] = status;
    s->status_count[s->nstatus++] = count;
}

static void series_free(series *s)
{
    if (s) {
        free(s->status);
        free(s->status_count);
        free(s);
    }
}

struct ms_http_metrics {
    pthread_mutex_t lock;
    series *s[NROUTES][NMETHODS]; /* allocated on first use: most pairs never happen */
    long connections, max_conns;
    uint64_t rejected[MS_HTTP_REJECT_REASONS];
};

ms_http_metrics *ms_http_metrics_new(void)
{
    ms_http_metrics *m = ms_xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void ms_http_metrics_free(ms_http_metrics *m)
{
    if (!m)
        return;
    for (int r = 0; r < NROUTES; r++)
        for (int k = 0; k < NMETHODS; k++)
            series_free(m->s[r][k]);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int method_index(int method)
{
    switch (method) {
    case HTTP_GET:
        return 0;
    case HTTP_HEAD:
        return 1;
    case HTTP_POST:
        return 2;
    case HTTP_PUT:
        return 3;
    case HTTP_PATCH:
        return 4;
    case HTTP_DELETE:
        return 5;
    case HTTP_OPTIONS:
        return 6;
    default:
        return 7;
    }
}

void ms_http_metrics_observe(ms_http_metrics *m, int route_index, int method, int status,
                             double seconds)
{
    int r = route_index < 0 || route_index >= MS_ROUTER_MAX_ROUTES ? NROUTES - 1 : route_index;
    int k = method_index(method);
    pthread_mutex_lock(&m->lock);
    series *s = m->s[r][k];
    if (!s)
        s = m->s[r][k] = ms_xcalloc(1, sizeof *s);
    s->buckets[ms_metrics_bucket(bucket_bounds, NBUCKETS, seconds)]++;
    s->sum += seconds;
    s->count++;
    add_status(s, status, 1);
    pthread_mutex_unlock(&m->lock);
}

void ms_http_metrics_connections(ms_http_metrics *m, int delta)
{
    pthread_mutex_lock(&m->lock);
    m->connections += delta;
    pthread_mutex_unlock(&m->lock);
}

void ms_http_metrics_rejected(ms_http_metrics *m, ms_http_reject reason)
{
    pthread_mutex_lock(&m->lock);
    m->rejected[reason]++;
    pthread_mutex_unlock(&m->lock);
}

void ms_http_metrics_set_limit(ms_http_metrics *m, long max_conns)
{
    pthread_mutex_lock(&m->lock);
    m->max_conns = max_conns;
    pthread_mutex_unlock(&m->lock);
}

static const char *endpoint_of(const ms_router *router, int r)
{
    const ms_route *route = ms_router_route(router, r);
    return route ? route->template : "unmatched";
}

void ms_http_metrics_render(ms_buf *out, const char *service, const ms_router *router,
                            ms_http_metrics *const *shards, int nshards)
{
    series *sum = ms_xcalloc(1, sizeof *sum);
    int nroutes = ms_router_count(router);

    ms_metrics_family(out, "requests_total", "counter", "HTTP requests answered.");
    for (int r = 0; r < NROUTES; r++) {
        if (r >= nroutes && r != NROUTES - 1)
            continue;
        for (int k = 0; k < NMETHODS; k++) {
            sum->nstatus = 0; /* the status arrays are reused from pair to pair */
            for (int i = 0; i < nshards; i++) {
                pthread_mutex_lock(&shards[i]->lock);
                const series *s = shards[i]->s[r][k];
                for (int j = 0; s && j < s->nstatus; j++)
                    add_status(sum, s->status[j], s->status_count[j]);
                pthread_mutex_unlock(&shards[i]->lock);
            }
            for (int t = 0; t < sum->nstatus; t++) {
                char code[8];
                snprintf(code, sizeof code, "%d", sum->status[t]);
                ms_metrics_sample(out, "requests_total", (double)sum->status_count[t], "service",
                                  service, "method", method_names[k], "endpoint",
                                  endpoint_of(router, r), "status", code, NULL);
            }
        }
    }

    ms_metrics_family(out, "request_duration_seconds", "histogram",
                      "HTTP request duration in seconds, from the first byte to the answer.");
    for (int r = 0; r < NROUTES; r++) {
        if (r >= nroutes && r != NROUTES - 1)
            continue;
        for (int k = 0; k < NMETHODS; k++) {
            memset(sum->buckets, 0, sizeof sum->buckets);
            sum->sum = 0;
            sum->count = 0;
            for (int i = 0; i < nshards; i++) {
                pthread_mutex_lock(&shards[i]->lock);
                const series *s = shards[i]->s[r][k];
                if (s) {
                    for (int b = 0; b <= NBUCKETS; b++)
                        sum->buckets[b] += s->buckets[b];
                    sum->sum += s->sum;
                    sum->count += s->count;
                }
                pthread_mutex_unlock(&shards[i]->lock);
            }
            if (!sum->count)
                continue;
            const char *labels[] = {"service",       service,    "method",
                                    method_names[k], "endpoint", endpoint_of(router, r)};
            ms_metrics_histogram(out, "request_duration_seconds", labels, 3, bucket_bounds,
                                 NBUCKETS, sum->buckets, sum->sum);
        }
    }
    series_free(sum);

    long conns = 0, max_conns = 0;
    uint64_t rejected[MS_HTTP_REJECT_REASONS] = {0};
    for (int i = 0; i < nshards; i++) {
        pthread_mutex_lock(&shards[i]->lock);
        conns += shards[i]->connections;
        max_conns += shards[i]->max_conns;
        for (int k = 0; k < MS_HTTP_REJECT_REASONS; k++)
            rejected[k] += shards[i]->rejected[k];
        pthread_mutex_unlock(&shards[i]->lock);
    }
    ms_metrics_family(out, "active_connections", "gauge", "Open client connections.");
    ms_metrics_sample(out, "active_connections", (double)conns, "service", service, NULL);
    ms_metrics_family(out, "http_connections_max", "gauge",
                      "Client connections the process keeps open at most (more are shed).");
    ms_metrics_sample(out, "http_connections_max", (double)max_conns, "service", service, NULL);
    ms_metrics_family(out, "http_connections_rejected_total", "counter",
                      "Connections refused: shed at the cap (limit), or an accept that found no "
                      "file descriptor left (emfile; accepting pauses).");
    ms_metrics_sample(out, "http_connections_rejected_total",
                      (double)rejected[MS_HTTP_REJECT_LIMIT], "service", service, "reason", "limit",
                      NULL);
    ms_metrics_sample(out, "http_connections_rejected_total",
                      (double)rejected[MS_HTTP_REJECT_EMFILE], "service", service, "reason",
                      "emfile", NULL);
}
