/*
 * products.c — the catalogue: create a product (with its stock row and first price), list and
 * read it, change its price (kept in price_history) and read that history. Every write and its
 * outbox row share one transaction.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/outbox.h"
#include "runtime/core/error.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/json/json.h"
#include "services/common/rules.h"
#include "services/inventory/inventory_internal.h"
#include "runtime/core/banned.h"

/* 1..64 letters, digits, '.', '_' or '-': a SKU travels in URLs, feeds and labels as is. */
static const char *check_sku(const char *sku)
{
    size_t n = strlen(sku);
    if (n < 1 || n > 64)
        return "must be 1 to 64 letters, digits, '.', '_' or '-'";
    for (size_t i = 0; i < n; i++) {
        char c = sku[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return "must be 1 to 64 letters, digits, '.', '_' or '-'";
    }
    return NULL;
}

static void check_range(json_t *invalid, json_t *body, const char *field, json_int_t max)
{
    json_t *v = json_object_get(body, field);
    if (v && (json_integer_value(v) < 0 || json_integer_value(v) > max))
        ms_field_error(invalid, field, "must be from 0 to %lld", (long long)max);
}

/* ---- POST /api/v1/products ---- */

typedef struct {
    inv_call base;
    char id[MS_UUID_LEN + 1];
    const char *sku, *name, *currency;
    char price[24], stock[24], threshold[24];
} create_call;

static int create_work(ms_db_conn *c, void *arg)
{
    create_call *k = arg;
    const char *now = k->base.now;
    int rc = ms_outbox_begin(c);
    if (rc < 0)
        return rc;
    const char *p1[] = {k->id, k->sku, k->name, k->price, k->currency, now};
    rc = ms_db_exec(c,
                    "INSERT INTO products (id, sku, name, price_cents, currency, created_at, "
                    "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    6, p1, NULL);
    if (rc == MS_ECONFLICT) {
        k->base.errors = json_array();
        ms_field_error(k->base.errors, "sku", "is already taken");
        k->base.detail = "a product with this sku already exists";
    }
    const char *p2[] = {k->id, k->stock, k->threshold, now};
    if (rc == 0)
        rc = ms_db_exec(c,
                        "INSERT INTO stock_levels (product_id, on_hand, reserved, low_threshold, "
                        "updated_at) VALUES ($1, $2, 0, $3, $4)",
                        4, p2, NULL);
    const char *p3[] = {k->id, k->price, k->currency, now};
    if (rc == 0)
        rc = ms_db_exec(c,
                        "INSERT INTO price_history (product_id, price_cents, currency, changed_at) "
                        "VALUES ($1, $2, $3, $4)",
                        4, p3, NULL);
    if (rc == 0) {
        json_t *event = json_pack(
            "{s:s, s:s, s:s, s:I, s:s, s:I, s:I, s:s}", "product_id", k->id, "sku", k->sku, "name",
            k->name, "price_cents", (json_int_t)strtoll(k->price, NULL, 10), "currency",
            k->currency, "on_hand", (json_int_t)strtoll(k->stock, NULL, 10), "low_stock_threshold",
            (json_int_t)strtoll(k->threshold, NULL, 10), "created_at", now);
        rc = inv_outbox(c, "product", k->id, "product.created", event, now);
    }
    if (rc == 0)
        rc = inv_load_product(c, k->id, true, &k->base.result);
    k->base.kicked = rc == 0;
    return ms_db_end(c, rc);
}

static void create_done(int rc, void *arg)
{
    create_call *k = arg;
    if (rc == 0) {
        char *location = ms_arena_printf(&k->base.req->arena, "/api/v1/products/%s", k->id);
        ms_http_set_header(k->base.req, "Location", location);
    }
    inv_answer(&k->base, rc);
}

void inv_product_create(ms_http_request *req)
{
    static const ms_json_field fields[] = {
        {"sku", MS_JSON_STRING, true, false},
        {"name", MS_JSON_STRING, true, false},
        {"price_cents", MS_JSON_INTEGER, true, false},
        {"currency", MS_JSON_STRING, true, false},
        {"stock", MS_JSON_INTEGER, true, false},
        {"low_stock_threshold", MS_JSON_INTEGER, false, false},
    };
    json_t *body;
    if (inv_require_admin(req) < 0 || ms_http_json_body(req, &body) < 0)
        return;
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, sizeof fields / sizeof fields[0], "", malformed, invalid);
    const char *sku = json_string_value(json_object_get(body, "sku"));
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *currency = json_string_value(json_object_get(body, "currency"));
    const char *why;
    if (sku && (why = check_sku(sku)))
        ms_field_error(invalid, "sku", "%s", why);
    if (name && (why = ms_rule_text(name, 200)))
        ms_field_error(invalid, "name", "%s", why);
    if (currency && (why = ms_rule_currency(currency)))
        ms_field_error(invalid, "currency", "%s", why);
    check_range(invalid, body, "price_cents", INV_MAX_PRICE);
    check_range(invalid, body, "stock", INV_MAX_STOCK);
    check_range(invalid, body, "low_stock_threshold", INV_MAX_STOCK);
    if (ms_http_reject_fields(req, malformed, invalid) < 0)
        return;
    create_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    inv_call_init(req, k, sizeof *k, 201);
    ms_uuid_new(k->id);
    k->sku = sku; /* the body lives as long as the request */
    k->name = name;
    k->currency = currency;
    json_t *threshold = json_object_get(body, "low_stock_threshold");
    snprintf(k->price, sizeof k->price, "%lld",
             (long long)json_integer_value(json_object_get(body, "price_cents")));
    snprintf(k->stock, sizeof k->stock, "%lld",
             (long long)json_integer_value(json_object_get(body, "stock")));
    snprintf(k->threshold, sizeof k->threshold, "%lld",
             threshold ? (long long)json_integer_value(threshold) : (long long)INV_DEFAULT_LOW);
    ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, create_work, create_done, k);
}

