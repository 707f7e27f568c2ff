/*
 * order_aggregate.h — the order aggregate, pure: no database, no HTTP, no clock (it includes
 * nothing above runtime/json; field errors are {field, message} JSON lists, ms_field_error).
 *
 * The seed's shape, made explicit:
 *   command (a JSON object + its name) --validate--> field errors (malformed / invalid)
 *   state + command + now --decide--> events, or a conflict with a human reason
 *   state + event --evolve--> state;  rebuild = evolve over a stream
 * A small registry maps command names ("CreateOrder", ...) to their validate and decide.
 * The repository (load events, decide, append with expected version = state.version) and the
 * answers to clients live elsewhere (commands.c); this file only knows the rules.
 *
 * Status machine (api/openapi.yaml): pending -> confirmed -> shipped -> delivered;
 * pending -> rejected; pending|confirmed -> cancelled. Moving to the status an order already
 * has is a conflict too.
 *
 * Events are {type, data}: data is JSON text written by jansson, compact with sorted keys;
 * type names and data keys are stable (they are stored forever). Every event carries `at`
 * (RFC 3339), which becomes updated_at. Readers ignore keys they do not know.
 *
 * Threading: every function is pure and may run on any thread; a given order_state must not
 * be used by two threads at once.
 * Ownership: an order_state owns every string and the items it points to (order_state_release
 * frees them); an order_decision owns its events' data (order_decision_release). Command
 * objects and event texts passed in are borrowed; nothing keeps a pointer into them.
 */
#ifndef MS_ORDER_AGGREGATE_H
#define MS_ORDER_AGGREGATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/core/buf.h"
#include "runtime/core/id.h"

/* Command names (the registry's keys) and event types (stored: never rename). */
#define ORDER_CMD_CHECKOUT      "Checkout"
#define ORDER_CMD_CREATE        "CreateOrder"
#define ORDER_CMD_UPDATE_STATUS "UpdateOrderStatus"
#define ORDER_CMD_CANCEL        "CancelOrder"
#define ORDER_EVENT_CREATED     "OrderCreated"
#define ORDER_EVENT_CONFIRMED   "OrderConfirmed"
#define ORDER_EVENT_REJECTED    "OrderRejected"
#define ORDER_EVENT_SHIPPED     "OrderShipped"
#define ORDER_EVENT_DELIVERED   "OrderDelivered"
#define ORDER_EVENT_CANCELLED   "OrderCancelled"
/* The checkout saga's steps (they move no status; order_saga_next reads them). */
#define ORDER_EVENT_STOCK_RESERVED   "StockReserved"
#define ORDER_EVENT_STOCK_RELEASED   "StockReleased"
#define ORDER_EVENT_STOCK_COMMITTED  "StockCommitted"
#define ORDER_EVENT_PAYMENT_CAPTURED "PaymentCaptured"
#define ORDER_EVENT_PAYMENT_DECLINED "PaymentDeclined"
#define ORDER_EVENT_PAYMENT_REFUNDED "PaymentRefunded"
#define ORDER_EVENT_PAYMENT_VOIDED   "PaymentVoided"

/* Why an order was rejected (OrderRejected's reason, machine-readable). */
#define ORDER_REASON_OUT_OF_STOCK     "out_of_stock"
#define ORDER_REASON_PAYMENT_DECLINED "payment_declined"
#define ORDER_REASON_TIMEOUT          "timeout"

/* Limits of a command (and of an event or snapshot read back). */
#define ORDER_MAX_ITEMS            100
#define ORDER_MAX_QUANTITY         10000
#define ORDER_MAX_UNIT_PRICE_CENTS INT64_C(100000000)
#define ORDER_MAX_TOTAL_CENTS      INT64_C(1000000000000)
#define ORDER_MAX_REASON           500 /* code points */
#define ORDER_MAX_SHIPPING_CENTS   INT64_C(100000000)

typedef enum order_status {
    ORDER_STATUS_NONE = 0, /* no OrderCreated applied: the order does not exist */
    ORDER_STATUS_PENDING,
    ORDER_STATUS_CONFIRMED,
    ORDER_STATUS_SHIPPED,
    ORDER_STATUS_DELIVERED,
    ORDER_STATUS_REJECTED,
    ORDER_STATUS_CANCELLED,
} order_status;

