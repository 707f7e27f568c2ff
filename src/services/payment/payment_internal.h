/*
 * payment_internal.h — shared by the payment service's files only.
 * Handlers and done callbacks run on loop threads; *_work functions run on a pooled
 * connection's worker thread and touch only their own context, never the request's answer.
 * A card number lives only in its request's arena (wiped when the request ends) and in the
 * provider call; what is stored, logged or answered is its last four digits.
 */
#ifndef MS_PAYMENT_INTERNAL_H
#define MS_PAYMENT_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "runtime/core/id.h"
#include "runtime/db/db.h"
#include "runtime/http/http.h"

/* ---- the provider (provider_sandbox.c) ---- */

typedef struct payment_charge {
    const char *key;         /* the idempotency key: the order id */
    const char *card_number; /* digits only; the provider's to read, never to keep */
    int64_t amount_cents;
    const char *currency;
} payment_charge;

typedef struct payment_outcome {
    bool is_approved;
    const char *decline_code; /* static text when declined ("card_declined"), else NULL */
    char reference[48];       /* the provider's id of the operation */
} payment_outcome;

/* A card processor behind function pointers (the sandbox today, a real one later). Both calls
 * are idempotent by `key` at the provider, block the calling worker thread, and return 0 with
 * an outcome (a decline is an outcome, not an error) or MS_ECONN when the provider is
 * unreachable (nothing was charged). */
typedef struct payment_provider {
    const char *name;
    int (*authorize_capture)(const payment_charge *charge, payment_outcome *out);
    int (*refund)(const char *key, const char *capture_reference, int64_t amount_cents,
                  const char *currency, payment_outcome *out);
} payment_provider;

/* The in-process sandbox: 4000000000000002 is declined, every other card approved. */
extern const payment_provider payment_sandbox;
/* The provider the service uses (service.c). */
extern const payment_provider *const payment_provider_used;

/* ---- a call's context ---- */

/* A stored payment's fields the handlers decide on. */
typedef struct payment_row {
    char id[MS_UUID_LEN + 1];
    char order_id[MS_UUID_LEN + 1];
    char user_id[MS_UUID_LEN + 1];
    int64_t amount_cents;
    char currency[4];
    char status[12]; /* captured | declined | refunded | voided (a tombstone, refunds.c) */
    char card_last4[5];
} payment_row;

/* The head of every call's context (in the request's arena). `result` is released with the
 * request, whatever the answer. */
typedef struct payment_call {
    ms_http_request *req;
    char now[MS_TIME_LEN + 1]; /* when the call was made, for timestamps */
    ms_buf result;             /* the answer's JSON text, written by the work */
    payment_row row;           /* the payment the work read or wrote */
} payment_call;

/* Zeroes `call` (`size` bytes of a struct starting with payment_call), sets req and now, and
 * ties the result's release to the request. */
void payment_call_init(ms_http_request *req, void *call, size_t size);
/* Answers a failed call: the error mapped at the edge (server errors are logged). */
void payment_fail(payment_call *k, int rc, const char *not_found);

/* ---- payments.c ---- */
void payment_create(ms_http_request *req);
void payment_get(ms_http_request *req);
void payment_list(ms_http_request *req);
/* Reads the payment whose `column` ("id" or "order_id") is `value` into k->row and, with its
 * refunds, as JSON text into k->result (replacing it). 0, MS_ENOTFOUND or a database error. */
int payment_load(ms_db_conn *c, const char *column, const char *value, payment_call *k);
/* Writes one outbox row for payment `row` in the caller's transaction. */
int payment_outbox(ms_db_conn *c, const payment_row *row, const char *type, json_t *payload,
                   const char *now);
/* Writes a transactions row: one per provider call. */
int payment_transaction(ms_db_conn *c, const char *payment_id, const char *kind,
                        const payment_outcome *o, int64_t amount_cents, const char *now);
/* Lower-cases a canonical UUID into out[37]; false when `s` is not one. */
bool payment_uuid_copy(const char *s, char out[MS_UUID_LEN + 1]);

/* ---- refunds.c ---- */
void payment_refund(ms_http_request *req);

/* ---- chaos.c ---- */
void payment_chaos_get(ms_http_request *req);
void payment_chaos_put(ms_http_request *req);
/* Calls go(arg) after the configured latency, on a timer of the request's loop (the loop goes
 * on serving meanwhile), unless the failure roll makes the provider unavailable: then answers
 * 503 with Retry-After before anything is written and never calls `go`. */
void payment_chaos_then(ms_http_request *req, void (*go)(void *arg), void *arg);

/* service.c: the outbox relay (kick it after a commit that wrote outbox rows) */
struct ms_relay;
extern struct ms_relay *payment_relay;

#endif
