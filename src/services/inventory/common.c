/* What every inventory handler shares: call contexts, answers, paging, lines, the outbox. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/base64.h"
#include "eventstore/outbox.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/identity.h"
#include "runtime/http/problem.h"
#include "runtime/http/router.h"
#include "runtime/json/json.h"
#include "eventstore/relay.h"
#include "services/inventory/inventory_internal.h"
#include "runtime/core/banned.h"

static void release_call(void *arg)
{
    inv_call *k = arg;
    ms_buf_release(&k->result);
    json_decref(k->errors);
    k->errors = NULL;
}

void inv_call_init(ms_http_request *req, void *call, size_t size, int status)
{
    inv_call *k = call;
    memset(k, 0, size);
    k->req = req;
    k->status = status;
    ms_time_now(k->now);
    ms_arena_on_reset(&req->arena, release_call, k);
}

void inv_answer(inv_call *k, int rc)
{
    ms_http_request *req = k->req;
    json_t *errors = k->errors;
    k->errors = NULL; /* the problem consumes it */
    if (rc == 0) {
        if (k->kicked)
            ms_relay_kick(inventory_relay); /* the outbox rows are committed: publish them */
        ms_http_respond(req, k->status, "application/json", k->result.p, k->result.n);
        return;
    }
    if (ms_http_status_for(rc) >= 500)
        ms_log(MS_LOG_ERROR, "inventory call failed", "endpoint",
               req->route ? req->route->template : "", "error", ms_strerror(rc), NULL);
    if (k->reason)
        ms_problem_reason(req, rc, k->reason, k->detail, errors);
    else
        ms_problem_fields_from_error(req, rc, k->detail, errors);
}

void inv_call_done(int rc, void *arg)
{
    inv_answer(arg, rc);
}

int inv_require_admin(ms_http_request *req)
{
    ms_identity who;
    int rc = ms_identity_get(req, &who);
    if (rc == 0 && !who.is_admin) {
        rc = MS_EFORBIDDEN;
        ms_problem_from_error(req, rc, "only an admin may do this");
    }
    return rc;
}

int inv_path_uuid(ms_http_request *req, const char *name, char out[MS_UUID_LEN + 1],
                  const char *what)
{
    const char *v = ms_http_param(req, name);
    if (!v || !ms_uuid_valid(v)) {
        ms_problem_from_error(req, MS_ENOTFOUND, what);
        return MS_ENOTFOUND;
    }
    for (int i = 0; i <= MS_UUID_LEN; i++)
        out[i] = (char)(v[i] >= 'A' && v[i] <= 'F' ? v[i] + 32 : v[i]);
    return 0;
}

int inv_page_params(ms_http_request *req, int *limit, const char **cursor)
{
    const char *l = ms_http_query_param(req, "limit");
    const char *c = ms_http_query_param(req, "cursor");
    json_t *errors = json_array();
    *limit = INV_DEFAULT_LIMIT;
    *cursor = NULL;
    if (l) {
        char *end;
        long n = strtol(l, &end, 10);
        if (end == l || *end || n < 1 || n > INV_MAX_LIMIT)
            ms_field_error(errors, "limit", "must be a whole number from 1 to %d", INV_MAX_LIMIT);
        else
            *limit = (int)n;
    }
    if (c) {
        ms_buf raw;
        ms_buf_init(&raw, 0);
        /* a cursor is never empty and holds no NUL: anything else was not given out here */
        if (*c && ms_base64url_decode(&raw, c, strlen(c)) == 0 && raw.n > 0 &&
            !memchr(raw.p, '\0', raw.n))
            *cursor = ms_arena_strndup(&req->arena, raw.p, raw.n);
        else
            ms_field_error(errors, "cursor", "is not a cursor this service gave out");
        ms_buf_release(&raw);
    }
    if (json_array_size(errors)) {
        ms_problem_fields_from_error(req, MS_EMALFORMED, "the paging parameters are malformed",
                                     errors);
        return MS_EMALFORMED;
    }
    json_decref(errors);
    return 0;
}

void inv_put_cursor(ms_buf *out, const char *raw)
{
    ms_buf_adds(out, "\"next_cursor\":");
    if (!raw) {
        ms_buf_adds(out, "null");
        return;
    }
    ms_buf_add(out, "\"", 1);
    ms_base64url_encode(out, raw, strlen(raw));
    ms_buf_add(out, "\"", 1);
}