/* ---- GET /api/v1/products ---- */

typedef struct {
    inv_call base;
    char id[MS_UUID_LEN + 1];
    int limit;
    const char *after; /* the last sku of the previous page, or NULL */
    bool admin;
} read_call;

static int list_work(ms_db_conn *c, void *arg)
{
    read_call *k = arg;
    ms_db_result *r = NULL;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", k->limit + 1); /* one more tells whether a page follows */
    const char *params[] = {k->after ? k->after : "", limit};
    int rc = ms_db_exec(c,
                        "SELECT p.id, p.sku, p.name, p.price_cents, p.currency, "
                        "s.on_hand - s.reserved FROM products p JOIN stock_levels s ON "
                        "s.product_id = p.id WHERE p.sku > $1 ORDER BY p.sku LIMIT $2",
                        2, params, &r);
    if (rc < 0)
        return rc;
    int n = ms_db_nrows(r);
    ms_buf *out = &k->base.result;
    ms_buf_adds(out, "{\"items\":[");
    for (int i = 0; i < n && i < k->limit; i++) {
        json_t *doc = json_pack("{s:s, s:s, s:s, s:I, s:s, s:I}", "id", ms_db_get(r, i, 0), "sku",
                                ms_db_get(r, i, 1), "name", ms_db_get(r, i, 2), "price_cents",
                                (json_int_t)inv_int(r, i, 3), "currency", ms_db_get(r, i, 4),
                                "available", (json_int_t)inv_int(r, i, 5));
        if (i)
            ms_buf_add(out, ",", 1);
        ms_json_put_doc(out, doc);
    }
    ms_buf_adds(out, "],");
    inv_put_cursor(out, n > k->limit ? ms_db_get(r, k->limit - 1, 1) : NULL);
    ms_buf_add(out, "}", 1);
    ms_db_result_free(r);
    return 0;
}

void inv_product_list(ms_http_request *req)
{
    read_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    inv_call_init(req, k, sizeof *k, 200);
    if (inv_page_params(req, &k->limit, &k->after) < 0)
        return;
    if (k->after && check_sku(k->after)) {
        json_t *errors = json_array();
        ms_field_error(errors, "cursor", "is not a cursor this service gave out");
        ms_problem_fields_from_error(req, MS_EMALFORMED, "the paging parameters are malformed",
                                     errors);
        return;
    }
    ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, list_work, inv_call_done, k);
}

/* ---- GET /api/v1/products/{id} ---- */

/* The public view, in one statement sent without a thread: pipelined on PostgreSQL, inline on
 * SQLite. */
static void get_done(int rc, ms_db_result *r, void *arg)
{
    read_call *k = arg;
    if (rc == 0)
        rc = inv_product_doc(r, false, &k->base.result);
    if (rc == MS_ENOTFOUND)
        k->base.detail = "no such product";
    ms_db_result_free(r);
    inv_answer(&k->base, rc);
}

void inv_product_get(ms_http_request *req)
{
    read_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    inv_call_init(req, k, sizeof *k, 200);
    if (inv_path_uuid(req, "id", k->id, "no such product") == 0) {
        const char *params[] = {k->id};
        ms_db_pool_query(req->loop->db, req->deadline, INV_SELECT_PRODUCT, 1, params, get_done, k);
    }
}

/* ---- PUT /api/v1/products/{id}/price ---- */

typedef struct {
    inv_call base;
    char id[MS_UUID_LEN + 1];
    char price[24];
} price_call;

