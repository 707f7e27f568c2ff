/*
 * checkout.c — POST /api/v1/orders: a customer's checkout becomes an order, and its saga runs.
 *
 * The request names products, quantities, an address and a card; nothing else. Prepared in
 * parallel through the service client: the user (the local user directory first, the user
 * service only for a user it does not know yet) and inventory's quote (prices and currency);
 * shipping is this service's rule. Nothing is written until all of it holds: a failure here
 * answers 422 (unknown product or user) or 503/504. Then OrderCreated (pending) is appended
 * and the saga (saga.c) reserves, charges and confirms, or rejects and gives back.
 *
 * The card number stays in this request's memory and in the saga's, wiped when they end; the
 * events keep its last four digits. A keyed POST (Idempotency-Key) names its order: a retry
 * finds the order and answers what it is now (running its saga on if nobody does), a reuse
 * with another body is a 409.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "eventstore/relay.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/sha256.h"
#include "runtime/http/http_json.h"
#include "runtime/http/identity.h"
#include "runtime/http/problem.h"
#include "runtime/json/json.h"
#include "runtime/json/json_arena.h"
#include "services/inventory/inventory_client.h"
#include "services/order/order_internal.h"
#include "runtime/core/banned.h"

typedef struct checkout {
    ms_http_request *req;
    ms_identity who;
    char user_id[MS_UUID_LEN + 1]; /* the caller's, lower case as ids are stored */
    char id[MS_UUID_LEN + 1], stream[ORDER_STREAM_LEN + 1];
    json_t *body; /* the request's (its arena owns it) */
    const char *card;
    bool keyed, user_known;
    char request_sha[65], event_id[MS_UUID_LEN + 1], metadata[160];
    char *first_metadata; /* keyed: the stored OrderCreated's metadata (heap) */
    int64_t found_top;    /* keyed: the newest position of the order found (X-Position) */
    order_state state;
    order_decision decision;
    ms_es_event events[ORDER_MAX_DECIDED];
    ms_es_outbox_row outbox[ORDER_MAX_DECIDED];
    ms_es_append_req append;
    char *quote_body, *user_path;
    /* the steps' INTERNAL spans, children of the request's (NULL: not recorded) */
    ms_span *quote_span, *user_span, *save_span;
} checkout;

/* Ends a step's span: an error when `why` is not NULL. */
static void step_end(ms_span **s, const char *why)
{
    if (why)
        ms_span_error(*s, why);
    ms_span_end(*s);
    *s = NULL;
}

/* Registered after the body, so it runs before the body goes (cleanups run newest first). */
static void wipe_card(void *arg)
{
    checkout *k = arg;
    if (k->card) /* the body's copy (jansson's string, owned by the request) */
        explicit_bzero((char *)k->card, strlen(k->card));
}

static void checkout_release(void *arg)
{
    checkout *k = arg;
    order_state_release(&k->state);
    order_decision_release(&k->decision);
    free(k->first_metadata);
    free(k->quote_body);
    /* a step's span outliving its request is ended here, not leaked */
    ms_span_end(k->quote_span);
    ms_span_end(k->user_span);
    ms_span_end(k->save_span);
}

static void fail(checkout *k, int rc, const char *detail)
{
    if (ms_http_status_for(rc) >= 500)
        ms_log(MS_LOG_WARN, "checkout failed", "error", ms_strerror(rc), "detail",
               detail ? detail : "", NULL);
    ms_problem_from_error(k->req, rc, detail);
}

/* Answers an order found by its key: what it is now, its saga run on here if nobody does. */
static void answer_found(checkout *k)
{
    ms_http_request *req = k->req;
    bool open = order_saga_next(&k->state, true) != ORDER_SAGA_DONE;
    if (open && order_saga_claim(k->id) == 0)
        order_saga_start(order_loop_of(req), req, 201, &k->state, k->card, k->found_top);
    else
        order_answer(req, &k->state, k->state.status == ORDER_STATUS_PENDING ? 202 : 201,
                     k->found_top);
}

static int found_work(ms_db_conn *c, void *arg)
{
    checkout *k = arg;
    order_state_release(&k->state);
    free(k->first_metadata);
    k->first_metadata = NULL;
    k->found_top = 0;
    return order_load(c, k->stream, &k->state, &k->first_metadata, &k->found_top);
}

static void prepare(checkout *k);

