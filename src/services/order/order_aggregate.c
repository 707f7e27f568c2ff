/*
 * order_aggregate.c — the order's rules: commands validated and decided into events, events
 * evolving the state, the public view and snapshots. Pure; contract in order_aggregate.h.
 *
 * Commands are checked against policy (limits, currency list, address rules). Events and
 * snapshots are facts already stored, so reading them checks shape and invariants only
 * (UUIDs, a total that matches the items, the status machine), not today's policy: raising
 * or lowering a limit must not make old streams unreadable.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/json/json.h"
#include "runtime/json/json_scan.h"
#include "services/common/currency.h"
#include "services/common/rules.h"
#include "services/order/order_aggregate.h"
#include "runtime/core/banned.h"

enum { SNAPSHOT_FORMAT = 1 };

/* ---- statuses ---------------------------------------------------------------------------- */

static const char *const status_names[] = {
    [ORDER_STATUS_NONE] = NULL,
    [ORDER_STATUS_PENDING] = "pending",
    [ORDER_STATUS_CONFIRMED] = "confirmed",
    [ORDER_STATUS_SHIPPED] = "shipped",
    [ORDER_STATUS_DELIVERED] = "delivered",
    [ORDER_STATUS_REJECTED] = "rejected",
    [ORDER_STATUS_CANCELLED] = "cancelled",
};
enum { NSTATUS = sizeof status_names / sizeof status_names[0] };

static const char *const stock_names[] = {"none", "reserved", "released", "committed"};
static const char *const payment_names[] = {"none", "captured", "declined", "refunded", "voided"};

