/*
 * payment_client.h — the payment service's internal API as other services call it (the order
 * saga): the paths and the typed request and answer. Declarations only until the service
 * client (runtime/http/client.h) is merged; then the calls join them here.
 * The structs borrow their strings from the caller; nothing here allocates.
 */
#ifndef MS_PAYMENT_CLIENT_H
#define MS_PAYMENT_CLIENT_H

#include <stdint.h>

#include "runtime/core/id.h"

/* POST: authorize and capture; 201 captured, 402 declined (problem, reason
 * "payment_declined"), 409 other details for the same order (reason "conflict") or the order's
 * payment was voided (reason "voided": never charged, whatever the body), 422 invalid
 * (card_number: see ms_rule_card in services/common/rules.h). */
#define PAYMENT_PATH_CHARGE "/internal/v1/payments"
/* POST with `{reason?}` (printf format: the order id): 200 with the payment refunded (or still
 * declined), or, for an order that has no payment, a `voided` tombstone recorded in its place
 * (no provider call, event payment.voided) so that no later or in-flight charge of the order
 * takes money; a repeat answers the same payment. 404 only for an order id that is no UUID. */
#define PAYMENT_PATH_REFUND "/internal/v1/payments/%s/refund"
/* GET / PUT the chaos settings. */
#define PAYMENT_PATH_CHAOS "/internal/v1/chaos"

/* The body of PAYMENT_PATH_CHARGE. Idempotent by order_id: the same request again answers the
 * same payment. */
typedef struct payment_charge_request {
    const char *order_id, *user_id;
    int64_t amount_cents;
    const char *currency;    /* ISO 4217 */
    const char *card_number; /* 12 to 19 digits, Luhn-valid */
} payment_charge_request;

/* The body of PAYMENT_PATH_REFUND. */
typedef struct payment_refund_request {
    const char *reason; /* optional */
} payment_refund_request;

/* A payment as both calls answer it (refunds: at most one, of the full amount). */
typedef struct payment_record {
    char id[MS_UUID_LEN + 1], order_id[MS_UUID_LEN + 1], user_id[MS_UUID_LEN + 1];
    int64_t amount_cents; /* 0 for voided (its user_id is the nil UUID, currency "XXX") */
    char currency[4];
    char status[12];    /* captured | declined | refunded | voided */
    char card_last4[5]; /* empty for voided */
    char created_at[MS_TIME_LEN + 1];
    int64_t refunded_cents; /* the sum of its refunds */
} payment_record;

#endif
