/*
 * order_tools.c — `microshop order rebuild-projections`: parses the options, runs the order
 * service's replay (services/order/order_rebuild.h) and draws its progress.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "runtime/core/error.h"
#include "services/order/order_rebuild.h"
#include "runtime/core/banned.h"

/* The progress bar, on a terminal only (stderr, so stdout stays the one summary line). */
static void draw_progress(int64_t done, int64_t total, void *arg)
{
    (void)arg;
    int width = 40, filled = total > 0 ? (int)(done * width / total) : width;
    fprintf(stderr, "\rrebuilding order views [");
    for (int i = 0; i < width; i++)
        fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "] %3d%% (%lld/%lld)", total > 0 ? (int)(done * 100 / total) : 100,
            (long long)done, (long long)total);
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
    bool tty = isatty(STDERR_FILENO);
    order_rebuild_result res;
    uint64_t t0 = uv_hrtime();
    rc = order_rebuild_projections(o.data, &write_db, tty ? draw_progress : NULL, NULL, &res);
    if (tty)
        fputc('\n', stderr);
    if (rc < 0) {
        fprintf(stderr, "microshop order: rebuild failed: %s (%s)\n", ms_strerror(rc), res.detail);
    } else {
        printf("rebuilt %lld order views from %lld events in %.2f s\n", (long long)res.norders,
               (long long)res.nevents, (double)(uv_hrtime() - t0) / 1e9);
    }
    return rc < 0 ? 1 : 0;
}