/* An index into names[0..n) by name; -1 when none. */
static int name_index(const char *const *names, int n, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

#define TO(s) (1u << (s))
/* next[from]: the statuses `from` may move to (the status machine in api/openapi.yaml). */
static const unsigned next[NSTATUS] = {
    [ORDER_STATUS_PENDING] =
        TO(ORDER_STATUS_CONFIRMED) | TO(ORDER_STATUS_REJECTED) | TO(ORDER_STATUS_CANCELLED),
    [ORDER_STATUS_CONFIRMED] = TO(ORDER_STATUS_SHIPPED) | TO(ORDER_STATUS_CANCELLED),
    [ORDER_STATUS_SHIPPED] = TO(ORDER_STATUS_DELIVERED),
};

const char *order_status_name(order_status s)
{
    return (unsigned)s < NSTATUS ? status_names[s] : NULL;
}

int order_status_parse(const char *name, order_status *out)
{
    for (unsigned i = 1; name && i < NSTATUS; i++) {
        if (strcmp(status_names[i], name) == 0) {
            *out = (order_status)i;
            return 0;
        }
    }
    return MS_EINVAL;
}

bool order_status_can_move(order_status from, order_status to)
{
    return (unsigned)from < NSTATUS && (unsigned)to < NSTATUS && (next[from] & TO(to));
}

/* The event that moves an order into each status (all but CREATED). */
static const struct transition {
    const char *type;
    order_status to;
    bool has_reason;
} transitions[] = {
    {ORDER_EVENT_CONFIRMED, ORDER_STATUS_CONFIRMED, false},
    {ORDER_EVENT_REJECTED, ORDER_STATUS_REJECTED, true},
    {ORDER_EVENT_SHIPPED, ORDER_STATUS_SHIPPED, false},
    {ORDER_EVENT_DELIVERED, ORDER_STATUS_DELIVERED, false},
    {ORDER_EVENT_CANCELLED, ORDER_STATUS_CANCELLED, true},
};
enum { NTRANSITIONS = sizeof transitions / sizeof transitions[0] };

static const struct transition *transition_to(order_status to)
{
    for (size_t i = 0; i < NTRANSITIONS; i++)
        if (transitions[i].to == to)
            return &transitions[i];
    return NULL;
}

/* ---- small helpers ----------------------------------------------------------------------- */

static bool is_digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static int two(const char *s)
{
    return (s[0] - '0') * 10 + (s[1] - '0');
}

/* RFC 3339 date-time: 2026-11-25T06:15:47(.123)?(Z|+01:00). */
static bool is_timestamp(const char *s)
{
    if (!s || strlen(s) < 20 || strlen(s) > 40)
        return false;
    if (!is_digits(s, 4) || s[4] != '-' || !is_digits(s + 5, 2) || s[7] != '-' ||
        !is_digits(s + 8, 2) || s[10] != 'T' || !is_digits(s + 11, 2) || s[13] != ':' ||
        !is_digits(s + 14, 2) || s[16] != ':' || !is_digits(s + 17, 2))
        return false;
    if (two(s + 5) < 1 || two(s + 5) > 12 || two(s + 8) < 1 || two(s + 8) > 31 ||
        two(s + 11) > 23 || two(s + 14) > 59 || two(s + 17) > 60)
        return false;
    const char *p = s + 19;
    if (*p == '.') {
        if (!is_digits(++p, 1))
            return false;
        while (is_digits(p, 1))
            p++;
    }
    if (*p == 'Z')
        return p[1] == '\0';
    return (*p == '+' || *p == '-') && is_digits(p + 1, 2) && p[3] == ':' && is_digits(p + 4, 2) &&
           p[6] == '\0' && two(p + 1) <= 23 && two(p + 4) <= 59;
}

/* Copies a valid UUID in its canonical lower case. */
static void copy_uuid(char dst[MS_UUID_LEN + 1], const char *src)
{
    for (int i = 0; i < MS_UUID_LEN; i++)
        dst[i] = (src[i] >= 'A' && src[i] <= 'F') ? (char)(src[i] - 'A' + 'a') : src[i];
    dst[MS_UUID_LEN] = '\0';
}

static bool is_upper3(const char *s)
{
    return s && strlen(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' &&
           s[2] >= 'A' && s[2] <= 'Z';
}

static const char *get_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* Compact JSON with sorted keys (stable bytes for events and snapshots); consumes doc. */
static char *dump(json_t *doc)
{
    if (!doc)
        MS_BUG("json_pack failed on a well-formed value");
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    if (!text)
        MS_BUG("json_dumps failed");
    return text;
}

static void put_key_string(ms_buf *b, const char *key, const char *value)
{
    ms_buf_adds(b, key);
    ms_json_put_string(b, value);
}

static void put_key_int(ms_buf *b, const char *key, int64_t value)
{
    ms_buf_adds(b, key);
    ms_buf_add_int(b, value);
}

static void set_reason(order_decision *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_reason(order_decision *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof d->reason, fmt, ap);
    va_end(ap);
}

/* ---- state ------------------------------------------------------------------------------- */

void order_state_init(order_state *s)
{
    memset(s, 0, sizeof *s);
}

void order_state_release(order_state *s)
{
    free(s->items);
    free(s->shipping_address);
    free(s->created_at);
    free(s->updated_at);
    free(s->reason);
    order_state_init(s);
}

static bool same_text(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

bool order_state_equal(const order_state *a, const order_state *b)
{
    if (strcmp(a->id, b->id) != 0 || strcmp(a->user_id, b->user_id) != 0 ||
        a->status != b->status || a->nitems != b->nitems || strcmp(a->currency, b->currency) != 0 ||
        a->total_cents != b->total_cents || a->version != b->version ||
        a->subtotal_cents != b->subtotal_cents || a->shipping_cents != b->shipping_cents ||
        a->stock != b->stock || a->payment != b->payment ||
        strcmp(a->payment_id, b->payment_id) != 0 ||
        !same_text(a->shipping_address, b->shipping_address) ||
        !same_text(a->created_at, b->created_at) || !same_text(a->updated_at, b->updated_at) ||
        !same_text(a->reason, b->reason))
        return false;
    for (size_t i = 0; i < a->nitems; i++) {
        const order_item *x = &a->items[i], *y = &b->items[i];
        if (strcmp(x->product_id, y->product_id) != 0 || x->quantity != y->quantity ||
            x->unit_price_cents != y->unit_price_cents)
            return false;
    }
    return true;
}

int order_total(const order_item *items, size_t n, int64_t *out)
{
    int64_t sum = 0, line;
    for (size_t i = 0; i < n; i++) {
        if (items[i].quantity < 0 || items[i].unit_price_cents < 0)
            return MS_EINVAL;
        if (__builtin_mul_overflow((int64_t)items[i].quantity, items[i].unit_price_cents, &line) ||
            __builtin_add_overflow(sum, line, &sum))
            return MS_ETOOBIG;
    }
    *out = sum;
    return 0;
}

/* ---- command validation ------------------------------------------------------------------ */

static size_t error_count(json_t *malformed, json_t *invalid)
{
    return json_array_size(malformed) + json_array_size(invalid);
}

static const char *check_reason(const char *s)
{
    const char *why = ms_rule_text(s, ORDER_MAX_REASON);
    return why && strcmp(why, "is too long") == 0 ? "must be at most 500 characters" : why;
}

/* Runs a rule on a string field when it is there and a string. */
static void rule(json_t *obj, const char *key, const char *path, const char *(*check)(const char *),
                 json_t *invalid)
{
    const char *s = get_str(obj, key);
    const char *why = s ? check(s) : NULL;
    if (why)
        ms_field_error(invalid, path, "%s", why);
}

static const char *check_line1(const char *s)
{
    return ms_rule_text(s, 200);
}

static const char *check_city(const char *s)
{
    return ms_rule_text(s, 100);
}

static void validate_address(json_t *addr, json_t *malformed, json_t *invalid)
{
    static const ms_json_field fields[] = {
        {"line1", MS_JSON_STRING, true, false},
        {"city", MS_JSON_STRING, true, false},
        {"postal_code", MS_JSON_STRING, true, false},
        {"country", MS_JSON_STRING, true, false},
    };
    ms_json_check(addr, fields, 4, "shipping_address.", malformed, invalid);
    rule(addr, "line1", "shipping_address.line1", check_line1, invalid);
    rule(addr, "city", "shipping_address.city", check_city, invalid);
    rule(addr, "postal_code", "shipping_address.postal_code", ms_rule_postal_code, invalid);
    rule(addr, "country", "shipping_address.country", ms_rule_country, invalid);
}

/* "items[i]" followed by `field` ("", ".", ".quantity"...: at most 18 bytes), into out. */
static const char *item_path(char out[64], size_t i, const char *field)
{
    char digits[24], *d = digits + sizeof digits;
    do
        *--d = (char)('0' + i % 10);
    while ((i /= 10) != 0);
    size_t nd = (size_t)(digits + sizeof digits - d), nf = strlen(field);
    if (7 + nd + nf >= 64)
        MS_BUG("item_path: field name too long");
    memcpy(out, "items[", 6);
    memcpy(out + 6, d, nd);
    out[6 + nd] = ']';
    memcpy(out + 7 + nd, field, nf + 1);
    return out;
}

/* Checks items[i] and adds its line to *total; false when the line cannot be counted. Paths
 * are written only for errors (a printf per field was a tenth of a POST's validation). */
static bool validate_item(json_t *items, size_t i, bool priced, int64_t *total, json_t *malformed,
                          json_t *invalid)
{
    static const ms_json_field fields[] = {
        {"product_id", MS_JSON_STRING, true, false},
        {"quantity", MS_JSON_INTEGER, true, false},
        {"unit_price_cents", MS_JSON_INTEGER, true, false},
    };
    char path[64];
    json_t *item = json_array_get(items, i);
    if (!json_is_object(item)) {
        ms_field_error(malformed, item_path(path, i, ""), "must be an object");
        return false;
    }
    /* a client's checkout names no price: the field is then unknown, and refused as such */
    bool countable =
        ms_json_check(item, fields, priced ? 3 : 2, item_path(path, i, "."), malformed, invalid);

    const char *product = get_str(item, "product_id");
    if (product && !ms_uuid_valid(product)) {
        ms_field_error(invalid, item_path(path, i, ".product_id"), "must be a UUID");
    } else if (product) {
        for (size_t j = 0; j < i; j++) {
            const char *other = get_str(json_array_get(items, j), "product_id");
            if (other && strcasecmp(other, product) == 0) {
                ms_field_error(invalid, item_path(path, i, ".product_id"),
                               "repeats items[%zu]: one line per product", j);
                break;
            }
        }
    }
    json_t *q = json_object_get(item, "quantity");
    json_t *p = json_object_get(item, "unit_price_cents");
    if (json_is_integer(q) &&
        (json_integer_value(q) < 1 || json_integer_value(q) > ORDER_MAX_QUANTITY)) {
        ms_field_error(invalid, item_path(path, i, ".quantity"), "must be from 1 to %d",
                       ORDER_MAX_QUANTITY);
        countable = false;
    }
    if (json_is_integer(p) &&
        (json_integer_value(p) < 0 || json_integer_value(p) > ORDER_MAX_UNIT_PRICE_CENTS)) {
        ms_field_error(invalid, item_path(path, i, ".unit_price_cents"), "must be from 0 to %lld",
                       (long long)ORDER_MAX_UNIT_PRICE_CENTS);
        countable = false;
    }
    if (!priced)
        return countable;
    if (!countable || !json_is_integer(q) || !json_is_integer(p))
        return false;
    int64_t line;
    return !__builtin_mul_overflow((int64_t)json_integer_value(q), (int64_t)json_integer_value(p),
                                   &line) &&
           !__builtin_add_overflow(*total, line, total);
}

/* The items (priced or not) and the address, shared by Checkout and CreateOrder. */
static void validate_lines(json_t *cmd, bool priced, json_t *malformed, json_t *invalid)
{
    json_t *items = json_object_get(cmd, "items");
    size_t n = json_array_size(items);
    if (json_is_array(items) && n == 0) {
        ms_field_error(invalid, "items", "must have at least 1 item");
    } else if (n > ORDER_MAX_ITEMS) {
        ms_field_error(invalid, "items", "must have at most %d items", ORDER_MAX_ITEMS);
    } else if (n > 0) {
        int64_t total = 0;
        bool countable = true;
        for (size_t i = 0; i < n; i++)
            countable &= validate_item(items, i, priced, &total, malformed, invalid);
        if (priced && countable && total > ORDER_MAX_TOTAL_CENTS)
            ms_field_error(invalid, "items", "the order total must be at most %lld cents",
                           (long long)ORDER_MAX_TOTAL_CENTS);
    }
    json_t *addr = json_object_get(cmd, "shipping_address");
    if (json_is_object(addr))
        validate_address(addr, malformed, invalid);
}

static int validate_checkout(json_t *cmd, json_t *malformed, json_t *invalid)
{
    static const ms_json_field fields[] = {
        {"items", MS_JSON_ARRAY, true, false},
        {"shipping_address", MS_JSON_OBJECT, false, true},
        {"payment", MS_JSON_OBJECT, true, false},
    };
    static const ms_json_field payment_fields[] = {{"card_number", MS_JSON_STRING, true, false}};
    size_t before = error_count(malformed, invalid);
    if (!json_is_object(cmd)) {
        ms_field_error(malformed, "body", "must be a JSON object");
        return MS_EINVAL;
    }
    ms_json_check(cmd, fields, 3, "", malformed, invalid);
    validate_lines(cmd, false, malformed, invalid);
    json_t *payment = json_object_get(cmd, "payment");
    if (json_is_object(payment)) {
        ms_json_check(payment, payment_fields, 1, "payment.", malformed, invalid);
        rule(payment, "card_number", "payment.card_number", ms_rule_card, invalid);
    }
    return error_count(malformed, invalid) > before ? MS_EINVAL : 0;
}

static const char *check_last4(const char *s)
{
    return strlen(s) == 4 && is_digits(s, 4) ? NULL : "must be 4 digits";
}

static int validate_create(json_t *cmd, json_t *malformed, json_t *invalid)
{
    static const ms_json_field fields[] = {
        {"order_id", MS_JSON_STRING, true, false},
        {"user_id", MS_JSON_STRING, true, false},
        {"items", MS_JSON_ARRAY, true, false},
        {"currency", MS_JSON_STRING, true, false},
        {"shipping_cents", MS_JSON_INTEGER, true, false},
        {"card_last4", MS_JSON_STRING, true, false},
        {"shipping_address", MS_JSON_OBJECT, false, true},
    };
    size_t before = error_count(malformed, invalid);
    if (!json_is_object(cmd)) {
        ms_field_error(malformed, "body", "must be a JSON object");
        return MS_EINVAL;
    }
    ms_json_check(cmd, fields, 7, "", malformed, invalid);
    rule(cmd, "order_id", "order_id", ms_rule_uuid, invalid);
    rule(cmd, "user_id", "user_id", ms_rule_uuid, invalid);
    rule(cmd, "currency", "currency", ms_rule_currency, invalid);
    rule(cmd, "card_last4", "card_last4", check_last4, invalid);
    json_t *shipping = json_object_get(cmd, "shipping_cents");
    if (json_is_integer(shipping) && (json_integer_value(shipping) < 0 ||
                                      json_integer_value(shipping) > ORDER_MAX_SHIPPING_CENTS))
        ms_field_error(invalid, "shipping_cents", "must be from 0 to %lld",
                       (long long)ORDER_MAX_SHIPPING_CENTS);
    validate_lines(cmd, true, malformed, invalid);
    return error_count(malformed, invalid) > before ? MS_EINVAL : 0;
}

static int validate_update(json_t *cmd, json_t *malformed, json_t *invalid)
{
    static const ms_json_field fields[] = {{"status", MS_JSON_STRING, true, false}};
    size_t before = error_count(malformed, invalid);
    if (!json_is_object(cmd)) {
        ms_field_error(malformed, "body", "must be a JSON object");
        return MS_EINVAL;
    }
    ms_json_check(cmd, fields, 1, "", malformed, invalid);
    const char *name = get_str(cmd, "status");
    order_status to = ORDER_STATUS_NONE;
    /* confirmed and rejected are the checkout saga's to record (it charged or it did not);
     * cancelling is CancelOrder's (it refunds and releases) */
    if (name && order_status_parse(name, &to) == 0 && to != ORDER_STATUS_SHIPPED &&
        to != ORDER_STATUS_DELIVERED)
        to = ORDER_STATUS_NONE;
    if (name && to == ORDER_STATUS_NONE)
        ms_field_error(invalid, "status", "must be shipped or delivered");
    return error_count(malformed, invalid) > before ? MS_EINVAL : 0;
}

static int validate_cancel(json_t *cmd, json_t *malformed, json_t *invalid)
{
    static const ms_json_field fields[] = {{"reason", MS_JSON_STRING, true, false}};
    size_t before = error_count(malformed, invalid);
    if (!json_is_object(cmd)) {
        ms_field_error(malformed, "body", "must be a JSON object");
        return MS_EINVAL;
    }
    ms_json_check(cmd, fields, 1, "", malformed, invalid);
    rule(cmd, "reason", "reason", check_reason, invalid);
    return error_count(malformed, invalid) > before ? MS_EINVAL : 0;
}

/* ---- decide ------------------------------------------------------------------------------ */

static void add_event(order_decision *d, const char *type, json_t *data)
{
    if (d->nevents == ORDER_MAX_DECIDED)
        MS_BUG("a command decided more events than ORDER_MAX_DECIDED");
    if (!data)
        MS_BUG("json_pack failed on a well-formed value");
    d->events[d->nevents].type = type;
    d->events[d->nevents].data = dump(data);
    d->nevents++;
}

/* Takes `text` (malloc'd compact JSON with sorted keys); no document is kept. */
static void add_event_text(order_decision *d, const char *type, char *text)
{
    if (d->nevents == ORDER_MAX_DECIDED)
        MS_BUG("a command decided more events than ORDER_MAX_DECIDED");
    d->events[d->nevents].type = type;
    d->events[d->nevents].data = text;
    d->nevents++;
}

static json_t *items_to_json(const order_item *items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s, s:i, s:I}", "product_id", items[i].product_id,
                                           "quantity", items[i].quantity, "unit_price_cents",
                                           (json_int_t)items[i].unit_price_cents));
    return a;
}

