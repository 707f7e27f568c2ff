/*
 * payments.c — authorize and capture (internal), and the customers' reads of their payments.
 *
 * A charge claims its order first: the payment row is inserted with the UNIQUE order_id in
 * the transaction that then calls the provider and writes the outcome, its transactions row
 * and its outbox event. A concurrent charge for the same order waits on that row (SQLite:
 * the write lock; PostgreSQL: the unique index) and then finds it: the provider is called
 * once per order, whoever asks how often. A decline is recorded like a capture and answered
 * 402. An order whose payment was voided (refunds.c: a refund that found no payment leaves a
 * tombstone) is never charged: the claim finds the tombstone and the answer is 409 "voided".
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/relay.h"
#include "eventstore/outbox.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/http_json.h"
#include "runtime/http/identity.h"
#include "runtime/http/problem.h"
#include "runtime/http/server.h"
#include "runtime/json/json.h"
#include "services/common/rules.h"
#include "services/payment/payment_internal.h"
#include "runtime/core/banned.h"

/* ten billion in major units: far above any order, far below int64 overflow in sums */
static const int64_t AMOUNT_MAX = 1000000000000LL;

static void release_result(void *buf)
{
    ms_buf_release(buf);
}

void payment_call_init(ms_http_request *req, void *call, size_t size)
{
    payment_call *k = call;
    memset(k, 0, size);
    k->req = req;
    ms_time_now(k->now);
    ms_arena_on_reset(&req->arena, release_result, &k->result);
}

void payment_fail(payment_call *k, int rc, const char *not_found)
{
    ms_http_request *req = k->req;
    if (ms_http_status_for(rc) >= 500)
        ms_log(MS_LOG_ERROR, "payment call failed", "endpoint",
               req->route ? req->route->template : "", "error", ms_strerror(rc), NULL);
    ms_problem_from_error(req, rc, rc == MS_ENOTFOUND ? not_found : NULL);
}

bool payment_uuid_copy(const char *s, char out[MS_UUID_LEN + 1])
{
    if (!s || !ms_uuid_valid(s))
        return false;
    for (int i = 0; i <= MS_UUID_LEN; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    return true;
}

/* ---- reading ---- */

static const char SELECT_PAYMENT[] =
    "SELECT id, order_id, user_id, amount_cents, currency, status, card_last4, created_at"
    " FROM payments WHERE ";

static void copy_field(char *dst, size_t n, const char *src)
{
    size_t len = src ? strlen(src) : 0;
    if (len >= n)
        MS_BUG("a stored payment field is longer than its column allows");
    memcpy(dst, src ? src : "", len + 1);
}

/* The answer's JSON for the payment in row 0 of `r` and its refunds in `refunds`. */
static void put_payment(ms_buf *out, const ms_db_result *r, const ms_db_result *refunds)
{
    json_t *list = json_array();
    for (int i = 0; i < ms_db_nrows(refunds); i++)
        json_array_append_new(list,
                              json_pack("{s:I, s:s}", "amount_cents",
                                        (json_int_t)strtoll(ms_db_get(refunds, i, 0), NULL, 10),
                                        "created_at", ms_db_get(refunds, i, 1)));
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:o}", "id", ms_db_get(r, 0, 0),
                  "order_id", ms_db_get(r, 0, 1), "user_id", ms_db_get(r, 0, 2), "amount_cents",
                  (json_int_t)strtoll(ms_db_get(r, 0, 3), NULL, 10), "currency", ms_db_get(r, 0, 4),
                  "status", ms_db_get(r, 0, 5), "card_last4", ms_db_get(r, 0, 6), "created_at",
                  ms_db_get(r, 0, 7), "refunds", list);
    if (!doc)
        MS_BUG("a stored payment does not make a JSON document");
    ms_json_put_doc(out, doc);
}

