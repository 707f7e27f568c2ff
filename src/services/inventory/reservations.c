/*
 * reservations.c — the stock an order holds, keyed by its order id: reserve every line or none,
 * then commit (the goods leave: on_hand and reserved both drop) or release (reserved drops).
 * Each call is idempotent, so the order saga may retry any of them.
 *
 * Never oversell, even with several processes on one database: every write runs in one
 * transaction (SQLite: BEGIN IMMEDIATE, one writer at a time), and each line is taken by a
 * conditional UPDATE (`... WHERE on_hand - reserved >= q`) that PostgreSQL re-checks against
 * the newest row once a competing transaction ends. Stock rows are always locked in product-id
 * order and an order's reservation row before them, so two transactions never wait on each
 * other in a cycle. A release that arrives before its reserve leaves a tombstone (status
 * released, no lines) that refuses the late reserve.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/outbox.h"
#include "runtime/core/error.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/json/json.h"
#include "services/inventory/inventory_internal.h"
#include "runtime/core/banned.h"

typedef struct {
    inv_call base;
    char order_id[MS_UUID_LEN + 1];
    inv_line *lines; /* sorted by product id */
    int n;
} res_call;

static const char SELECT_LINES[] =
    "SELECT product_id, quantity, unit_price_cents, currency FROM reservation_lines "
    "WHERE order_id = $1 ORDER BY product_id";

/* The lines of a reservation as a JSON array. */
static int load_lines(ms_db_conn *c, const char *order_id, json_t **out)
{
    ms_db_result *r = NULL;
    const char *params[] = {order_id};
    int rc = ms_db_exec(c, SELECT_LINES, 1, params, &r);
    *out = NULL;
    if (rc == 0) {
        *out = json_array();
        for (int i = 0; i < ms_db_nrows(r); i++)
            json_array_append_new(
                *out, json_pack("{s:s, s:I, s:I, s:s}", "product_id", ms_db_get(r, i, 0),
                                "quantity", (json_int_t)inv_int(r, i, 1), "unit_price_cents",
                                (json_int_t)inv_int(r, i, 2), "currency", ms_db_get(r, i, 3)));
    }
    ms_db_result_free(r);
    return rc;
}

