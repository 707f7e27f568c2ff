/*
 * es_bench.c — event-store microbenchmark: durable appends per second with group commit, then
 * replay speed.
 *
 * Appends are driven the way a service drives them: L loop threads, each with its own port
 * (ms_es_port_open), keep N appends in flight between them and submit the next one from each
 * answer until the time is up. Every append is one event to one of K streams (per loop), with
 * the exact expected version tracked per stream, so a lost or reordered append would show up
 * as a conflict (the run then fails). Replay reads the whole store back in position order with
 * every event decoded as an ms_es_event (ms_es_each).
 *
 *   es_bench sqlite DIR|postgres URL [--seconds S] [--inflight N] [--streams K] [--loops L]
 *            [--any]   (MS_ES_ANY instead of exact expected versions)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/eventstore.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/banned.h"

typedef struct bench_stream {
    char id[64];
    int64_t version; /* of the last append submitted */
} bench_stream;

struct driver;

typedef struct slot {
    struct driver *d;
    ms_es_event event;
    ms_es_append_req req;
    int64_t want_version;
} slot;

/* One loop thread and its port. */
typedef struct driver {
    ms_es *es;
    int index;
    bool is_any;
    uv_loop_t loop;
    ms_es_port *port;
    slot *slots;
    size_t nslots, live;
    bench_stream *streams;
    size_t nstreams, next_stream;
    uint64_t until_ns, end_ns, appends;
    int first_error;
    uv_thread_t thread;
} driver;

static const char bench_data[] =
    "{\"order_id\":\"0190c2a4-0000-7000-8000-000000000001\",\"total_cents\":3998}";

static void on_appended(int rc, ms_es_append_req *a, void *arg);

static void submit(slot *s)
{
    driver *d = s->d;
    bench_stream *st = &d->streams[d->next_stream++ % d->nstreams];
    ms_uuid_new(s->event.event_id);
    s->event.type = "BenchHappened";
    s->event.data = bench_data;
    s->event.metadata = "{}";
    s->req = (ms_es_append_req){
        .stream_id = st->id,
        .expected_version = d->is_any ? MS_ES_ANY : st->version,
        .events = &s->event,
        .nevents = 1,
    };
    s->want_version = ++st->version;
    ms_es_append(d->port, &s->req, on_appended, s);
}

static void on_appended(int rc, ms_es_append_req *a, void *arg)
{
    slot *s = arg;
    driver *d = s->d;
    if (rc == 0 && !d->is_any && a->version != s->want_version)
        rc = MS_EINTERNAL;
    if (rc != 0 && d->first_error == 0)
        d->first_error = rc;
    if (rc == 0)
        d->appends++;
    uint64_t now = uv_hrtime();
    if (rc == 0 && d->first_error == 0 && now < d->until_ns) {
        submit(s);
        return;
    }
    if (--d->live == 0) {
        d->end_ns = now;
        ms_es_port_close(d->port, NULL, NULL);
    }
}

static void driver_main(void *arg)
{
    driver *d = arg;
    if (uv_loop_init(&d->loop) != 0 || ms_es_port_open(d->es, &d->loop, &d->port) < 0) {
        d->first_error = MS_EIO;
        return;
    }
    d->live = d->nslots;
    for (size_t i = 0; i < d->nslots; i++) {
        d->slots[i].d = d;
        submit(&d->slots[i]);
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);
    uv_loop_close(&d->loop);
}

typedef struct replay {
    uint64_t events, bytes;
    int64_t last;
} replay;