/* Where an order's stock and payment stand (the saga's state; none for orders created before
 * the checkout saga, whose OrderCreated said "confirmed"). */
typedef enum order_stock {
    ORDER_STOCK_NONE = 0,
    ORDER_STOCK_RESERVED,
    ORDER_STOCK_RELEASED,
    ORDER_STOCK_COMMITTED,
} order_stock;

typedef enum order_payment {
    ORDER_PAYMENT_NONE = 0,
    ORDER_PAYMENT_CAPTURED,
    ORDER_PAYMENT_DECLINED,
    ORDER_PAYMENT_REFUNDED,
    ORDER_PAYMENT_VOIDED,
} order_payment;

/* "pending", "confirmed", ...; NULL for ORDER_STATUS_NONE and values out of range. */
const char *order_status_name(order_status s);
/* Parses a status name (exact, lower case). Returns 0 or MS_EINVAL (NONE is not a name). */
int order_status_parse(const char *name, order_status *out);
/* True when the machine allows from -> to (never for from == to, never into NONE/pending). */
bool order_status_can_move(order_status from, order_status to);

typedef struct order_item {
    char product_id[MS_UUID_LEN + 1]; /* lower-case UUID */
    int quantity;                     /* 1..ORDER_MAX_QUANTITY */
    int64_t unit_price_cents;         /* 0..ORDER_MAX_UNIT_PRICE_CENTS */
} order_item;

/* An order as its events made it. Zero (order_state_init) is "no such order yet". */
typedef struct order_state {
    char id[MS_UUID_LEN + 1];      /* lower-case UUID */
    char user_id[MS_UUID_LEN + 1]; /* lower-case UUID */
    order_status status;
    order_item *items; /* owned, nitems entries */
    size_t nitems;
    char currency[4];       /* ISO 4217, upper case */
    int64_t subtotal_cents; /* sum of quantity * unit_price_cents, server-side */
    int64_t shipping_cents; /* the order service's shipping rule */
    int64_t total_cents;    /* subtotal_cents + shipping_cents */
    order_stock stock;
    order_payment payment;
    char payment_id[MS_UUID_LEN + 1]; /* "" until a payment was captured or declined */
    char *shipping_address; /* owned; compact JSON object text with sorted keys, or NULL */
    char *created_at;       /* owned RFC 3339 text */
    char *updated_at;       /* owned RFC 3339 text: `at` of the last event */
    char *reason;           /* owned; why rejected or cancelled, or NULL */
    int64_t version;        /* number of events applied (the stream version) */
} order_state;

/* Zeroes a state: no order. */
void order_state_init(order_state *s);
/* Frees what the state owns and zeroes it (safe on a zeroed state). */
void order_state_release(order_state *s);
/* True when both states hold the same order, field by field. */
bool order_state_equal(const order_state *a, const order_state *b);

/*
 * Sum of quantity * unit_price_cents into *out. Returns 0, or MS_ETOOBIG when a product or
 * the sum overflows int64, or MS_EINVAL for a negative quantity or price. The business cap
 * (ORDER_MAX_TOTAL_CENTS) is the validator's, not this function's.
 */
int order_total(const order_item *items, size_t n, int64_t *out);

/* An event: a type (one of ORDER_EVENT_*) and its data as JSON text. Borrowed view. */
typedef struct order_event {
    const char *type;
    const char *data;
} order_event;

/*
 * Applies one event to the state. Returns 0, or MS_EINVAL — and leaves the state unchanged —
 * for an unknown type, data that is not the event's JSON shape, a total that does not match
 * the items, OrderCreated on an existing order, or any other event on a missing order or
 * against the status machine. Never aborts on bad input. Borrows type and data.
 */
int order_evolve(order_state *s, const char *type, const char *data);
/* Evolves over events[0..n) in order. On failure returns that event's code, *failed (if not
 * NULL) is its index, and the state holds the events before it. */
int order_rebuild(order_state *s, const order_event *events, size_t n, size_t *failed);

