/* The service client's metrics and process-wide view, shared by the clients of every loop; see
 * client.h and client_internal.h. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/http/client_internal.h"
#include "runtime/json/json.h"
#include "runtime/obs/metrics.h"
#include "runtime/core/banned.h"

static const double bucket_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,  0.5,    1,     2.5,  5,     10};
enum { NBUCKETS = sizeof bucket_bounds / sizeof bucket_bounds[0] };

typedef struct {
    char *label;
    uint64_t count;
} status_count;

struct ms_http_client__inst {
    char *name;
    long down; /* under the lock */
    atomic_long active, ejected, unhealthy, members;
    atomic_ulong ejections;
};

struct ms_http_client__up {
    char *name;
    ms_http_client_metrics *m;
    /* under the lock */
    uint64_t buckets[NBUCKETS + 1]; /* per bucket, not cumulative; the last is +Inf */
    double sum;
    uint64_t count, retries, skipped_budget;
    status_count *status;
    int nstatus;
    ms_http_client__inst **inst;
    int ninst;
    /* lock-free */
    atomic_long active, ejected, members, open_loops, half_loops;
    atomic_int override;
};

struct ms_http_client_metrics {
    pthread_mutex_t lock;
    ms_http_client__up **ups;
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
        ms_http_client__up *u = m->ups[i];
        for (int j = 0; j < u->nstatus; j++)
            free(u->status[j].label);
        for (int j = 0; j < u->ninst; j++) {
            free(u->inst[j]->name);
            free(u->inst[j]);
        }
        free(u->status);
        free(u->inst);
        free(u->name);
        free(u);
    }
    free(m->ups);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* The series of an upstream, made on first use; called with the lock held. */
static ms_http_client__up *series_of(ms_http_client_metrics *m, const char *upstream)
{
    for (int i = 0; i < m->nups; i++)
        if (strcmp(m->ups[i]->name, upstream) == 0)
            return m->ups[i];
    m->ups = ms_xrealloc(m->ups, (size_t)(m->nups + 1) * sizeof *m->ups);
    ms_http_client__up *u = ms_xcalloc(1, sizeof *u);
    u->name = ms_xstrdup(upstream);
    u->m = m;
    m->ups[m->nups++] = u;
    return u;
}

/* An instance's entry, made on first use; called with the lock held. */
static ms_http_client__inst *inst_of(ms_http_client__up *u, const char *instance)
{
    for (int i = 0; i < u->ninst; i++)
        if (strcmp(u->inst[i]->name, instance) == 0)
            return u->inst[i];
    u->inst = ms_xrealloc(u->inst, (size_t)(u->ninst + 1) * sizeof *u->inst);
    ms_http_client__inst *in = ms_xcalloc(1, sizeof *in);
    in->name = ms_xstrdup(instance);
    u->inst[u->ninst++] = in;
    return in;
}

void ms_http_client__observe(ms_http_client_metrics *m, const char *upstream, const char *status,
                             double seconds)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    ms_http_client__up *u = series_of(m, upstream);
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

void ms_http_client__retry_skipped(ms_http_client_metrics *m, const char *upstream,
                                   const char *reason)
{
    (void)reason; /* one reason so far: the budget */
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    series_of(m, upstream)->skipped_budget++;
    pthread_mutex_unlock(&m->lock);
}

void ms_http_client__down(ms_http_client_metrics *m, const char *upstream, const char *instance,
                          int delta)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    inst_of(series_of(m, upstream), instance)->down += delta;
    pthread_mutex_unlock(&m->lock);
}

ms_http_client__up *ms_http_client__up_join(ms_http_client_metrics *m, const char *upstream)
{
    if (!m)
        return NULL;
    pthread_mutex_lock(&m->lock);
    ms_http_client__up *u = series_of(m, upstream);
    atomic_fetch_add(&u->members, 1);
    pthread_mutex_unlock(&m->lock);
    return u;
}

void ms_http_client__up_leave(ms_http_client__up *u)
{
    if (u)
        atomic_fetch_sub(&u->members, 1);
}

ms_breaker_override ms_http_client__override(const ms_http_client__up *u)
{
    return u ? (ms_breaker_override)atomic_load_explicit(&u->override, memory_order_relaxed)
             : MS_BREAKER_AUTO;
}

static atomic_long *loops_in(ms_http_client__up *u, ms_breaker_state s)
{
    return s == MS_BREAKER_OPEN        ? &u->open_loops
           : s == MS_BREAKER_HALF_OPEN ? &u->half_loops
                                       : NULL;
}

