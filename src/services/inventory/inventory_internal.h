/*
 * inventory_internal.h — shared by the inventory service's files only.
 * Handlers run on loop threads; *_work functions run on a pooled connection's worker thread
 * and touch only their own call context, never the request's answer. Every call context
 * lives in the request's arena and everything it holds is released with it.
 */
#ifndef MS_INVENTORY_INTERNAL_H
#define MS_INVENTORY_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "runtime/core/buf.h"
#include "runtime/core/id.h"
#include "runtime/db/db.h"
#include "runtime/http/http.h"
#include "runtime/http/server.h"

enum {
    INV_DEFAULT_LIMIT = 10,
    INV_MAX_LIMIT = 100,
    INV_MAX_ITEMS = 100,
    INV_MAX_QUANTITY = 10000,
    INV_MAX_PRICE = 100000000,  /* cents, as the order service's unit prices */
    INV_MAX_STOCK = 1000000000, /* units on hand, and the largest threshold */
    INV_DEFAULT_LOW = 5,        /* stock.low threshold when a product names none */
};

/* The head of every call's context (a struct that starts with it). The work fills `result`
 * (the answer's JSON) or, on failure, may set `errors` (field errors, consumed by the answer),
 * `reason` (the problem's "reason" member) and `detail` (static strings). */
typedef struct inv_call {
    ms_http_request *req;
    char now[MS_TIME_LEN + 1]; /* when the call was made, for timestamps */
    ms_buf result;
    json_t *errors;
    const char *reason, *detail;
    int status;  /* the success status */
    bool kicked; /* the work committed outbox rows: publish them */
} inv_call;

/* One requested line of a quote or a reservation. */
typedef struct inv_line {
    char product_id[MS_UUID_LEN + 1]; /* lower case */
    int64_t quantity;
    int index; /* its position in the request, for field names */
} inv_line;

/* handlers: products.c */
void inv_product_create(ms_http_request *req);
void inv_product_list(ms_http_request *req);
void inv_product_get(ms_http_request *req);
void inv_price_put(ms_http_request *req);
void inv_price_history(ms_http_request *req);
/* stock.c */
void inv_stock_put(ms_http_request *req);
/* quotes.c */
void inv_quote(ms_http_request *req);
/* reservations.c */
void inv_reserve(ms_http_request *req);
void inv_release(ms_http_request *req);
void inv_commit(ms_http_request *req);
void inv_reservation_get(ms_http_request *req);

/* common.c */
/* Zeroes `call` (`size` bytes of a struct starting with inv_call, in the request's arena),
 * sets req, now and the success status, and ties its result and errors to the request. */
void inv_call_init(ms_http_request *req, void *call, size_t size, int status);
/* Answers a finished call: its result, or the error mapped at the edge (5xx logged). */
void inv_answer(inv_call *k, int rc);
/* A done callback for ms_db_pool_run that answers through inv_answer. */
void inv_call_done(int rc, void *arg);
/* For admin routes: 0 for an admin caller, else answers 401/403 and returns the code. */
int inv_require_admin(ms_http_request *req);
/* The path parameter `name` as a lower-case UUID in `out`; when it is not one, answers 404
 * with `what` ("no such product") and returns MS_ENOTFOUND. */
int inv_path_uuid(ms_http_request *req, const char *name, char out[MS_UUID_LEN + 1],
                  const char *what);
/* Reads `limit` (default 10, 1..100) and the raw (decoded) `cursor` into the arena; answers
 * 400 naming the parameter and returns MS_EMALFORMED when either is bad. `*cursor` is NULL
 * without one. */
int inv_page_params(ms_http_request *req, int *limit, const char **cursor);
/* Appends `"next_cursor":` with `raw` base64url-encoded, or null when `raw` is NULL. */
void inv_put_cursor(ms_buf *out, const char *raw);
/* Reads `items` of a quote or reservation body into `lines` (in the arena, *n of them),
 * adding field errors (items[i].product_id, items[i].quantity) to `malformed`/`invalid`. */
void inv_read_lines(ms_http_request *req, json_t *items, inv_line **lines, int *n,
                    json_t *malformed, json_t *invalid);
/* Sorts lines by product id: rows are always locked in that order (no deadlocks). */
void inv_sort_lines(inv_line *lines, int n);
/* Writes one outbox row in the caller's transaction; consumes `payload`. */
int inv_outbox(ms_db_conn *c, const char *aggregate_type, const char *aggregate_id,
               const char *type, json_t *payload, const char *now);
/* Writes `stock.low` when a product's available stock went from `before` to `after` across
 * its threshold (before >= threshold > after). */
int inv_check_low(ms_db_conn *c, const char *product_id, int64_t before, int64_t after,
                  int64_t threshold, const char *now);
/* Appends the admin view of one product (the public one plus on_hand, reserved,
 * low_stock_threshold) or the public view to `out`; MS_ENOTFOUND when there is none. */
int inv_load_product(ms_db_conn *c, const char *id, bool admin, ms_buf *out);
/* The same from a result of INV_SELECT_PRODUCT (id as $1) run elsewhere, e.g. by
 * ms_db_pool_query. */
extern const char INV_SELECT_PRODUCT[];
int inv_product_doc(const ms_db_result *r, bool admin, ms_buf *out);
/* An integer column of a result row. */
int64_t inv_int(const ms_db_result *r, int row, int col);

/* service.c: the outbox relay (kick it after a commit that wrote outbox rows) */
struct ms_relay;
extern struct ms_relay *inventory_relay;

#endif