/* A keyed POST: the order its key names, if it exists, must come from the same body. */
static void found(int rc, void *arg)
{
    checkout *k = arg;
    if (rc == MS_ENOTFOUND) {
        prepare(k);
        return;
    }
    if (rc < 0) {
        fail(k, rc, NULL);
        return;
    }
    json_t *meta = k->first_metadata ? json_loads(k->first_metadata, 0, NULL) : NULL;
    const char *sha = json_string_value(json_object_get(meta, "request_sha256"));
    bool same = sha && strcmp(sha, k->request_sha) == 0;
    json_decref(meta);
    if (same)
        answer_found(k);
    else
        ms_problem_from_error(k->req, MS_ECONFLICT,
                              "this Idempotency-Key was used with a different request body");
}

static void find_by_key(checkout *k)
{
    ms_http_request *req = k->req;
    ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, found_work, found, k);
}

/* ---- the order is written: OrderCreated, then the saga ---- */

static void created(int rc, ms_es_append_req *a, void *arg)
{
    checkout *k = arg;
    step_end(&k->save_span, rc < 0 && rc != MS_ECONFLICT ? ms_strerror(rc) : NULL);
    if ((rc == MS_ECONFLICT || (rc == 0 && a->is_replay)) && k->keyed) {
        find_by_key(k); /* the same key, concurrently or before: answer that order */
        return;
    }
    if (rc < 0) {
        fail(k, rc, NULL);
        return;
    }
    if (order_apply_decision(&k->state, &k->decision) < 0)
        MS_BUG("OrderCreated does not apply to no order");
    ms_relay_kick(order_proc.relay);
    order_metrics_created(k->state.total_cents);
    if (order_saga_claim(k->id) < 0) /* a retry with its key found it first and runs it */
        order_answer(k->req, &k->state, 202, a->last_position);
    else
        order_saga_start(order_loop_of(k->req), k->req, 201, &k->state, k->card, a->last_position);
}

/* CreateOrder from the checkout and the quote's prices; appended as a new stream. */
static void create(checkout *k, json_t *quote)
{
    ms_http_request *req = k->req;
    json_t *qitems = json_object_get(quote, "items");
    json_t *items = json_object_get(k->body, "items");
    const char *currency = json_string_value(json_object_get(quote, "currency"));
    if (json_array_size(qitems) != json_array_size(items) || !currency) {
        fail(k, MS_ECONN, "the inventory service answered a quote that does not fit the order");
        return;
    }
    json_t *lines = json_array();
    int64_t subtotal = 0;
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *item = json_array_get(items, i), *q = json_array_get(qitems, i);
        int64_t price = json_integer_value(json_object_get(q, "unit_price_cents"));
        int64_t quantity = json_integer_value(json_object_get(item, "quantity"));
        json_array_append_new(lines, json_pack("{s:O, s:I, s:I}", "product_id",
                                               json_object_get(item, "product_id"), "quantity",
                                               (json_int_t)quantity, "unit_price_cents",
                                               (json_int_t)price));
        if (price > 0 && quantity > 0 && subtotal <= ORDER_MAX_TOTAL_CENTS)
            subtotal += price * quantity; /* bounded by the caps: no overflow */
    }
    size_t ncard = strlen(k->card);
    char last4[5];
    memcpy(last4, k->card + ncard - 4, 5);
    json_t *cmd = ms_json_own(
        &req->arena, json_pack("{s:s, s:s, s:o, s:s, s:I, s:s, s:O}", "order_id", k->id, "user_id",
                               k->user_id, "items", lines, "currency", currency, "shipping_cents",
                               (json_int_t)order_shipping_cents(subtotal), "card_last4", last4,
                               "shipping_address",
                               json_object_get(k->body, "shipping_address")
                                   ? json_object_get(k->body, "shipping_address")
                                   : json_null()));
    char now[MS_TIME_LEN + 1];
    ms_time_now(now);
    json_t *malformed = json_array(), *invalid = json_array();
    order_state none;
    order_state_init(&none);
    int rc = order_decide(&none, ORDER_CMD_CREATE, cmd, now, malformed, invalid, &k->decision);
    if (rc == MS_EINVAL) { /* prices that break a rule: a total over the cap */
        rc = ms_http_reject_fields(req, malformed, invalid);
        if (rc == 0)
            ms_problem_from_error(req, MS_EVALIDATION, k->decision.reason);
        return;
    }
    json_decref(malformed);
    json_decref(invalid);
    if (rc < 0) {
        fail(k, rc, k->decision.reason);
        return;
    }
    ms_log(MS_LOG_INFO, "order accepted", "order_id", k->id, "user_id", k->user_id, NULL);
    order_fill_append(k->stream, k->id, &k->decision, k->keyed ? k->event_id : NULL,
                      k->keyed ? k->metadata : NULL, k->events, k->outbox, 0, &k->append);
    ms_trace_ctx ctx;
    k->save_span = ms_span_start("save_order", MS_SPAN_INTERNAL, &req->trace, &ctx);
    ms_span_set_str(k->save_span, "order.id", k->id);
    ms_es_append(order_loop_of(req)->port, &k->append, created, k);
}