enum { ORDER_MAX_DECIDED = 2, ORDER_REASON_LEN = 160 };
enum { ORDER_SHIPPING_FLAT_CENTS = 499, ORDER_FREE_SHIPPING_FROM_CENTS = 5000 };

/* What a command decided. Init with order_decision_init, free with order_decision_release. */
typedef struct order_decision {
    order_event events[ORDER_MAX_DECIDED]; /* data owned by the decision (heap text) */
    size_t nevents;
    order_state next; /* when has_next: the state after the events (owned) */
    bool has_next;
    char reason[ORDER_REASON_LEN]; /* when decide failed: a sentence for the client */
} order_decision;

void order_decision_init(order_decision *d);
void order_decision_release(order_decision *d);
/* Applies a decision's events to the state it was decided on, as order_evolve would (without
 * parsing their text again; the state a decision computed is moved out of it). Returns 0 or
 * MS_EINVAL (not the state it was decided on). */
int order_apply_decision(order_state *s, order_decision *d);

/*
 * Checks a command's fields. Wrong kinds and unknown fields go to `malformed` (the command
 * is not understood), missing or out-of-rule values to `invalid` (understood, refused), as
 * {"field", "message"} with paths like "items[2].quantity" (ms_field_error). Both arrays are
 * borrowed, may be the same array, and may be NULL (errors are then dropped). Returns 0, MS_EINVAL
 * when it appended errors, or MS_ENOTFOUND for an unknown command name. Commands (JSON objects):
 *   Checkout          {items: [{product_id, quantity}], shipping_address?, payment: {card_number}}
 *                      (the client's request: validate only, it decides nothing)
 *   CreateOrder       {order_id, user_id, items: [{product_id, quantity, unit_price_cents}],
 *                      currency, shipping_cents, card_last4,
 *                      shipping_address?: {line1, city, postal_code, country} | null}
 *                      (built by the service from the checkout and inventory's prices)
 *   UpdateOrderStatus {status: "shipped"|"delivered"} (confirmed and rejected are the saga's)
 *   CancelOrder       {reason} (of a confirmed order: the saga then refunds and releases)
 */
int order_validate(const char *command, json_t *cmd, json_t *malformed, json_t *invalid);

/*
 * Validates, then decides the events of `command` on `state` at time `now` (RFC 3339), into
 * `out` (initialised by the caller; released by the caller whatever the result). The state is
 * not changed: the caller appends the events with expected version state->version, then
 * evolves. `malformed` and `invalid` are as in order_validate and may be NULL (errors are
 * then dropped). Returns:
 *   0             out->events holds what happened (one event for each command today)
 *   MS_EINVAL     field errors (or a `now` that is not a timestamp); out->reason says so
 *   MS_ENOTFOUND  an unknown command, or a command other than CreateOrder on no order
 *   MS_ECONFLICT  CreateOrder on an existing order, or a transition the machine forbids:
 *                 out->reason is e.g. "order is shipped; only pending or confirmed orders
 *                 can be cancelled"
 */
int order_decide(const order_state *state, const char *command, json_t *cmd, const char *now,
                 json_t *malformed, json_t *invalid, order_decision *out);

/*
 * The checkout saga, pure. Its state is the order's own events: what is left to do follows
 * from the status, the stock and the payment alone, so a saga resumed after a crash reads its
 * stream and goes on. Forward: reserve, pay (needs the card, which lives only in memory),
 * confirm. Once rejected or cancelled: refund or void the payment, release the stock. Once
 * shipped: commit the reservation (the shipment is recorded first, so a cancel racing it
 * loses on the stream's version before any stock is sold). A
 * pending order whose card is lost is rejected with reason "timeout"; a timeout may have left
 * a charge or a reservation whose answer never arrived, so it voids and releases even what it
 * never recorded (both services keep a tombstone, so a late request takes nothing).
 */