void ms_http_client__breaker(ms_http_client__up *u, ms_breaker_state from, ms_breaker_state to)
{
    if (!u || from == to)
        return;
    atomic_long *a = loops_in(u, from), *b = loops_in(u, to);
    if (a)
        atomic_fetch_sub(a, 1);
    if (b)
        atomic_fetch_add(b, 1);
}

ms_http_client__inst *ms_http_client__inst_join(ms_http_client__up *u, const char *instance)
{
    if (!u)
        return NULL;
    pthread_mutex_lock(&u->m->lock);
    ms_http_client__inst *in = inst_of(u, instance);
    atomic_fetch_add(&in->members, 1);
    pthread_mutex_unlock(&u->m->lock);
    return in;
}

void ms_http_client__inst_leave(ms_http_client__inst *i)
{
    if (i)
        atomic_fetch_sub(&i->members, 1);
}

void ms_http_client__active(ms_http_client__up *u, ms_http_client__inst *i, int delta)
{
    if (u)
        atomic_fetch_add_explicit(&u->active, delta, memory_order_relaxed);
    if (i)
        atomic_fetch_add_explicit(&i->active, delta, memory_order_relaxed);
}

void ms_http_client__ejected(ms_http_client__up *u, ms_http_client__inst *i, int delta)
{
    if (!u || !i)
        return;
    atomic_fetch_add(&u->ejected, delta);
    atomic_fetch_add(&i->ejected, delta);
    if (delta >= 0)
        atomic_fetch_add(&i->ejections, 1);
}

void ms_http_client__unhealthy(ms_http_client__inst *i, int delta)
{
    if (i)
        atomic_fetch_add(&i->unhealthy, delta);
}

