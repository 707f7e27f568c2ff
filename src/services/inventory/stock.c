/*
 * stock.c — PUT /api/v1/products/{id}/stock: an admin sets the units on hand (a count after a
 * delivery or a stock-take). Never below what is reserved: those units are promised to orders.
 * The update is conditional, so a reservation racing it on another process cannot slip in
 * between a check and the write. Every count writes `stock.counted` {product_id, on_hand,
 * available}: a product's `available` changed, and readers that cache it (the gateway)
 * learn so from the outbox.
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
    char id[MS_UUID_LEN + 1];
    char on_hand[24];
} stock_call;

static int stock_work(ms_db_conn *c, void *arg)
{
    stock_call *k = arg;
    const char *now = k->base.now;
    int rc = ms_outbox_begin(c);
    if (rc < 0)
        return rc;
    ms_db_result *r = NULL;
    const char *p1[] = {k->id};
    /* SQLite's BEGIN IMMEDIATE already excludes every other writer; PostgreSQL locks the row */
    rc = ms_db_exec(c,
                    ms_db_backend_of(c) == MS_DB_POSTGRES
                        ? "SELECT on_hand, reserved, low_threshold FROM stock_levels "
                          "WHERE product_id = $1 FOR UPDATE"
                        : "SELECT on_hand, reserved, low_threshold FROM stock_levels "
                          "WHERE product_id = $1",
                    1, p1, &r);
    if (rc == 0 && ms_db_nrows(r) == 0) {
        rc = MS_ENOTFOUND;
        k->base.detail = "no such product";
    }
    int64_t on_hand = strtoll(k->on_hand, NULL, 10);
    if (rc == 0 && inv_int(r, 0, 1) > on_hand) {
        rc = MS_ECONFLICT;
        k->base.errors = json_array();
        ms_field_error(k->base.errors, "on_hand", "is below the %lld units reserved for orders",
                       (long long)inv_int(r, 0, 1));
        k->base.detail = "on_hand may not be less than the units reserved";
    }
    const char *p2[] = {k->id, k->on_hand, now};
    if (rc == 0)
        rc = ms_db_exec(c,
                        "UPDATE stock_levels SET on_hand = $2, updated_at = $3 "
                        "WHERE product_id = $1",
                        3, p2, NULL);
    if (rc == 0) {
        int64_t reserved = inv_int(r, 0, 1);
        rc = inv_outbox(c, "product", k->id, "stock.counted",
                        json_pack("{s:s, s:I, s:I}", "product_id", k->id, "on_hand",
                                  (json_int_t)on_hand, "available",
                                  (json_int_t)(on_hand - reserved)),
                        now);
        if (rc == 0)
            rc = inv_check_low(c, k->id, inv_int(r, 0, 0) - reserved, on_hand - reserved,
                               inv_int(r, 0, 2), now);
    }
    ms_db_result_free(r);
    if (rc == 0)
        rc = inv_load_product(c, k->id, true, &k->base.result);
    k->base.kicked = rc == 0;
    return ms_db_end(c, rc);
}

void inv_stock_put(ms_http_request *req)
{
    static const ms_json_field fields[] = {{"on_hand", MS_JSON_INTEGER, true, false}};
    stock_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    inv_call_init(req, k, sizeof *k, 200);
    json_t *body;
    if (inv_require_admin(req) < 0 || inv_path_uuid(req, "id", k->id, "no such product") < 0 ||
        ms_http_json_body(req, &body) < 0)
        return;
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 1, "", malformed, invalid);
    json_t *v = json_object_get(body, "on_hand");
    if (v && (json_integer_value(v) < 0 || json_integer_value(v) > INV_MAX_STOCK))
        ms_field_error(invalid, "on_hand", "must be from 0 to %d", INV_MAX_STOCK);
    if (ms_http_reject_fields(req, malformed, invalid) < 0)
        return;
    snprintf(k->on_hand, sizeof k->on_hand, "%lld", (long long)json_integer_value(v));
    ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, stock_work, inv_call_done, k);
}