typedef enum order_saga_step {
    ORDER_SAGA_DONE = 0,
    ORDER_SAGA_RESERVE, /* remote: reserve the items */
    ORDER_SAGA_PAY,     /* remote: authorize and capture (needs the card) */
    ORDER_SAGA_CONFIRM, /* local: OrderConfirmed */
    ORDER_SAGA_REJECT,  /* local: OrderRejected (payment_declined, or timeout: no card) */
    ORDER_SAGA_REFUND,  /* remote: refund the captured payment */
    ORDER_SAGA_VOID,    /* remote: refund whatever payment exists, or void it */
    ORDER_SAGA_RELEASE, /* remote: release the reservation (or leave a tombstone) */
    ORDER_SAGA_COMMIT,  /* remote: a shipped order's reservation becomes sold stock */
} order_saga_step;

/* The next step of the order's saga; DONE when nothing is left (and for no order). */
order_saga_step order_saga_next(const order_state *s, bool has_card);
/* "reserve", "pay", ... (metrics and logs). */
const char *order_saga_step_name(order_saga_step step);

/* What a remote step answered, or a local step to record. */
typedef enum order_saga_outcome {
    ORDER_OUTCOME_RESERVED,     /* StockReserved */
    ORDER_OUTCOME_OUT_OF_STOCK, /* OrderRejected{out_of_stock} */
    ORDER_OUTCOME_CAPTURED,     /* PaymentCaptured{payment_id} + OrderConfirmed */
    ORDER_OUTCOME_DECLINED,     /* PaymentDeclined{payment_id?} + OrderRejected{payment_declined} */
    ORDER_OUTCOME_CONFIRMED,    /* OrderConfirmed */
    ORDER_OUTCOME_TIMEOUT,      /* OrderRejected{timeout} */
    ORDER_OUTCOME_REFUNDED,     /* PaymentRefunded */
    ORDER_OUTCOME_VOIDED,       /* PaymentVoided */
    ORDER_OUTCOME_RELEASED,     /* StockReleased */
    ORDER_OUTCOME_COMMITTED,    /* StockCommitted */
} order_saga_outcome;

/* Decides the events recording `outcome` on `state` (payment_id: for CAPTURED and DECLINED,
 * may be NULL for DECLINED). Returns 0, or MS_ECONFLICT (out->reason says why) when the
 * outcome does not fit the state, e.g. a second StockReserved. */
int order_saga_decide(const order_state *state, order_saga_outcome outcome, const char *payment_id,
                      const char *now, order_decision *out);

/* Shipping for a subtotal: a flat 499 cents, free from 5,000 (in the order's currency). */
int64_t order_shipping_cents(int64_t subtotal_cents);

/* The registry: one entry per command. Both functions behave as described above, but
 * `decide` may assume `validate` returned 0 for `cmd`. */
typedef struct order_command_handler {
    const char *name;
    int (*validate)(json_t *cmd, json_t *malformed, json_t *invalid);
    int (*decide)(const order_state *state, json_t *cmd, const char *now, order_decision *out);
} order_command_handler;

/* The handler for a command name, or NULL. */
const order_command_handler *order_command_find(const char *name);

/*
 * The public order view (api/openapi.yaml): {id, user_id, items, subtotal_cents, shipping_cents,
 * total_cents, currency, status, version, created_at, updated_at, reason (only when set),
 * payment_id (only when set), payment_status, stock_status, shipping_address (object or null)}.
 * A new reference, or NULL when the state holds no order.
 */
json_t *order_state_to_json(const order_state *s);
/* Appends the same document as compact JSON text to `b` (no NUL). The state holds an order. */
void order_view_write(const order_state *s, ms_buf *b);

/*
 * A snapshot: every field of the state as compact JSON text with sorted keys and a format
 * number, so order_snapshot_read gives back an equal state. Returns malloc'd text (free()),
 * or NULL when the state holds no order.
 */
char *order_snapshot_write(const order_state *s);
/* Reads a snapshot into `out` (initialised by the caller): on success what `out` held is
 * released and replaced, on failure `out` is unchanged. Returns 0 or MS_EINVAL (not JSON,
 * another format number, a missing field, a total that does not match the items). */
int order_snapshot_read(const char *text, order_state *out);
/* Reads the text of order_state_to_json (a view) back into `out`, as order_snapshot_read does:
 * a view holds every field of the state, so the read model keeps no second copy. */
int order_view_read(const char *text, order_state *out);

#endif
