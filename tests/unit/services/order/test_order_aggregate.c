/* test_order_aggregate.c — order_aggregate.c (status machine, validation, decide, evolve,
 * rebuild, view, snapshots) and currency.c */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/core/error.h"
#include "services/common/currency.h"
#include "services/order/order_aggregate.h"
#include "runtime/core/banned.h"

#define ORDER "0190c2a4-0000-7000-8000-000000000001"
#define USER  "0190c2a4-0000-7000-8000-0000000000aa"
#define P1    "0190c2a4-0000-7000-8000-00000000000a"
#define P2    "0190c2a4-0000-7000-8000-00000000000b"
#define P3    "0190c2a4-0000-7000-8000-00000000000c"
#define NOW   "2026-11-25T06:15:47.123Z"
#define LATER "2026-11-25T07:00:00.000Z"
#define ADDRESS                                                                                    \
    "{\"line1\":\"1 Main St\",\"city\":\"Berlin\",\"postal_code\":\"10115\",\"country\":\"DE\"}"

/* A pending order as the checkout saga will create it (2 x 1250 cents). */
#define CREATED_PENDING                                                                            \
    "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":[{\"product_"   \
    "id\":\"" P1 "\",\"quantity\":2,\"unit_price_cents\":1250}],\"order_id\":\"" ORDER             \
    "\",\"shipping_address\":null,\"status\":\"pending\",\"total_cents\":2500,\"user_id\":"        \
    "\"" USER "\"}"

/* Parses a JSON literal; fails the test on a syntax error. */
static json_t *obj(const char *text)
{
    json_error_t err;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!o)
        fail_msg("bad fixture %s: %s", text, err.text);
    return o;
}

static json_t *create_cmd(void)
{
    return obj("{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"EUR\","
               "\"items\":[{\"product_id\":\"" P1 "\",\"quantity\":2,\"unit_price_cents\":1250},"
               "{\"product_id\":\"" P2 "\",\"quantity\":1,\"unit_price_cents\":999}],"
               "\"shipping_address\":" ADDRESS "}");
}

/* The events a test wrote, as a stream would hold them. */
typedef struct stream {
    order_event ev[16];
    size_t n;
} stream;

static void stream_release(stream *st)
{
    for (size_t i = 0; i < st->n; i++)
        free((char *)st->ev[i].data);
    st->n = 0;
}

static void stream_add(stream *st, const char *type, const char *data)
{
    assert_true(st->n < 16);
    st->ev[st->n].type = type;
    st->ev[st->n].data = strdup(data);
    st->n++;
}

/* Decides `command` on *s, which must succeed, then evolves *s and records the events. */
static void run(order_state *s, stream *st, const char *command, json_t *cmd, const char *now)
{
    order_decision d;
    order_decision_init(&d);
    json_t *errors = json_array();
    int rc = order_decide(s, command, cmd, now, errors, errors, &d);
    if (rc != 0) {
        char *e = json_dumps(errors, 0);
        fail_msg("%s: %s (%s) %s", command, ms_strerror(rc), d.reason, e);
    }
    assert_int_equal(json_array_size(errors), 0);
    /* the shortcut the service takes (no re-parse) ends in the same state as the stored text */
    order_state shortcut;
    order_state_init(&shortcut);
    if (s->status != ORDER_STATUS_NONE) {
        char *snap = order_snapshot_write(s);
        assert_int_equal(order_snapshot_read(snap, &shortcut), 0);
        free(snap);
    }
    assert_int_equal(order_apply_decision(&shortcut, &d), 0);
    for (size_t i = 0; i < d.nevents; i++) {
        /* stored bytes are canonical: compact, keys sorted (what jansson would write) */
        json_t *doc = json_loads(d.events[i].data, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(doc);
        char *canonical = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        assert_string_equal(d.events[i].data, canonical);
        free(canonical);
        json_decref(doc);
        assert_int_equal(order_evolve(s, d.events[i].type, d.events[i].data), 0);
        stream_add(st, d.events[i].type, d.events[i].data);
    }
    assert_true(order_state_equal(&shortcut, s));
    order_state_release(&shortcut);
    /* the view written as text is the document of order_state_to_json, and reads back */
    ms_buf text;
    ms_buf_init(&text, 256);
    order_view_write(s, &text);
    ms_buf_add(&text, "", 1);
    json_t *got = json_loads(text.p, JSON_REJECT_DUPLICATES, NULL);
    json_t *want = order_state_to_json(s);
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);
    order_state back;
    order_state_init(&back);
    assert_int_equal(order_view_read(text.p, &back), 0);
    assert_true(order_state_equal(&back, s));
    order_state_release(&back);
    ms_buf_release(&text);
    json_decref(errors);
    json_decref(cmd);
    order_decision_release(&d);
}

static void run_text(order_state *s, stream *st, const char *command, const char *cmd)
{
    run(s, st, command, obj(cmd), LATER);
}

/* Builds an order in `status` the way the system reaches it. */
static void order_in(order_status status, order_state *s, stream *st)
{
    if (status == ORDER_STATUS_NONE)
        return;
    assert_int_equal(order_evolve(s, ORDER_EVENT_CREATED, CREATED_PENDING), 0);
    stream_add(st, ORDER_EVENT_CREATED, CREATED_PENDING);
    switch (status) {
    case ORDER_STATUS_REJECTED:
        run_text(s, st, ORDER_CMD_UPDATE_STATUS,
                 "{\"status\":\"rejected\",\"reason\":\"out of stock\"}");
        break;
    case ORDER_STATUS_CANCELLED:
        run_text(s, st, ORDER_CMD_CANCEL, "{\"reason\":\"changed my mind\"}");
        break;
    case ORDER_STATUS_DELIVERED:
    case ORDER_STATUS_SHIPPED:
    case ORDER_STATUS_CONFIRMED:
        run_text(s, st, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"confirmed\"}");
        if (status == ORDER_STATUS_CONFIRMED)
            break;
        run_text(s, st, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"shipped\"}");
        if (status == ORDER_STATUS_SHIPPED)
            break;
        run_text(s, st, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"delivered\"}");
        break;
    default:
        break;
    }
    assert_int_equal(s->status, status);
}

/* A deep copy of a state (through a snapshot), to check that something left it unchanged. */
static void clone(const order_state *s, order_state *out)
{
    order_state_init(out);
    if (s->status == ORDER_STATUS_NONE)
        return;
    char *text = order_snapshot_write(s);
    assert_non_null(text);
    assert_int_equal(order_snapshot_read(text, out), 0);
    free(text);
}

/* The sorted, comma-separated keys of an object. */
static void keys_of(json_t *o, char *out, size_t n)
{
    char *text = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
    json_t *sorted = json_loads(text, JSON_PRESERVE_ORDER, NULL);
    free(text);
    const char *key;
    json_t *v;
    size_t len = 0;
    out[0] = '\0';
    json_object_foreach(sorted, key, v)
    {
        len += (size_t)snprintf(out + len, n - len, "%s%s", len ? "," : "", key);
        assert_true(len < n);
    }
    json_decref(sorted);
}

/* ---- statuses ---------------------------------------------------------------------------- */

static void test_status_names(void **state)
{
    (void)state;
    static const char *const names[] = {"pending",   "confirmed", "shipped",
                                        "delivered", "rejected",  "cancelled"};
    for (int i = 0; i < 6; i++) {
        order_status s = ORDER_STATUS_NONE;
        assert_int_equal(order_status_parse(names[i], &s), 0);
        assert_int_equal(s, ORDER_STATUS_PENDING + i);
        assert_string_equal(order_status_name(s), names[i]);
    }
    order_status s = ORDER_STATUS_SHIPPED;
    assert_null(order_status_name(ORDER_STATUS_NONE));
    assert_null(order_status_name((order_status)42));
    assert_int_equal(order_status_parse("Pending", &s), MS_EINVAL);
    assert_int_equal(order_status_parse("", &s), MS_EINVAL);
    assert_int_equal(order_status_parse("created", &s), MS_EINVAL);
    assert_int_equal(order_status_parse(NULL, &s), MS_EINVAL);
    assert_int_equal(s, ORDER_STATUS_SHIPPED); /* untouched on failure */
}

static void test_status_machine(void **state)
{
    (void)state;
    /* exactly the edges of the status machine (api/openapi.yaml) */
    static const order_status edges[][2] = {
        {ORDER_STATUS_PENDING, ORDER_STATUS_CONFIRMED},
        {ORDER_STATUS_CONFIRMED, ORDER_STATUS_SHIPPED},
        {ORDER_STATUS_SHIPPED, ORDER_STATUS_DELIVERED},
        {ORDER_STATUS_PENDING, ORDER_STATUS_REJECTED},
        {ORDER_STATUS_PENDING, ORDER_STATUS_CANCELLED},
        {ORDER_STATUS_CONFIRMED, ORDER_STATUS_CANCELLED},
    };
    for (int from = ORDER_STATUS_NONE; from <= ORDER_STATUS_CANCELLED; from++) {
        for (int to = ORDER_STATUS_NONE; to <= ORDER_STATUS_CANCELLED; to++) {
            bool edge = false;
            for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
                edge |= edges[i][0] == (order_status)from && edges[i][1] == (order_status)to;
            if (order_status_can_move(from, to) != edge)
                fail_msg("%d -> %d: expected %d", from, to, edge);
        }
    }
    assert_false(order_status_can_move((order_status)-1, ORDER_STATUS_CONFIRMED));
    assert_false(order_status_can_move(ORDER_STATUS_PENDING, (order_status)99));
}

/* ---- transitions: every (status, command) pair ------------------------------------------- */

enum { OK_ = 0, CONFLICT_ = MS_ECONFLICT, NOTFOUND_ = MS_ENOTFOUND };

static const struct move {
    const char *command, *cmd, *event;
    order_status to;
} moves[] = {
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"confirmed\"}", ORDER_EVENT_CONFIRMED,
     ORDER_STATUS_CONFIRMED},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"shipped\"}", ORDER_EVENT_SHIPPED,
     ORDER_STATUS_SHIPPED},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"delivered\"}", ORDER_EVENT_DELIVERED,
     ORDER_STATUS_DELIVERED},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"rejected\",\"reason\":\"payment declined\"}",
     ORDER_EVENT_REJECTED, ORDER_STATUS_REJECTED},
    {ORDER_CMD_CANCEL, "{\"reason\":\"changed my mind\"}", ORDER_EVENT_CANCELLED,
     ORDER_STATUS_CANCELLED},
};