int payment_load(ms_db_conn *c, const char *column, const char *value, payment_call *k)
{
    ms_db_result *r = NULL, *refunds = NULL;
    char sql[sizeof SELECT_PAYMENT + 16];
    if (strcmp(column, "id") != 0 && strcmp(column, "order_id") != 0)
        MS_BUG("payment_load: a column that is no key");
    snprintf(sql, sizeof sql, "%s%s = $1", SELECT_PAYMENT, column);
    const char *params[] = {value};
    int rc = ms_db_exec(c, sql, 1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    if (rc == 0) {
        const char *id[] = {ms_db_get(r, 0, 0)};
        rc = ms_db_exec(c,
                        "SELECT amount_cents, created_at FROM refunds WHERE payment_id = $1"
                        " ORDER BY created_at, id",
                        1, id, &refunds);
    }
    if (rc == 0) {
        payment_row *row = &k->row;
        copy_field(row->id, sizeof row->id, ms_db_get(r, 0, 0));
        copy_field(row->order_id, sizeof row->order_id, ms_db_get(r, 0, 1));
        copy_field(row->user_id, sizeof row->user_id, ms_db_get(r, 0, 2));
        row->amount_cents = strtoll(ms_db_get(r, 0, 3), NULL, 10);
        copy_field(row->currency, sizeof row->currency, ms_db_get(r, 0, 4));
        copy_field(row->status, sizeof row->status, ms_db_get(r, 0, 5));
        copy_field(row->card_last4, sizeof row->card_last4, ms_db_get(r, 0, 6));
        k->result.n = 0;
        put_payment(&k->result, r, refunds);
    }
    ms_db_result_free(refunds);
    ms_db_result_free(r);
    return rc;
}

/* ---- writing ---- */

int payment_outbox(ms_db_conn *c, const payment_row *row, const char *type, json_t *payload,
                   const char *now)
{
    return ms_outbox_write(c, "payment", row->id, type, payload, now);
}

int payment_transaction(ms_db_conn *c, const char *payment_id, const char *kind,
                        const payment_outcome *o, int64_t amount_cents, const char *now)
{
    char id[MS_UUID_LEN + 1], amount[24];
    ms_uuid_new(id);
    snprintf(amount, sizeof amount, "%lld", (long long)amount_cents);
    const char *params[] = {id,           payment_id,
                            kind,         o->is_approved ? "approved" : "declined",
                            amount,       payment_provider_used->name,
                            o->reference, now};
    return ms_db_exec(c,
                      "INSERT INTO transactions (id, payment_id, kind, outcome, amount_cents,"
                      " provider, provider_ref, created_at)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                      8, params, NULL);
}

/* ---- POST /internal/v1/payments ---- */

typedef struct {
    payment_call base;
    char new_id[MS_UUID_LEN + 1];
    char order_id[MS_UUID_LEN + 1], user_id[MS_UUID_LEN + 1];
    char currency[4], last4[5];
    int64_t amount_cents;
    char *card; /* in the arena, wiped when the request ends */
    bool is_new;
    bool is_voided;  /* the order's payment is a tombstone: it may never be charged */
    json_t *differs; /* the fields another request for this order gave otherwise */
} create_call;

/* The payment this order already has: the same request again, or a conflict. */
static int compare_existing(create_call *k)
{
    const payment_row *row = &k->base.row;
    k->differs = json_array();
    if (strcmp(row->user_id, k->user_id) != 0)
        ms_field_error(k->differs, "user_id", "differs from this order's payment");
    if (row->amount_cents != k->amount_cents)
        ms_field_error(k->differs, "amount_cents", "differs from this order's payment");
    if (strcmp(row->currency, k->currency) != 0)
        ms_field_error(k->differs, "currency", "differs from this order's payment");
    /* only the last four digits are kept: a card that ends alike counts as the same */
    if (strcmp(row->card_last4, k->last4) != 0)
        ms_field_error(k->differs, "card_number", "differs from this order's payment");
    return json_array_size(k->differs) ? MS_ECONFLICT : 0;
}

static int charge(ms_db_conn *c, create_call *k)
{
    payment_row *row = &k->base.row;
    payment_charge ch = {k->order_id, k->card, k->amount_cents, k->currency};
    payment_outcome o;
    int rc = payment_provider_used->authorize_capture(&ch, &o);
    if (rc < 0)
        return rc;
    const char *status = o.is_approved ? "captured" : "declined";
    const char *params[] = {k->new_id, status};
    rc = ms_db_exec(c, "UPDATE payments SET status = $2 WHERE id = $1", 2, params, NULL);
    if (rc == 0)
        rc = payment_transaction(c, k->new_id, "authorize_capture", &o, k->amount_cents,
                                 k->base.now);
    if (rc == 0)
        rc = payment_load(c, "id", k->new_id, &k->base);
    if (rc == 0) {
        json_t *event =
            json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "payment_id", row->id, "order_id",
                      row->order_id, "user_id", row->user_id, "amount_cents",
                      (json_int_t)row->amount_cents, "currency", row->currency, "card_last4",
                      row->card_last4, o.is_approved ? "captured_at" : "declined_at", k->base.now);
        if (!o.is_approved)
            json_object_set_new(event, "reason", json_string(o.decline_code));
        rc = payment_outbox(c, row, o.is_approved ? "payment.captured" : "payment.declined", event,
                            k->base.now);
        json_decref(event);
    }
    return rc;
}

static int create_work(ms_db_conn *c, void *arg)
{
    create_call *k = arg;
    int rc = ms_outbox_begin(c);
    if (rc < 0)
        return rc;
    char amount[24];
    snprintf(amount, sizeof amount, "%lld", (long long)k->amount_cents);
    const char *params[] = {k->new_id,   k->order_id, k->user_id, amount,
                            k->currency, k->last4,    k->base.now};
    ms_db_result *r = NULL;
    rc = ms_db_exec(c,
                    "INSERT INTO payments (id, order_id, user_id, amount_cents, currency, status,"
                    " card_last4, created_at, updated_at)"
                    " VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $7)"
                    " ON CONFLICT (order_id) DO NOTHING",
                    7, params, &r);
    k->is_new = rc == 0 && ms_db_affected(r) == 1;
    ms_db_result_free(r);
    if (rc == 0 && k->is_new)
        rc = charge(c, k);
    else if (rc == 0)
        rc = payment_load(c, "order_id", k->order_id, &k->base);
    /* A charge still in flight when the saga gave its order up must not take money, whatever
     * details it carries: the tombstone wins over the comparison. */
    k->is_voided = rc == 0 && !k->is_new && !strcmp(k->base.row.status, "voided");
    if (k->is_voided)
        rc = MS_ECONFLICT;
    else if (rc == 0 && !k->is_new)
        rc = compare_existing(k);
    return ms_db_end(c, rc);
}

static void create_done(int rc, void *arg)
{
    create_call *k = arg;
    ms_http_request *req = k->base.req;
    if (rc == MS_ECONFLICT && k->is_voided) {
        char *detail = ms_arena_printf(&req->arena,
                                       "this order's payment was voided (payment %s):"
                                       " it is never charged",
                                       k->base.row.id);
        ms_problem_reason(req, rc, "voided", detail, NULL);
        return;
    }
    if (rc == MS_ECONFLICT && k->differs) {
        ms_problem_reason(req, rc, "conflict",
                          "this order already has a payment with other details", k->differs);
        k->differs = NULL;
        return;
    }
    json_decref(k->differs);
    k->differs = NULL;
    if (rc < 0) {
        payment_fail(&k->base, rc, NULL);
        return;
    }
    if (k->is_new)
        ms_relay_kick(payment_relay); /* its event is committed: publish it now */
    char *location = ms_arena_printf(&req->arena, "/api/v1/payments/%s", k->base.row.id);
    ms_http_set_header(req, "Location", location); /* a decline is a payment too */
    if (!strcmp(k->base.row.status, "declined")) {
        char *detail =
            ms_arena_printf(&req->arena, "the card was declined (payment %s)", k->base.row.id);
        ms_problem_reason(req, MS_EDECLINED, "payment_declined", detail, NULL);
        return;
    }
    ms_http_respond(req, 201, "application/json", k->base.result.p, k->base.result.n);
}

static void create_go(void *arg)
{
    create_call *k = arg;
    ms_http_request *req = k->base.req;
    ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, create_work, create_done, k);
}

