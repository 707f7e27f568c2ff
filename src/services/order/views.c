/*
 * views.c — the order read model, in its own database: `order_views` (one row per order: the
 * public JSON answered as is, which is also the state the next event is applied to) and
 * `user_order_views` (the per-user list index, newest first). Views are derived data: they
 * are rebuilt from the event store at any time (microshop order rebuild-projections).
 *
 * Applying reuses the aggregate's own evolve, so the views can never disagree with the rules.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/error.h"
#include "runtime/log.h"
#include "services/order/order_internal.h"
#include "runtime/banned.h"

// clang-format off
const ms_migration order_view_migrations[] = {
    {1, "order views",
     "CREATE TABLE order_views ("
     " id TEXT PRIMARY KEY,"
     " user_id TEXT NOT NULL,"
     " status TEXT NOT NULL,"
     " total_cents BIGINT NOT NULL,"
     " currency TEXT NOT NULL,"
     " version BIGINT NOT NULL,"
     " position BIGINT NOT NULL,"
     " created_at TEXT NOT NULL,"
     " updated_at TEXT NOT NULL,"
     " data TEXT NOT NULL,"
     " state TEXT NOT NULL);"
     "CREATE TABLE user_order_views ("
     " user_id TEXT NOT NULL,"
     " created_at TEXT NOT NULL,"
     " order_id TEXT NOT NULL,"
     " PRIMARY KEY (user_id, created_at, order_id));"
     "CREATE TABLE projection_checkpoints ("
     " name TEXT PRIMARY KEY,"
     " position BIGINT NOT NULL)",
     NULL},
    /* The view's data holds the whole state (order_view_read): no second copy to write. */
    {2, "order views: the state is the view", "ALTER TABLE order_views DROP COLUMN state", NULL},
};
// clang-format on
const size_t order_view_nmigrations =
    sizeof order_view_migrations / sizeof order_view_migrations[0];

/* The order id of an order stream, or NULL for another stream. */
static const char *order_id_of(const char *stream_id)
{
    if (strncmp(stream_id, ORDER_STREAM_PREFIX, sizeof ORDER_STREAM_PREFIX - 1) != 0 ||
        strlen(stream_id) != ORDER_STREAM_LEN)
        return NULL;
    return stream_id + sizeof ORDER_STREAM_PREFIX - 1;
}

int order_views_apply(ms_db_conn *c, const ms_es_event *e)
{
    const char *id = order_id_of(e->stream_id);
    if (!id)
        return 0; /* not ours */
    ms_db_result *r = NULL;
    const char *key[] = {id};
    int rc = 0;
    /* The first event of a stream starts its view: nothing to read (a view that exists
     * already is left alone by the insert below), which spares a lookup for most events. */
    if (e->version > 1 &&
        (rc = ms_db_exec(c, "SELECT version, data FROM order_views WHERE id = $1", 1, key, &r)) < 0)
        return rc;
    order_state s;
    order_state_init(&s);
    bool exists = r && ms_db_nrows(r) > 0;
    if (exists && strtoll(ms_db_get(r, 0, 0), NULL, 10) >= e->version) {
        ms_db_result_free(r);
        return 0; /* applied already: projections are idempotent */
    }
    if (exists && (rc = order_view_read(ms_db_get(r, 0, 1), &s)) < 0) {
        ms_log(MS_LOG_ERROR, "order view holds an unreadable state", "order_id", id, NULL);
        ms_db_result_free(r);
        return rc;
    }
    ms_db_result_free(r);
    if ((rc = order_evolve(&s, e->type, e->data)) < 0) {
        ms_log(MS_LOG_ERROR, "event does not apply to its order", "order_id", id, "type", e->type,
               NULL);
        order_state_release(&s);
        return rc;
    }
    ms_buf view;
    ms_buf_init(&view, 512);
    order_view_write(&s, &view);
    ms_buf_add(&view, "", 1);
    const char *data = view.p;
    char total[24], version[24], position[24];
    snprintf(total, sizeof total, "%lld", (long long)s.total_cents);
    snprintf(version, sizeof version, "%lld", (long long)s.version);
    snprintf(position, sizeof position, "%lld", (long long)e->position);
    const char *params[] = {id,       s.user_id,    order_status_name(s.status),
                            total,    s.currency,   version,
                            position, s.created_at, s.updated_at,
                            data};
    if (e->version == 1) /* see above: an existing view is not touched */
        rc = ms_db_exec(c,
                        "INSERT INTO order_views (id, user_id, status, total_cents, currency, "
                        "version, position, created_at, updated_at, data) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                        "ON CONFLICT (id) DO NOTHING",
                        10, params, NULL);
    else
        rc = ms_db_exec(c,
                        "INSERT INTO order_views (id, user_id, status, total_cents, currency, "
                        "version, position, created_at, updated_at, data) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
                        "total_cents = excluded.total_cents, version = excluded.version, "
                        "position = excluded.position, updated_at = excluded.updated_at, "
                        "data = excluded.data",
                        10, params, NULL);
    if (rc == 0 && !exists) {
        const char *index[] = {s.user_id, s.created_at, id};
        rc = ms_db_exec(c,
                        "INSERT INTO user_order_views (user_id, created_at, order_id) "
                        "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        3, index, NULL);
    }
    ms_buf_release(&view);
    order_state_release(&s);
    return rc;
}

int order_views_checkpoint(ms_db_conn *c, const char *name, int64_t *position)
{
    ms_db_result *r = NULL;
    const char *params[] = {name};
    int rc =
        ms_db_exec(c, "SELECT position FROM projection_checkpoints WHERE name = $1", 1, params, &r);
    if (rc == 0)
        *position = ms_db_nrows(r) ? strtoll(ms_db_get(r, 0, 0), NULL, 10) : 0;
    ms_db_result_free(r);
    return rc;
}

int order_views_set_checkpoint(ms_db_conn *c, const char *name, int64_t position)
{
    char pos[24];
    snprintf(pos, sizeof pos, "%lld", (long long)position);
    const char *params[] = {name, pos};
    return ms_db_exec(c,
                      "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2) "
                      "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                      2, params, NULL);
}