/* expected[from][move] */
static const int expected[7][5] = {
    [ORDER_STATUS_NONE] = {NOTFOUND_, NOTFOUND_, NOTFOUND_, NOTFOUND_, NOTFOUND_},
    [ORDER_STATUS_PENDING] = {OK_, CONFLICT_, CONFLICT_, OK_, OK_},
    [ORDER_STATUS_CONFIRMED] = {CONFLICT_, OK_, CONFLICT_, CONFLICT_, OK_},
    [ORDER_STATUS_SHIPPED] = {CONFLICT_, CONFLICT_, OK_, CONFLICT_, CONFLICT_},
    [ORDER_STATUS_DELIVERED] = {CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_},
    [ORDER_STATUS_REJECTED] = {CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_},
    [ORDER_STATUS_CANCELLED] = {CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_},
};

static void test_every_transition(void **state)
{
    (void)state;
    int legal = 0, illegal = 0;
    for (int from = ORDER_STATUS_NONE; from <= ORDER_STATUS_CANCELLED; from++) {
        for (int m = 0; m < 5; m++) {
            order_state s, before;
            stream st = {0};
            order_state_init(&s);
            order_in(from, &s, &st);
            clone(&s, &before);
            order_decision d;
            order_decision_init(&d);
            json_t *cmd = obj(moves[m].cmd);
            int rc = order_decide(&s, moves[m].command, cmd, LATER, NULL, NULL, &d);
            if (rc != expected[from][m])
                fail_msg("%s %s on %s: got %s (%s)", moves[m].command, moves[m].cmd,
                         order_status_name(from) ? order_status_name(from) : "none", ms_errname(rc),
                         d.reason);
            assert_true(order_state_equal(&s, &before)); /* decide never changes the state */
            if (rc == 0) {
                legal++;
                assert_int_equal(d.nevents, 1);
                assert_string_equal(d.events[0].type, moves[m].event);
                assert_int_equal(order_evolve(&s, d.events[0].type, d.events[0].data), 0);
                assert_int_equal(s.status, moves[m].to);
                assert_int_equal(s.version, before.version + 1);
                assert_string_equal(s.updated_at, LATER);
                assert_string_equal(s.created_at, NOW);
            } else {
                assert_int_equal(d.nevents, 0);
                assert_true(d.reason[0] != '\0');
                if (rc == MS_ECONFLICT) {
                    illegal++;
                    char want[100];
                    if (from == (int)moves[m].to)
                        snprintf(want, sizeof want, "order is already %s", order_status_name(from));
                    else
                        snprintf(want, sizeof want, "order is %s; only ", order_status_name(from));
                    assert_memory_equal(d.reason, want, strlen(want));
                } else {
                    assert_string_equal(d.reason, "order not found");
                }
                /* the event the refused command would have written does not apply either */
                char data[64];
                snprintf(data, sizeof data, "{\"at\":\"%s\",\"reason\":\"x\"}", LATER);
                assert_int_equal(order_evolve(&s, moves[m].event, data), MS_EINVAL);
                assert_true(order_state_equal(&s, &before));
            }
            order_decision_release(&d);
            json_decref(cmd);
            order_state_release(&s);
            order_state_release(&before);
            stream_release(&st);
        }
    }
    assert_int_equal(legal, 6);
    assert_int_equal(illegal, 24);
}

static void expect_conflict(order_status from, const char *command, const char *cmd_text,
                            const char *reason)
{
    order_state s;
    stream st = {0};
    order_state_init(&s);
    order_in(from, &s, &st);
    order_decision d;
    order_decision_init(&d);
    json_t *cmd = obj(cmd_text);
    assert_int_equal(order_decide(&s, command, cmd, LATER, NULL, NULL, &d), MS_ECONFLICT);
    assert_string_equal(d.reason, reason);
    order_decision_release(&d);
    json_decref(cmd);
    order_state_release(&s);
    stream_release(&st);
}