static int decide_create(const order_state *s, json_t *cmd, const char *now, order_decision *d)
{
    if (s->status != ORDER_STATUS_NONE) {
        set_reason(d, "order %s already exists", s->id);
        return MS_ECONFLICT;
    }
    json_t *items = json_object_get(cmd, "items");
    size_t n = json_array_size(items);
    order_item *lines = ms_xcalloc(n ? n : 1, sizeof *lines);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(items, i);
        copy_uuid(lines[i].product_id, get_str(item, "product_id"));
        lines[i].quantity = (int)json_integer_value(json_object_get(item, "quantity"));
        lines[i].unit_price_cents = json_integer_value(json_object_get(item, "unit_price_cents"));
    }
    int64_t subtotal, shipping = json_integer_value(json_object_get(cmd, "shipping_cents"));
    if (order_total(lines, n, &subtotal) < 0)
        MS_BUG("a validated order has no total");
    int64_t total = subtotal + shipping; /* both capped far below overflow by validation */
    if (total > ORDER_MAX_TOTAL_CENTS) {
        free(lines);
        set_reason(d, "the order total with shipping must be at most %lld cents",
                   (long long)ORDER_MAX_TOTAL_CENTS);
        return MS_EINVAL;
    }
    char order_id[MS_UUID_LEN + 1], user_id[MS_UUID_LEN + 1];
    copy_uuid(order_id, get_str(cmd, "order_id"));
    copy_uuid(user_id, get_str(cmd, "user_id"));
    json_t *addr = json_object_get(cmd, "shipping_address");
    /* Written straight as text, keys in sorted order, as dump() would (the commonest event:
     * building and dumping a jansson tree for it was a fifth of a POST's loop time). */
    ms_buf b;
    ms_buf_init(&b, 512);
    put_key_string(&b, "{\"at\":", now);
    put_key_string(&b, ",\"card_last4\":", get_str(cmd, "card_last4"));
    put_key_string(&b, ",\"created_at\":", now);
    put_key_string(&b, ",\"currency\":", get_str(cmd, "currency"));
    ms_buf_adds(&b, ",\"items\":[");
    for (size_t i = 0; i < n; i++) {
        put_key_string(&b, i ? ",{\"product_id\":" : "{\"product_id\":", lines[i].product_id);
        put_key_int(&b, ",\"quantity\":", lines[i].quantity);
        put_key_int(&b, ",\"unit_price_cents\":", lines[i].unit_price_cents);
        ms_buf_add(&b, "}", 1);
    }
    put_key_string(&b, "],\"order_id\":", order_id);
    ms_buf_adds(&b, ",\"shipping_address\":");
    char *address = json_is_object(addr) ? dump(json_incref(addr)) : NULL;
    ms_buf_adds(&b, address ? address : "null");
    put_key_int(&b, ",\"shipping_cents\":", shipping);
    put_key_string(&b, ",\"status\":", order_status_name(ORDER_STATUS_PENDING));
    put_key_int(&b, ",\"subtotal_cents\":", subtotal);
    put_key_int(&b, ",\"total_cents\":", total);
    put_key_string(&b, ",\"user_id\":", user_id);
    ms_buf_add(&b, "}", 2); /* with the NUL */
    add_event_text(d, ORDER_EVENT_CREATED, b.p);
    /* the state OrderCreated makes, so the caller need not parse the text back (a test holds
     * it equal to order_evolve's) */
    order_state *t = &d->next;
    memcpy(t->id, order_id, sizeof t->id);
    memcpy(t->user_id, user_id, sizeof t->user_id);
    t->status = ORDER_STATUS_PENDING;
    t->items = lines;
    t->nitems = n;
    memcpy(t->currency, get_str(cmd, "currency"), 4);
    t->subtotal_cents = subtotal;
    t->shipping_cents = shipping;
    t->total_cents = total;
    t->shipping_address = address;
    t->created_at = ms_xstrdup(now);
    t->updated_at = ms_xstrdup(now);
    t->version = s->version + 1;
    d->has_next = true;
    return 0;
}