int ms_http_client_breaker_override(ms_http_client_metrics *m, const char *upstream,
                                    ms_breaker_override o)
{
    int rc = MS_ENOTFOUND;
    if (!m || !upstream ||
        (o != MS_BREAKER_AUTO && o != MS_BREAKER_FORCE_OPEN && o != MS_BREAKER_FORCE_CLOSED))
        return MS_EINVAL;
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < m->nups; i++) {
        ms_http_client__up *u = m->ups[i];
        if (strcmp(u->name, upstream) == 0 && atomic_load(&u->members) > 0) {
            atomic_store(&u->override, (int)o);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* 0 closed, 1 open, 2 half-open: the highest over the loops (a loop half-open is trying). */
static int breaker_value(ms_http_client__up *u)
{
    return atomic_load(&u->half_loops) > 0 ? 2 : atomic_load(&u->open_loops) > 0 ? 1 : 0;
}

static const char *inst_state(ms_http_client__inst *in)
{
    if (atomic_load(&in->ejected) > 0)
        return "ejected";
    if (atomic_load(&in->unhealthy) > 0 || in->down > 0)
        return "unhealthy";
    return "healthy";
}

void ms_http_client_status_json(ms_http_client_metrics *m, ms_buf *out)
{
    static const char *const states[] = {"closed", "open", "half_open"};
    static const char *const overrides[] = {"auto", "open", "closed"};
    ms_buf_adds(out, "{\"upstreams\":[");
    if (!m) {
        ms_buf_adds(out, "]}");
        return;
    }
    pthread_mutex_lock(&m->lock);
    bool first = true;
    for (int i = 0; i < m->nups; i++) {
        ms_http_client__up *u = m->ups[i];
        if (atomic_load(&u->members) <= 0)
            continue;
        ms_buf_adds(out, first ? "{\"name\":" : ",{\"name\":");
        first = false;
        ms_json_put_string(out, u->name);
        int o = atomic_load(&u->override);
        ms_buf_printf(out, ",\"breaker\":{\"state\":\"%s\",\"override\":\"%s\"},\"instances\":[",
                      states[breaker_value(u)], overrides[o >= 0 && o <= 2 ? o : 0]);
        bool ifirst = true;
        for (int j = 0; j < u->ninst; j++) {
            ms_http_client__inst *in = u->inst[j];
            if (atomic_load(&in->members) <= 0)
                continue;
            ms_buf_adds(out, ifirst ? "{\"address\":" : ",{\"address\":");
            ifirst = false;
            ms_json_put_string(out, in->name);
            ms_buf_printf(out, ",\"state\":\"%s\",\"ejections\":%lu,\"active_requests\":%ld}",
                          inst_state(in), (unsigned long)atomic_load(&in->ejections),
                          atomic_load(&in->active));
        }
        ms_buf_adds(out, "]}");
    }
    pthread_mutex_unlock(&m->lock);
    ms_buf_adds(out, "]}");
}

void ms_http_client_metrics_render(ms_buf *out, void *metrics)
{
    ms_http_client_metrics *m = metrics;
    pthread_mutex_lock(&m->lock);
    ms_metrics_family(out, "http_client_requests_total", "counter",
                      "Calls to other services, by upstream and final status (or error).");
    for (int i = 0; i < m->nups; i++)
        for (int j = 0; j < m->ups[i]->nstatus; j++)
            ms_metrics_sample(out, "http_client_requests_total", (double)m->ups[i]->status[j].count,
                              "upstream", m->ups[i]->name, "status", m->ups[i]->status[j].label,
                              NULL);
    ms_metrics_family(out, "http_client_request_duration_seconds", "histogram",
                      "Calls to other services in seconds, retries included.");
    for (int i = 0; i < m->nups; i++) {
        const ms_http_client__up *u = m->ups[i];
        if (!u->count)
            continue;
        const char *labels[] = {"upstream", u->name};
        ms_metrics_histogram(out, "http_client_request_duration_seconds", labels, 1, bucket_bounds,
                             NBUCKETS, u->buckets, u->sum);
    }
    ms_metrics_family(out, "http_client_retries_total", "counter",
                      "Retried attempts of calls to other services.");
    for (int i = 0; i < m->nups; i++)
        ms_metrics_sample(out, "http_client_retries_total", (double)m->ups[i]->retries, "upstream",
                          m->ups[i]->name, NULL);
    ms_metrics_family(out, "http_client_retries_skipped_total", "counter",
                      "Retries not made, by reason (budget: the retry budget was spent).");
    for (int i = 0; i < m->nups; i++)
        ms_metrics_sample(out, "http_client_retries_skipped_total",
                          (double)m->ups[i]->skipped_budget, "upstream", m->ups[i]->name, "reason",
                          "budget", NULL);
    ms_metrics_family(out, "http_client_instances_down", "gauge",
                      "Loops that currently see an upstream instance as down.");
    for (int i = 0; i < m->nups; i++)
        for (int j = 0; j < m->ups[i]->ninst; j++)
            ms_metrics_sample(out, "http_client_instances_down", (double)m->ups[i]->inst[j]->down,
                              "upstream", m->ups[i]->name, "instance", m->ups[i]->inst[j]->name,
                              NULL);
    ms_metrics_family(out, "http_client_instances_unhealthy", "gauge",
                      "Loops whose active health checks currently fail an upstream instance.");
    for (int i = 0; i < m->nups; i++)
        for (int j = 0; j < m->ups[i]->ninst; j++)
            ms_metrics_sample(out, "http_client_instances_unhealthy",
                              (double)atomic_load(&m->ups[i]->inst[j]->unhealthy), "upstream",
                              m->ups[i]->name, "instance", m->ups[i]->inst[j]->name, NULL);
    ms_metrics_family(out, "http_client_breaker_state", "gauge",
                      "An upstream's circuit breaker: 0 closed, 1 open, 2 half-open (the highest "
                      "over the loops).");
    for (int i = 0; i < m->nups; i++)
        ms_metrics_sample(out, "http_client_breaker_state", (double)breaker_value(m->ups[i]),
                          "upstream", m->ups[i]->name, NULL);
    ms_metrics_family(out, "http_client_ejections_total", "counter",
                      "Outlier ejections of an upstream instance, over the loops.");
    for (int i = 0; i < m->nups; i++)
        for (int j = 0; j < m->ups[i]->ninst; j++)
            ms_metrics_sample(out, "http_client_ejections_total",
                              (double)atomic_load(&m->ups[i]->inst[j]->ejections), "upstream",
                              m->ups[i]->name, "instance", m->ups[i]->inst[j]->name, NULL);
    ms_metrics_family(out, "http_client_instances_ejected", "gauge",
                      "Instances of an upstream ejected now, summed over the loops.");
    for (int i = 0; i < m->nups; i++)
        ms_metrics_sample(out, "http_client_instances_ejected",
                          (double)atomic_load(&m->ups[i]->ejected), "upstream", m->ups[i]->name,
                          NULL);
    ms_metrics_family(out, "http_client_active_requests", "gauge",
                      "Attempts in flight to an upstream, over the loops.");
    for (int i = 0; i < m->nups; i++)
        ms_metrics_sample(out, "http_client_active_requests",
                          (double)atomic_load(&m->ups[i]->active), "upstream", m->ups[i]->name,
                          NULL);
    pthread_mutex_unlock(&m->lock);
}