static void test_conflict_reasons(void **state)
{
    (void)state;
    expect_conflict(ORDER_STATUS_SHIPPED, ORDER_CMD_CANCEL, "{\"reason\":\"late\"}",
                    "order is shipped; only pending or confirmed orders can be cancelled");
    expect_conflict(ORDER_STATUS_CONFIRMED, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"delivered\"}",
                    "order is confirmed; only shipped orders can be delivered");
    expect_conflict(ORDER_STATUS_PENDING, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"shipped\"}",
                    "order is pending; only confirmed orders can be shipped");
    expect_conflict(ORDER_STATUS_CONFIRMED, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"rejected\"}",
                    "order is confirmed; only pending orders can be rejected");
    expect_conflict(ORDER_STATUS_DELIVERED, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"confirmed\"}",
                    "order is delivered; only pending orders can be confirmed");
    expect_conflict(ORDER_STATUS_CANCELLED, ORDER_CMD_CANCEL, "{\"reason\":\"again\"}",
                    "order is already cancelled");
    expect_conflict(ORDER_STATUS_CONFIRMED, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"confirmed\"}",
                    "order is already confirmed");
}

static void test_create_on_existing_order(void **state)
{
    (void)state;
    for (int from = ORDER_STATUS_PENDING; from <= ORDER_STATUS_CANCELLED; from++) {
        order_state s;
        stream st = {0};
        order_state_init(&s);
        order_in(from, &s, &st);
        order_decision d;
        order_decision_init(&d);
        json_t *cmd = create_cmd();
        assert_int_equal(order_decide(&s, ORDER_CMD_CREATE, cmd, LATER, NULL, NULL, &d),
                         MS_ECONFLICT);
        assert_string_equal(d.reason, "order " ORDER " already exists");
        assert_int_equal(d.nevents, 0);
        /* and OrderCreated does not apply twice */
        assert_int_equal(order_evolve(&s, ORDER_EVENT_CREATED, CREATED_PENDING), MS_EINVAL);
        order_decision_release(&d);
        json_decref(cmd);
        order_state_release(&s);
        stream_release(&st);
    }
}

static void test_create_then_state(void **state)
{
    (void)state;
    order_state s;
    stream st = {0};
    order_state_init(&s);
    run(&s, &st, ORDER_CMD_CREATE, create_cmd(), NOW);
    assert_int_equal(s.status, ORDER_STATUS_PENDING);
    assert_int_equal(s.status, ORDER_STATUS_CONFIRMED);
    assert_string_equal(s.id, ORDER);
    assert_string_equal(s.user_id, USER);
    assert_string_equal(s.currency, "EUR");
    assert_int_equal(s.nitems, 2);
    assert_string_equal(s.items[1].product_id, P2);
    assert_int_equal(s.items[0].quantity, 2);
    assert_int_equal(s.items[0].unit_price_cents, 1250);
    assert_int_equal(s.total_cents, 2 * 1250 + 999);
    assert_string_equal(s.shipping_address, "{\"city\":\"Berlin\",\"country\":\"DE\",\"line1\":"
                                            "\"1 Main St\",\"postal_code\":\"10115\"}");
    assert_string_equal(s.created_at, NOW);
    assert_string_equal(s.updated_at, NOW);
    assert_null(s.reason);
    assert_int_equal(s.version, 1);
    order_state_release(&s);
    stream_release(&st);
}

/* ---- event JSON shapes ------------------------------------------------------------------- */

/* Parses event data, checks that it is compact with sorted keys and has exactly `keys`. */
static json_t *event_doc(const char *data, const char *keys)
{
    json_t *doc = obj(data);
    char *again = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(again, data);
    free(again);
    char got[256];
    keys_of(doc, got, sizeof got);
    assert_string_equal(got, keys);
    return doc;
}

static void test_created_event_shape(void **state)
{
    (void)state;
    order_state s;
    order_state_init(&s);
    order_decision d;
    order_decision_init(&d);
    json_t *cmd = create_cmd();
    /* ids in upper case come out canonical (lower case) */
    json_object_set_new(json_array_get(json_object_get(cmd, "items"), 0), "product_id",
                        json_string("0190C2A4-0000-7000-8000-00000000000A"));
    assert_int_equal(order_decide(&s, ORDER_CMD_CREATE, cmd, NOW, NULL, NULL, &d), 0);
    assert_int_equal(d.nevents, 1);
    assert_string_equal(d.events[0].type, "OrderCreated");
    json_t *doc = event_doc(d.events[0].data, "at,created_at,currency,items,order_id,"
                                              "shipping_address,status,total_cents,user_id");
    assert_string_equal(json_string_value(json_object_get(doc, "order_id")), ORDER);
    assert_string_equal(json_string_value(json_object_get(doc, "user_id")), USER);
    assert_string_equal(json_string_value(json_object_get(doc, "currency")), "EUR");
    assert_string_equal(json_string_value(json_object_get(doc, "status")), "confirmed");
    assert_string_equal(json_string_value(json_object_get(doc, "created_at")), NOW);
    assert_string_equal(json_string_value(json_object_get(doc, "at")), NOW);
    assert_int_equal(json_integer_value(json_object_get(doc, "total_cents")), 3499);
    json_t *items = json_object_get(doc, "items");
    assert_int_equal(json_array_size(items), 2);
    char got[128];
    keys_of(json_array_get(items, 0), got, sizeof got);
    assert_string_equal(got, "product_id,quantity,unit_price_cents");
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "product_id")),
                        P1);
    keys_of(json_object_get(doc, "shipping_address"), got, sizeof got);
    assert_string_equal(got, "city,country,line1,postal_code");
    json_decref(doc);
    order_decision_release(&d);

    /* without an address: null */
    json_object_del(cmd, "shipping_address");
    assert_int_equal(order_decide(&s, ORDER_CMD_CREATE, cmd, NOW, NULL, NULL, &d), 0);
    doc = obj(d.events[0].data);
    assert_true(json_is_null(json_object_get(doc, "shipping_address")));
    json_decref(doc);
    order_decision_release(&d);
    json_decref(cmd);
}