/* Touches what a projector would: every field of the decoded event. */
static int on_event(const ms_es_event *e, void *arg)
{
    replay *r = arg;
    if (e->position <= r->last || e->version <= 0)
        return MS_EINTERNAL;
    r->last = e->position;
    r->events++;
    r->bytes += strlen(e->event_id) + strlen(e->stream_id) + strlen(e->type) + strlen(e->data) +
                strlen(e->metadata) + strlen(e->recorded_at);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: es_bench sqlite DIR|postgres URL [--seconds S] [--inflight N] "
                    "[--streams K] [--loops L] [--any]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        usage();
    int seconds = 5, inflight = 8192, nstreams = 1000, nloops = 1;
    bool is_any = false;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--any")) {
            is_any = true;
            continue;
        }
        int *value = !strcmp(argv[i], "--seconds")    ? &seconds
                     : !strcmp(argv[i], "--inflight") ? &inflight
                     : !strcmp(argv[i], "--streams")  ? &nstreams
                     : !strcmp(argv[i], "--loops")    ? &nloops
                                                      : NULL;
        if (!value || i + 1 == argc)
            usage();
        *value = atoi(argv[++i]);
    }
    if (seconds <= 0 || inflight < nloops || nstreams < nloops || nloops <= 0)
        usage();
    char path[4096];
    ms_db_config cfg = {.busy_timeout_ms = 5000};
    if (!strcmp(argv[1], "sqlite")) {
        snprintf(path, sizeof path, "%s/es_bench.db", argv[2]);
        cfg.backend = MS_DB_SQLITE;
        cfg.sqlite_path = path;
    } else if (!strcmp(argv[1], "postgres")) {
        cfg.backend = MS_DB_POSTGRES;
        cfg.pg_conninfo = argv[2];
    } else {
        usage();
    }
    ms_db_conn *c = NULL;
    if (ms_db_open(&cfg, false, &c) < 0 ||
        ms_db_migrate(c, ms_es_migrations, ms_es_nmigrations, NULL) < 0) {
        fprintf(stderr, "cannot prepare the database\n");
        return 1;
    }
    ms_es *es = NULL;
    ms_es_options opt = {.max_batch = inflight};
    if (ms_es_open(&cfg, &opt, &es) < 0)
        return 1;

    driver *d = ms_xcalloc((size_t)nloops, sizeof *d);
    uint64_t start = uv_hrtime(), run_id = start;
    for (int i = 0; i < nloops; i++) {
        d[i] = (driver){.es = es, .index = i, .is_any = is_any};
        d[i].until_ns = start + (uint64_t)seconds * 1000000000u;
        d[i].nslots = (size_t)(inflight / nloops + (i < inflight % nloops));
        d[i].slots = ms_xcalloc(d[i].nslots, sizeof *d[i].slots);
        d[i].nstreams = (size_t)(nstreams / nloops + (i < nstreams % nloops));
        d[i].streams = ms_xcalloc(d[i].nstreams, sizeof *d[i].streams);
        for (size_t k = 0; k < d[i].nstreams; k++)
            snprintf(d[i].streams[k].id, sizeof d[i].streams[k].id, "bench-%" PRIu64 "-%d-%zu",
                     run_id, i, k);
        uv_thread_create(&d[i].thread, driver_main, &d[i]);
    }
    uint64_t total = 0, end = start;
    int error = 0;
    for (int i = 0; i < nloops; i++) {
        uv_thread_join(&d[i].thread);
        total += d[i].appends;
        if (d[i].end_ns > end)
            end = d[i].end_ns;
        if (d[i].first_error && !error)
            error = d[i].first_error;
    }
    double secs = (double)(end - start) / 1e9;
    ms_es_stats st;
    ms_es_get_stats(es, &st);
    ms_es_close(es);
    if (error) {
        fprintf(stderr, "append failed: %s\n", ms_errname(error));
        return 1;
    }
    printf("durable appends: %.0f/s (%" PRIu64 " in %.1f s; %d in flight on %d loop%s, "
           "%s over %d streams; %.1f appends per commit, %.1f ms mean latency)\n",
           (double)total / secs, total, secs, inflight, nloops, nloops > 1 ? "s" : "",
           is_any ? "MS_ES_ANY" : "exact expected versions", nstreams,
           st.batches_total ? (double)st.appends_total / (double)st.batches_total : 0,
           st.appends_total ? st.append_seconds_sum * 1000 / (double)st.appends_total : 0);
    fflush(stdout);

    /* replay everything from position 0, a page at a time */
    enum { PAGE = 100000 };
    replay r = {0};
    uint64_t t0 = uv_hrtime();
    for (;;) {
        uint64_t before = r.events;
        int rc = ms_es_each(c, r.last, PAGE, on_event, &r);
        if (rc < 0) {
            fprintf(stderr, "replay failed: %s (%s)\n", ms_errname(rc), ms_db_errmsg(c));
            return 1;
        }
        if (r.events - before < PAGE)
            break;
    }
    double rs = (double)(uv_hrtime() - t0) / 1e9;
    printf("replay: %.0f events/s (%" PRIu64 " events, %.1f MB of fields, in %.2f s)\n",
           (double)r.events / rs, r.events, (double)r.bytes / 1e6, rs);
    ms_db_close(c);
    for (int i = 0; i < nloops; i++) {
        free(d[i].slots);
        free(d[i].streams);
    }
    free(d);
    return 0;
}
