/*
 * es_bench.c — event-store microbenchmark: durable appends per second with group commit (T
 * threads, each appending one-event appends to its own streams through ms_es_append_wait, so
 * up to T appends wait for each commit), then replay speed (read_all in pages).
 *
 *   es_bench sqlite DIR [threads] [seconds]
 *   es_bench postgres URL [threads] [seconds]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/eventstore.h"
#include "runtime/error.h"
#include "runtime/id.h"
#include "runtime/banned.h"

typedef struct worker {
    ms_es *es;
    int index;
    uint64_t until_ns, appends;
    uv_thread_t thread;
} worker;

static void append_loop(void *arg)
{
    worker *w = arg;
    char stream[64];
    snprintf(stream, sizeof stream, "bench-%d-%llu", w->index, (unsigned long long)uv_hrtime());
    while (uv_hrtime() < w->until_ns) {
        ms_es_event e;
        memset(&e, 0, sizeof e);
        ms_uuid_new(e.event_id);
        e.type = "BenchHappened";
        e.data = "{\"order_id\":\"0190c2a4-0000-7000-8000-000000000001\",\"total_cents\":3998}";
        e.metadata = "{}";
        ms_es_append_req a = {
            .stream_id = stream, .expected_version = MS_ES_ANY, .events = &e, .nevents = 1};
        if (ms_es_append_wait(w->es, &a) != 0) {
            fprintf(stderr, "append failed\n");
            exit(1);
        }
        w->appends++;
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: es_bench sqlite DIR|postgres URL [threads] [seconds]\n");
        return 2;
    }
    int threads = argc > 3 ? atoi(argv[3]) : 256;
    int seconds = argc > 4 ? atoi(argv[4]) : 5;
    char path[4096];
    ms_db_config cfg = {.busy_timeout_ms = 5000};
    if (!strcmp(argv[1], "sqlite")) {
        snprintf(path, sizeof path, "%s/es_bench.db", argv[2]);
        cfg.backend = MS_DB_SQLITE;
        cfg.sqlite_path = path;
    } else {
        cfg.backend = MS_DB_POSTGRES;
        cfg.pg_conninfo = argv[2];
    }
    ms_db_conn *c = NULL;
    if (ms_db_open(&cfg, false, &c) < 0 ||
        ms_db_migrate(c, ms_es_migrations, ms_es_nmigrations, NULL) < 0) {
        fprintf(stderr, "cannot prepare the database\n");
        return 1;
    }
    ms_es *es = NULL;
    ms_es_options opt = {.max_batch = threads};
    if (ms_es_open(&cfg, &opt, &es) < 0)
        return 1;
    worker *w = calloc((size_t)threads, sizeof *w);
    uint64_t start = uv_hrtime();
    for (int i = 0; i < threads; i++) {
        w[i] = (worker){.es = es, .index = i, .until_ns = start + (uint64_t)seconds * 1000000000u};
        uv_thread_create(&w[i].thread, append_loop, &w[i]);
    }
    uint64_t total = 0;
    for (int i = 0; i < threads; i++) {
        uv_thread_join(&w[i].thread);
        total += w[i].appends;
    }
    double secs = (double)(uv_hrtime() - start) / 1e9;
    ms_es_stats st;
    ms_es_get_stats(es, &st);
    printf("durable appends: %.0f/s (%llu in %.1f s, %d writers, %.1f appends per commit)\n",
           (double)total / secs, (unsigned long long)total, secs, threads,
           st.batches_total ? (double)st.appends_total / (double)st.batches_total : 0);
    ms_es_close(es);

    /* replay everything from position 0 */
    uint64_t t0 = uv_hrtime(), events = 0;
    int64_t after = 0;
    for (;;) {
        ms_es_page page = {0};
        if (ms_es_read_all(c, after, 5000, &page) < 0)
            return 1;
        events += page.n;
        if (page.n)
            after = page.events[page.n - 1].position;
        size_t n = page.n;
        ms_es_page_release(&page);
        if (n < 5000)
            break;
    }
    double rs = (double)(uv_hrtime() - t0) / 1e9;
    printf("replay: %.0f events/s (%llu events in %.2f s)\n", (double)events / rs,
           (unsigned long long)events, rs);
    ms_db_close(c);
    free(w);
    return 0;
}