static void test_move_event_shapes(void **state)
{
    (void)state;
    static const struct {
        order_status from;
        int move;
        const char *keys;
    } cases[] = {
        {ORDER_STATUS_PENDING, 0, "at"},          {ORDER_STATUS_CONFIRMED, 1, "at"},
        {ORDER_STATUS_SHIPPED, 2, "at"},          {ORDER_STATUS_PENDING, 3, "at,reason"},
        {ORDER_STATUS_CONFIRMED, 4, "at,reason"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        order_state s;
        stream st = {0};
        order_state_init(&s);
        order_in(cases[i].from, &s, &st);
        order_decision d;
        order_decision_init(&d);
        json_t *cmd = obj(moves[cases[i].move].cmd);
        assert_int_equal(order_decide(&s, moves[cases[i].move].command, cmd, LATER, NULL, NULL, &d),
                         0);
        assert_string_equal(d.events[0].type, moves[cases[i].move].event);
        json_t *doc = event_doc(d.events[0].data, cases[i].keys);
        assert_string_equal(json_string_value(json_object_get(doc, "at")), LATER);
        if (json_object_get(doc, "reason"))
            assert_string_equal(json_string_value(json_object_get(doc, "reason")),
                                json_string_value(json_object_get(cmd, "reason")));
        assert_int_equal(order_evolve(&s, d.events[0].type, d.events[0].data), 0);
        if (json_object_get(doc, "reason"))
            assert_string_equal(s.reason, json_string_value(json_object_get(cmd, "reason")));
        json_decref(doc);
        json_decref(cmd);
        order_decision_release(&d);
        order_state_release(&s);
        stream_release(&st);
    }
    /* rejected without a reason: reason null in the event, NULL in the state */
    order_state s;
    stream st = {0};
    order_state_init(&s);
    order_in(ORDER_STATUS_PENDING, &s, &st);
    run_text(&s, &st, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"rejected\"}");
    json_t *doc = event_doc(st.ev[1].data, "at,reason");
    assert_true(json_is_null(json_object_get(doc, "reason")));
    assert_null(s.reason);
    json_decref(doc);
    order_state_release(&s);
    stream_release(&st);
}

/* ---- validation -------------------------------------------------------------------------- */

#define ITEM(p, q, c) "{\"product_id\":\"" p "\",\"quantity\":" #q ",\"unit_price_cents\":" #c "}"
#define CREATE(fields)                                                                             \
    "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"EUR\"" fields "}"
#define ITEMS(list) ",\"items\":[" list "]"
#define ONE_ITEM    ITEMS(ITEM(P1, 1, 100))

enum { MALFORMED, INVALID };

static const struct bad {
    const char *command, *cmd, *field;
    int list;
} bad_commands[] = {
    /* ids */
    {ORDER_CMD_CREATE, "{\"user_id\":\"" USER "\",\"currency\":\"EUR\"" ONE_ITEM "}", "order_id",
     INVALID},
    {ORDER_CMD_CREATE, "{\"order_id\":\"" ORDER "\",\"currency\":\"EUR\"" ONE_ITEM "}", "user_id",
     INVALID},
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"not-a-uuid\",\"user_id\":\"" USER "\",\"currency\":\"EUR\"" ONE_ITEM "}",
     "order_id", INVALID},
    {ORDER_CMD_CREATE, "{\"order_id\":7,\"user_id\":\"" USER "\",\"currency\":\"EUR\"" ONE_ITEM "}",
     "order_id", MALFORMED},
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "x\",\"currency\":\"EUR\"" ONE_ITEM "}",
     "user_id", INVALID},
    /* fields a client must not set, or that do not exist */
    {ORDER_CMD_CREATE, CREATE(ONE_ITEM ",\"total_cents\":1"), "total_cents", MALFORMED},
    {ORDER_CMD_CREATE, CREATE(ONE_ITEM ",\"status\":\"delivered\""), "status", MALFORMED},
    /* currency */
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"eur\"" ONE_ITEM "}",
     "currency", INVALID},
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"XXX\"" ONE_ITEM "}",
     "currency", INVALID},
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"EURO\"" ONE_ITEM "}",
     "currency", INVALID},
    {ORDER_CMD_CREATE, "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\"" ONE_ITEM "}",
     "currency", INVALID},
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":978" ONE_ITEM "}",
     "currency", MALFORMED},
    /* items */
    {ORDER_CMD_CREATE, CREATE(""), "items", INVALID},
    {ORDER_CMD_CREATE, CREATE(",\"items\":{}"), "items", MALFORMED},
    {ORDER_CMD_CREATE, CREATE(",\"items\":null"), "items", MALFORMED},
    {ORDER_CMD_CREATE, CREATE(ITEMS("")), "items", INVALID},
    {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, 1, 1) ",7")), "items[1]", MALFORMED},
    {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, 0, 100))), "items[0].quantity", INVALID},
    {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, -3, 100))), "items[0].quantity", INVALID},
    {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, 10001, 100))), "items[0].quantity", INVALID},
    {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, "2", 100))), "items[0].quantity", MALFORMED},
    {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, 1.5, 100))), "items[0].quantity", MALFORMED},
    {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, 1, 1) "," ITEM(P2, 1, 1) "," ITEM(P3, 1, -1))),
     "items[2].unit_price_cents", INVALID},
    {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, 1, 100000001))), "items[0].unit_price_cents", INVALID},
    {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, 1, 9.99))), "items[0].unit_price_cents", MALFORMED},
    {ORDER_CMD_CREATE, CREATE(ITEMS("{\"product_id\":\"" P1 "\",\"quantity\":1}")),
     "items[0].unit_price_cents", INVALID},
    {ORDER_CMD_CREATE, CREATE(ITEMS("{\"quantity\":1,\"unit_price_cents\":1}")),
     "items[0].product_id", INVALID},
    {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM("p-1", 1, 100))), "items[0].product_id", INVALID},
    {ORDER_CMD_CREATE,
     CREATE(ITEMS("{\"product_id\":\"" P1 "\",\"quantity\":1,\"unit_price_cents\":1,\"sku\":1}")),
     "items[0].sku", MALFORMED},
    {ORDER_CMD_CREATE,
     CREATE(ITEMS(ITEM(P1, 1, 1) "," ITEM("0190C2A4-0000-7000-8000-00000000000A", 2, 1))),
     "items[1].product_id", INVALID},
    /* shipping address */
    {ORDER_CMD_CREATE, CREATE(ONE_ITEM ",\"shipping_address\":\"Berlin\""), "shipping_address",
     MALFORMED},
    {ORDER_CMD_CREATE,
     CREATE(ONE_ITEM ",\"shipping_address\":{\"line1\":\"1 Main St\",\"postal_code\":\"10115\","
                     "\"country\":\"DE\"}"),
     "shipping_address.city", INVALID},
    {ORDER_CMD_CREATE,
     CREATE(ONE_ITEM ",\"shipping_address\":{\"line1\":\"\",\"city\":\"Berlin\",\"postal_code\":"
                     "\"10115\",\"country\":\"DE\"}"),
     "shipping_address.line1", INVALID},
    {ORDER_CMD_CREATE,
     CREATE(ONE_ITEM ",\"shipping_address\":{\"line1\":\"x\",\"city\":\" Berlin\","
                     "\"postal_code\":\"10115\",\"country\":\"DE\"}"),
     "shipping_address.city", INVALID},
    {ORDER_CMD_CREATE,
     CREATE(ONE_ITEM ",\"shipping_address\":{\"line1\":\"x\",\"city\":\"Berlin\",\"postal_code\":"
                     "\"10_115\",\"country\":\"DE\"}"),
     "shipping_address.postal_code", INVALID},
    {ORDER_CMD_CREATE,
     CREATE(ONE_ITEM ",\"shipping_address\":{\"line1\":\"x\",\"city\":\"Berlin\",\"postal_code\":"
                     "\"10115\",\"country\":\"de\"}"),
     "shipping_address.country", INVALID},
    {ORDER_CMD_CREATE,
     CREATE(ONE_ITEM ",\"shipping_address\":{\"line1\":\"x\",\"city\":\"Berlin\",\"postal_code\":"
                     "\"10115\",\"country\":\"DE\",\"zip\":\"1\"}"),
     "shipping_address.zip", MALFORMED},
    {ORDER_CMD_CREATE,
     CREATE(ONE_ITEM ",\"shipping_address\":{\"line1\":\"x\",\"city\":5,\"postal_code\":"
                     "\"10115\",\"country\":\"DE\"}"),
     "shipping_address.city", MALFORMED},
    /* UpdateOrderStatus */
    {ORDER_CMD_UPDATE_STATUS, "{}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"pending\"}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"cancelled\"}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"Shipped\"}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":3}", "status", MALFORMED},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":null}", "status", MALFORMED},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"shipped\",\"reason\":\"why\"}", "reason", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"rejected\",\"reason\":\"\"}", "reason", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"rejected\",\"reason\":[]}", "reason", MALFORMED},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"shipped\",\"version\":3}", "version", MALFORMED},
    /* CancelOrder */
    {ORDER_CMD_CANCEL, "{}", "reason", INVALID},
    {ORDER_CMD_CANCEL, "{\"reason\":null}", "reason", MALFORMED},
    {ORDER_CMD_CANCEL, "{\"reason\":\"\"}", "reason", INVALID},
    {ORDER_CMD_CANCEL, "{\"reason\":\"bell\\u0007\"}", "reason", INVALID},
    {ORDER_CMD_CANCEL, "{\"reason\":\"c1\\u0085\"}", "reason", INVALID},
    {ORDER_CMD_CANCEL, "{\"reason\":\"trailing \"}", "reason", INVALID},
    {ORDER_CMD_CANCEL, "{\"reason\":\"x\",\"refund\":true}", "refund", MALFORMED},
    /* not an object at all */
    {ORDER_CMD_CANCEL, "[]", "body", MALFORMED},
    {ORDER_CMD_UPDATE_STATUS, "\"shipped\"", "body", MALFORMED},
    {ORDER_CMD_CREATE, "null", "body", MALFORMED},
};

