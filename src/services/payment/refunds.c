/*
 * refunds.c — refunding an order's payment in full (internal; the order saga's compensation).
 *
 * Idempotent: a payment has at most one refund (UNIQUE refunds.payment_id), and the refund
 * row is claimed before the provider is called, in the transaction that also records the
 * provider call, the payment's new status and the `payment.refunded` event. A second refund,
 * concurrent or later, finds the first and answers the same payment. A declined payment has
 * nothing to refund: it is answered as it is.
 *
 * An order with no payment is voided: a tombstone payment (status 'voided', the nil user, no
 * amount, no card, no provider call) claims its order id with the UNIQUE order_id, as a charge
 * does, so that a charge still in flight from a process that died never takes money (it finds
 * the tombstone: 409). When a concurrent charge claimed the order first, the claim does
 * nothing and the refund goes on with what the charge left. A voided payment is answered as
 * it is by any later refund.
 */
#include <stdio.h>
#include <string.h>

#include "eventstore/relay.h"
#include "runtime/core/error.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/http/server.h"
#include "runtime/json/json.h"
#include "services/common/rules.h"
#include "services/payment/payment_internal.h"
#include "runtime/core/banned.h"

enum { REASON_MAX = 200 };

/* A tombstone's placeholders: it belongs to no user and is in no currency (ISO 4217's XXX). */
static const char NIL_USER[] = "00000000-0000-0000-0000-000000000000";
static const char NO_CURRENCY[] = "XXX";

typedef struct {
    payment_call base;
    char order_id[MS_UUID_LEN + 1];
    const char *reason; /* NULL: none given */
    bool is_new;
} refund_call;

/* The reference of the payment's capture, which a provider refunds against, into out[48]. */
static int capture_reference(ms_db_conn *c, const char *payment_id, char out[48])
{
    ms_db_result *r = NULL;
    const char *params[] = {payment_id};
    int rc = ms_db_exec(c,
                        "SELECT provider_ref FROM transactions WHERE payment_id = $1"
                        " AND kind = 'authorize_capture' AND outcome = 'approved'",
                        1, params, &r);
    if (rc == 0 && ms_db_nrows(r) != 1)
        MS_BUG("a captured payment without exactly one approved capture");
    if (rc == 0)
        snprintf(out, 48, "%s", ms_db_get(r, 0, 0));
    ms_db_result_free(r);
    return rc;
}

static int refund(ms_db_conn *c, refund_call *k)
{
    const payment_row *row = &k->base.row;
    char ref[48];
    int rc = capture_reference(c, row->id, ref);
    payment_outcome o;
    if (rc == 0)
        rc =
            payment_provider_used->refund(row->order_id, ref, row->amount_cents, row->currency, &o);
    if (rc == 0 && !o.is_approved)
        rc = MS_EDECLINED;
    if (rc == 0)
        rc = payment_transaction(c, row->id, "refund", &o, row->amount_cents, k->base.now);
    const char *params[] = {row->id, k->base.now};
    if (rc == 0)
        rc = ms_db_exec(c, "UPDATE payments SET status = 'refunded', updated_at = $2 WHERE id = $1",
                        2, params, NULL);
    if (rc == 0) {
        json_t *event = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "payment_id", row->id,
                                  "order_id", row->order_id, "user_id", row->user_id,
                                  "amount_cents", (json_int_t)row->amount_cents, "currency",
                                  row->currency, "refunded_at", k->base.now);
        if (k->reason)
            json_object_set_new(event, "reason", json_string(k->reason));
        rc = payment_outbox(c, row, "payment.refunded", event, k->base.now);
        json_decref(event);
    }
    return rc;
}

/* Claims the order for a tombstone. Sets k->is_new when this call inserted it (then with its
 * event); either way loads the order's payment: the tombstone, or what a concurrent charge that
 * claimed the order first recorded (PostgreSQL: the insert waited for that charge's commit). */
