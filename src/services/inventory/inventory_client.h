/*
 * inventory_client.h — the inventory service's internal API as other services call it (the
 * order saga): its paths and the typed requests and answers. Declarations only: the calls
 * themselves come with the service client (runtime/http/client.h). Plain data, no threading
 * rules; strings are borrowed from whoever fills the struct.
 *
 * Every call is idempotent by order id, so a caller may retry any of them after a timeout.
 */
#ifndef MS_INVENTORY_CLIENT_H
#define MS_INVENTORY_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#define INVENTORY_QUOTES_PATH       "/internal/v1/quotes"
#define INVENTORY_RESERVATIONS_PATH "/internal/v1/reservations"
/* printf formats taking the order id */
#define INVENTORY_RESERVATION_FMT "/internal/v1/reservations/%s"
#define INVENTORY_RELEASE_FMT     "/internal/v1/reservations/%s/release"
#define INVENTORY_COMMIT_FMT      "/internal/v1/reservations/%s/commit"

/* The problem "reason" of a 409 from the reservation calls: out_of_stock (reserve; errors name
 * each short items[i].quantity), conflict (the order id was reserved with other items),
 * released (reserve or commit after a release), committed (release after a commit). */
#define INVENTORY_REASON_OUT_OF_STOCK "out_of_stock"
#define INVENTORY_REASON_CONFLICT     "conflict"
#define INVENTORY_REASON_RELEASED     "released"
#define INVENTORY_REASON_COMMITTED    "committed"

typedef struct inventory_item {
    const char *product_id; /* UUID */
    int64_t quantity;       /* 1..10000; product ids unique within a request */
} inventory_item;

/* POST /internal/v1/quotes {items} -> 200; 422 names items[i].product_id when unknown. */
typedef struct inventory_quote_request {
    const inventory_item *items; /* 1..100 */
    size_t nitems;
} inventory_quote_request;

typedef struct inventory_priced_item {
    const char *product_id;
    int64_t quantity;
    int64_t unit_price_cents;
    const char *currency; /* ISO 4217 */
    int64_t available;    /* quotes only: on_hand - reserved when asked */
} inventory_priced_item;

typedef struct inventory_quote {
    inventory_priced_item *items; /* in request order */
    size_t nitems;
    const char *currency; /* every line's */
} inventory_quote;

/* POST /internal/v1/reservations {order_id, items} -> 201 (also for a repeat with the same
 * items); 409 with a reason above; 422 for unknown products. */
typedef struct inventory_reserve_request {
    const char *order_id;
    const inventory_item *items;
    size_t nitems;
} inventory_reserve_request;

/* The answer of reserve and GET .../{order_id}; release and commit answer order_id and
 * status only. */
typedef struct inventory_reservation {
    const char *order_id;
    const char *status;           /* reserved | committed | released */
    inventory_priced_item *items; /* sorted by product id; none for a release-first tombstone */
    size_t nitems;
} inventory_reservation;

#endif