/* Validates `cmd`, expects exactly one error: `field` in `list`; decide refuses it too. */
static void expect_bad(const char *command, json_t *cmd, const char *field, int list,
                       const char *what)
{
    json_t *malformed = json_array(), *invalid = json_array();
    assert_int_equal(order_validate(command, cmd, malformed, invalid), MS_EINVAL);
    json_t *want = list == MALFORMED ? malformed : invalid;
    json_t *other = list == MALFORMED ? invalid : malformed;
    if (json_array_size(want) != 1 || json_array_size(other) != 0 ||
        strcmp(json_string_value(json_object_get(json_array_get(want, 0), "field")), field) != 0) {
        char *m = json_dumps(malformed, 0), *v = json_dumps(invalid, 0);
        fail_msg("%s %s: expected %s in %s; malformed %s invalid %s", command, what, field,
                 list == MALFORMED ? "malformed" : "invalid", m, v);
    }
    assert_non_null(json_string_value(json_object_get(json_array_get(want, 0), "message")));
    json_decref(malformed);
    json_decref(invalid);

    /* decide validates first: nothing decided, whatever the state */
    order_state s;
    order_state_init(&s);
    order_decision d;
    order_decision_init(&d);
    int rc = order_decide(&s, command, cmd, NOW, NULL, NULL, &d);
    assert_int_equal(rc, MS_EINVAL);
    assert_int_equal(d.nevents, 0);
    order_decision_release(&d);
}

static void test_bad_commands(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_commands / sizeof bad_commands[0]; i++) {
        const struct bad *b = &bad_commands[i];
        json_t *cmd = json_loads(b->cmd, JSON_DECODE_ANY, NULL);
        if (!cmd)
            fail_msg("bad fixture %zu: %s", i, b->cmd);
        expect_bad(b->command, cmd, b->field, b->list, b->cmd);
        json_decref(cmd);
    }
}

/* Cases too long to write out: 101 items, 501-character reasons, a 201-character line1. */
static void test_bad_commands_built(void **state)
{
    (void)state;
    char long_text[600];
    memset(long_text, 'x', sizeof long_text);

    json_t *cmd = create_cmd();
    json_t *items = json_object_get(cmd, "items");
    json_array_clear(items);
    for (int i = 0; i < ORDER_MAX_ITEMS + 1; i++) {
        char id[MS_UUID_LEN + 1];
        snprintf(id, sizeof id, "00000000-0000-7000-8000-%012d", i);
        json_array_append_new(items, json_pack("{s:s, s:i, s:i}", "product_id", id, "quantity", 1,
                                               "unit_price_cents", 1));
    }
    expect_bad(ORDER_CMD_CREATE, cmd, "items", INVALID, "101 items");
    json_array_remove(items, 0); /* 100 is fine */
    assert_int_equal(order_validate(ORDER_CMD_CREATE, cmd, NULL, NULL), 0);
    json_decref(cmd);

    cmd = create_cmd();
    long_text[201] = '\0';
    json_object_set_new(json_object_get(cmd, "shipping_address"), "line1", json_string(long_text));
    expect_bad(ORDER_CMD_CREATE, cmd, "shipping_address.line1", INVALID, "line1 201");
    long_text[201] = 'x';
    json_decref(cmd);

    long_text[ORDER_MAX_REASON + 1] = '\0';
    cmd = json_pack("{s:s}", "reason", long_text);
    expect_bad(ORDER_CMD_CANCEL, cmd, "reason", INVALID, "reason 501");
    json_decref(cmd);
    cmd = json_pack("{s:s, s:s}", "status", "rejected", "reason", long_text);
    expect_bad(ORDER_CMD_UPDATE_STATUS, cmd, "reason", INVALID, "reason 501");
    json_decref(cmd);
    /* 500 is fine, in characters, not bytes: 500 x "é" is 1000 bytes */
    long_text[ORDER_MAX_REASON] = '\0';
    cmd = json_pack("{s:s}", "reason", long_text);
    assert_int_equal(order_validate(ORDER_CMD_CANCEL, cmd, NULL, NULL), 0);
    json_decref(cmd);
    char accents[2 * ORDER_MAX_REASON + 1];
    for (int i = 0; i < ORDER_MAX_REASON; i++)
        memcpy(accents + 2 * i, "\xc3\xa9", 2);
    accents[2 * ORDER_MAX_REASON] = '\0';
    cmd = json_pack("{s:s}", "reason", accents);
    assert_int_equal(order_validate(ORDER_CMD_CANCEL, cmd, NULL, NULL), 0);
    json_decref(cmd);

    /* every error of a command is reported, not only the first */
    cmd = obj("{\"order_id\":\"x\",\"user_id\":\"y\",\"currency\":\"eur\",\"items\":[" ITEM(
        P1, 0, -1) "]}");
    json_t *errors = json_array();
    assert_int_equal(order_validate(ORDER_CMD_CREATE, cmd, errors, errors), MS_EINVAL);
    char fields[200] = "";
    size_t i, len = 0;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        len += (size_t)snprintf(fields + len, sizeof fields - len, "%s ",
                                json_string_value(json_object_get(e, "field")));
    }
    assert_string_equal(fields,
                        "order_id user_id currency items[0].quantity items[0].unit_price_cents ");
    json_decref(errors);
    json_decref(cmd);
}

