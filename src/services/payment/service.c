/*
 * The payment service's wiring. Tables: payments (one per order: the UNIQUE order_id is what
 * never charges twice), transactions (one row per provider call), refunds (one per payment:
 * refunds are of the full amount) and the outbox. Timestamps are RFC 3339 text on both
 * backends. A payment is inserted as 'pending' and set to its outcome in the same transaction,
 * so 'pending' is never committed: it only lets the insert claim the order before the provider
 * is called. A 'voided' payment is a tombstone (refunds.c): an order given up before it was
 * charged, with no amount, no card and the nil user, that no charge may ever replace.
 */
#include "eventstore/outbox.h"
#include "eventstore/relay.h"
#include "services/common/event_feed.h"
#include "services/common/outbox_feed.h"
#include "services/payment/payment_internal.h"
#include "services/service.h"

ms_relay *payment_relay;
const payment_provider *const payment_provider_used = &payment_sandbox;

static int start(const ms_service_env *env)
{
    return outbox_feed_start(env, "payment", NULL, &payment_relay);
}

static void stop(void)
{
    ms_relay_stop(payment_relay);
    payment_relay = NULL;
}

#define PAYMENT_TABLES_(BIGINT)                                                                    \
    "CREATE TABLE payments ("                                                                      \
    " id TEXT PRIMARY KEY,"                                                                        \
    " order_id TEXT NOT NULL UNIQUE,"                                                              \
    " user_id TEXT NOT NULL,"                                                                      \
    " amount_cents " BIGINT " NOT NULL CHECK (amount_cents > 0),"                                  \
    " currency TEXT NOT NULL,"                                                                     \
    " status TEXT NOT NULL CHECK (status IN ('pending', 'captured', 'declined', 'refunded')),"     \
    " card_last4 TEXT NOT NULL,"                                                                   \
    " created_at TEXT NOT NULL,"                                                                   \
    " updated_at TEXT NOT NULL);"                                                                  \
    "CREATE TABLE transactions ("                                                                  \
    " id TEXT PRIMARY KEY,"                                                                        \
    " payment_id TEXT NOT NULL REFERENCES payments(id),"                                           \
    " kind TEXT NOT NULL CHECK (kind IN ('authorize_capture', 'refund')),"                         \
    " outcome TEXT NOT NULL CHECK (outcome IN ('approved', 'declined')),"                          \
    " amount_cents " BIGINT " NOT NULL,"                                                           \
    " provider TEXT NOT NULL,"                                                                     \
    " provider_ref TEXT NOT NULL,"                                                                 \
    " created_at TEXT NOT NULL);"                                                                  \
    "CREATE INDEX transactions_payment ON transactions (payment_id);"                              \
    "CREATE TABLE refunds ("                                                                       \
    " id TEXT PRIMARY KEY,"                                                                        \
    " payment_id TEXT NOT NULL UNIQUE REFERENCES payments(id),"                                    \
    " amount_cents " BIGINT " NOT NULL,"                                                           \
    " reason TEXT,"                                                                                \
    " created_at TEXT NOT NULL);"

/* Migration 3 admits the 'voided' tombstone (status 'voided', amount 0). SQLite cannot change a
 * CHECK in place, so the table is rebuilt. transactions and refunds reference it and the drop
 * orphans their rows: the foreign keys are deferred for the migration's transaction (the setting
 * ends with it), and the rows come back under the name the references use, which settles them
 * before the commit checks. (Renaming a new table into place instead would make SQLite rewrite
 * those references to the old table's name.) */
#define PAYMENTS_STATUS_CHECK                                                                      \
    "CHECK (status IN ('pending', 'captured', 'declined', 'refunded', 'voided'))"
#define PAYMENTS_AMOUNT_CHECK "CHECK (amount_cents > 0 OR (status = 'voided' AND amount_cents = 0))"

static const char PAYMENTS_VOIDED_SQLITE[] =
    "PRAGMA defer_foreign_keys = ON;"
    "CREATE TEMP TABLE payments_copy AS SELECT id, order_id, user_id, amount_cents, currency,"
    " status, card_last4, created_at, updated_at FROM payments;"
    "DROP TABLE payments;"
    "CREATE TABLE payments ("
    " id TEXT PRIMARY KEY,"
    " order_id TEXT NOT NULL UNIQUE,"
    " user_id TEXT NOT NULL,"
    " amount_cents INTEGER NOT NULL,"
    " currency TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " card_last4 TEXT NOT NULL,"
    " created_at TEXT NOT NULL,"
    " updated_at TEXT NOT NULL, " PAYMENTS_STATUS_CHECK ", " PAYMENTS_AMOUNT_CHECK ");"
    "INSERT INTO payments (id, order_id, user_id, amount_cents, currency, status, card_last4,"
    " created_at, updated_at) SELECT * FROM payments_copy;"
    "DROP TABLE payments_copy;";

/* PostgreSQL names a column's CHECK <table>_<column>_check. */
static const char PAYMENTS_VOIDED_POSTGRES[] =
    "ALTER TABLE payments DROP CONSTRAINT payments_status_check,"
    " DROP CONSTRAINT payments_amount_cents_check,"
    " ADD CONSTRAINT payments_status_check " PAYMENTS_STATUS_CHECK ","
    " ADD CONSTRAINT payments_amount_cents_check " PAYMENTS_AMOUNT_CHECK ";";

static const ms_migration migrations[] = {
    {1, "payments, transactions, refunds", PAYMENT_TABLES_("INTEGER"), PAYMENT_TABLES_("BIGINT")},
    {2, "outbox", MS_OUTBOX_TABLE_SQLITE, MS_OUTBOX_TABLE_POSTGRES},
    {3, "payments: voided tombstones", PAYMENTS_VOIDED_SQLITE, PAYMENTS_VOIDED_POSTGRES},
};

static int add_routes(ms_router *r)
{
    int rc = 0;
    rc |= ms_router_add(r, "GET", "/internal/v1/events", event_feed_get);
    rc |= ms_router_add(r, "GET", "/api/v1/payments", payment_list);
    rc |= ms_router_add(r, "GET", "/api/v1/payments/{id}", payment_get);
    rc |= ms_router_add(r, "POST", "/internal/v1/payments", payment_create);
    rc |= ms_router_add(r, "POST", "/internal/v1/payments/{order_id}/refund", payment_refund);
    rc |= ms_router_add(r, "GET", "/internal/v1/chaos", payment_chaos_get);
    rc |= ms_router_add(r, "PUT", "/internal/v1/chaos", payment_chaos_put);
    return rc ? -1 : 0;
}

const ms_service ms_payment_service = {
    .name = "payment",
    .summary = "payments, refunds and the sandbox card provider",
    .default_port = 8084,
    .migrations = migrations,
    .nmigrations = sizeof migrations / sizeof migrations[0],
    .add_routes = add_routes,
    .start = start,
    .stop = stop,
};