/* "order is shipped; only pending or confirmed orders can be cancelled" */
static int refuse_move(const order_state *s, order_status to, order_decision *d)
{
    if (s->status == to) {
        set_reason(d, "order is already %s", order_status_name(to));
        return MS_ECONFLICT;
    }
    char from[80] = "";
    size_t len = 0, count = 0, total = 0;
    for (unsigned i = 1; i < NSTATUS; i++)
        total += order_status_can_move((order_status)i, to);
    for (unsigned i = 1; i < NSTATUS; i++) {
        if (!order_status_can_move((order_status)i, to))
            continue;
        count++;
        const char *sep = count == 1 ? "" : count == total ? " or " : ", ";
        int w = snprintf(from + len, sizeof from - len, "%s%s", sep, status_names[i]);
        if (w > 0 && (size_t)w < sizeof from - len)
            len += (size_t)w;
    }
    set_reason(d, "order is %s; only %s orders can be %s", order_status_name(s->status), from,
               order_status_name(to));
    return MS_ECONFLICT;
}

/* Decides the event moving an existing order to `to`, with `reason` (may be NULL). */
static int decide_move(const order_state *s, order_status to, const char *reason, const char *now,
                       order_decision *d)
{
    if (s->status == ORDER_STATUS_NONE) {
        set_reason(d, "order not found");
        return MS_ENOTFOUND;
    }
    if (!order_status_can_move(s->status, to))
        return refuse_move(s, to, d);
    const struct transition *t = transition_to(to);
    json_t *data = json_pack("{s:s}", "at", now);
    if (t->has_reason)
        json_object_set_new(data, "reason", reason ? json_string(reason) : json_null());
    add_event(d, t->type, data);
    return 0;
}

static int decide_update(const order_state *s, json_t *cmd, const char *now, order_decision *d)
{
    order_status to;
    if (order_status_parse(get_str(cmd, "status"), &to) < 0)
        MS_BUG("a validated UpdateOrderStatus has no status");
    return decide_move(s, to, get_str(cmd, "reason"), now, d);
}

static int decide_cancel(const order_state *s, json_t *cmd, const char *now, order_decision *d)
{
    /* A pending order's saga is running: cancelling under it would race its charge. It ends
     * by itself (confirmed, or rejected at the latest on its timeout). */
    if (s->status == ORDER_STATUS_PENDING) {
        set_reason(d, "order is pending: its checkout is still running; cancel it once it is "
                      "confirmed");
        return MS_ECONFLICT;
    }
    return decide_move(s, ORDER_STATUS_CANCELLED, get_str(cmd, "reason"), now, d);
}

static int decide_checkout(const order_state *s, json_t *cmd, const char *now, order_decision *d)
{
    (void)s, (void)cmd, (void)now;
    set_reason(d, "a checkout is validated here; the service decides CreateOrder from it");
    return MS_EINVAL;
}