static void test_good_commands(void **state)
{
    (void)state;
    static const struct {
        const char *command, *cmd;
    } good[] = {
        {ORDER_CMD_CREATE, CREATE(ONE_ITEM)},
        {ORDER_CMD_CREATE, CREATE(ONE_ITEM ",\"shipping_address\":null")},
        {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, 10000, 100000000)))},
        {ORDER_CMD_CREATE, CREATE(ITEMS(ITEM(P1, 1, 0)))},
        {ORDER_CMD_CREATE, CREATE(ONE_ITEM ",\"shipping_address\":{\"line1\":\"Rua São Bento 1\","
                                           "\"city\":\"São Paulo\",\"postal_code\":\"01010-000\","
                                           "\"country\":\"BR\"}")},
        {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"confirmed\"}"},
        {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"rejected\",\"reason\":null}"},
        {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"rejected\",\"reason\":\"card declined\"}"},
        {ORDER_CMD_CANCEL, "{\"reason\":\"no longer needed\"}"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        json_t *cmd = obj(good[i].cmd);
        json_t *errors = json_array();
        if (order_validate(good[i].command, cmd, errors, errors) != 0) {
            char *e = json_dumps(errors, 0);
            fail_msg("%s %s refused: %s", good[i].command, good[i].cmd, e);
        }
        json_decref(errors);
        json_decref(cmd);
    }
}

/* ---- totals ------------------------------------------------------------------------------ */

static void test_total(void **state)
{
    (void)state;
    order_item items[3] = {{P1, 3, 1999}, {P2, 1, 0}, {P3, 10000, 100000000}};
    int64_t total = -1;
    assert_int_equal(order_total(items, 3, &total), 0);
    assert_int_equal(total, 3 * 1999 + 10000 * INT64_C(100000000));
    assert_int_equal(order_total(items, 0, &total), 0);
    assert_int_equal(total, 0);

    /* a product that overflows */
    order_item big[2] = {{P1, 3, INT64_MAX / 2}, {P2, 1, 1}};
    total = 42;
    assert_int_equal(order_total(big, 1, &total), MS_ETOOBIG);
    assert_int_equal(total, 42); /* untouched */
    /* a sum that overflows: each line fits, the sum does not */
    big[0].quantity = 1;
    big[0].unit_price_cents = INT64_MAX;
    assert_int_equal(order_total(big, 1, &total), 0);
    assert_int_equal(total, INT64_MAX);
    assert_int_equal(order_total(big, 2, &total), MS_ETOOBIG);
    /* negative values are refused, not summed */
    big[1].unit_price_cents = -1;
    assert_int_equal(order_total(big + 1, 1, &total), MS_EINVAL);
    big[1].unit_price_cents = 1;
    big[1].quantity = -1;
    assert_int_equal(order_total(big + 1, 1, &total), MS_EINVAL);
}

static void test_total_cap(void **state)
{
    (void)state;
    /* exactly 10^12: ten lines of 10000 x 10^7 */
    json_t *cmd = create_cmd();
    json_t *items = json_object_get(cmd, "items");
    json_array_clear(items);
    for (int i = 0; i < 10; i++) {
        char id[MS_UUID_LEN + 1];
        snprintf(id, sizeof id, "00000000-0000-7000-8000-%012d", i);
        json_array_append_new(items, json_pack("{s:s, s:i, s:i}", "product_id", id, "quantity",
                                               10000, "unit_price_cents", 10000000));
    }
    order_state s;
    stream st = {0};
    order_state_init(&s);
    run(&s, &st, ORDER_CMD_CREATE, json_incref(cmd), NOW);
    assert_int_equal(s.total_cents, ORDER_MAX_TOTAL_CENTS);
    /* one cent more is refused */
    json_array_append_new(items, json_pack("{s:s, s:i, s:i}", "product_id", P1, "quantity", 1,
                                           "unit_price_cents", 1));
    expect_bad(ORDER_CMD_CREATE, cmd, "items", INVALID, "total 10^12 + 1");
    json_decref(cmd);
    order_state_release(&s);
    stream_release(&st);
}

/* ---- evolve: bad events ------------------------------------------------------------------ */

static void test_bad_events(void **state)
{
    (void)state;
    static const struct {
        order_status on;
        const char *type, *data;
    } cases[] = {
        {ORDER_STATUS_CONFIRMED, "OrderTeleported", "{\"at\":\"" NOW "\"}"},
        {ORDER_STATUS_CONFIRMED, "orderShipped", "{\"at\":\"" NOW "\"}"},
        {ORDER_STATUS_CONFIRMED, "", "{\"at\":\"" NOW "\"}"},
        {ORDER_STATUS_CONFIRMED, ORDER_EVENT_SHIPPED, "not json"},
        {ORDER_STATUS_CONFIRMED, ORDER_EVENT_SHIPPED, "[]"},
        {ORDER_STATUS_CONFIRMED, ORDER_EVENT_SHIPPED, "{}"},
        {ORDER_STATUS_CONFIRMED, ORDER_EVENT_SHIPPED, "{\"at\":12}"},
        {ORDER_STATUS_CONFIRMED, ORDER_EVENT_SHIPPED, "{\"at\":\"yesterday\"}"},
        {ORDER_STATUS_CONFIRMED, ORDER_EVENT_SHIPPED, "{\"at\":\"2026-13-01T00:00:00Z\"}"},
        {ORDER_STATUS_CONFIRMED, ORDER_EVENT_SHIPPED, "{\"at\":\"" NOW "\",\"at\":\"" NOW "\"}"},
        {ORDER_STATUS_CONFIRMED, ORDER_EVENT_CANCELLED, "{\"at\":\"" NOW "\",\"reason\":5}"},
        {ORDER_STATUS_CONFIRMED, ORDER_EVENT_DELIVERED, "{\"at\":\"" NOW "\"}"},
        {ORDER_STATUS_NONE, ORDER_EVENT_CONFIRMED, "{\"at\":\"" NOW "\"}"},
        /* OrderCreated with broken data */
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED, "{\"at\":\"" NOW "\"}"},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":["
         "{\"product_id\":\"" P1
         "\",\"quantity\":2,\"unit_price_cents\":1250}],\"order_id\":\"" ORDER
         "\",\"shipping_address\":null,\"status\":\"pending\",\"total_cents\":2501,"
         "\"user_id\":\"" USER "\"}"},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":["
         "{\"product_id\":\"" P1 "\",\"quantity\":2,\"unit_price_cents\":9223372036854775807}],"
         "\"order_id\":\"" ORDER "\",\"shipping_address\":null,\"status\":\"pending\","
         "\"total_cents\":-2,\"user_id\":\"" USER "\"}"},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":[],"
         "\"order_id\":\"" ORDER "\",\"shipping_address\":null,\"status\":\"pending\","
         "\"total_cents\":0,\"user_id\":\"" USER "\"}"},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":["
         "{\"product_id\":\"" P1
         "\",\"quantity\":2,\"unit_price_cents\":1250}],\"order_id\":\"" ORDER
         "\",\"shipping_address\":null,\"status\":\"shipped\",\"total_cents\":2500,"
         "\"user_id\":\"" USER "\"}"},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":["
         "{\"product_id\":\"" P1
         "\",\"quantity\":2,\"unit_price_cents\":1250}],\"order_id\":\"" ORDER
         "\",\"shipping_address\":\"Berlin\",\"status\":\"pending\",\"total_cents\":2500,"
         "\"user_id\":\"" USER "\"}"},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":["
         "{\"product_id\":\"" P1
         "\",\"quantity\":2,\"unit_price_cents\":1250}],\"order_id\":\"" ORDER
         "\",\"shipping_address\":null,\"status\":\"pending\",\"total_cents\":2500,"
         "\"user_id\":\"nobody\"}"},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":["
         "{\"product_id\":\"" P1
         "\",\"quantity\":0,\"unit_price_cents\":1250}],\"order_id\":\"" ORDER
         "\",\"shipping_address\":null,\"status\":\"pending\",\"total_cents\":0,"
         "\"user_id\":\"" USER "\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        order_state s, before;
        stream st = {0};
        order_state_init(&s);
        order_in(cases[i].on, &s, &st);
        clone(&s, &before);
        if (order_evolve(&s, cases[i].type, cases[i].data) != MS_EINVAL)
            fail_msg("case %zu: %s %s applied", i, cases[i].type, cases[i].data);
        assert_true(order_state_equal(&s, &before));
        order_state_release(&s);
        order_state_release(&before);
        stream_release(&st);
    }
    order_state s;
    order_state_init(&s);
    assert_int_equal(order_evolve(&s, NULL, "{}"), MS_EINVAL);
    assert_int_equal(order_evolve(&s, ORDER_EVENT_CREATED, NULL), MS_EINVAL);
    /* unknown keys in a known event are tolerated (a later version may add some) */
    assert_int_equal(order_evolve(&s, ORDER_EVENT_CREATED, CREATED_PENDING), 0);
    assert_int_equal(
        order_evolve(&s, ORDER_EVENT_CONFIRMED, "{\"at\":\"2026-11-25T08:00:00+01:00\",\"by\":1}"),
        0);
    assert_string_equal(s.updated_at, "2026-11-25T08:00:00+01:00");
    order_state_release(&s);
}

