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

#include "runtime/core/error.h"
#include "runtime/core/hash.h"
#include "runtime/core/log.h"
#include "runtime/db/db_array.h"
#include "services/order/order_internal.h"
#include "runtime/core/banned.h"

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
    /* SQLite: a table with a TEXT primary key is two b-trees (rows by rowid, and the key's
     * index); WITHOUT ROWID keeps each in one, a third fewer page writes per projected order.
     * Order ids are UUIDv7, so new views still land at the right edge. PostgreSQL has no
     * rowid tables: nothing to do there. */
    {3, "order views: one b-tree per table",
     "CREATE TABLE order_views_new ("
     " id TEXT PRIMARY KEY,"
     " user_id TEXT NOT NULL,"
     " status TEXT NOT NULL,"
     " total_cents BIGINT NOT NULL,"
     " currency TEXT NOT NULL,"
     " version BIGINT NOT NULL,"
     " position BIGINT NOT NULL,"
     " created_at TEXT NOT NULL,"
     " updated_at TEXT NOT NULL,"
     " data TEXT NOT NULL) WITHOUT ROWID;"
     "INSERT INTO order_views_new SELECT id, user_id, status, total_cents, currency, version,"
     " position, created_at, updated_at, data FROM order_views;"
     "DROP TABLE order_views;"
     "ALTER TABLE order_views_new RENAME TO order_views;"
     "CREATE TABLE user_order_views_new ("
     " user_id TEXT NOT NULL,"
     " created_at TEXT NOT NULL,"
     " order_id TEXT NOT NULL,"
     " PRIMARY KEY (user_id, created_at, order_id)) WITHOUT ROWID;"
     "INSERT INTO user_order_views_new SELECT user_id, created_at, order_id"
     " FROM user_order_views;"
     "DROP TABLE user_order_views;"
     "ALTER TABLE user_order_views_new RENAME TO user_order_views",
     "SELECT 1"},
    /* The checkout saga's resumer looks for orders with steps left (order_saga_next): few at
     * any time, found through a partial index that holds only them. */
    {4, "order views: open sagas",
     "ALTER TABLE order_views ADD COLUMN saga_open INTEGER NOT NULL DEFAULT 0;"
     "CREATE INDEX order_views_saga_open ON order_views (updated_at) WHERE saga_open = 1",
     NULL},
};
// clang-format on
const size_t order_view_nmigrations =
    sizeof order_view_migrations / sizeof order_view_migrations[0];

/* "1" when the order's saga has steps left (the resumer's column), else "0". */
static const char *saga_open(const order_state *s)
{
    return order_saga_next(s, false) == ORDER_SAGA_DONE ? "0" : "1";
}

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
                            data,     saga_open(&s)};
    if (e->version == 1) /* see above: an existing view is not touched */
        rc = ms_db_exec(c,
                        "INSERT INTO order_views (id, user_id, status, total_cents, currency, "
                        "version, position, created_at, updated_at, data, saga_open) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
                        "ON CONFLICT (id) DO NOTHING",
                        11, params, NULL);
    else
        rc = ms_db_exec(c,
                        "INSERT INTO order_views (id, user_id, status, total_cents, currency, "
                        "version, position, created_at, updated_at, data, saga_open) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
                        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
                        "total_cents = excluded.total_cents, version = excluded.version, "
                        "position = excluded.position, updated_at = excluded.updated_at, "
                        "data = excluded.data, saga_open = excluded.saga_open",
                        11, params, NULL);
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

/* ---- a page at once (PostgreSQL) ---- */

/*
 * On PostgreSQL every statement is a round trip, and event by event the projector fell
 * seconds behind a POST load (two or three statements per event). A page therefore costs a
 * fixed number of statements: one to read the views its orders already have, one upsert of
 * every view it changed and one insert of the new orders' list rows, all over arrays; the
 * events are applied in memory, in order, with the aggregate's evolve as before. A view only
 * moves forward (`WHERE excluded.version > order_views.version`), so a page applied twice
 * changes nothing.
 */
typedef struct view_slot {
    char id[MS_UUID_LEN + 1]; /* empty: a free slot */
    order_state state;
    int64_t stored_version; /* of the stored view; 0 when there is none */
    int64_t first_version;  /* of the first event of this order in the page */
    int64_t position;       /* of the last event applied to it */
    bool is_touched;
} view_slot;

typedef struct view_table {
    view_slot *slots;
    size_t mask, n;
    view_slot **order; /* slots in order of first appearance */
} view_table;

static view_slot *slot_of(view_table *t, const char *id, bool add)
{
    for (size_t i = (size_t)ms_hash_text(id) & t->mask;; i = (i + 1) & t->mask) {
        view_slot *v = &t->slots[i];
        if (v->id[0] && strcmp(v->id, id) == 0)
            return v;
        if (!v->id[0]) {
            if (!add)
                return NULL;
            snprintf(v->id, sizeof v->id, "%s", id);
            order_state_init(&v->state);
            t->order[t->n++] = v;
            return v;
        }
    }
}