static const order_command_handler handlers[] = {
    {ORDER_CMD_CHECKOUT, validate_checkout, decide_checkout},
    {ORDER_CMD_CREATE, validate_create, decide_create},
    {ORDER_CMD_UPDATE_STATUS, validate_update, decide_update},
    {ORDER_CMD_CANCEL, validate_cancel, decide_cancel},
};

const order_command_handler *order_command_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof handlers / sizeof handlers[0]; i++)
        if (strcmp(handlers[i].name, name) == 0)
            return &handlers[i];
    return NULL;
}

int order_validate(const char *command, json_t *cmd, json_t *malformed, json_t *invalid)
{
    const order_command_handler *h = order_command_find(command);
    if (!h)
        return MS_ENOTFOUND;
    json_t *m = malformed ? json_incref(malformed) : json_array();
    json_t *v = invalid ? json_incref(invalid) : json_array();
    int rc = h->validate(cmd, m, v);
    json_decref(m);
    json_decref(v);
    return rc;
}

void order_decision_init(order_decision *d)
{
    memset(d, 0, sizeof *d);
}

void order_decision_release(order_decision *d)
{
    for (size_t i = 0; i < d->nevents; i++) {
        free((char *)d->events[i].data);
    }
    order_state_release(&d->next);
    order_decision_init(d);
}

int order_decide(const order_state *state, const char *command, json_t *cmd, const char *now,
                 json_t *malformed, json_t *invalid, order_decision *out)
{
    order_decision_release(out);
    const order_command_handler *h = order_command_find(command);
    if (!h) {
        set_reason(out, "unknown command %s", command ? command : "(null)");
        return MS_ENOTFOUND;
    }
    int rc = order_validate(command, cmd, malformed, invalid);
    if (rc < 0) {
        set_reason(out, "the %s command has invalid fields", h->name);
        return rc;
    }
    if (!is_timestamp(now)) {
        set_reason(out, "the decision time is not an RFC 3339 timestamp");
        return MS_EINVAL;
    }
    return h->decide(state, cmd, now, out);
}

/* ---- evolve, snapshots ------------------------------------------------------------------- */

/* A stored event or state, scanned in place (json_scan.h): jansson's tree for every event
 * the projector applied was a third of its time. */
typedef struct scanned {
    ms_js js;
    ms_js_token few[128], *tok;
} scanned;

static int scan_text(scanned *sc, const char *text)
{
    size_t len = text ? strlen(text) : 0, cap = ms_js_max_tokens(len);
    sc->tok =
        cap <= sizeof sc->few / sizeof sc->few[0] ? sc->few : ms_xcalloc(cap, sizeof *sc->tok);
    int rc = text ? ms_js_scan(&sc->js, text, len, sc->tok, cap) : MS_EINVAL;
    return rc == 0 && ms_js_is(&sc->js, 0, MS_JS_OBJECT) ? 0 : MS_EINVAL;
}

static void scanned_release(scanned *sc)
{
    if (sc->tok != sc->few)
        free(sc->tok);
}

/* String member `key` of `obj` into out[cap]: true when it is a string that fits. */
static bool get_text(const ms_js *js, int obj, const char *key, char *out, size_t cap)
{
    return ms_js_string(js, ms_js_get(js, obj, key), out, cap) >= 0;
}

/* A member that is absent, null or a string: true, with *out the string or NULL. */
static bool get_optional_text(const ms_js *js, int obj, const char *key, char **out)
{
    int t = ms_js_get(js, obj, key);
    *out = ms_js_strdup(js, t);
    return *out || t < 0 || ms_js_is(js, t, MS_JS_NULL);
}

/* Reads the order fields that OrderCreated and a snapshot share into a zeroed `t`; the order
 * id is under `id_key`. Stored facts: shape and invariants only (see the file comment). */
static int read_order(const ms_js *js, const char *id_key, order_state *t)
{
    enum { TEXT = 64 };
    char id[TEXT], user[TEXT], currency[TEXT], created[TEXT], status[TEXT];
    int items = ms_js_get(js, 0, "items"), addr = ms_js_get(js, 0, "shipping_address");
    int64_t total;
    if (!get_text(js, 0, id_key, id, TEXT) || !ms_uuid_valid(id) ||
        !get_text(js, 0, "user_id", user, TEXT) || !ms_uuid_valid(user) ||
        !get_text(js, 0, "currency", currency, TEXT) || !is_upper3(currency) ||
        !get_text(js, 0, "created_at", created, TEXT) || !is_timestamp(created) ||
        !ms_js_is(js, items, MS_JS_ARRAY) || js->tok[items].size == 0 ||
        !ms_js_int(js, ms_js_get(js, 0, "total_cents"), &total) ||
        (addr >= 0 && !ms_js_is(js, addr, MS_JS_OBJECT) && !ms_js_is(js, addr, MS_JS_NULL)) ||
        !get_text(js, 0, "status", status, TEXT) || order_status_parse(status, &t->status) < 0)
        return MS_EINVAL;
    copy_uuid(t->id, id);
    copy_uuid(t->user_id, user);
    memcpy(t->currency, currency, 4);
    t->nitems = js->tok[items].size;
    t->items = ms_xcalloc(t->nitems, sizeof *t->items);
    order_item *line = t->items;
    for (int e = ms_js_first(js, items); e >= 0; e = ms_js_after(js, items, e), line++) {
        char product[TEXT];
        int64_t q, p;
        if (!get_text(js, e, "product_id", product, TEXT) || !ms_uuid_valid(product) ||
            !ms_js_int(js, ms_js_get(js, e, "quantity"), &q) ||
            !ms_js_int(js, ms_js_get(js, e, "unit_price_cents"), &p) || q < 1 || q > INT_MAX ||
            p < 0)
            return MS_EINVAL;
        copy_uuid(line->product_id, product);
        line->quantity = (int)q;
        line->unit_price_cents = p;
    }
    /* before the checkout saga an order had no shipping: its subtotal is its total */
    int sub = ms_js_get(js, 0, "subtotal_cents"), ship = ms_js_get(js, 0, "shipping_cents");
    int64_t subtotal;
    if (order_total(t->items, t->nitems, &t->subtotal_cents) < 0 ||
        (sub >= 0 && (!ms_js_int(js, sub, &subtotal) || subtotal != t->subtotal_cents)) ||
        (ship >= 0 && (!ms_js_int(js, ship, &t->shipping_cents) || t->shipping_cents < 0)) ||
        __builtin_add_overflow(t->subtotal_cents, t->shipping_cents, &t->total_cents) ||
        t->total_cents != total)
        return MS_EINVAL;
    if (ms_js_is(js, addr, MS_JS_OBJECT)) { /* kept as compact text with sorted keys */
        ms_buf b;
        ms_buf_init(&b, js->tok[addr].end - js->tok[addr].start + 1);
        ms_js_write_compact(js, addr, &b);
        ms_buf_add(&b, "", 1);
        t->shipping_address = b.p;
    }
    t->created_at = ms_xstrdup(created);
    return 0;
}

