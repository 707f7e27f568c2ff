/* upstream_watch.c — see upstream_watch.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/upstream_watch.h"
#include "runtime/core/banned.h"

enum { WATCH_PERIOD_MS = 1000, WATCH_MAX_SERVICES = 16 };

struct ms_upstream_watch {
    uv_timer_t timer;
    ms_http_client *client;
    char *path;
    bool announce;
    bool applied_once;
    ms_http_upstream_list *applied; /* NKNOWN lists as last given to the client (n 0: none) */
    bool seen; /* ino/size/mtime below describe the file last applied (or refused) */
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

int ms_upstream_file_read(const char *path, const char *const *names, int n,
                          ms_http_upstream_list *lists, char *err, size_t errn)
{
    json_error_t jerr;
    int rc = 0;
    for (int i = 0; i < n; i++)
        lists[i].n = 0;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        if (access(path, F_OK) != 0)
            return MS_ENOTFOUND;
        snprintf(err, errn, "not JSON: %s (line %d)", jerr.text, jerr.line);
        return MS_EINVAL;
    }
    json_t *services = json_object_get(doc, "services");
    if (!json_is_object(services)) {
        snprintf(err, errn, "\"services\" must be an object");
        rc = MS_EINVAL;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        json_t *v = json_object_get(services, names[i]);
        if (!v)
            continue;
        if (!json_is_string(v) || ms_http_upstream_parse(json_string_value(v), &lists[i]) < 0) {
            snprintf(err, errn, "services.%s: %s", names[i],
                     json_is_string(v) ? lists[i].error : "must be a string");
            lists[i].n = 0;
            rc = MS_EINVAL;
            goto out;
        }
    }
out:
    json_decref(doc);
    return rc;
}

/* The upstream names the file may list: every service the client may have. */
static const char *const known[] = {"user", "order", "inventory", "payment", "gateway"};
enum { NKNOWN = sizeof known / sizeof known[0] };

static bool same_list(const ms_http_upstream_list *a, const ms_http_upstream_list *b)
{
    if (a->n != b->n)
        return false;
    for (int i = 0; i < a->n; i++)
        if (a->addr[i].port != b->addr[i].port || strcmp(a->addr[i].host, b->addr[i].host) != 0)
            return false;
    return true;
}

static void apply(ms_upstream_watch *w)
{
    ms_http_upstream_list *lists = malloc(NKNOWN * sizeof *lists);
    char err[512]; /* a name and an instance list's whole error: nothing cut */
    if (!lists)
        return; /* tried again at the next change */
    int rc = ms_upstream_file_read(w->path, known, NKNOWN, lists, err, sizeof err);
    if (rc == MS_EINVAL && w->announce)
        ms_log(MS_LOG_WARN, "instances file ignored", "path", w->path, "error", err, NULL);
    for (int i = 0; rc == 0 && i < NKNOWN; i++) {
        if (lists[i].n == 0 || same_list(&lists[i], &w->applied[i]))
            continue; /* not listed, or as before */
        w->applied[i] = lists[i];
        if (ms_http_client_set_upstream(w->client, known[i], &lists[i]) < 0)
            continue;                         /* not one of this client's upstreams */
        if (w->announce && w->applied_once) { /* the first look confirms the start's lists */
            char n[16];
            snprintf(n, sizeof n, "%d", lists[i].n);
            ms_log(MS_LOG_INFO, "instances changed", "upstream", known[i], "#instances", n, NULL);
        }
    }
    w->applied_once = w->applied_once || rc == 0;
    free(lists);
}

static void on_tick(uv_timer_t *t)
{
    ms_upstream_watch *w = t->data;
    struct stat st;
    if (stat(w->path, &st) < 0)
        return; /* not written yet, or between a supervisor's runs: the lists stay */
    if (w->seen && st.st_ino == w->ino && st.st_size == w->size &&
        st.st_mtim.tv_sec == w->mtime.tv_sec && st.st_mtim.tv_nsec == w->mtime.tv_nsec)
        return;
    w->seen = true;
    w->ino = st.st_ino;
    w->size = st.st_size;
    w->mtime = st.st_mtim;
    apply(w);
}

ms_upstream_watch *ms_upstream_watch_start(uv_loop_t *loop, ms_http_client *client, bool announce)
{
    const char *path = getenv("MICROSHOP_INSTANCES_FILE");
    if (!path || !*path)
        return NULL;
    ms_upstream_watch *w = ms_xcalloc(1, sizeof *w);
    w->client = client;
    w->path = ms_xstrdup(path);
    w->announce = announce;
    w->applied = ms_xcalloc(NKNOWN, sizeof *w->applied);
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_tick, 0, WATCH_PERIOD_MS);
    /* a watch alone must not keep a draining loop alive */
    uv_unref((uv_handle_t *)&w->timer);
    return w;
}

static void on_closed(uv_handle_t *h)
{
    ms_upstream_watch *w = h->data;
    free(w->path);
    free(w->applied);
    free(w);
}

void ms_upstream_watch_stop(ms_upstream_watch *w)
{
    if (w)
        uv_close((uv_handle_t *)&w->timer, on_closed);
}