/* ---- prepare: user and quote in parallel ---- */

/* A call's failure as an answer: 503 (unreachable, 5xx) or 504 (deadline). */
static int upstream_error(const ms_http_client_result *r)
{
    return r->err == MS_ETIMEDOUT ? MS_ETIMEDOUT : MS_ECONN;
}

static void prepared(const ms_http_client_result *results, int n, void *arg)
{
    checkout *k = arg;
    ms_http_request *req = k->req;
    if (!results || n < 1)
        MS_BUG("a fan-out answered no calls");
    const ms_http_client_result *quote = &results[0], *user = n > 1 ? &results[1] : NULL;
    step_end(&k->quote_span, quote->err < 0 || quote->resp.status >= 500 ? "no quote" : NULL);
    step_end(&k->user_span, user && (user->err < 0 || user->resp.status >= 500)
                                ? "the user could not be confirmed"
                                : NULL);
    if (user && user->err == 0 && user->resp.status == 404) {
        ms_problem_reason(req, MS_EVALIDATION, "user_invalid",
                          "the user placing this order does not exist", NULL);
        return;
    }
    if (user && (user->err < 0 || user->resp.status != 200)) {
        fail(k, upstream_error(user), "the user service could not confirm the user");
        return;
    }
    if (quote->err < 0 || (quote->resp.status != 200 && quote->resp.status != 422)) {
        fail(k, upstream_error(quote), "the inventory service could not quote the items");
        return;
    }
    json_t *doc =
        ms_json_own(&req->arena, json_loadb(quote->resp.body, quote->resp.body_len, 0, NULL));
    if (quote->resp.status == 422) {
        /* unknown products, mixed currencies: its errors name our request's items[i] */
        json_t *errors = json_object_get(doc, "errors");
        ms_problem_fields_from_error(req, MS_EVALIDATION, "some items cannot be ordered",
                                     json_is_array(errors) ? json_incref(errors) : json_array());
        return;
    }
    create(k, doc);
}

static void prepare_calls(checkout *k)
{
    ms_http_request *req = k->req;
    json_t *items = json_array();
    json_t *lines = json_object_get(k->body, "items");
    for (size_t i = 0; i < json_array_size(lines); i++) {
        json_t *l = json_array_get(lines, i);
        json_array_append_new(items, json_pack("{s:O, s:O}", "product_id",
                                               json_object_get(l, "product_id"), "quantity",
                                               json_object_get(l, "quantity")));
    }
    json_t *qbody = json_pack("{s:o}", "items", items);
    k->quote_body = json_dumps(qbody, JSON_COMPACT);
    json_decref(qbody);
    /* each call is the child of its step's span */
    ms_trace_ctx quote_ctx, user_ctx;
    char quote_tp[MS_TRACEPARENT_LEN + 1], user_tp[MS_TRACEPARENT_LEN + 1];
    k->quote_span = ms_span_start("check_inventory", MS_SPAN_INTERNAL, &req->trace, &quote_ctx);
    ms_traceparent_format(&quote_ctx, quote_tp);
    ms_http_client_req calls[2] = {{
        .upstream = "inventory",
        .method = HTTP_POST,
        .path = INVENTORY_QUOTES_PATH,
        .content_type = "application/json",
        .body = k->quote_body,
        .body_len = strlen(k->quote_body),
        .deadline = req->deadline,
        .idempotent = true, /* a quote reads only */
        .traceparent = quote_tp,
    }};
    int n = 1;
    ms_http_header who[3];
    if (!k->user_known && order_proc.user_up.n > 0) {
        k->user_path = ms_arena_printf(&req->arena, "/api/v1/users/%s", k->user_id);
        /* the customer's own read of itself, as the gateway would have sent it */
        int nwho = ms_identity_headers(k->user_id, "customer", "GET", k->user_path,
                                       ms_arena_alloc(&req->arena, MS_IDENTITY_SIG_MAX), who);
        if (nwho < 0) {
            step_end(&k->quote_span, "not called");
            fail(k, MS_EINTERNAL, "the caller's identity could not be signed");
            return;
        }
        k->user_span = ms_span_start("validate_user", MS_SPAN_INTERNAL, &req->trace, &user_ctx);
        ms_traceparent_format(&user_ctx, user_tp);
        calls[1] = (ms_http_client_req){
            .upstream = "user",
            .method = HTTP_GET,
            .path = k->user_path,
            .headers = who,
            .nheaders = nwho,
            .deadline = req->deadline,
            .traceparent = user_tp,
        };
        n = 2;
    }
    int rc = ms_http_client_all(order_loop_of(req)->client, calls, n, prepared, k);
    if (rc < 0) {
        step_end(&k->quote_span, ms_strerror(rc));
        step_end(&k->user_span, ms_strerror(rc));
        fail(k, MS_ECONN, "the checkout's services cannot be called");
    }
}

