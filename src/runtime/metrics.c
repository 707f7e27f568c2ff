/* Prometheus exposition: collectors, process_* from /proc, and the per-loop HTTP shards. */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "runtime/error.h"
#include "runtime/metrics.h"
#include "runtime/banned.h"

void ms_metrics_escape(ms_buf *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            ms_buf_add(out, "\\\\", 2);
        else if (*v == '"')
            ms_buf_add(out, "\\\"", 2);
        else if (*v == '\n')
            ms_buf_add(out, "\\n", 2);
        else
            ms_buf_add(out, v, 1);
    }
}

void ms_metrics_family(ms_buf *out, const char *name, const char *type, const char *help)
{
    ms_buf_printf(out, "# HELP %s ", name);
    for (const char *h = help; *h; h++) { /* HELP escapes only \\ and \n */
        if (*h == '\\')
            ms_buf_add(out, "\\\\", 2);
        else if (*h == '\n')
            ms_buf_add(out, "\\n", 2);
        else
            ms_buf_add(out, h, 1);
    }
    ms_buf_printf(out, "\n# TYPE %s %s\n", name, type);
}

static void add_value(ms_buf *out, double v)
{
    if (isnan(v))
        ms_buf_adds(out, "NaN");
    else if (isinf(v))
        ms_buf_adds(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        ms_buf_printf(out, "%.0f", v);
    else
        ms_buf_printf(out, "%.17g", v);
}

void ms_metrics_sample(ms_buf *out, const char *name, double value, ...)
{
    va_list ap;
    va_start(ap, value);
    ms_buf_adds(out, name);
    const char *k = va_arg(ap, const char *);
    if (k) {
        ms_buf_add(out, "{", 1);
        for (int first = 1; k; k = va_arg(ap, const char *), first = 0) {
            const char *v = va_arg(ap, const char *);
            if (!first)
                ms_buf_add(out, ",", 1);
            ms_buf_printf(out, "%s=\"", k);
            ms_metrics_escape(out, v ? v : "");
            ms_buf_add(out, "\"", 1);
        }
        ms_buf_add(out, "}", 1);
    }
    va_end(ap);
    ms_buf_add(out, " ", 1);
    add_value(out, value);
    ms_buf_add(out, "\n", 1);
}

/* ---- collectors ---- */
enum { MAX_COLLECTORS = 16 };
static struct {
    ms_metrics_collect_fn fn;
    void *arg;
} collectors[MAX_COLLECTORS];
static int ncollectors;

void ms_metrics_register(ms_metrics_collect_fn fn, void *arg)
{
    if (ncollectors == MAX_COLLECTORS)
        MS_BUG("too many metrics collectors");
    collectors[ncollectors].fn = fn;
    collectors[ncollectors].arg = arg;
    ncollectors++;
}

void ms_metrics_reset(void)
{
    ncollectors = 0;
}

static void render_process(ms_buf *out)
{
    long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    double cpu = 0, start = 0, vsize = 0, rss = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char line[1024];
        if (fgets(line, sizeof line, f)) {
            /* fields after the ")" that ends the command name: state is field 3 */
            const char *p = strrchr(line, ')');
            unsigned long utime = 0, stime = 0, vs = 0;
            unsigned long long starttime = 0;
            long rs = 0;
            if (p && sscanf(p + 2,
                            "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d "
                            "%*d %*d %llu %lu %ld",
                            &utime, &stime, &starttime, &vs, &rs) == 5) {
                cpu = (double)(utime + stime) / (double)ticks;
                start = (double)starttime / (double)ticks;
                vsize = (double)vs;
                rss = (double)rs * (double)page;
            }
        }
        fclose(f);
    }
    f = fopen("/proc/stat", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            unsigned long long btime;
            if (sscanf(line, "btime %llu", &btime) == 1) {
                start += (double)btime;
                break;
            }
        }
        fclose(f);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d));)
            fds += e->d_name[0] != '.';
        closedir(d);
        fds--; /* the directory stream's own descriptor */
    }
    struct rlimit rl;
    double maxfds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (double)rl.rlim_cur : 0;

    ms_metrics_family(out, "process_cpu_seconds_total", "counter",
                      "Total user and system CPU time spent in seconds.");
    ms_metrics_sample(out, "process_cpu_seconds_total", cpu, NULL);
    ms_metrics_family(out, "process_resident_memory_bytes", "gauge",
                      "Resident memory size in bytes.");
    ms_metrics_sample(out, "process_resident_memory_bytes", rss, NULL);
    ms_metrics_family(out, "process_virtual_memory_bytes", "gauge",
                      "Virtual memory size in bytes.");
    ms_metrics_sample(out, "process_virtual_memory_bytes", vsize, NULL);
    ms_metrics_family(out, "process_start_time_seconds", "gauge",
                      "Start time of the process since unix epoch in seconds.");
    ms_metrics_sample(out, "process_start_time_seconds", start, NULL);
    ms_metrics_family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
    ms_metrics_sample(out, "process_open_fds", fds, NULL);
    ms_metrics_family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    ms_metrics_sample(out, "process_max_fds", maxfds, NULL);
}

void ms_metrics_render(ms_buf *out)
{
    for (int i = 0; i < ncollectors; i++)
        collectors[i].fn(out, collectors[i].arg);
    render_process(out);
}

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
    long connections;
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
    int b = 0;
    while (b < NBUCKETS && seconds > bucket_bounds[b])
        b++;
    s->buckets[b]++;
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
            const char *ep = endpoint_of(router, r);
            uint64_t cum = 0;
            for (int b = 0; b <= NBUCKETS; b++) {
                char le[32];
                if (b < NBUCKETS)
                    snprintf(le, sizeof le, "%g", bucket_bounds[b]);
                else
                    snprintf(le, sizeof le, "+Inf");
                cum += sum->buckets[b];
                ms_metrics_sample(out, "request_duration_seconds_bucket", (double)cum, "service",
                                  service, "method", method_names[k], "endpoint", ep, "le", le,
                                  NULL);
            }
            ms_metrics_sample(out, "request_duration_seconds_sum", sum->sum, "service", service,
                              "method", method_names[k], "endpoint", ep, NULL);
            ms_metrics_sample(out, "request_duration_seconds_count", (double)sum->count, "service",
                              service, "method", method_names[k], "endpoint", ep, NULL);
        }
    }
    series_free(sum);

    long conns = 0;
    for (int i = 0; i < nshards; i++) {
        pthread_mutex_lock(&shards[i]->lock);
        conns += shards[i]->connections;
        pthread_mutex_unlock(&shards[i]->lock);
    }
    ms_metrics_family(out, "active_connections", "gauge", "Open client connections.");
    ms_metrics_sample(out, "active_connections", (double)conns, "service", service, NULL);
}