static void check_id(json_t *body, const char *field, char out[MS_UUID_LEN + 1], json_t *invalid)
{
    const char *s = json_string_value(json_object_get(body, field));
    if (s && !payment_uuid_copy(s, out))
        ms_field_error(invalid, field, "must be a UUID");
}

static int read_create(create_call *k, json_t *body)
{
    static const ms_json_field fields[] = {
        {"order_id", MS_JSON_STRING, true, false},      {"user_id", MS_JSON_STRING, true, false},
        {"amount_cents", MS_JSON_INTEGER, true, false}, {"currency", MS_JSON_STRING, true, false},
        {"card_number", MS_JSON_STRING, true, false},
    };
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, sizeof fields / sizeof fields[0], "", malformed, invalid);
    check_id(body, "order_id", k->order_id, invalid);
    check_id(body, "user_id", k->user_id, invalid);
    json_t *amount = json_object_get(body, "amount_cents");
    if (json_is_integer(amount)) {
        k->amount_cents = json_integer_value(amount);
        if (k->amount_cents < 1 || k->amount_cents > AMOUNT_MAX)
            ms_field_error(invalid, "amount_cents", "must be from 1 to %lld",
                           (long long)AMOUNT_MAX);
    }
    const char *currency = json_string_value(json_object_get(body, "currency"));
    const char *why;
    if (currency && (why = ms_rule_currency(currency)))
        ms_field_error(invalid, "currency", "%s", why);
    else if (currency)
        memcpy(k->currency, currency, 4);
    json_t *card = json_object_get(body, "card_number");
    if (json_is_string(card)) {
        const char *s = json_string_value(card);
        size_t n = strlen(s);
        if ((why = ms_rule_card(s)))
            ms_field_error(invalid, "card_number", "%s", why);
        if (n >= 4)
            memcpy(k->last4, s + n - 4, 4);
        k->card = ms_arena_strndup(&k->base.req->arena, s, n);
        /* the parsed copy goes now, wiped: only the arena's copy lives on, until the end */
        explicit_bzero((char *)s, n);
    }
    json_object_del(body, "card_number");
    return ms_http_reject_fields(k->base.req, malformed, invalid);
}