/* A reservation's status into `status` (8 bytes), or MS_ENOTFOUND. */
static int load_status(ms_db_conn *c, const char *order_id, char *status)
{
    ms_db_result *r = NULL;
    const char *params[] = {order_id};
    int rc = ms_db_exec(c, "SELECT status FROM reservations WHERE order_id = $1", 1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    if (rc == 0)
        snprintf(status, 16, "%s", ms_db_get(r, 0, 0));
    ms_db_result_free(r);
    return rc;
}

/* The whole reservation as JSON into `out`; MS_ENOTFOUND when there is none. */
static int load_reservation(ms_db_conn *c, const char *order_id, ms_buf *out)
{
    ms_db_result *r = NULL;
    const char *params[] = {order_id};
    int rc = ms_db_exec(c,
                        "SELECT status, created_at, updated_at FROM reservations "
                        "WHERE order_id = $1",
                        1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    json_t *items = NULL;
    if (rc == 0)
        rc = load_lines(c, order_id, &items);
    if (rc == 0)
        ms_json_put_doc(out, json_pack("{s:s, s:s, s:o, s:s, s:s}", "order_id", order_id, "status",
                                       ms_db_get(r, 0, 0), "items", items, "created_at",
                                       ms_db_get(r, 0, 1), "updated_at", ms_db_get(r, 0, 2)));
    ms_db_result_free(r);
    return rc;
}

/* True when the stored lines are exactly the requested ones (both sorted by product id). */
static bool same_lines(const res_call *k, json_t *stored)
{
    if (json_array_size(stored) != (size_t)k->n)
        return false;
    for (int i = 0; i < k->n; i++) {
        json_t *s = json_array_get(stored, (size_t)i);
        if (strcmp(json_string_value(json_object_get(s, "product_id")), k->lines[i].product_id) ||
            json_integer_value(json_object_get(s, "quantity")) != k->lines[i].quantity)
            return false;
    }
    return true;
}

/* An existing reservation for this order id: the same request again, or a conflict. */
static int replay(ms_db_conn *c, res_call *k)
{
    char status[16];
    int rc = load_status(c, k->order_id, status);
    if (rc == 0 && !strcmp(status, "released")) {
        k->base.reason = "released";
        k->base.detail = "this order's reservation was released; it cannot be reserved again";
        return MS_ECONFLICT;
    }
    json_t *stored = NULL;
    if (rc == 0)
        rc = load_lines(c, k->order_id, &stored);
    if (rc == 0 && !same_lines(k, stored)) {
        rc = MS_ECONFLICT;
        k->base.reason = "conflict";
        k->base.detail = "this order id was reserved with other items";
    }
    json_decref(stored);
    if (rc == 0)
        rc = load_reservation(c, k->order_id, &k->base.result);
    return rc;
}

/* Prices every line (all in one currency) into `prices`/`currency`; MS_EVALIDATION naming
 * each unknown or differently priced product. */
static int price_lines(ms_db_conn *c, res_call *k, int64_t *prices, char *currency)
{
    json_t *errors = json_array();
    int rc = 0;
    currency[0] = '\0';
    for (int i = 0; rc == 0 && i < k->n; i++) {
        ms_db_result *r = NULL;
        const char *params[] = {k->lines[i].product_id};
        rc = ms_db_exec(c, "SELECT price_cents, currency FROM products WHERE id = $1", 1, params,
                        &r);
        char field[48];
        snprintf(field, sizeof field, "items[%d].product_id", k->lines[i].index);
        if (rc == 0 && ms_db_nrows(r) == 0) {
            ms_field_error(errors, field, "no such product");
        } else if (rc == 0) {
            prices[i] = inv_int(r, 0, 0);
            if (!currency[0])
                snprintf(currency, 8, "%s", ms_db_get(r, 0, 1));
            else if (strcmp(currency, ms_db_get(r, 0, 1)) != 0)
                ms_field_error(errors, field, "is priced in %s, the order so far in %s",
                               ms_db_get(r, 0, 1), currency);
        }
        ms_db_result_free(r);
    }
    if (rc == 0 && json_array_size(errors)) {
        rc = MS_EVALIDATION;
        k->base.detail = "some lines name products that cannot be reserved together";
        k->base.errors = errors;
        errors = NULL;
    }
    json_decref(errors);
    return rc;
}

/* Takes every line's units, in product-id order; MS_ECONFLICT (out_of_stock) naming each
 * short line when any is. */
static int take_lines(ms_db_conn *c, res_call *k, const int64_t *prices, const char *currency)
{
    json_t *shorts = json_array();
    int rc = 0;
    for (int i = 0; rc == 0 && i < k->n; i++) {
        const inv_line *l = &k->lines[i];
        char qty[24];
        snprintf(qty, sizeof qty, "%lld", (long long)l->quantity);
        ms_db_result *r = NULL;
        const char *p1[] = {l->product_id, qty, k->base.now};
        rc = ms_db_exec(c,
                        "UPDATE stock_levels SET reserved = reserved + CAST($2 AS BIGINT), "
                        "updated_at = $3 WHERE product_id = $1 AND "
                        "on_hand - reserved >= CAST($2 AS BIGINT) "
                        "RETURNING on_hand, reserved, low_threshold",
                        3, p1, &r);
        if (rc == 0 && ms_db_nrows(r) == 0) {
            ms_db_result *a = NULL;
            rc = ms_db_exec(c, "SELECT on_hand - reserved FROM stock_levels WHERE product_id = $1",
                            1, p1, &a);
            char field[48];
            snprintf(field, sizeof field, "items[%d].quantity", l->index);
            if (rc == 0)
                ms_field_error(shorts, field, "only %lld available",
                               (long long)(ms_db_nrows(a) ? inv_int(a, 0, 0) : 0));
            ms_db_result_free(a);
        } else if (rc == 0) {
            int64_t after = inv_int(r, 0, 0) - inv_int(r, 0, 1);
            rc = inv_check_low(c, l->product_id, after + l->quantity, after, inv_int(r, 0, 2),
                               k->base.now);
        }
        ms_db_result_free(r);
        char price[24];
        snprintf(price, sizeof price, "%lld", (long long)prices[i]);
        const char *p2[] = {k->order_id, l->product_id, qty, price, currency};
        if (rc == 0 && json_array_size(shorts) == 0)
            rc = ms_db_exec(c,
                            "INSERT INTO reservation_lines (order_id, product_id, quantity, "
                            "unit_price_cents, currency) VALUES ($1, $2, $3, $4, $5)",
                            5, p2, NULL);
    }
    if (rc == 0 && json_array_size(shorts)) {
        rc = MS_ECONFLICT;
        k->base.reason = "out_of_stock";
        k->base.detail = "not enough stock for some lines; nothing was reserved";
        k->base.errors = shorts;
        shorts = NULL;
    }
    json_decref(shorts);
    return rc;
}

static int reserve_work(ms_db_conn *c, void *arg)
{
    res_call *k = arg;
    int rc = ms_outbox_begin(c);
    if (rc < 0)
        return rc;
    ms_db_result *r = NULL;
    const char *p1[] = {k->order_id, k->base.now};
    /* the row is the order's lock: a concurrent reserve of the same order waits here */
    rc = ms_db_exec(c,
                    "INSERT INTO reservations (order_id, status, created_at, updated_at) "
                    "VALUES ($1, 'reserved', $2, $2) ON CONFLICT (order_id) DO NOTHING",
                    2, p1, &r);
    bool fresh = rc == 0 && ms_db_affected(r) == 1;
    ms_db_result_free(r);
    if (rc == 0 && !fresh)
        return ms_db_end(c, replay(c, k));
    int64_t *prices = calloc((size_t)k->n, sizeof *prices);
    char currency[8];
    if (rc == 0 && !prices)
        rc = MS_ENOMEM;
    if (rc == 0)
        rc = price_lines(c, k, prices, currency);
    if (rc == 0)
        rc = take_lines(c, k, prices, currency);
    free(prices);
    json_t *items = NULL;
    if (rc == 0)
        rc = load_lines(c, k->order_id, &items);
    if (rc == 0)
        rc = inv_outbox(c, "reservation", k->order_id, "stock.reserved",
                        json_pack("{s:s, s:o}", "order_id", k->order_id, "items", items),
                        k->base.now);
    if (rc == 0)
        rc = load_reservation(c, k->order_id, &k->base.result);
    k->base.kicked = rc == 0;
    return ms_db_end(c, rc);
}

void inv_reserve(ms_http_request *req)
{
    static const ms_json_field fields[] = {
        {"order_id", MS_JSON_STRING, true, false},
        {"items", MS_JSON_ARRAY, true, false},
    };
    json_t *body;
    if (ms_http_json_body(req, &body) < 0)
        return;
    res_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    inv_call_init(req, k, sizeof *k, 201);
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 2, "", malformed, invalid);
    const char *order_id = json_string_value(json_object_get(body, "order_id"));
    if (order_id && !ms_uuid_valid(order_id))
        ms_field_error(invalid, "order_id", "must be a UUID");
    json_t *items = json_object_get(body, "items");
    if (json_is_array(items))
        inv_read_lines(req, items, &k->lines, &k->n, malformed, invalid);
    if (ms_http_reject_fields(req, malformed, invalid) < 0)
        return;
    if (!order_id) /* a required field */
        MS_BUG("inv_reserve: a required field passed validation unset");
    for (int i = 0; i <= MS_UUID_LEN; i++)
        k->order_id[i] =
            (char)(order_id[i] >= 'A' && order_id[i] <= 'F' ? order_id[i] + 32 : order_id[i]);
    inv_sort_lines(k->lines, k->n);
    ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, reserve_work, inv_call_done, k);
}

