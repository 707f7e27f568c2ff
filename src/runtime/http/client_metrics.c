/* The service client's metrics, shared by the clients of every loop; see client.h. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/http/client_internal.h"
#include "runtime/obs/metrics.h"
#include "runtime/core/banned.h"

static const double bucket_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,  0.5,    1,     2.5,  5,     10};
enum { NBUCKETS = sizeof bucket_bounds / sizeof bucket_bounds[0] };

typedef struct {
    char *label;
    uint64_t count;
} status_count;

typedef struct {
    char *name;
    long down;
} instance_down;

typedef struct {
    char *name;
    uint64_t buckets[NBUCKETS + 1]; /* per bucket, not cumulative; the last is +Inf */
    double sum;
    uint64_t count, retries;
    status_count *status;
    int nstatus;
    instance_down *inst;
    int ninst;
} upstream_series;

struct ms_http_client_metrics {
    pthread_mutex_t lock;
    upstream_series *ups;
    int nups;
};

ms_http_client_metrics *ms_http_client_metrics_new(void)
{
    ms_http_client_metrics *m = ms_xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void ms_http_client_metrics_free(ms_http_client_metrics *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->nups; i++) {
        upstream_series *u = &m->ups[i];
        for (int j = 0; j < u->nstatus; j++)
            free(u->status[j].label);
        for (int j = 0; j < u->ninst; j++)
            free(u->inst[j].name);
        free(u->status);
        free(u->inst);
        free(u->name);
    }
    free(m->ups);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* The series of an upstream, made on first use; called with the lock held. */
static upstream_series *series_of(ms_http_client_metrics *m, const char *upstream)
{
    for (int i = 0; i < m->nups; i++)
        if (strcmp(m->ups[i].name, upstream) == 0)
            return &m->ups[i];
    m->ups = ms_xrealloc(m->ups, (size_t)(m->nups + 1) * sizeof *m->ups);
    upstream_series *u = &m->ups[m->nups++];
    memset(u, 0, sizeof *u);
    u->name = ms_xstrdup(upstream);
    return u;
}

void ms_http_client__observe(ms_http_client_metrics *m, const char *upstream, const char *status,
                             double seconds)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    upstream_series *u = series_of(m, upstream);
    u->buckets[ms_metrics_bucket(bucket_bounds, NBUCKETS, seconds)]++;
    u->sum += seconds;
    u->count++;
    int i = 0;
    while (i < u->nstatus && strcmp(u->status[i].label, status) != 0)
        i++;
    if (i == u->nstatus) {
        u->status = ms_xrealloc(u->status, (size_t)(u->nstatus + 1) * sizeof *u->status);
        u->status[u->nstatus++] = (status_count){ms_xstrdup(status), 0};
    }
    u->status[i].count++;
    pthread_mutex_unlock(&m->lock);
}

void ms_http_client__retry(ms_http_client_metrics *m, const char *upstream)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    series_of(m, upstream)->retries++;
    pthread_mutex_unlock(&m->lock);
}

void ms_http_client__down(ms_http_client_metrics *m, const char *upstream, const char *instance,
                          int delta)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    upstream_series *u = series_of(m, upstream);
    int i = 0;
    while (i < u->ninst && strcmp(u->inst[i].name, instance) != 0)
        i++;
    if (i == u->ninst) {
        u->inst = ms_xrealloc(u->inst, (size_t)(u->ninst + 1) * sizeof *u->inst);
        u->inst[u->ninst++] = (instance_down){ms_xstrdup(instance), 0};
    }
    u->inst[i].down += delta;
    pthread_mutex_unlock(&m->lock);
}

void ms_http_client_metrics_render(ms_buf *out, void *metrics)
{
    ms_http_client_metrics *m = metrics;
    pthread_mutex_lock(&m->lock);
    ms_metrics_family(out, "http_client_requests_total", "counter",
                      "Calls to other services, by upstream and final status (or error).");
    for (int i = 0; i < m->nups; i++)
        for (int j = 0; j < m->ups[i].nstatus; j++)
            ms_metrics_sample(out, "http_client_requests_total", (double)m->ups[i].status[j].count,
                              "upstream", m->ups[i].name, "status", m->ups[i].status[j].label,
                              NULL);
    ms_metrics_family(out, "http_client_request_duration_seconds", "histogram",
                      "Calls to other services in seconds, retries included.");
    for (int i = 0; i < m->nups; i++) {
        const upstream_series *u = &m->ups[i];
        if (!u->count)
            continue;
        const char *labels[] = {"upstream", u->name};
        ms_metrics_histogram(out, "http_client_request_duration_seconds", labels, 1, bucket_bounds,
                             NBUCKETS, u->buckets, u->sum);
    }
    ms_metrics_family(out, "http_client_retries_total", "counter",
                      "Retried attempts of calls to other services.");
    for (int i = 0; i < m->nups; i++)
        ms_metrics_sample(out, "http_client_retries_total", (double)m->ups[i].retries, "upstream",
                          m->ups[i].name, NULL);
    ms_metrics_family(out, "http_client_instances_down", "gauge",
                      "Loops that currently see an upstream instance as down.");
    for (int i = 0; i < m->nups; i++)
        for (int j = 0; j < m->ups[i].ninst; j++)
            ms_metrics_sample(out, "http_client_instances_down", (double)m->ups[i].inst[j].down,
                              "upstream", m->ups[i].name, "instance", m->ups[i].inst[j].name, NULL);
    pthread_mutex_unlock(&m->lock);
}
