/* The inventory service: catalogue, prices, stock, and the reservations an order holds.
 * Timestamps are RFC 3339 text on both backends. The CHECKs on stock_levels are the last line
 * of the never-oversell guarantee: a bug that tried would fail its transaction instead. */
#include "eventstore/outbox.h"
#include "eventstore/relay.h"
#include "services/common/event_feed.h"
#include "services/common/outbox_feed.h"
#include "services/inventory/inventory_internal.h"
#include "services/service.h"

ms_relay *inventory_relay;

static int start(const ms_service_env *env)
{
    return outbox_feed_start(env, "inventory", NULL, &inventory_relay);
}

static void stop(void)
{
    ms_relay_stop(inventory_relay);
    inventory_relay = NULL;
}

// clang-format off
#define TABLES_(SEQ)                                                                               \
    "CREATE TABLE products ("                                                                      \
    " id TEXT PRIMARY KEY,"                                                                        \
    " sku TEXT NOT NULL UNIQUE,"                                                                   \
    " name TEXT NOT NULL,"                                                                         \
    " price_cents BIGINT NOT NULL CHECK (price_cents >= 0),"                                       \
    " currency TEXT NOT NULL,"                                                                     \
    " created_at TEXT NOT NULL,"                                                                   \
    " updated_at TEXT NOT NULL);"                                                                  \
    "CREATE TABLE stock_levels ("                                                                  \
    " product_id TEXT PRIMARY KEY REFERENCES products(id),"                                        \
    " on_hand BIGINT NOT NULL CHECK (on_hand >= 0),"                                               \
    " reserved BIGINT NOT NULL CHECK (reserved >= 0 AND reserved <= on_hand),"                     \
    " low_threshold BIGINT NOT NULL CHECK (low_threshold >= 0),"                                   \
    " updated_at TEXT NOT NULL);"                                                                  \
    "CREATE TABLE price_history ("                                                                 \
    " seq " SEQ ","                                                                                \
    " product_id TEXT NOT NULL REFERENCES products(id),"                                           \
    " price_cents BIGINT NOT NULL,"                                                                \
    " currency TEXT NOT NULL,"                                                                     \
    " changed_at TEXT NOT NULL);"                                                                  \
    "CREATE INDEX price_history_product ON price_history (product_id, seq);"                       \
    "CREATE TABLE reservations ("                                                                  \
    " order_id TEXT PRIMARY KEY,"                                                                  \
    " status TEXT NOT NULL CHECK (status IN ('reserved', 'committed', 'released')),"               \
    " created_at TEXT NOT NULL,"                                                                   \
    " updated_at TEXT NOT NULL);"                                                                  \
    "CREATE TABLE reservation_lines ("                                                             \
    " order_id TEXT NOT NULL REFERENCES reservations(order_id),"                                   \
    " product_id TEXT NOT NULL REFERENCES products(id),"                                           \
    " quantity BIGINT NOT NULL CHECK (quantity > 0),"                                              \
    " unit_price_cents BIGINT NOT NULL,"                                                           \
    " currency TEXT NOT NULL,"                                                                     \
    " PRIMARY KEY (order_id, product_id));"
// clang-format on

static const ms_migration migrations[] = {
    /* price_history.seq orders a product's prices even within one millisecond */
    {1, "products, stock, prices, reservations", TABLES_("INTEGER PRIMARY KEY AUTOINCREMENT"),
     TABLES_("BIGSERIAL PRIMARY KEY")},
    {2, "outbox", MS_OUTBOX_TABLE_SQLITE, MS_OUTBOX_TABLE_POSTGRES},
};

static int add_routes(ms_router *r)
{
    int rc = 0;
    rc |= ms_router_add(r, "GET", "/internal/v1/events", event_feed_get);
    rc |= ms_router_add(r, "POST", "/api/v1/products", inv_product_create);
    rc |= ms_router_add(r, "GET", "/api/v1/products", inv_product_list);
    rc |= ms_router_add(r, "GET", "/api/v1/products/{id}", inv_product_get);
    rc |= ms_router_add(r, "PUT", "/api/v1/products/{id}/price", inv_price_put);
    rc |= ms_router_add(r, "GET", "/api/v1/products/{id}/price-history", inv_price_history);
    rc |= ms_router_add(r, "PUT", "/api/v1/products/{id}/stock", inv_stock_put);
    rc |= ms_router_add(r, "POST", "/internal/v1/quotes", inv_quote);
    rc |= ms_router_add(r, "POST", "/internal/v1/reservations", inv_reserve);
    rc |= ms_router_add(r, "GET", "/internal/v1/reservations/{order_id}", inv_reservation_get);
    rc |= ms_router_add(r, "POST", "/internal/v1/reservations/{order_id}/release", inv_release);
    rc |= ms_router_add(r, "POST", "/internal/v1/reservations/{order_id}/commit", inv_commit);
    return rc ? -1 : 0;
}

const ms_service ms_inventory_service = {
    .name = "inventory",
    .summary = "catalogue, prices, stock and reservations",
    .default_port = 8083,
    .migrations = migrations,
    .nmigrations = sizeof migrations / sizeof migrations[0],
    .add_routes = add_routes,
    .start = start,
    .stop = stop,
};