/* ---- release and commit ---- */

/* Moves a reserved reservation to `status` and gives back its units: reserved drops by each
 * line's quantity and, for a commit, on_hand too. Writes the event. *moved is false when the
 * reservation was not in status reserved (nothing written). */
static int settle(ms_db_conn *c, res_call *k, const char *status, bool *moved)
{
    ms_db_result *r = NULL;
    const char *p1[] = {k->order_id, status, k->base.now};
    int rc = ms_db_exec(c,
                        "UPDATE reservations SET status = $2, updated_at = $3 "
                        "WHERE order_id = $1 AND status = 'reserved'",
                        3, p1, &r);
    *moved = rc == 0 && ms_db_affected(r) == 1;
    ms_db_result_free(r);
    if (!*moved)
        return rc;
    json_t *items = NULL;
    rc = load_lines(c, k->order_id, &items);
    bool commit = !strcmp(status, "committed");
    for (size_t i = 0; rc == 0 && i < json_array_size(items); i++) {
        json_t *line = json_array_get(items, i);
        char qty[24];
        snprintf(qty, sizeof qty, "%lld",
                 (long long)json_integer_value(json_object_get(line, "quantity")));
        const char *p2[] = {json_string_value(json_object_get(line, "product_id")), qty,
                            k->base.now};
        rc =
            ms_db_exec(c,
                       commit ? "UPDATE stock_levels SET on_hand = on_hand - CAST($2 AS BIGINT), "
                                "reserved = reserved - CAST($2 AS BIGINT), updated_at = $3 "
                                "WHERE product_id = $1"
                              : "UPDATE stock_levels SET reserved = reserved - CAST($2 AS BIGINT), "
                                "updated_at = $3 WHERE product_id = $1",
                       3, p2, NULL);
    }
    if (rc == 0) {
        rc = inv_outbox(
            c, "reservation", k->order_id, commit ? "stock.committed" : "stock.released",
            json_pack("{s:s, s:O}", "order_id", k->order_id, "items", items), k->base.now);
        k->base.kicked = rc == 0;
    }
    json_decref(items);
    return rc;
}

