/*
 * quotes.c — POST /internal/v1/quotes: today's price and available stock of each line, so the
 * order service can price an order before it reserves. A read only: it never reserves, and
 * the stock it shows may be gone by the time a reservation asks.
 */
#include <stdio.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/json/json.h"
#include "services/inventory/inventory_internal.h"
#include "runtime/core/banned.h"

typedef struct {
    inv_call base;
    inv_line *lines;
    int n;
} quote_call;

static int quote_work(ms_db_conn *c, void *arg)
{
    quote_call *k = arg;
    int rc = 0;
    json_t *items = json_array(), *errors = json_array();
    char currency[8] = "";
    for (int i = 0; rc == 0 && i < k->n; i++) {
        const inv_line *l = &k->lines[i];
        ms_db_result *r = NULL;
        const char *params[] = {l->product_id};
        rc = ms_db_exec(c,
                        "SELECT p.price_cents, p.currency, s.on_hand - s.reserved FROM products p "
                        "JOIN stock_levels s ON s.product_id = p.id WHERE p.id = $1",
                        1, params, &r);
        char field[48];
        snprintf(field, sizeof field, "items[%d].product_id", l->index);
        if (rc == 0 && ms_db_nrows(r) == 0) {
            ms_field_error(errors, field, "no such product");
        } else if (rc == 0) {
            const char *cur = ms_db_get(r, 0, 1);
            if (!currency[0])
                snprintf(currency, sizeof currency, "%s", cur);
            else if (strcmp(currency, cur) != 0)
                ms_field_error(errors, field, "is priced in %s, the order so far in %s", cur,
                               currency);
            json_array_append_new(items, json_pack("{s:s, s:I, s:I, s:s, s:I}", "product_id",
                                                   l->product_id, "quantity",
                                                   (json_int_t)l->quantity, "unit_price_cents",
                                                   (json_int_t)inv_int(r, 0, 0), "currency", cur,
                                                   "available", (json_int_t)inv_int(r, 0, 2)));
        }
        ms_db_result_free(r);
    }
    if (rc == 0 && json_array_size(errors)) {
        rc = MS_EVALIDATION;
        k->base.detail = "some lines name products that cannot be quoted together";
        k->base.errors = errors;
        errors = NULL;
    }
    if (rc == 0)
        ms_json_put_doc(&k->base.result,
                        json_pack("{s:o, s:s}", "items", items, "currency", currency));
    else
        json_decref(items);
    json_decref(errors);
    return rc;
}

void inv_quote(ms_http_request *req)
{
    static const ms_json_field fields[] = {{"items", MS_JSON_ARRAY, true, false}};
    json_t *body;
    if (ms_http_json_body(req, &body) < 0)
        return;
    quote_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    inv_call_init(req, k, sizeof *k, 200);
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 1, "", malformed, invalid);
    json_t *items = json_object_get(body, "items");
    if (json_is_array(items))
        inv_read_lines(req, items, &k->lines, &k->n, malformed, invalid);
    if (ms_http_reject_fields(req, malformed, invalid) < 0)
        return;
    ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, quote_work, inv_call_done, k);
}
