/* Prometheus exposition: the format, collectors, process_* from /proc. */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "runtime/core/error.h"
#include "runtime/obs/metrics.h"
#include "runtime/core/banned.h"

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

/* name{k1="v1",...,le="le"} value: `labels` alternates keys and values (n pairs), `le` may be
 * NULL. */
static void put_sample(ms_buf *out, const char *name, const char *suffix, const char *const *labels,
                       int n, const char *le, double value)
{
    ms_buf_adds(out, name);
    ms_buf_adds(out, suffix);
    if (n > 0 || le) {
        ms_buf_add(out, "{", 1);
        for (int i = 0; i < n; i++) {
            ms_buf_printf(out, "%s%s=\"", i ? "," : "", labels[2 * i]);
            ms_metrics_escape(out, labels[2 * i + 1] ? labels[2 * i + 1] : "");
            ms_buf_add(out, "\"", 1);
        }
        if (le)
            ms_buf_printf(out, "%sle=\"%s\"", n ? "," : "", le);
        ms_buf_add(out, "}", 1);
    }
    ms_buf_add(out, " ", 1);
    add_value(out, value);
    ms_buf_add(out, "\n", 1);
}

void ms_metrics_sample(ms_buf *out, const char *name, double value, ...)
{
    enum { MAX_LABELS = 8 };
    const char *labels[2 * MAX_LABELS];
    int n = 0;
    va_list ap;
    va_start(ap, value);
    for (const char *k; (k = va_arg(ap, const char *)) != NULL; n++) {
        if (n == MAX_LABELS)
            MS_BUG("a metric sample with more than 8 labels");
        labels[2 * n] = k;
        labels[2 * n + 1] = va_arg(ap, const char *);
    }
    va_end(ap);
    put_sample(out, name, "", labels, n, NULL, value);
}

int ms_metrics_bucket(const double *bounds, int nbounds, double v)
{
    int b = 0;
    while (b < nbounds && v > bounds[b])
        b++;
    return b;
}

void ms_metrics_histogram(ms_buf *out, const char *name, const char *const *labels, int nlabels,
                          const double *bounds, int nbounds, const uint64_t *counts, double sum)
{
    uint64_t cum = 0;
    for (int b = 0; b <= nbounds; b++) {
        char le[32];
        if (b < nbounds)
            snprintf(le, sizeof le, "%g", bounds[b]);
        else
            snprintf(le, sizeof le, "+Inf");
        cum += counts[b];
        put_sample(out, name, "_bucket", labels, nlabels, le, (double)cum);
    }
    put_sample(out, name, "_sum", labels, nlabels, NULL, sum);
    put_sample(out, name, "_count", labels, nlabels, NULL, (double)cum);
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