static void wipe_card(void *arg)
{
    create_call *k = arg;
    if (k->card)
        explicit_bzero(k->card, strlen(k->card));
}

void payment_create(ms_http_request *req)
{
    create_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    payment_call_init(req, k, sizeof *k);
    ms_arena_on_reset(&req->arena, wipe_card, k);
    ms_uuid_new(k->new_id);
    json_t *body;
    int rc = ms_http_json_body(req, &body);
    /* the request's bytes held the card number: they go whatever the body was */
    explicit_bzero((char *)req->body, req->body_len);
    if (rc == 0)
        rc = read_create(k, body);
    if (rc == 0)
        payment_chaos_then(req, create_go, k);
}

/* ---- GET /api/v1/payments/{id} and GET /api/v1/payments?order_id= ---- */

typedef struct {
    payment_call base;
    ms_identity who;
    char key[MS_UUID_LEN + 1];
} read_call;

static int get_work(ms_db_conn *c, void *arg)
{
    read_call *k = arg;
    return payment_load(c, "id", k->key, &k->base);
}

/* Others' payments do not exist for a customer (like orders): 404, not 403. A voided tombstone
 * belongs to no customer (its user is the nil UUID): only an admin sees it, even should a
 * caller claim the nil user id. */
static bool may_see(const read_call *k)
{
    const payment_row *row = &k->base.row;
    return k->who.is_admin ||
           (strcmp(row->status, "voided") != 0 && !strcmp(row->user_id, k->who.user_id));
}

static void get_done(int rc, void *arg)
{
    read_call *k = arg;
    if (rc == 0 && !may_see(k))
        rc = MS_ENOTFOUND;
    if (rc < 0)
        payment_fail(&k->base, rc, "no such payment");
    else
        ms_http_respond(k->base.req, 200, "application/json", k->base.result.p, k->base.result.n);
}

void payment_get(ms_http_request *req)
{
    read_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    payment_call_init(req, k, sizeof *k);
    if (ms_identity_get(req, &k->who) < 0)
        return;
    if (!payment_uuid_copy(ms_http_param(req, "id"), k->key)) {
        ms_problem_from_error(req, MS_ENOTFOUND, "no such payment");
        return;
    }
    ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, get_work, get_done, k);
}

static int list_work(ms_db_conn *c, void *arg)
{
    read_call *k = arg;
    return payment_load(c, "order_id", k->key, &k->base);
}

/* An order has at most one payment (UNIQUE order_id): the list is one page, never a cursor. */
static void list_done(int rc, void *arg)
{
    read_call *k = arg;
    if (rc == MS_ENOTFOUND || (rc == 0 && !may_see(k))) {
        rc = 0;
        k->base.result.n = 0;
    }
    if (rc < 0) {
        payment_fail(&k->base, rc, NULL);
        return;
    }
    ms_buf out;
    ms_buf_init(&out, k->base.result.n + 64);
    ms_buf_adds(&out, "{\"items\":[");
    ms_buf_add(&out, k->base.result.p, k->base.result.n);
    ms_buf_adds(&out, "],\"next_cursor\":null}");
    ms_http_respond(k->base.req, 200, "application/json", out.p, out.n);
    ms_buf_release(&out);
}

void payment_list(ms_http_request *req)
{
    read_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    payment_call_init(req, k, sizeof *k);
    if (ms_identity_get(req, &k->who) < 0)
        return;
    const char *order = ms_http_query_param(req, "order_id");
    const char *limit = ms_http_query_param(req, "limit");
    const char *cursor = ms_http_query_param(req, "cursor");
    json_t *errors = json_array();
    if (!order)
        ms_field_error(errors, "order_id", "is required");
    else if (!payment_uuid_copy(order, k->key))
        ms_field_error(errors, "order_id", "must be a UUID");
    if (limit) {
        char *end;
        long n = strtol(limit, &end, 10);
        if (end == limit || *end || n < 1 || n > 100)
            ms_field_error(errors, "limit", "must be a whole number from 1 to 100");
    }
    if (cursor)
        ms_field_error(errors, "cursor", "is not a cursor this service gave out");
    if (json_array_size(errors)) {
        ms_problem_fields_from_error(req, MS_EMALFORMED, "the query parameters are malformed",
                                     errors);
        return;
    }
    json_decref(errors);
    ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, list_work, list_done, k);
}
