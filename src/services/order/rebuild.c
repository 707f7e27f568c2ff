/* Replaying the event store into fresh order views; see order_rebuild.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "services/order/order_internal.h"
#include "services/order/order_rebuild.h"
#include "runtime/core/banned.h"

enum { PAGE = 1000 };

static int replay(ms_db_conn *events, ms_db_conn *views, order_rebuild_progress *progress,
                  void *arg, order_rebuild_result *out)
{
    ms_db_result *r = NULL;
    int rc = ms_db_exec(events, "SELECT COALESCE(MAX(position), 0) FROM events", 0, NULL, &r);
    int64_t total = rc == 0 ? strtoll(ms_db_get(r, 0, 0), NULL, 10) : 0;
    ms_db_result_free(r);
    r = NULL;
    if (rc < 0)
        return rc;
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
            out->nevents += (int64_t)page.n;
        }
        size_t n = page.n;
        ms_es_page_release(&page);
        if (progress)
            progress(after, total, arg);
        if (n < PAGE)
            break;
    }
    if (rc == 0)
        rc = order_views_set_checkpoint(views, "order_views", after);
    if (rc == 0 && (rc = ms_db_exec(views, "SELECT COUNT(*) FROM order_views", 0, NULL, &r)) == 0)
        out->norders = strtoll(ms_db_get(r, 0, 0), NULL, 10);
    ms_db_result_free(r);
    return ms_db_end(views, rc);
}

int order_rebuild_projections(const char *data_dir, const ms_db_config *write_db,
                              order_rebuild_progress *progress, void *arg,
                              order_rebuild_result *out)
{
    memset(out, 0, sizeof *out);
    ms_db_config read_db;
    char read_path[4096];
    order_read_db_config(data_dir, write_db, &read_db, read_path, sizeof read_path);
    ms_db_conn *events = NULL, *views = NULL;
    int rc = ms_db_open(write_db, false, &events);
    if (rc == 0)
        rc = ms_db_migrate(events, ms_es_migrations, ms_es_nmigrations, NULL);
    if (rc == 0)
        rc = ms_db_open(&read_db, false, &views);
    if (rc == 0)
        rc = ms_db_migrate(views, order_view_migrations, order_view_nmigrations, NULL);
    if (rc == 0)
        rc = replay(events, views, progress, arg, out);
    if (rc < 0)
        snprintf(out->detail, sizeof out->detail, "%s",
                 views ? ms_db_errmsg(views) : "cannot open the databases");
    ms_db_close(events);
    ms_db_close(views);
    return rc;
}