static int directory_work(ms_db_conn *c, void *arg)
{
    checkout *k = arg;
    order_directory_user u;
    int rc = order_directory_lookup(c, k->user_id, &u);
    k->user_known = rc == 0;
    return rc == MS_ENOTFOUND ? 0 : rc;
}

static void directory_done(int rc, void *arg)
{
    checkout *k = arg;
    if (rc < 0)
        k->user_known = false; /* the user service will say */
    prepare_calls(k);
}

static void prepare(checkout *k)
{
    ms_http_request *req = k->req;
    if (order_proc.user_up.n > 0)
        ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, directory_work, directory_done, k);
    else
        prepare_calls(k);
}

/* ---- the request ---- */

static bool valid_key(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++)
        if (key[i] < 0x21 || key[i] > 0x7e)
            return false;
    return true;
}

/* A keyed POST: the request's fingerprint, and the order id and first event id the key names
 * (a retry with the same key names the same order and the same first event). */
static void name_by_key(checkout *k, const char *key)
{
    ms_arena *a = &k->req->arena;
    /* the canonical JSON, so spacing and key order don't matter to Idempotency-Key; the payment
     * is left out of it (a stored hash of a card number could be brute-forced) */
    json_t *fingerprint = ms_json_own(a, json_copy(k->body)); /* shallow: no card in it */
    json_object_del(fingerprint, "payment");
    char *canonical = ms_arena_own(a, json_dumps(fingerprint, JSON_COMPACT | JSON_SORT_KEYS));
    ms_sha256_hex(canonical, strlen(canonical), k->request_sha);
    snprintf(k->metadata, sizeof k->metadata, "{\"request_sha256\":\"%s\"}", k->request_sha);
    char *name = ms_arena_printf(a, "order/%s/%s", k->user_id, key);
    ms_uuid_from_name(name, strlen(name), k->id);
    name = ms_arena_printf(a, "order-created/%s/%s", k->user_id, key);
    ms_uuid_from_name(name, strlen(name), k->event_id);
    k->keyed = true;
}

void order_create(ms_http_request *req)
{
    checkout *k = ms_arena_alloc(&req->arena, sizeof *k);
    memset(k, 0, sizeof *k);
    k->req = req;
    order_state_init(&k->state);
    order_decision_init(&k->decision);
    ms_arena_on_reset(&req->arena, checkout_release, k);
    const char *key = ms_http_header_get(req, "Idempotency-Key");
    int rc = ms_identity_get(req, &k->who);
    if (rc == 0 && key && !valid_key(key)) {
        json_t *errors = json_array();
        ms_field_error(errors, "Idempotency-Key", "must be 1 to 255 visible ASCII characters");
        ms_problem_fields_from_error(req, MS_EMALFORMED, "the Idempotency-Key header is malformed",
                                     errors);
        return;
    }
    if (rc == 0)
        rc = ms_http_json_body(req, &k->body);
    if (rc < 0)
        return;
    json_t *malformed = json_array(), *invalid = json_array();
    order_validate(ORDER_CMD_CHECKOUT, k->body, malformed, invalid);
    if (ms_http_reject_fields(req, malformed, invalid) < 0)
        return;
    if (order_proc.inventory_up.n == 0 || order_proc.payment_up.n == 0) {
        fail(k, MS_ECONN,
             "checkout needs the inventory and payment services "
             "(MICROSHOP_INVENTORY_URL, MICROSHOP_PAYMENT_URL)");
        return;
    }
    k->card =
        json_string_value(json_object_get(json_object_get(k->body, "payment"), "card_number"));
    ms_arena_on_reset(&req->arena, wipe_card, k);
    for (int i = 0; i < MS_UUID_LEN; i++) {
        char c = k->who.user_id[i];
        k->user_id[i] = (char)(c >= 'A' && c <= 'F' ? c + 32 : c);
    }
    if (key)
        name_by_key(k, key);
    else
        ms_uuid_new(k->id);
    snprintf(k->stream, sizeof k->stream, "%s%s", ORDER_STREAM_PREFIX, k->id);
    if (k->keyed)
        find_by_key(k);
    else
        prepare(k);
}