static void test_rebuild_stops_at_bad_event(void **state)
{
    (void)state;
    const order_event events[] = {
        {ORDER_EVENT_CREATED, CREATED_PENDING},
        {ORDER_EVENT_CONFIRMED, "{\"at\":\"" LATER "\"}"},
        {"OrderTeleported", "{\"at\":\"" LATER "\"}"},
        {ORDER_EVENT_SHIPPED, "{\"at\":\"" LATER "\"}"},
    };
    order_state s;
    order_state_init(&s);
    size_t failed = 99;
    assert_int_equal(order_rebuild(&s, events, 4, &failed), MS_EINVAL);
    assert_int_equal(failed, 2);
    assert_int_equal(s.status, ORDER_STATUS_CONFIRMED);
    assert_int_equal(s.version, 2);
    order_state_release(&s);
    order_state_init(&s);
    assert_int_equal(order_rebuild(&s, events, 2, NULL), 0);
    order_state_release(&s);
}

/* ---- rebuild equals live, snapshots ------------------------------------------------------ */

static void test_rebuild_equals_live(void **state)
{
    (void)state;
    for (int end = ORDER_STATUS_PENDING; end <= ORDER_STATUS_CANCELLED; end++) {
        order_state live, rebuilt;
        stream st = {0};
        order_state_init(&live);
        order_state_init(&rebuilt);
        if (end == ORDER_STATUS_PENDING || end == ORDER_STATUS_REJECTED) {
            order_in(end, &live, &st);
        } else {
            run(&live, &st, ORDER_CMD_CREATE, create_cmd(), NOW);
            if (end == ORDER_STATUS_CANCELLED)
                run_text(&live, &st, ORDER_CMD_CANCEL, "{\"reason\":\"too slow\"}");
            if (end >= ORDER_STATUS_SHIPPED && end <= ORDER_STATUS_DELIVERED)
                run_text(&live, &st, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"shipped\"}");
            if (end == ORDER_STATUS_DELIVERED)
                run_text(&live, &st, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"delivered\"}");
        }
        assert_int_equal(live.status, end);
        assert_int_equal(live.version, (int64_t)st.n);
        assert_int_equal(order_rebuild(&rebuilt, st.ev, st.n, NULL), 0);
        assert_true(order_state_equal(&live, &rebuilt));

        /* a snapshot after each event, plus the rest of the stream, gives the same state */
        for (size_t cut = 1; cut <= st.n; cut++) {
            order_state part, resumed;
            order_state_init(&part);
            order_state_init(&resumed);
            assert_int_equal(order_rebuild(&part, st.ev, cut, NULL), 0);
            char *snap = order_snapshot_write(&part);
            assert_non_null(snap);
            assert_int_equal(order_snapshot_read(snap, &resumed), 0);
            assert_true(order_state_equal(&part, &resumed));
            assert_int_equal(order_rebuild(&resumed, st.ev + cut, st.n - cut, NULL), 0);
            assert_true(order_state_equal(&live, &resumed));
            /* and writing the read snapshot gives the same bytes */
            order_state_release(&resumed);
            order_state_init(&resumed);
            assert_int_equal(order_snapshot_read(snap, &resumed), 0);
            char *again = order_snapshot_write(&resumed);
            assert_string_equal(snap, again);
            free(again);
            free(snap);
            order_state_release(&part);
            order_state_release(&resumed);
        }
        order_state_release(&live);
        order_state_release(&rebuilt);
        stream_release(&st);
    }
}