static int apply_created(order_state *s, const ms_js *js, const char *at)
{
    if (s->status != ORDER_STATUS_NONE)
        return MS_EINVAL;
    order_state t;
    order_state_init(&t);
    int rc = read_order(js, "order_id", &t);
    if (rc == 0 && t.status != ORDER_STATUS_PENDING && t.status != ORDER_STATUS_CONFIRMED)
        rc = MS_EINVAL;
    if (rc < 0) {
        order_state_release(&t);
        return rc;
    }
    t.updated_at = ms_xstrdup(at);
    t.version = s->version + 1;
    order_state_release(s);
    *s = t;
    return 0;
}

static int apply_move(order_state *s, const struct transition *t, const ms_js *js, const char *at)
{
    char *reason;
    if (!order_status_can_move(s->status, t->to) || !get_optional_text(js, 0, "reason", &reason))
        return MS_EINVAL;
    s->status = t->to;
    free(s->updated_at);
    s->updated_at = ms_xstrdup(at);
    if (t->has_reason) {
        free(s->reason);
        s->reason = reason;
    } else {
        free(reason);
    }
    s->version++;
    return 0;
}

/*
 * Where a saga step event leaves the stock and the payment (*stock, *payment: in, then out).
 * 0, or MS_EINVAL when the event does not fit the order: the same rules for evolving a stored
 * event and for deciding one (order_saga_decide).
 */
static int step_move(const order_state *s, const char *type, order_stock *stock,
                     order_payment *payment)
{
    bool pending = s->status == ORDER_STATUS_PENDING;
    bool ended = s->status == ORDER_STATUS_REJECTED || s->status == ORDER_STATUS_CANCELLED;
    bool ok;
    if (strcmp(type, ORDER_EVENT_STOCK_RESERVED) == 0) {
        ok = pending && *stock == ORDER_STOCK_NONE;
        *stock = ORDER_STOCK_RESERVED;
    } else if (strcmp(type, ORDER_EVENT_STOCK_RELEASED) == 0) {
        /* from none too: a timed-out saga releases a reservation whose answer it never saw */
        ok = ended && (*stock == ORDER_STOCK_NONE || *stock == ORDER_STOCK_RESERVED);
        *stock = ORDER_STOCK_RELEASED;
    } else if (strcmp(type, ORDER_EVENT_STOCK_COMMITTED) == 0) {
        ok = (s->status == ORDER_STATUS_SHIPPED || s->status == ORDER_STATUS_DELIVERED) &&
             *stock == ORDER_STOCK_RESERVED;
        *stock = ORDER_STOCK_COMMITTED;
    } else if (strcmp(type, ORDER_EVENT_PAYMENT_CAPTURED) == 0) {
        ok = pending && *stock == ORDER_STOCK_RESERVED && *payment == ORDER_PAYMENT_NONE;
        *payment = ORDER_PAYMENT_CAPTURED;
    } else if (strcmp(type, ORDER_EVENT_PAYMENT_DECLINED) == 0) {
        ok = pending && *payment == ORDER_PAYMENT_NONE;
        *payment = ORDER_PAYMENT_DECLINED;
    } else if (strcmp(type, ORDER_EVENT_PAYMENT_REFUNDED) == 0) {
        /* from none too: a timed-out saga refunds a capture whose answer it never saw */
        ok = ended && (*payment == ORDER_PAYMENT_CAPTURED || *payment == ORDER_PAYMENT_NONE);
        *payment = ORDER_PAYMENT_REFUNDED;
    } else if (strcmp(type, ORDER_EVENT_PAYMENT_VOIDED) == 0) {
        ok = ended && *payment == ORDER_PAYMENT_NONE;
        *payment = ORDER_PAYMENT_VOIDED;
    } else {
        return MS_EINVAL;
    }
    return ok ? 0 : MS_EINVAL;
}