static int price_work(ms_db_conn *c, void *arg)
{
    price_call *k = arg;
    const char *now = k->base.now;
    int rc = ms_outbox_begin(c);
    if (rc < 0)
        return rc;
    ms_db_result *r = NULL;
    const char *p1[] = {k->id};
    rc = ms_db_exec(c, "SELECT price_cents, currency, sku FROM products WHERE id = $1", 1, p1, &r);
    if (rc == 0 && ms_db_nrows(r) == 0) {
        rc = MS_ENOTFOUND;
        k->base.detail = "no such product";
    }
    int64_t old = rc == 0 ? inv_int(r, 0, 0) : 0, price = strtoll(k->price, NULL, 10);
    /* the same price again changes nothing and records nothing */
    if (rc == 0 && old != price) {
        const char *p2[] = {k->id, k->price, now};
        rc = ms_db_exec(c, "UPDATE products SET price_cents = $2, updated_at = $3 WHERE id = $1", 3,
                        p2, NULL);
        const char *p3[] = {k->id, k->price, ms_db_get(r, 0, 1), now};
        if (rc == 0)
            rc = ms_db_exec(c,
                            "INSERT INTO price_history (product_id, price_cents, currency, "
                            "changed_at) VALUES ($1, $2, $3, $4)",
                            4, p3, NULL);
        if (rc == 0) {
            json_t *event =
                json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "product_id", k->id, "sku",
                          ms_db_get(r, 0, 2), "old_price_cents", (json_int_t)old, "price_cents",
                          (json_int_t)price, "currency", ms_db_get(r, 0, 1), "changed_at", now);
            rc = inv_outbox(c, "product", k->id, "price.changed", event, now);
        }
        k->base.kicked = rc == 0;
    }
    ms_db_result_free(r);
    if (rc == 0)
        rc = inv_load_product(c, k->id, true, &k->base.result);
    return ms_db_end(c, rc);
}

void inv_price_put(ms_http_request *req)
{
    static const ms_json_field fields[] = {{"price_cents", MS_JSON_INTEGER, true, false}};
    price_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    inv_call_init(req, k, sizeof *k, 200);
    json_t *body;
    if (inv_require_admin(req) < 0 || inv_path_uuid(req, "id", k->id, "no such product") < 0 ||
        ms_http_json_body(req, &body) < 0)
        return;
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 1, "", malformed, invalid);
    check_range(invalid, body, "price_cents", INV_MAX_PRICE);
    if (ms_http_reject_fields(req, malformed, invalid) < 0)
        return;
    snprintf(k->price, sizeof k->price, "%lld",
             (long long)json_integer_value(json_object_get(body, "price_cents")));
    ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, price_work, inv_call_done, k);
}

/* ---- GET /api/v1/products/{id}/price-history ---- */

static int history_work(ms_db_conn *c, void *arg)
{
    read_call *k = arg;
    int rc = 0;
    ms_db_result *r = NULL;
    const char *p1[] = {k->id};
    rc = ms_db_exec(c, "SELECT 1 FROM products WHERE id = $1", 1, p1, &r);
    if (rc == 0 && ms_db_nrows(r) == 0) {
        rc = MS_ENOTFOUND;
        k->base.detail = "no such product";
    }
    ms_db_result_free(r);
    r = NULL;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", k->limit + 1);
    /* newest first: seq orders changes even within one millisecond */
    const char *p2[] = {k->id, k->after ? k->after : "9223372036854775807", limit};
    if (rc == 0)
        rc = ms_db_exec(c,
                        "SELECT seq, price_cents, currency, changed_at FROM price_history WHERE "
                        "product_id = $1 AND seq < CAST($2 AS BIGINT) ORDER BY seq DESC LIMIT $3",
                        3, p2, &r);
    if (rc == 0) {
        int n = ms_db_nrows(r);
        ms_buf *out = &k->base.result;
        ms_buf_adds(out, "{\"items\":[");
        for (int i = 0; i < n && i < k->limit; i++) {
            json_t *doc =
                json_pack("{s:I, s:s, s:s}", "price_cents", (json_int_t)inv_int(r, i, 1),
                          "currency", ms_db_get(r, i, 2), "changed_at", ms_db_get(r, i, 3));
            if (i)
                ms_buf_add(out, ",", 1);
            ms_json_put_doc(out, doc);
        }
        ms_buf_adds(out, "],");
        inv_put_cursor(out, n > k->limit ? ms_db_get(r, k->limit - 1, 0) : NULL);
        ms_buf_add(out, "}", 1);
    }
    ms_db_result_free(r);
    return rc;
}

void inv_price_history(ms_http_request *req)
{
    read_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    inv_call_init(req, k, sizeof *k, 200);
    if (inv_require_admin(req) < 0 || inv_path_uuid(req, "id", k->id, "no such product") < 0 ||
        inv_page_params(req, &k->limit, &k->after) < 0)
        return;
    /* a cursor here is a positive history position */
    bool ok =
        !k->after || (strlen(k->after) <= 18 &&
                      strspn(k->after, "0123456789") == strlen(k->after) && k->after[0] != '0');
    if (!ok) {
        json_t *errors = json_array();
        ms_field_error(errors, "cursor", "is not a cursor this service gave out");
        ms_problem_fields_from_error(req, MS_EMALFORMED, "the paging parameters are malformed",
                                     errors);
        return;
    }
    ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, history_work, inv_call_done, k);
}