static void put_status(res_call *k, const char *status)
{
    ms_json_put_doc(&k->base.result,
                    json_pack("{s:s, s:s}", "order_id", k->order_id, "status", status));
}

/* Inserts the tombstone of a release that came before its reserve: 0, or MS_EBUSY when a
 * reserve got there first (the caller goes again and releases it). */
static int insert_tombstone(ms_db_conn *c, res_call *k)
{
    ms_db_result *r = NULL;
    const char *p[] = {k->order_id, k->base.now};
    int rc = ms_db_exec(c,
                        "INSERT INTO reservations (order_id, status, created_at, updated_at) "
                        "VALUES ($1, 'released', $2, $2) ON CONFLICT (order_id) DO NOTHING",
                        2, p, &r);
    if (rc == 0 && ms_db_affected(r) == 0)
        rc = MS_EBUSY;
    ms_db_result_free(r);
    return rc;
}

/*
 * Release and commit: move the reservation out of `reserved`, or say why not. On PostgreSQL
 * (read committed) each statement sees the commits made before it started, so a reserve that
 * commits between our UPDATE and the following read shows up as `reserved` although the
 * UPDATE missed it: then we go again. MS_EBUSY marks such a round; three rounds suffice
 * unless something keeps re-creating the row, which nothing does.
 */
static int finish_work(ms_db_conn *c, res_call *k, const char *to)
{
    bool release = !strcmp(to, "released");
    int rc = ms_outbox_begin(c);
    if (rc < 0)
        return rc;
    for (int round = 0; round < 3; round++) {
        bool moved;
        char status[16];
        rc = settle(c, k, to, &moved);
        if (rc < 0 || moved)
            break;
        rc = load_status(c, k->order_id, status);
        if (rc == MS_ENOTFOUND && release)
            rc = insert_tombstone(c, k);
        else if (rc == MS_ENOTFOUND)
            k->base.detail = "no reservation for this order";
        else if (rc == 0 && !strcmp(status, "reserved"))
            rc = MS_EBUSY;
        else if (rc == 0 && strcmp(status, to) != 0) {
            rc = MS_ECONFLICT;
            k->base.reason = release ? "committed" : "released"; /* the other end state */
            k->base.detail = release
                                 ? "this order's reservation is committed; it cannot be released"
                                 : "this order's reservation was released; it cannot be committed";
        }
        if (rc != MS_EBUSY)
            break;
    }
    if (rc == 0)
        put_status(k, to);
    return ms_db_end(c, rc);
}

static int release_work(ms_db_conn *c, void *arg)
{
    return finish_work(c, arg, "released");
}

static int commit_work(ms_db_conn *c, void *arg)
{
    return finish_work(c, arg, "committed");
}

static int get_work(ms_db_conn *c, void *arg)
{
    res_call *k = arg;
    int rc = load_reservation(c, k->order_id, &k->base.result);
    if (rc == MS_ENOTFOUND)
        k->base.detail = "no reservation for this order";
    return rc;
}

static res_call *begin(ms_http_request *req)
{
    res_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    inv_call_init(req, k, sizeof *k, 200);
    return inv_path_uuid(req, "order_id", k->order_id, "no reservation for this order") == 0 ? k
                                                                                             : NULL;
}

void inv_release(ms_http_request *req)
{
    res_call *k = begin(req);
    if (k)
        ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, release_work, inv_call_done, k);
}

void inv_commit(ms_http_request *req)
{
    res_call *k = begin(req);
    if (k)
        ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, commit_work, inv_call_done, k);
}

void inv_reservation_get(ms_http_request *req)
{
    res_call *k = begin(req);
    if (k)
        ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, get_work, inv_call_done, k);
}