void inv_read_lines(ms_http_request *req, json_t *items, inv_line **lines, int *n,
                    json_t *malformed, json_t *invalid)
{
    static const ms_json_field fields[] = {
        {"product_id", MS_JSON_STRING, true, false},
        {"quantity", MS_JSON_INTEGER, true, false},
    };
    *lines = NULL;
    *n = 0;
    size_t count = json_array_size(items);
    if (count == 0 || count > INV_MAX_ITEMS) {
        ms_field_error(invalid, "items", "must hold 1 to %d lines", INV_MAX_ITEMS);
        return;
    }
    inv_line *out = ms_arena_alloc(&req->arena, count * sizeof *out);
    int kept = 0;
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_array_get(items, i);
        char prefix[32];
        snprintf(prefix, sizeof prefix, "items[%zu]", i);
        if (!json_is_object(item)) {
            ms_field_error(malformed, prefix, "must be an object");
            continue;
        }
        char dotted[40];
        snprintf(dotted, sizeof dotted, "%s.", prefix);
        if (!ms_json_check(item, fields, 2, dotted, malformed, invalid))
            continue;
        const char *pid = json_string_value(json_object_get(item, "product_id"));
        json_t *q = json_object_get(item, "quantity");
        bool ok = pid && q;
        if (pid && !ms_uuid_valid(pid)) {
            char field[48];
            snprintf(field, sizeof field, "%s.product_id", prefix);
            ms_field_error(invalid, field, "must be a UUID");
            ok = false;
        }
        if (q && (json_integer_value(q) < 1 || json_integer_value(q) > INV_MAX_QUANTITY)) {
            char field[48];
            snprintf(field, sizeof field, "%s.quantity", prefix);
            ms_field_error(invalid, field, "must be from 1 to %d", INV_MAX_QUANTITY);
            ok = false;
        }
        if (!ok)
            continue;
        inv_line *l = &out[kept];
        for (int j = 0; j <= MS_UUID_LEN; j++)
            l->product_id[j] = (char)(pid[j] >= 'A' && pid[j] <= 'F' ? pid[j] + 32 : pid[j]);
        for (int j = 0; j < kept; j++) {
            if (!strcmp(out[j].product_id, l->product_id)) {
                char field[48];
                snprintf(field, sizeof field, "%s.product_id", prefix);
                ms_field_error(invalid, field, "repeats items[%d]", out[j].index);
                ok = false;
                break;
            }
        }
        if (!ok)
            continue;
        l->quantity = json_integer_value(q);
        l->index = (int)i;
        kept++;
    }
    *lines = out;
    *n = kept;
}

static int by_product(const void *a, const void *b)
{
    return strcmp(((const inv_line *)a)->product_id, ((const inv_line *)b)->product_id);
}

void inv_sort_lines(inv_line *lines, int n)
{
    if (n > 1)
        qsort(lines, (size_t)n, sizeof *lines, by_product);
}

int inv_outbox(ms_db_conn *c, const char *aggregate_type, const char *aggregate_id,
               const char *type, json_t *payload, const char *now)
{
    int rc = ms_outbox_write(c, aggregate_type, aggregate_id, type, payload, now);
    json_decref(payload);
    return rc;
}

int64_t inv_int(const ms_db_result *r, int row, int col)
{
    const char *v = ms_db_get(r, row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

int inv_check_low(ms_db_conn *c, const char *product_id, int64_t before, int64_t after,
                  int64_t threshold, const char *now)
{
    if (!(before >= threshold && after < threshold))
        return 0;
    ms_db_result *r = NULL;
    const char *params[] = {product_id};
    int rc = ms_db_exec(c, "SELECT sku FROM products WHERE id = $1", 1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    if (rc == 0) {
        json_t *event =
            json_pack("{s:s, s:s, s:I, s:I}", "product_id", product_id, "sku", ms_db_get(r, 0, 0),
                      "available", (json_int_t)after, "threshold", (json_int_t)threshold);
        rc = inv_outbox(c, "product", product_id, "stock.low", event, now);
    }
    ms_db_result_free(r);
    return rc;
}

const char INV_SELECT_PRODUCT[] =
    "SELECT p.id, p.sku, p.name, p.price_cents, p.currency, s.on_hand, s.reserved, "
    "s.low_threshold, p.created_at, p.updated_at FROM products p "
    "JOIN stock_levels s ON s.product_id = p.id WHERE p.id = $1";

int inv_load_product(ms_db_conn *c, const char *id, bool admin, ms_buf *out)
{
    ms_db_result *r = NULL;
    const char *params[] = {id};
    int rc = ms_db_exec(c, INV_SELECT_PRODUCT, 1, params, &r);
    if (rc == 0)
        rc = inv_product_doc(r, admin, out);
    ms_db_result_free(r);
    return rc;
}

int inv_product_doc(const ms_db_result *r, bool admin, ms_buf *out)
{
    int rc = ms_db_nrows(r) == 0 ? MS_ENOTFOUND : 0;
    if (rc == 0) {
        int64_t on_hand = inv_int(r, 0, 5), reserved = inv_int(r, 0, 6);
        json_t *doc = json_pack("{s:s, s:s, s:s, s:I, s:s, s:I}", "id", ms_db_get(r, 0, 0), "sku",
                                ms_db_get(r, 0, 1), "name", ms_db_get(r, 0, 2), "price_cents",
                                (json_int_t)inv_int(r, 0, 3), "currency", ms_db_get(r, 0, 4),
                                "available", (json_int_t)(on_hand - reserved));
        if (admin) {
            json_object_set_new(doc, "on_hand", json_integer(on_hand));
            json_object_set_new(doc, "reserved", json_integer(reserved));
            json_object_set_new(doc, "low_stock_threshold", json_integer(inv_int(r, 0, 7)));
            json_object_set_new(doc, "created_at", json_string(ms_db_get(r, 0, 8)));
            json_object_set_new(doc, "updated_at", json_string(ms_db_get(r, 0, 9)));
        }
        ms_json_put_doc(out, doc);
    }
    return rc;
}
