/*
 * order_tools.c — `microshop order rebuild-projections`: replays the whole event store into
 * fresh order views.
 *
 * The old views are deleted and the new ones written in ONE read-database transaction, so a
 * reader sees the old views until the commit and the new ones after it, never a half-built
 * set; the projector's checkpoint moves in the same transaction.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "services/order/order_internal.h"
#include "runtime/core/banned.h"

enum { PAGE = 1000 };

static void progress(int64_t done, int64_t total, bool tty)
{
    if (!tty)
        return;
    int width = 40, filled = total > 0 ? (int)(done * width / total) : width;
    fprintf(stderr, "\rrebuilding order views [");
    for (int i = 0; i < width; i++)
        fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "] %3d%% (%lld/%lld)", total > 0 ? (int)(done * 100 / total) : 100,
            (long long)done, (long long)total);
}

static int rebuild(ms_db_conn *events, ms_db_conn *views, int64_t *nevents, int64_t *norders)
{
    ms_db_result *r = NULL;
    int rc = ms_db_exec(events, "SELECT COALESCE(MAX(position), 0) FROM events", 0, NULL, &r);
    int64_t total = rc == 0 ? strtoll(ms_db_get(r, 0, 0), NULL, 10) : 0;
    ms_db_result_free(r);
    if (rc < 0)
        return rc;
    bool tty = isatty(STDERR_FILENO);
    rc = ms_db_begin(views);
    if (rc == 0)
        rc = ms_db_exec_script(views, "DELETE FROM user_order_views; DELETE FROM order_views");
    int64_t after = 0;
    while (rc == 0) {
        ms_es_page page = {0};
        rc = ms_es_read_all(events, after, PAGE, &page);
        if (rc == 0)
            rc = order_views_apply_page(views, &page);
        if (page.n > 0) {
            after = page.events[page.n - 1].position;
            *nevents += (int64_t)page.n;
        }
        size_t n = page.n;
        ms_es_page_release(&page);
        progress(after, total, tty);
        if (n < PAGE)
            break;
    }
    if (rc == 0)
        rc = order_views_set_checkpoint(views, "order_views", after);
    if (rc == 0 && (rc = ms_db_exec(views, "SELECT COUNT(*) FROM order_views", 0, NULL, &r)) == 0)
        *norders = strtoll(ms_db_get(r, 0, 0), NULL, 10);
    ms_db_result_free(r);
    if (tty)
        fputc('\n', stderr);
    return ms_db_end(views, rc);
}

int cmd_order(int argc, char **argv)
{
    if (argc < 3 || strcmp(argv[2], "rebuild-projections") != 0) {
        fprintf(stderr, "usage: microshop order rebuild-projections [--data DIR] "
                        "[--database-url URL]   (READ_DATABASE_URL for a separate read DB)\n");
        return 2;
    }
    serve_options o;
    ms_server_config server;
    ms_db_config write_db;
    int rc = options_parse(&o, &ms_order_service, false, argc, argv, 3, &server, &write_db);
    if (rc)
        return rc == 1 ? 0 : rc;
    ms_db_config read_db;
    char read_path[4096];
    order_read_db_config(o.data, &write_db, &read_db, read_path, sizeof read_path);
    ms_db_conn *events = NULL, *views = NULL;
    rc = ms_db_open(&write_db, false, &events);
    if (rc == 0)
        rc = ms_db_migrate(events, ms_es_migrations, ms_es_nmigrations, NULL);
    if (rc == 0)
        rc = ms_db_open(&read_db, false, &views);
    if (rc == 0)
        rc = ms_db_migrate(views, order_view_migrations, order_view_nmigrations, NULL);
    int64_t nevents = 0, norders = 0;
    uint64_t t0 = uv_hrtime();
    if (rc == 0)
        rc = rebuild(events, views, &nevents, &norders);
    if (rc < 0) {
        fprintf(stderr, "microshop order: rebuild failed: %s (%s)\n", ms_strerror(rc),
                views ? ms_db_errmsg(views) : "cannot open the databases");
    } else {
        printf("rebuilt %lld order views from %lld events in %.2f s\n", (long long)norders,
               (long long)nevents, (double)(uv_hrtime() - t0) / 1e9);
    }
    ms_db_close(events);
    ms_db_close(views);
    return rc < 0 ? 1 : 0;
}