static void test_snapshot_errors(void **state)
{
    (void)state;
    order_state s, out;
    stream st = {0};
    order_state_init(&s);
    order_state_init(&out);
    assert_null(order_snapshot_write(&s)); /* no order, no snapshot */
    run(&s, &st, ORDER_CMD_CREATE, create_cmd(), NOW);
    char *snap = order_snapshot_write(&s);
    json_t *doc = obj(snap);
    char keys[256];
    keys_of(doc, keys, sizeof keys);
    assert_string_equal(keys, "created_at,currency,format,id,items,reason,shipping_address,status,"
                              "total_cents,updated_at,user_id,version");
    /* reading into a state that holds an order replaces it (no leak: ASan) */
    assert_int_equal(order_snapshot_read(snap, &out), 0);
    assert_int_equal(order_snapshot_read(snap, &out), 0);
    assert_true(order_state_equal(&s, &out));

    static const struct {
        const char *key, *value;
    } breaks[] = {
        {"format", "2"},           {"format", "\"1\""},    {"version", "0"},
        {"version", "\"1\""},      {"id", "\"x\""},        {"status", "\"lost\""},
        {"total_cents", "1"},      {"items", "[]"},        {"updated_at", "null"},
        {"reason", "7"},           {"currency", "\"eu\""}, {"shipping_address", "[]"},
        {"created_at", "\"now\""},
    };
    for (size_t i = 0; i < sizeof breaks / sizeof breaks[0]; i++) {
        json_t *bad = json_deep_copy(doc);
        json_object_set_new(bad, breaks[i].key, obj(breaks[i].value));
        char *text = json_dumps(bad, 0);
        if (order_snapshot_read(text, &out) != MS_EINVAL)
            fail_msg("snapshot with %s=%s read", breaks[i].key, breaks[i].value);
        assert_true(order_state_equal(&s, &out)); /* unchanged on failure */
        free(text);
        json_decref(bad);
    }
    assert_int_equal(order_snapshot_read(NULL, &out), MS_EINVAL);
    assert_int_equal(order_snapshot_read("", &out), MS_EINVAL);
    assert_int_equal(order_snapshot_read("[1]", &out), MS_EINVAL);
    assert_int_equal(order_snapshot_read("{\"format\":1}", &out), MS_EINVAL);
    assert_true(order_state_equal(&s, &out));
    free(snap);
    json_decref(doc);
    order_state_release(&s);
    order_state_release(&out);
    stream_release(&st);
}

/* ---- the public view --------------------------------------------------------------------- */

static void test_view(void **state)
{
    (void)state;
    order_state s;
    stream st = {0};
    order_state_init(&s);
    assert_null(order_state_to_json(&s));
    run(&s, &st, ORDER_CMD_CREATE, create_cmd(), NOW);
    json_t *view = order_state_to_json(&s);
    char keys[256];
    keys_of(view, keys, sizeof keys);
    assert_string_equal(keys, "created_at,currency,id,items,shipping_address,status,total_cents,"
                              "updated_at,user_id,version");
    assert_string_equal(json_string_value(json_object_get(view, "id")), ORDER);
    assert_string_equal(json_string_value(json_object_get(view, "status")), "confirmed");
    assert_int_equal(json_integer_value(json_object_get(view, "total_cents")), 3499);
    assert_int_equal(json_integer_value(json_object_get(view, "version")), 1);
    assert_int_equal(json_array_size(json_object_get(view, "items")), 2);
    json_t *addr = obj(ADDRESS);
    assert_true(json_equal(json_object_get(view, "shipping_address"), addr));
    json_decref(addr);
    json_decref(view);

    run_text(&s, &st, ORDER_CMD_CANCEL, "{\"reason\":\"changed my mind\"}");
    view = order_state_to_json(&s);
    assert_string_equal(json_string_value(json_object_get(view, "reason")), "changed my mind");
    assert_string_equal(json_string_value(json_object_get(view, "status")), "cancelled");
    assert_string_equal(json_string_value(json_object_get(view, "updated_at")), LATER);
    assert_int_equal(json_integer_value(json_object_get(view, "version")), 2);
    json_decref(view);
    order_state_release(&s);
    stream_release(&st);

    /* no address: null in the view */
    order_state_init(&s);
    order_in(ORDER_STATUS_PENDING, &s, &st);
    view = order_state_to_json(&s);
    assert_true(json_is_null(json_object_get(view, "shipping_address")));
    assert_null(json_object_get(view, "reason"));
    json_decref(view);
    order_state_release(&s);
    stream_release(&st);
}

/* ---- registry, decide edge cases --------------------------------------------------------- */

static void test_registry(void **state)
{
    (void)state;
    static const char *const names[] = {"CreateOrder", "UpdateOrderStatus", "CancelOrder"};
    for (int i = 0; i < 3; i++) {
        const order_command_handler *h = order_command_find(names[i]);
        assert_non_null(h);
        assert_string_equal(h->name, names[i]);
        assert_non_null(h->validate);
        assert_non_null(h->decide);
    }
    assert_null(order_command_find("DeleteOrder"));
    assert_null(order_command_find("createorder"));
    assert_null(order_command_find(NULL));

    json_t *cmd = obj("{}");
    assert_int_equal(order_validate("DeleteOrder", cmd, NULL, NULL), MS_ENOTFOUND);
    order_state s;
    order_state_init(&s);
    order_decision d;
    order_decision_init(&d);
    assert_int_equal(order_decide(&s, "DeleteOrder", cmd, NOW, NULL, NULL, &d), MS_ENOTFOUND);
    assert_string_equal(d.reason, "unknown command DeleteOrder");
    json_decref(cmd);

    /* a decision time that is not RFC 3339 */
    cmd = create_cmd();
    static const char *const bad_now[] = {
        "",  "2026-11-25", "2026-11-25 06:15:47Z", "2026-11-25T06:15:47", "2026-11-25T24:00:00Z",
        NULL};
    for (size_t i = 0; i < sizeof bad_now / sizeof bad_now[0]; i++) {
        assert_int_equal(order_decide(&s, ORDER_CMD_CREATE, cmd, bad_now[i], NULL, NULL, &d),
                         MS_EINVAL);
        assert_int_equal(d.nevents, 0);
    }
    /* a decision reused without release: the old events are freed (ASan) */
    assert_int_equal(order_decide(&s, ORDER_CMD_CREATE, cmd, NOW, NULL, NULL, &d), 0);
    assert_int_equal(order_decide(&s, ORDER_CMD_CREATE, cmd, LATER, NULL, NULL, &d), 0);
    assert_int_equal(d.nevents, 1);
    order_decision_release(&d);
    order_decision_release(&d); /* twice is harmless */
    json_decref(cmd);
    order_state_release(&s);
    order_state_release(&s);
}

/* ---- currency ---------------------------------------------------------------------------- */

static void test_currency_valid(void **state)
{
    (void)state;
    static const char *const good[] = {"EUR", "USD", "JPY", "GBP", "CHF", "AED", "ZWL", "BRL"};
    static const char *const bad[] = {"eur", "Eur", "EU",  "EURO", "",    "XXX", "XAU",
                                      "XTS", "E1R", "EU ", " EU",  "ABC", "US$"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!ms_currency_valid(good[i]))
            fail_msg("%s refused", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (ms_currency_valid(bad[i]))
            fail_msg("\"%s\" accepted", bad[i]);
    assert_false(ms_currency_valid(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_status_machine),
        cmocka_unit_test(test_every_transition),
        cmocka_unit_test(test_conflict_reasons),
        cmocka_unit_test(test_create_on_existing_order),
        cmocka_unit_test(test_create_then_state),
        cmocka_unit_test(test_created_event_shape),
        cmocka_unit_test(test_move_event_shapes),
        cmocka_unit_test(test_bad_commands),
        cmocka_unit_test(test_bad_commands_built),
        cmocka_unit_test(test_good_commands),
        cmocka_unit_test(test_total),
        cmocka_unit_test(test_total_cap),
        cmocka_unit_test(test_bad_events),
        cmocka_unit_test(test_rebuild_stops_at_bad_event),
        cmocka_unit_test(test_rebuild_equals_live),
        cmocka_unit_test(test_snapshot_errors),
        cmocka_unit_test(test_view),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_currency_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