/* Loads the stored views of the page's orders that do not start in it. */
static int load_stored(ms_db_conn *c, view_table *t)
{
    ms_db_array ids = {0};
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        if (t->order[i]->first_version > 1) {
            ms_db_array_add(&ids, t->order[i]->id);
            n++;
        }
    int rc = 0;
    ms_db_result *r = NULL;
    const char *params[] = {ms_db_array_text(&ids)};
    if (n > 0)
        rc = ms_db_exec(c, "SELECT id, version, data FROM order_views WHERE id = ANY($1::text[])",
                        1, params, &r);
    for (int i = 0; rc == 0 && r && i < ms_db_nrows(r); i++) {
        view_slot *v = slot_of(t, ms_db_get(r, i, 0), false);
        if (!v)
            continue;
        v->stored_version = strtoll(ms_db_get(r, i, 1), NULL, 10);
        if ((rc = order_view_read(ms_db_get(r, i, 2), &v->state)) < 0)
            ms_log(MS_LOG_ERROR, "order view holds an unreadable state", "order_id", v->id, NULL);
    }
    ms_db_result_free(r);
    ms_db_array_free(&ids);
    return rc;
}

/* Writes every changed view, and the list rows of orders that had none. */
static int store_touched(ms_db_conn *c, view_table *t)
{
    enum { VIEW_COLS = 11, INDEX_COLS = 3 };
    ms_db_array col[VIEW_COLS] = {{0}}, index[INDEX_COLS] = {{0}};
    ms_buf view;
    ms_buf_init(&view, 512);
    size_t nviews = 0, nindex = 0;
    for (size_t i = 0; i < t->n; i++) {
        view_slot *v = t->order[i];
        if (!v->is_touched)
            continue;
        const order_state *s = &v->state;
        view.n = 0;
        order_view_write(s, &view);
        ms_buf_add(&view, "", 1);
        ms_db_array_add(&col[0], v->id);
        ms_db_array_add(&col[1], s->user_id);
        ms_db_array_add(&col[2], order_status_name(s->status));
        ms_db_array_add_int(&col[3], s->total_cents);
        ms_db_array_add(&col[4], s->currency);
        ms_db_array_add_int(&col[5], s->version);
        ms_db_array_add_int(&col[6], v->position);
        ms_db_array_add(&col[7], s->created_at);
        ms_db_array_add(&col[8], s->updated_at);
        ms_db_array_add(&col[9], view.p);
        ms_db_array_add(&col[10], saga_open(s));
        nviews++;
        if (v->stored_version == 0) {
            ms_db_array_add(&index[0], s->user_id);
            ms_db_array_add(&index[1], s->created_at);
            ms_db_array_add(&index[2], v->id);
            nindex++;
        }
    }
    ms_buf_release(&view);
    int rc = 0;
    const char *params[VIEW_COLS];
    for (int i = 0; i < VIEW_COLS; i++)
        params[i] = ms_db_array_text(&col[i]);
    if (nviews > 0)
        rc = ms_db_exec(c,
                        "INSERT INTO order_views (id, user_id, status, total_cents, currency, "
                        "version, position, created_at, updated_at, data, saga_open) "
                        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], "
                        "$5::text[], $6::bigint[], $7::bigint[], $8::text[], $9::text[], "
                        "$10::text[], $11::int[]) "
                        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
                        "total_cents = excluded.total_cents, version = excluded.version, "
                        "position = excluded.position, updated_at = excluded.updated_at, "
                        "data = excluded.data, saga_open = excluded.saga_open "
                        "WHERE excluded.version > order_views.version",
                        VIEW_COLS, params, NULL);
    const char *index_params[INDEX_COLS];
    for (int i = 0; i < INDEX_COLS; i++)
        index_params[i] = ms_db_array_text(&index[i]);
    if (rc == 0 && nindex > 0)
        rc = ms_db_exec(c,
                        "INSERT INTO user_order_views (user_id, created_at, order_id) "
                        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) "
                        "ON CONFLICT DO NOTHING",
                        INDEX_COLS, index_params, NULL);
    for (int i = 0; i < VIEW_COLS; i++)
        ms_db_array_free(&col[i]);
    for (int i = 0; i < INDEX_COLS; i++)
        ms_db_array_free(&index[i]);
    return rc;
}

static int apply_page_pg(ms_db_conn *c, const ms_es_page *page)
{
    size_t cap = 16;
    while (cap < page->n * 2)
        cap *= 2;
    view_table t = {.slots = ms_xcalloc(cap, sizeof(view_slot)), .mask = cap - 1};
    t.order = ms_xcalloc(page->n ? page->n : 1, sizeof *t.order);
    for (size_t i = 0; i < page->n; i++) {
        const char *id = order_id_of(page->events[i].stream_id);
        view_slot *v = id ? slot_of(&t, id, true) : NULL;
        if (v && v->first_version == 0)
            v->first_version = page->events[i].version;
    }
    int rc = load_stored(c, &t);
    for (size_t i = 0; rc == 0 && i < page->n; i++) {
        const ms_es_event *e = &page->events[i];
        const char *id = order_id_of(e->stream_id);
        view_slot *v = id ? slot_of(&t, id, false) : NULL;
        if (!v || v->stored_version >= e->version)
            continue; /* not ours, or applied already */
        if ((rc = order_evolve(&v->state, e->type, e->data)) < 0)
            ms_log(MS_LOG_ERROR, "event does not apply to its order", "order_id", id, "type",
                   e->type, NULL);
        v->is_touched = true;
        v->position = e->position;
    }
    if (rc == 0)
        rc = store_touched(c, &t);
    for (size_t i = 0; i < t.n; i++)
        order_state_release(&t.order[i]->state);
    free(t.order);
    free(t.slots);
    return rc;
}

int order_views_apply_page(ms_db_conn *c, const ms_es_page *page)
{
    if (ms_db_backend_of(c) == MS_DB_POSTGRES)
        return apply_page_pg(c, page);
    /* SQLite has no round trips to save: event by event */
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < page->n; i++)
        rc = order_views_apply(c, &page->events[i]);
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