static bool is_step(const char *type)
{
    static const char *const steps[] = {
        ORDER_EVENT_STOCK_RESERVED,   ORDER_EVENT_STOCK_RELEASED,   ORDER_EVENT_STOCK_COMMITTED,
        ORDER_EVENT_PAYMENT_CAPTURED, ORDER_EVENT_PAYMENT_DECLINED, ORDER_EVENT_PAYMENT_REFUNDED,
        ORDER_EVENT_PAYMENT_VOIDED,
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (strcmp(steps[i], type) == 0)
            return true;
    return false;
}

static int apply_step(order_state *s, const char *type, const ms_js *js, const char *at)
{
    order_stock stock = s->stock;
    order_payment payment = s->payment;
    char payment_id[64] = "";
    int id = ms_js_get(js, 0, "payment_id");
    if (s->status == ORDER_STATUS_NONE || step_move(s, type, &stock, &payment) < 0 ||
        (id >= 0 && (!get_text(js, 0, "payment_id", payment_id, sizeof payment_id) ||
                     !ms_uuid_valid(payment_id))) ||
        (strcmp(type, ORDER_EVENT_PAYMENT_CAPTURED) == 0 && id < 0) ||
        (id >= 0 && strncmp(type, "Payment", 7) != 0)) /* only a payment names a payment */
        return MS_EINVAL;
    s->stock = stock;
    s->payment = payment;
    if (payment_id[0])
        copy_uuid(s->payment_id, payment_id);
    free(s->updated_at);
    s->updated_at = ms_xstrdup(at);
    s->version++;
    return 0;
}

/* An event's type as a transition (NULL for OrderCreated); false for an unknown type. */
static bool find_type(const char *type, const struct transition **out)
{
    *out = NULL;
    for (size_t i = 0; i < NTRANSITIONS; i++)
        if (strcmp(transitions[i].type, type) == 0) {
            *out = &transitions[i];
            return true;
        }
    return strcmp(type, ORDER_EVENT_CREATED) == 0;
}

int order_evolve(order_state *s, const char *type, const char *data)
{
    const struct transition *t = NULL;
    bool step = type && is_step(type);
    if (!type || !data || (!step && !find_type(type, &t)))
        return MS_EINVAL;
    scanned sc;
    char at[64];
    int rc = scan_text(&sc, data);
    if (rc == 0 && (!get_text(&sc.js, 0, "at", at, sizeof at) || !is_timestamp(at)))
        rc = MS_EINVAL;
    if (rc == 0)
        rc = step ? apply_step(s, type, &sc.js, at)
             : t  ? apply_move(s, t, &sc.js, at)
                  : apply_created(s, &sc.js, at);
    scanned_release(&sc);
    return rc;
}

int order_apply_decision(order_state *s, order_decision *d)
{
    if (d->has_next) {
        order_state_release(s);
        *s = d->next;
        order_state_init(&d->next);
        d->has_next = false;
        return 0;
    }
    for (size_t i = 0; i < d->nevents; i++) {
        int rc = order_evolve(s, d->events[i].type, d->events[i].data);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int order_rebuild(order_state *s, const order_event *events, size_t n, size_t *failed)
{
    for (size_t i = 0; i < n; i++) {
        int rc = order_evolve(s, events[i].type, events[i].data);
        if (rc < 0) {
            if (failed)
                *failed = i;
            return rc;
        }
    }
    return 0;
}

json_t *order_state_to_json(const order_state *s)
{
    if (s->status == ORDER_STATUS_NONE)
        return NULL;
    json_t *addr = s->shipping_address ? json_loads(s->shipping_address, 0, NULL) : NULL;
    json_t *doc = json_pack("{s:s, s:s, s:o, s:I, s:s, s:s, s:I, s:s, s:s, s:o}", "id", s->id,
                            "user_id", s->user_id, "items", items_to_json(s->items, s->nitems),
                            "total_cents", (json_int_t)s->total_cents, "currency", s->currency,
                            "status", order_status_name(s->status), "version",
                            (json_int_t)s->version, "created_at", s->created_at, "updated_at",
                            s->updated_at, "shipping_address", addr ? addr : json_null());
    if (!doc)
        MS_BUG("an order state with a missing field");
    if (s->reason)
        json_object_set_new(doc, "reason", json_string(s->reason));
    if (s->payment_id[0])
        json_object_set_new(doc, "payment_id", json_string(s->payment_id));
    json_object_set_new(doc, "subtotal_cents", json_integer(s->subtotal_cents));
    json_object_set_new(doc, "shipping_cents", json_integer(s->shipping_cents));
    json_object_set_new(doc, "payment_status", json_string(payment_names[s->payment]));
    json_object_set_new(doc, "stock_status", json_string(stock_names[s->stock]));
    return doc;
}

/* The same document as order_state_to_json, written straight as text: building and dumping a
 * jansson tree for every answer and every projected event was a tenth of a POST's time. */
void order_view_write(const order_state *s, ms_buf *b)
{
    if (s->status == ORDER_STATUS_NONE)
        MS_BUG("order_view_write: no order");
    put_key_string(b, "{\"id\":", s->id);
    put_key_string(b, ",\"user_id\":", s->user_id);
    ms_buf_adds(b, ",\"items\":[");
    for (size_t i = 0; i < s->nitems; i++) {
        put_key_string(b, i ? ",{\"product_id\":" : "{\"product_id\":", s->items[i].product_id);
        put_key_int(b, ",\"quantity\":", s->items[i].quantity);
        put_key_int(b, ",\"unit_price_cents\":", s->items[i].unit_price_cents);
        ms_buf_add(b, "}", 1);
    }
    put_key_int(b, "],\"subtotal_cents\":", s->subtotal_cents);
    put_key_int(b, ",\"shipping_cents\":", s->shipping_cents);
    put_key_int(b, ",\"total_cents\":", s->total_cents);
    put_key_string(b, ",\"currency\":", s->currency);
    put_key_string(b, ",\"status\":", order_status_name(s->status));
    put_key_int(b, ",\"version\":", s->version);
    put_key_string(b, ",\"created_at\":", s->created_at);
    put_key_string(b, ",\"updated_at\":", s->updated_at);
    ms_buf_adds(b, ",\"shipping_address\":");
    /* compact JSON text already (the state keeps it dumped) */
    ms_buf_adds(b, s->shipping_address ? s->shipping_address : "null");
    if (s->reason)
        put_key_string(b, ",\"reason\":", s->reason);
    if (s->payment_id[0])
        put_key_string(b, ",\"payment_id\":", s->payment_id);
    put_key_string(b, ",\"payment_status\":", payment_names[s->payment]);
    put_key_string(b, ",\"stock_status\":", stock_names[s->stock]);
    ms_buf_add(b, "}", 1);
}

char *order_snapshot_write(const order_state *s)
{
    json_t *doc = order_state_to_json(s);
    if (!doc)
        return NULL;
    json_object_set_new(doc, "format", json_integer(SNAPSHOT_FORMAT));
    json_object_set_new(doc, "reason", s->reason ? json_string(s->reason) : json_null());
    return dump(doc);
}

/* Reads a whole state (a snapshot, or a view when `is_view`) from its JSON text. */
static int read_state(const char *text, bool is_view, order_state *out)
{
    scanned sc;
    order_state t;
    order_state_init(&t);
    char updated[64];
    int64_t format, version;
    int rc = scan_text(&sc, text);
    const ms_js *js = &sc.js;
    if (rc == 0 && ((!is_view && (!ms_js_int(js, ms_js_get(js, 0, "format"), &format) ||
                                  format != SNAPSHOT_FORMAT)) ||
                    !ms_js_int(js, ms_js_get(js, 0, "version"), &version) || version < 1 ||
                    !get_text(js, 0, "updated_at", updated, sizeof updated) ||
                    !is_timestamp(updated) || !get_optional_text(js, 0, "reason", &t.reason)))
        rc = MS_EINVAL;
    if (rc == 0)
        rc = read_order(js, "id", &t);
    /* the saga's fields: absent from views and snapshots of orders older than the saga */
    char stock[16] = "none", payment[16] = "none", payment_id[64] = "";
    /* only a scanned text has tokens to look at: after a failed scan they are garbage */
    int has_stock = rc == 0 ? ms_js_get(js, 0, "stock_status") : -1,
        has_payment = rc == 0 ? ms_js_get(js, 0, "payment_status") : -1;
    int has_id = rc == 0 ? ms_js_get(js, 0, "payment_id") : -1;
    if (rc == 0 &&
        ((has_stock >= 0 && !get_text(js, 0, "stock_status", stock, sizeof stock)) ||
         (has_payment >= 0 && !get_text(js, 0, "payment_status", payment, sizeof payment)) ||
         (has_id >= 0 && (!get_text(js, 0, "payment_id", payment_id, sizeof payment_id) ||
                          !ms_uuid_valid(payment_id))) ||
         name_index(stock_names, 4, stock) < 0 || name_index(payment_names, 5, payment) < 0))
        rc = MS_EINVAL;
    if (rc == 0) {
        t.stock = (order_stock)name_index(stock_names, 4, stock);
        t.payment = (order_payment)name_index(payment_names, 5, payment);
        if (payment_id[0])
            copy_uuid(t.payment_id, payment_id);
        t.updated_at = ms_xstrdup(updated);
        t.version = version;
        order_state_release(out);
        *out = t;
        order_state_init(&t);
    }
    order_state_release(&t);
    scanned_release(&sc);
    return rc;
}

int order_snapshot_read(const char *text, order_state *out)
{
    return read_state(text, false, out);
}

int order_view_read(const char *text, order_state *out)
{
    return read_state(text, true, out);
}

/* ---- the checkout saga ------------------------------------------------------------------- */

int64_t order_shipping_cents(int64_t subtotal_cents)
{
    return subtotal_cents >= ORDER_FREE_SHIPPING_FROM_CENTS ? 0 : ORDER_SHIPPING_FLAT_CENTS;
}

order_saga_step order_saga_next(const order_state *s, bool has_card)
{
    bool timed_out = s->status == ORDER_STATUS_REJECTED && s->reason &&
                     strcmp(s->reason, ORDER_REASON_TIMEOUT) == 0;
    switch (s->status) {
    case ORDER_STATUS_PENDING:
        if (s->payment == ORDER_PAYMENT_CAPTURED)
            return ORDER_SAGA_CONFIRM; /* needs no card: a capture is never taken back here */
        if (s->payment == ORDER_PAYMENT_DECLINED || !has_card)
            return ORDER_SAGA_REJECT;
        return s->stock == ORDER_STOCK_NONE ? ORDER_SAGA_RESERVE : ORDER_SAGA_PAY;
    case ORDER_STATUS_REJECTED:
    case ORDER_STATUS_CANCELLED:
        if (s->payment == ORDER_PAYMENT_CAPTURED)
            return ORDER_SAGA_REFUND;
        if (s->payment == ORDER_PAYMENT_NONE && timed_out)
            return ORDER_SAGA_VOID;
        if (s->stock == ORDER_STOCK_RESERVED || (s->stock == ORDER_STOCK_NONE && timed_out))
            return ORDER_SAGA_RELEASE;
        return ORDER_SAGA_DONE;
    case ORDER_STATUS_SHIPPED:
    case ORDER_STATUS_DELIVERED:
        return s->stock == ORDER_STOCK_RESERVED ? ORDER_SAGA_COMMIT : ORDER_SAGA_DONE;
    default:
        return ORDER_SAGA_DONE;
    }
}

const char *order_saga_step_name(order_saga_step step)
{
    static const char *const names[] = {"done",   "reserve", "pay",     "confirm", "reject",
                                        "refund", "void",    "release", "commit"};
    return (unsigned)step < sizeof names / sizeof names[0] ? names[step] : "unknown";
}

/* One step event {at, payment_id?} after checking it fits. */
static int add_step(const order_state *s, order_stock *stock, order_payment *payment,
                    const char *type, const char *payment_id, const char *now, order_decision *d)
{
    if (step_move(s, type, stock, payment) < 0) {
        set_reason(d, "%s does not fit order %s (status %s)", type, s->id,
                   order_status_name(s->status) ? order_status_name(s->status) : "none");
        return MS_ECONFLICT;
    }
    json_t *data = json_pack("{s:s}", "at", now);
    if (payment_id)
        json_object_set_new(data, "payment_id", json_string(payment_id));
    add_event(d, type, data);
    return 0;
}

/* The event that moves the order to `to` ({at, reason?}), after its step events. */
static int add_move(const order_state *s, order_status to, const char *reason, const char *now,
                    order_decision *d)
{
    if (!order_status_can_move(s->status, to))
        return refuse_move(s, to, d);
    json_t *data = json_pack("{s:s}", "at", now);
    if (transition_to(to)->has_reason)
        json_object_set_new(data, "reason", reason ? json_string(reason) : json_null());
    add_event(d, transition_to(to)->type, data);
    return 0;
}

int order_saga_decide(const order_state *state, order_saga_outcome outcome, const char *payment_id,
                      const char *now, order_decision *out)
{
    order_decision_release(out);
    order_stock stock = state->stock;
    order_payment payment = state->payment;
    if (state->status == ORDER_STATUS_NONE) {
        set_reason(out, "order not found");
        return MS_ENOTFOUND;
    }
    if (payment_id && !ms_uuid_valid(payment_id))
        payment_id = NULL; /* a payment service's answer without a usable id */
    int rc = 0;
    switch (outcome) {
    case ORDER_OUTCOME_RESERVED:
        return add_step(state, &stock, &payment, ORDER_EVENT_STOCK_RESERVED, NULL, now, out);
    case ORDER_OUTCOME_OUT_OF_STOCK:
        return add_move(state, ORDER_STATUS_REJECTED, ORDER_REASON_OUT_OF_STOCK, now, out);
    case ORDER_OUTCOME_CAPTURED:
        if (!payment_id) {
            set_reason(out, "a capture without a payment id");
            return MS_EINVAL;
        }
        if (state->payment != ORDER_PAYMENT_CAPTURED)
            rc = add_step(state, &stock, &payment, ORDER_EVENT_PAYMENT_CAPTURED, payment_id, now,
                          out);
        return rc < 0 ? rc : add_move(state, ORDER_STATUS_CONFIRMED, NULL, now, out);
    case ORDER_OUTCOME_CONFIRMED:
        if (order_status_can_move(state->status, ORDER_STATUS_CONFIRMED) &&
            state->payment != ORDER_PAYMENT_CAPTURED) {
            set_reason(out, "order %s is not paid", state->id);
            return MS_ECONFLICT;
        }
        return add_move(state, ORDER_STATUS_CONFIRMED, NULL, now, out);
    case ORDER_OUTCOME_DECLINED:
        if (state->payment != ORDER_PAYMENT_DECLINED)
            rc = add_step(state, &stock, &payment, ORDER_EVENT_PAYMENT_DECLINED, payment_id, now,
                          out);
        return rc < 0 ? rc
                      : add_move(state, ORDER_STATUS_REJECTED, ORDER_REASON_PAYMENT_DECLINED, now,
                                 out);
    case ORDER_OUTCOME_TIMEOUT:
        return add_move(state, ORDER_STATUS_REJECTED, ORDER_REASON_TIMEOUT, now, out);
    case ORDER_OUTCOME_REFUNDED:
        return add_step(state, &stock, &payment, ORDER_EVENT_PAYMENT_REFUNDED, payment_id, now,
                        out);
    case ORDER_OUTCOME_VOIDED:
        return add_step(state, &stock, &payment, ORDER_EVENT_PAYMENT_VOIDED, NULL, now, out);
    case ORDER_OUTCOME_RELEASED:
        return add_step(state, &stock, &payment, ORDER_EVENT_STOCK_RELEASED, NULL, now, out);
    case ORDER_OUTCOME_COMMITTED:
        return add_step(state, &stock, &payment, ORDER_EVENT_STOCK_COMMITTED, NULL, now, out);
    }
    set_reason(out, "unknown saga outcome");
    return MS_EINVAL;
}