static int void_order(ms_db_conn *c, refund_call *k)
{
    char id[MS_UUID_LEN + 1];
    ms_uuid_new(id);
    const char *params[] = {id, k->order_id, NIL_USER, NO_CURRENCY, k->base.now};
    ms_db_result *r = NULL;
    int rc =
        ms_db_exec(c,
                   "INSERT INTO payments (id, order_id, user_id, amount_cents, currency, status,"
                   " card_last4, created_at, updated_at)"
                   " VALUES ($1, $2, $3, 0, $4, 'voided', '', $5, $5)"
                   " ON CONFLICT (order_id) DO NOTHING",
                   5, params, &r);
    k->is_new = rc == 0 && ms_db_affected(r) == 1;
    ms_db_result_free(r);
    if (rc == 0)
        rc = payment_load(c, "order_id", k->order_id, &k->base);
    if (rc == 0 && k->is_new) {
        const payment_row *row = &k->base.row;
        json_t *event = json_pack("{s:s, s:s, s:s}", "payment_id", row->id, "order_id",
                                  row->order_id, "voided_at", k->base.now);
        if (k->reason)
            json_object_set_new(event, "reason", json_string(k->reason));
        rc = payment_outbox(c, row, "payment.voided", event, k->base.now);
        json_decref(event);
    }
    return rc;
}

static int refund_work(ms_db_conn *c, void *arg)
{
    refund_call *k = arg;
    payment_row *row = &k->base.row;
    int rc = ms_outbox_begin(c);
    if (rc < 0)
        return rc;
    rc = payment_load(c, "order_id", k->order_id, &k->base);
    if (rc == MS_ENOTFOUND)
        rc = void_order(c, k);
    if (rc == 0 && !k->is_new && !strcmp(row->status, "captured")) {
        char id[MS_UUID_LEN + 1], amount[24];
        ms_uuid_new(id);
        snprintf(amount, sizeof amount, "%lld", (long long)row->amount_cents);
        const char *params[] = {id, row->id, amount, k->reason, k->base.now};
        ms_db_result *r = NULL;
        rc = ms_db_exec(c,
                        "INSERT INTO refunds (id, payment_id, amount_cents, reason, created_at)"
                        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (payment_id) DO NOTHING",
                        5, params, &r);
        k->is_new = rc == 0 && ms_db_affected(r) == 1;
        ms_db_result_free(r);
        if (rc == 0 && k->is_new)
            rc = refund(c, k);
        if (rc == 0) /* refunded now, or by a concurrent call that claimed it first */
            rc = payment_load(c, "order_id", k->order_id, &k->base);
    }
    return ms_db_end(c, rc);
}

static void refund_done(int rc, void *arg)
{
    refund_call *k = arg;
    if (rc == MS_EDECLINED) {
        ms_problem_reason(k->base.req, rc, "refund_declined", "the provider declined the refund",
                          NULL);
        return;
    }
    if (rc < 0) {
        payment_fail(&k->base, rc, "this order has no payment");
        return;
    }
    if (k->is_new)
        ms_relay_kick(payment_relay); /* payment.refunded or payment.voided is committed */
    ms_http_respond(k->base.req, 200, "application/json", k->base.result.p, k->base.result.n);
}

static void refund_go(void *arg)
{
    refund_call *k = arg;
    ms_http_request *req = k->base.req;
    ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, refund_work, refund_done, k);
}

/* The body is optional: none, or `{"reason": "..."}`. */
static int read_refund(refund_call *k)
{
    ms_http_request *req = k->base.req;
    if (req->body_len == 0)
        return 0;
    json_t *body;
    int rc = ms_http_json_body(req, &body);
    if (rc < 0)
        return rc;
    static const ms_json_field fields[] = {{"reason", MS_JSON_STRING, false, true}};
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 1, "", malformed, invalid);
    k->reason = json_string_value(json_object_get(body, "reason")); /* lives as long */
    const char *why;
    if (k->reason && (why = ms_rule_text(k->reason, REASON_MAX)))
        ms_field_error(invalid, "reason", "%s", why);
    return ms_http_reject_fields(req, malformed, invalid);
}

void payment_refund(ms_http_request *req)
{
    refund_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    payment_call_init(req, k, sizeof *k);
    if (!payment_uuid_copy(ms_http_param(req, "order_id"), k->order_id)) {
        ms_problem_from_error(req, MS_ENOTFOUND, "this order has no payment");
        return;
    }
    if (read_refund(k) == 0)
        payment_chaos_then(req, refund_go, k);
}
