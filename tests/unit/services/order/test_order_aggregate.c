/* test_order_aggregate.c — order_aggregate.c (status machine, validation, decide, evolve,
 * rebuild, view, snapshots, the checkout saga's rules) and currency.c */
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
#define PAY   "0190c2a4-0000-7000-8000-0000000000ff"
#define P1    "0190c2a4-0000-7000-8000-00000000000a"
#define P2    "0190c2a4-0000-7000-8000-00000000000b"
#define P3    "0190c2a4-0000-7000-8000-00000000000c"
#define NOW   "2026-11-25T06:15:47.123Z"
#define LATER "2026-11-25T07:00:00.000Z"
#define CARD  "4242424242424242"
#define ADDRESS                                                                                    \
    "{\"line1\":\"1 Main St\",\"city\":\"Berlin\",\"postal_code\":\"10115\",\"country\":\"DE\"}"

/* One line of P1 in an event. */
#define LINE(q, c) "{\"product_id\":\"" P1 "\",\"quantity\":" #q ",\"unit_price_cents\":" #c "}"

/* A pending order exactly as CreateOrder writes it (2 x 1250 cents + 499 shipping). */
#define CREATED_PENDING                                                                            \
    "{\"at\":\"" NOW "\",\"card_last4\":\"4242\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\"," \
    "\"items\":[" LINE(2, 1250) "],\"order_id\":\"" ORDER "\",\"shipping_address\":null,"          \
                                "\"shipping_cents\":499,\"status\":\"pending\","                   \
                                "\"subtotal_cents\":2500,\"total_cents\":2999,\"user_id\":\"" USER \
                                "\"}"

/* OrderCreated data with `items` and `tail` (the keys from shipping_cents to total_cents). */
#define CREATED_DATA(items, tail)                                                                  \
    "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":[" items        \
    "],\"order_id\":\"" ORDER "\",\"shipping_address\":null," tail ",\"user_id\":\"" USER "\"}"

/* An order created before the checkout saga: confirmed at once, no subtotal, no shipping. */
#define CREATED_OLD CREATED_DATA(LINE(2, 1250), "\"status\":\"confirmed\",\"total_cents\":2500")

/* Parses a JSON literal; fails the test on a syntax error. */
static json_t *obj(const char *text)
{
    json_error_t err;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!o)
        fail_msg("bad fixture %s: %s", text, err.text);
    return o;
}

/* What the service builds from a checkout: 2 x 1250 + 999 = 3499, shipping 499. */
static json_t *create_cmd(void)
{
    return obj("{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"EUR\","
               "\"items\":[{\"product_id\":\"" P1 "\",\"quantity\":2,\"unit_price_cents\":1250},"
               "{\"product_id\":\"" P2 "\",\"quantity\":1,\"unit_price_cents\":999}],"
               "\"shipping_cents\":499,\"card_last4\":\"4242\","
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

/* The view written as text is the document of order_state_to_json and reads back equal; a
 * snapshot reads back equal and writes the same bytes again. */
static void round_trip(const order_state *s)
{
    ms_buf text;
    ms_buf_init(&text, 256);
    order_view_write(s, &text);
    ms_buf_add(&text, "", 1);
    json_t *got = json_loads(text.p, JSON_REJECT_DUPLICATES, NULL);
    json_t *want = order_state_to_json(s);
    assert_non_null(got);
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);
    order_state back;
    order_state_init(&back);
    assert_int_equal(order_view_read(text.p, &back), 0);
    assert_true(order_state_equal(&back, s));
    order_state_release(&back);
    ms_buf_release(&text);

    char *snap = order_snapshot_write(s);
    assert_non_null(snap);
    order_state_init(&back);
    assert_int_equal(order_snapshot_read(snap, &back), 0);
    assert_true(order_state_equal(&back, s));
    char *again = order_snapshot_write(&back);
    assert_string_equal(snap, again);
    free(again);
    free(snap);
    order_state_release(&back);
}

/* Checks a decision taken on *s, then evolves *s with its events and records them: stored
 * bytes are canonical, the shortcut the service takes (no re-parse) ends in the same state as
 * the stored text, and the result round-trips. */
static void record(order_state *s, stream *st, order_decision *d)
{
    order_state shortcut;
    clone(s, &shortcut);
    assert_int_equal(order_apply_decision(&shortcut, d), 0);
    for (size_t i = 0; i < d->nevents; i++) {
        json_t *doc = json_loads(d->events[i].data, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(doc);
        char *canonical = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        assert_string_equal(d->events[i].data, canonical);
        free(canonical);
        json_decref(doc);
        assert_int_equal(order_evolve(s, d->events[i].type, d->events[i].data), 0);
        stream_add(st, d->events[i].type, d->events[i].data);
    }
    assert_true(order_state_equal(&shortcut, s));
    order_state_release(&shortcut);
    round_trip(s);
}

/* Decides `command` on *s, which must succeed, then records it. Consumes cmd. */
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
    record(s, st, &d);
    json_decref(errors);
    json_decref(cmd);
    order_decision_release(&d);
}

static void run_text(order_state *s, stream *st, const char *command, const char *cmd)
{
    run(s, st, command, obj(cmd), LATER);
}

/* Decides a saga outcome on *s, which must succeed, then records it. */
static void saga(order_state *s, stream *st, order_saga_outcome outcome, const char *payment_id)
{
    order_decision d;
    order_decision_init(&d);
    int rc = order_saga_decide(s, outcome, payment_id, LATER, &d);
    if (rc != 0)
        fail_msg("outcome %d: %s (%s)", (int)outcome, ms_errname(rc), d.reason);
    assert_true(d.nevents >= 1);
    record(s, st, &d);
    order_decision_release(&d);
}

/* Splits a space-separated spec into words: calls fn for each. */
static void each_word(const char *spec, void (*fn)(const char *word, void *arg), void *arg)
{
    while (*spec) {
        spec += strspn(spec, " ");
        size_t n = strcspn(spec, " ");
        if (n == 0)
            break;
        char word[32];
        assert_true(n < sizeof word);
        memcpy(word, spec, n);
        word[n] = '\0';
        fn(word, arg);
        spec += n;
    }
}

typedef struct player {
    order_state *s;
    stream *st;
} player;

/* One step the system takes: created (the fixture's OrderCreated), create (CreateOrder), a
 * saga outcome (reserve, oos, capture, decline, confirm, timeout, refund, void, release,
 * commit), or a
 * client's command (ship, deliver, cancel). */
static void play_word(const char *w, void *arg)
{
    player *p = arg;
    static const struct {
        const char *word;
        order_saga_outcome outcome;
        const char *payment_id;
    } outcomes[] = {
        {"reserve", ORDER_OUTCOME_RESERVED, NULL},  {"oos", ORDER_OUTCOME_OUT_OF_STOCK, NULL},
        {"capture", ORDER_OUTCOME_CAPTURED, PAY},   {"decline", ORDER_OUTCOME_DECLINED, PAY},
        {"confirm", ORDER_OUTCOME_CONFIRMED, NULL}, {"timeout", ORDER_OUTCOME_TIMEOUT, NULL},
        {"refund", ORDER_OUTCOME_REFUNDED, PAY},    {"void", ORDER_OUTCOME_VOIDED, NULL},
        {"release", ORDER_OUTCOME_RELEASED, NULL},  {"commit", ORDER_OUTCOME_COMMITTED, NULL},
    };
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++) {
        if (strcmp(outcomes[i].word, w) == 0) {
            saga(p->s, p->st, outcomes[i].outcome, outcomes[i].payment_id);
            return;
        }
    }
    if (strcmp(w, "created") == 0) {
        assert_int_equal(order_evolve(p->s, ORDER_EVENT_CREATED, CREATED_PENDING), 0);
        stream_add(p->st, ORDER_EVENT_CREATED, CREATED_PENDING);
    } else if (strcmp(w, "create") == 0) {
        run(p->s, p->st, ORDER_CMD_CREATE, create_cmd(), NOW);
    } else if (strcmp(w, "ship") == 0) {
        run_text(p->s, p->st, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"shipped\"}");
    } else if (strcmp(w, "deliver") == 0) {
        run_text(p->s, p->st, ORDER_CMD_UPDATE_STATUS, "{\"status\":\"delivered\"}");
    } else if (strcmp(w, "cancel") == 0) {
        run_text(p->s, p->st, ORDER_CMD_CANCEL, "{\"reason\":\"changed my mind\"}");
    } else {
        fail_msg("unknown step %s", w);
    }
}

/* Plays the steps of `spec` on *s, recording into *st. */
static void play(order_state *s, stream *st, const char *spec)
{
    player p = {s, st};
    each_word(spec, play_word, &p);
}

/* Builds an order in `status` the way the system reaches it: confirmed and rejected through
 * the saga's outcomes, shipped and delivered through UpdateOrderStatus, cancelled through
 * CancelOrder of a confirmed order (its compensation not run yet). */
static void order_in(order_status status, order_state *s, stream *st)
{
    static const char *const specs[] = {
        [ORDER_STATUS_NONE] = "",
        [ORDER_STATUS_PENDING] = "created",
        [ORDER_STATUS_CONFIRMED] = "created reserve capture",
        [ORDER_STATUS_SHIPPED] = "created reserve capture ship",
        [ORDER_STATUS_DELIVERED] = "created reserve capture ship deliver",
        [ORDER_STATUS_REJECTED] = "created oos",
        [ORDER_STATUS_CANCELLED] = "created reserve capture cancel",
    };
    play(s, st, specs[status]);
    assert_int_equal(s->status, status);
}

/* Stored events, applied straight with order_evolve (states the saga only passes through, or
 * that only an old stream holds): created, old (CREATED_OLD), reserved, released, committed,
 * captured,
 * declined, refunded, voided, confirmed, oos / pdeclined / timeout (OrderRejected with that
 * reason), shipped, delivered, cancelled. */
static void event_word(const char *w, void *arg)
{
    static const struct {
        const char *word, *type, *data;
    } words[] = {
        {"created", ORDER_EVENT_CREATED, CREATED_PENDING},
        {"old", ORDER_EVENT_CREATED, CREATED_OLD},
        {"reserved", ORDER_EVENT_STOCK_RESERVED, "{\"at\":\"" LATER "\"}"},
        {"released", ORDER_EVENT_STOCK_RELEASED, "{\"at\":\"" LATER "\"}"},
        {"committed", ORDER_EVENT_STOCK_COMMITTED, "{\"at\":\"" LATER "\"}"},
        {"captured", ORDER_EVENT_PAYMENT_CAPTURED,
         "{\"at\":\"" LATER "\",\"payment_id\":\"" PAY "\"}"},
        {"declined", ORDER_EVENT_PAYMENT_DECLINED, "{\"at\":\"" LATER "\"}"},
        {"refunded", ORDER_EVENT_PAYMENT_REFUNDED, "{\"at\":\"" LATER "\"}"},
        {"voided", ORDER_EVENT_PAYMENT_VOIDED, "{\"at\":\"" LATER "\"}"},
        {"confirmed", ORDER_EVENT_CONFIRMED, "{\"at\":\"" LATER "\"}"},
        {"oos", ORDER_EVENT_REJECTED, "{\"at\":\"" LATER "\",\"reason\":\"out_of_stock\"}"},
        {"pdeclined", ORDER_EVENT_REJECTED,
         "{\"at\":\"" LATER "\",\"reason\":\"payment_declined\"}"},
        {"timeout", ORDER_EVENT_REJECTED, "{\"at\":\"" LATER "\",\"reason\":\"timeout\"}"},
        {"shipped", ORDER_EVENT_SHIPPED, "{\"at\":\"" LATER "\"}"},
        {"delivered", ORDER_EVENT_DELIVERED, "{\"at\":\"" LATER "\"}"},
        {"cancelled", ORDER_EVENT_CANCELLED, "{\"at\":\"" LATER "\",\"reason\":\"too slow\"}"},
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strcmp(words[i].word, w) == 0) {
            if (order_evolve(arg, words[i].type, words[i].data) != 0)
                fail_msg("%s (%s) did not apply", w, words[i].type);
            return;
        }
    }
    fail_msg("unknown event %s", w);
}

/* *s (initialised) after the stored events of `spec`. */
static void events(order_state *s, const char *spec)
{
    each_word(spec, event_word, s);
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

/* Two reasons (NULL or text) that say the same. */
static bool same_reason(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
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

/* ---- transitions: every (status, move) pair ---------------------------------------------- */

enum { OK_ = 0, CONFLICT_ = MS_ECONFLICT, NOTFOUND_ = MS_ENOTFOUND };

/* A move is a client's command (command set) or a saga outcome (command NULL). */
static const struct move {
    const char *command, *cmd;
    order_saga_outcome outcome;
    const char *event;
    order_status to;
    const char *reason; /* what the event's reason says, NULL for none */
} moves[] = {
    {NULL, NULL, ORDER_OUTCOME_CONFIRMED, ORDER_EVENT_CONFIRMED, ORDER_STATUS_CONFIRMED, NULL},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"shipped\"}", 0, ORDER_EVENT_SHIPPED,
     ORDER_STATUS_SHIPPED, NULL},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"delivered\"}", 0, ORDER_EVENT_DELIVERED,
     ORDER_STATUS_DELIVERED, NULL},
    {NULL, NULL, ORDER_OUTCOME_OUT_OF_STOCK, ORDER_EVENT_REJECTED, ORDER_STATUS_REJECTED,
     ORDER_REASON_OUT_OF_STOCK},
    {ORDER_CMD_CANCEL, "{\"reason\":\"changed my mind\"}", 0, ORDER_EVENT_CANCELLED,
     ORDER_STATUS_CANCELLED, "changed my mind"},
    {NULL, NULL, ORDER_OUTCOME_TIMEOUT, ORDER_EVENT_REJECTED, ORDER_STATUS_REJECTED,
     ORDER_REASON_TIMEOUT},
};
enum { NMOVES = sizeof moves / sizeof moves[0] };

/* expected[from][move] */
static const int expected[7][NMOVES] = {
    [ORDER_STATUS_NONE] = {NOTFOUND_, NOTFOUND_, NOTFOUND_, NOTFOUND_, NOTFOUND_, NOTFOUND_},
    /* a pending order's checkout is running: it cannot be cancelled under it; it is confirmed
     * only once paid (this one has no capture: test_saga_decide confirms a paid one) */
    [ORDER_STATUS_PENDING] = {CONFLICT_, CONFLICT_, CONFLICT_, OK_, CONFLICT_, OK_},
    [ORDER_STATUS_CONFIRMED] = {CONFLICT_, OK_, CONFLICT_, CONFLICT_, OK_, CONFLICT_},
    [ORDER_STATUS_SHIPPED] = {CONFLICT_, CONFLICT_, OK_, CONFLICT_, CONFLICT_, CONFLICT_},
    [ORDER_STATUS_DELIVERED] = {CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_},
    [ORDER_STATUS_REJECTED] = {CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_},
    [ORDER_STATUS_CANCELLED] = {CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_, CONFLICT_},
};

/* Decides move m on s into d. */
static int decide_move(const order_state *s, const struct move *m, order_decision *d)
{
    if (!m->command)
        return order_saga_decide(s, m->outcome, NULL, LATER, d);
    json_t *cmd = obj(m->cmd);
    int rc = order_decide(s, m->command, cmd, LATER, NULL, NULL, d);
    json_decref(cmd);
    return rc;
}

static const char *name_or_none(order_status s)
{
    return order_status_name(s) ? order_status_name(s) : "none";
}

static void test_every_transition(void **state)
{
    (void)state;
    int legal = 0, illegal = 0;
    for (int from = ORDER_STATUS_NONE; from <= ORDER_STATUS_CANCELLED; from++) {
        for (int m = 0; m < NMOVES; m++) {
            order_state s, before;
            stream st = {0};
            order_state_init(&s);
            order_in(from, &s, &st);
            clone(&s, &before);
            order_decision d;
            order_decision_init(&d);
            int rc = decide_move(&s, &moves[m], &d);
            if (rc != expected[from][m])
                fail_msg("move %d (%s) on %s: got %s (%s)", m, moves[m].event, name_or_none(from),
                         ms_errname(rc), d.reason);
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
                if (moves[m].reason)
                    assert_string_equal(s.reason, moves[m].reason);
                else
                    assert_true(same_reason(s.reason, before.reason));
                /* status moves leave the saga's fields alone (the saga commits a shipment's
                 * stock afterwards: test_shipping_commits_stock) */
                assert_int_equal(s.payment, before.payment);
                assert_string_equal(s.payment_id, before.payment_id);
                assert_int_equal(s.stock, before.stock);
            } else {
                assert_int_equal(d.nevents, 0);
                assert_true(d.reason[0] != '\0');
                if (rc == MS_ECONFLICT) {
                    illegal++;
                    char want[100];
                    bool unpaid =
                        from == ORDER_STATUS_PENDING && moves[m].to == ORDER_STATUS_CONFIRMED;
                    if (unpaid)
                        snprintf(want, sizeof want, "order %s is not paid", s.id);
                    else if (from == ORDER_STATUS_PENDING && moves[m].to == ORDER_STATUS_CANCELLED)
                        snprintf(want, sizeof want,
                                 "order is pending: its checkout is still "
                                 "running");
                    else if (from == (int)moves[m].to)
                        snprintf(want, sizeof want, "order is already %s", order_status_name(from));
                    else
                        snprintf(want, sizeof want, "order is %s; only ", order_status_name(from));
                    assert_memory_equal(d.reason, want, strlen(want));
                } else {
                    assert_string_equal(d.reason, "order not found");
                }
                /* the event the refused move would have written does not apply either, but
                 * on a pending order: streams from before the saga hold OrderCancelled there,
                 * and a stored OrderConfirmed is read against the status machine only */
                char data[64];
                snprintf(data, sizeof data, "{\"at\":\"%s\",\"reason\":\"x\"}", LATER);
                bool old_edge =
                    from == ORDER_STATUS_PENDING && (moves[m].to == ORDER_STATUS_CANCELLED ||
                                                     moves[m].to == ORDER_STATUS_CONFIRMED);
                assert_int_equal(order_evolve(&s, moves[m].event, data), old_edge ? 0 : MS_EINVAL);
                if (!old_edge)
                    assert_true(order_state_equal(&s, &before));
            }
            order_decision_release(&d);
            order_state_release(&s);
            order_state_release(&before);
            stream_release(&st);
        }
    }
    assert_int_equal(legal, 5);
    assert_int_equal(illegal, 31);
}

/* Decides `m` on an order built by `spec` (play) and expects a conflict saying `reason`. */
static void expect_conflict(const char *spec, const struct move *m, const char *reason)
{
    order_state s;
    stream st = {0};
    order_state_init(&s);
    play(&s, &st, spec);
    order_decision d;
    order_decision_init(&d);
    assert_int_equal(decide_move(&s, m, &d), MS_ECONFLICT);
    assert_string_equal(d.reason, reason);
    assert_int_equal(d.nevents, 0);
    order_decision_release(&d);
    order_state_release(&s);
    stream_release(&st);
}

static void test_conflict_reasons(void **state)
{
    (void)state;
    const struct move *confirm = &moves[0], *ship = &moves[1], *deliver = &moves[2],
                      *oos = &moves[3], *cancel = &moves[4], *timeout = &moves[5];
    expect_conflict("created reserve capture ship", cancel,
                    "order is shipped; only pending or confirmed orders can be cancelled");
    expect_conflict("created reserve capture", deliver,
                    "order is confirmed; only shipped orders can be delivered");
    expect_conflict("created", ship, "order is pending; only confirmed orders can be shipped");
    expect_conflict("created reserve capture", oos,
                    "order is confirmed; only pending orders can be rejected");
    expect_conflict("created reserve capture ship deliver", confirm,
                    "order is delivered; only pending orders can be confirmed");
    expect_conflict("created reserve capture cancel", cancel, "order is already cancelled");
    expect_conflict("created reserve capture", confirm, "order is already confirmed");
    expect_conflict("created oos", timeout, "order is already rejected");
    expect_conflict("created reserve", cancel,
                    "order is pending: its checkout is still running; cancel it once it is "
                    "confirmed");
    /* a step that does not fit names the event, the order and its status */
    static const struct move reserve = {NULL, NULL, ORDER_OUTCOME_RESERVED, NULL, ORDER_STATUS_NONE,
                                        NULL};
    expect_conflict("created reserve", &reserve,
                    "StockReserved does not fit order " ORDER " (status pending)");
    expect_conflict("created oos", &reserve,
                    "StockReserved does not fit order " ORDER " (status rejected)");
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
        /* and OrderCreated does not apply twice, in either format */
        assert_int_equal(order_evolve(&s, ORDER_EVENT_CREATED, CREATED_PENDING), MS_EINVAL);
        assert_int_equal(order_evolve(&s, ORDER_EVENT_CREATED, CREATED_OLD), MS_EINVAL);
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
    assert_string_equal(s.id, ORDER);
    assert_string_equal(s.user_id, USER);
    assert_string_equal(s.currency, "EUR");
    assert_int_equal(s.nitems, 2);
    assert_string_equal(s.items[1].product_id, P2);
    assert_int_equal(s.items[0].quantity, 2);
    assert_int_equal(s.items[0].unit_price_cents, 1250);
    assert_int_equal(s.subtotal_cents, 2 * 1250 + 999);
    assert_int_equal(s.shipping_cents, 499);
    assert_int_equal(s.total_cents, 2 * 1250 + 999 + 499);
    assert_int_equal(s.stock, ORDER_STOCK_NONE);
    assert_int_equal(s.payment, ORDER_PAYMENT_NONE);
    assert_string_equal(s.payment_id, "");
    assert_string_equal(s.shipping_address, "{\"city\":\"Berlin\",\"country\":\"DE\",\"line1\":"
                                            "\"1 Main St\",\"postal_code\":\"10115\"}");
    assert_string_equal(s.created_at, NOW);
    assert_string_equal(s.updated_at, NOW);
    assert_null(s.reason);
    assert_int_equal(s.version, 1);
    /* what the saga does next: reserve when it holds the card, give up when it lost it */
    assert_int_equal(order_saga_next(&s, true), ORDER_SAGA_RESERVE);
    assert_int_equal(order_saga_next(&s, false), ORDER_SAGA_REJECT);
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
    json_t *doc = event_doc(d.events[0].data,
                            "at,card_last4,created_at,currency,items,order_id,shipping_address,"
                            "shipping_cents,status,subtotal_cents,total_cents,user_id");
    assert_string_equal(json_string_value(json_object_get(doc, "order_id")), ORDER);
    assert_string_equal(json_string_value(json_object_get(doc, "user_id")), USER);
    assert_string_equal(json_string_value(json_object_get(doc, "currency")), "EUR");
    assert_string_equal(json_string_value(json_object_get(doc, "status")), "pending");
    assert_string_equal(json_string_value(json_object_get(doc, "card_last4")), "4242");
    assert_string_equal(json_string_value(json_object_get(doc, "created_at")), NOW);
    assert_string_equal(json_string_value(json_object_get(doc, "at")), NOW);
    assert_int_equal(json_integer_value(json_object_get(doc, "subtotal_cents")), 3499);
    assert_int_equal(json_integer_value(json_object_get(doc, "shipping_cents")), 499);
    assert_int_equal(json_integer_value(json_object_get(doc, "total_cents")), 3998);
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
    json_decref(cmd);

    /* byte for byte the fixture the other tests evolve (no address: null) */
    cmd = obj("{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"EUR\","
              "\"items\":[" LINE(2, 1250) "],\"shipping_cents\":499,\"card_last4\":\"4242\"}");
    assert_int_equal(order_decide(&s, ORDER_CMD_CREATE, cmd, NOW, NULL, NULL, &d), 0);
    assert_string_equal(d.events[0].data, CREATED_PENDING);
    order_decision_release(&d);
    json_decref(cmd);
    /* the card's last digits are in the event, never in the state or its documents */
    order_state t;
    order_state_init(&t);
    events(&t, "created");
    char *snap = order_snapshot_write(&t);
    assert_null(strstr(snap, "4242"));
    free(snap);
    order_state_release(&t);
}

static void test_move_event_shapes(void **state)
{
    (void)state;
    static const struct {
        order_status from;
        int move;
        const char *keys;
    } cases[] = {
        {ORDER_STATUS_CONFIRMED, 1, "at"},      {ORDER_STATUS_SHIPPED, 2, "at"},
        {ORDER_STATUS_PENDING, 3, "at,reason"}, {ORDER_STATUS_CONFIRMED, 4, "at,reason"},
        {ORDER_STATUS_PENDING, 5, "at,reason"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct move *m = &moves[cases[i].move];
        order_state s;
        stream st = {0};
        order_state_init(&s);
        order_in(cases[i].from, &s, &st);
        order_decision d;
        order_decision_init(&d);
        assert_int_equal(decide_move(&s, m, &d), 0);
        assert_string_equal(d.events[0].type, m->event);
        json_t *doc = event_doc(d.events[0].data, cases[i].keys);
        assert_string_equal(json_string_value(json_object_get(doc, "at")), LATER);
        if (m->reason)
            assert_string_equal(json_string_value(json_object_get(doc, "reason")), m->reason);
        assert_int_equal(order_evolve(&s, d.events[0].type, d.events[0].data), 0);
        if (m->reason)
            assert_string_equal(s.reason, m->reason);
        json_decref(doc);
        order_decision_release(&d);
        order_state_release(&s);
        stream_release(&st);
    }
    /* a stored OrderRejected without a reason (before the saga): NULL in the state */
    order_state s;
    order_state_init(&s);
    events(&s, "created");
    assert_int_equal(
        order_evolve(&s, ORDER_EVENT_REJECTED, "{\"at\":\"" LATER "\",\"reason\":null}"), 0);
    assert_int_equal(s.status, ORDER_STATUS_REJECTED);
    assert_null(s.reason);
    order_state_release(&s);
}

/* The saga's step events: exactly these keys, canonical bytes. */
static void test_step_event_shapes(void **state)
{
    (void)state;
    static const struct {
        const char *spec; /* play */
        order_saga_outcome outcome;
        const char *payment_id;
        const char *types; /* the decided events, comma-separated */
        const char *keys[2];
    } cases[] = {
        {"created", ORDER_OUTCOME_RESERVED, NULL, "StockReserved", {"at"}},
        {"created reserve",
         ORDER_OUTCOME_CAPTURED,
         PAY,
         "PaymentCaptured,OrderConfirmed",
         {"at,payment_id", "at"}},
        {"created reserve",
         ORDER_OUTCOME_DECLINED,
         PAY,
         "PaymentDeclined,OrderRejected",
         {"at,payment_id", "at,reason"}},
        {"created reserve",
         ORDER_OUTCOME_DECLINED,
         NULL,
         "PaymentDeclined,OrderRejected",
         {"at", "at,reason"}},
        {"created timeout", ORDER_OUTCOME_VOIDED, PAY, "PaymentVoided", {"at"}},
        {"created reserve capture cancel",
         ORDER_OUTCOME_REFUNDED,
         PAY,
         "PaymentRefunded",
         {"at,payment_id"}},
        {"created reserve capture cancel", ORDER_OUTCOME_REFUNDED, NULL, "PaymentRefunded", {"at"}},
        {"created reserve oos", ORDER_OUTCOME_RELEASED, PAY, "StockReleased", {"at"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        order_state s;
        stream st = {0};
        order_state_init(&s);
        play(&s, &st, cases[i].spec);
        order_decision d;
        order_decision_init(&d);
        assert_int_equal(order_saga_decide(&s, cases[i].outcome, cases[i].payment_id, LATER, &d),
                         0);
        char types[128] = "";
        size_t len = 0;
        for (size_t e = 0; e < d.nevents; e++) {
            len += (size_t)snprintf(types + len, sizeof types - len, "%s%s", e ? "," : "",
                                    d.events[e].type);
            json_t *doc = event_doc(d.events[e].data, cases[i].keys[e]);
            assert_string_equal(json_string_value(json_object_get(doc, "at")), LATER);
            if (json_object_get(doc, "payment_id"))
                assert_string_equal(json_string_value(json_object_get(doc, "payment_id")), PAY);
            json_decref(doc);
        }
        if (strcmp(types, cases[i].types) != 0)
            fail_msg("case %zu: decided %s, expected %s", i, types, cases[i].types);
        order_decision_release(&d);
        order_state_release(&s);
        stream_release(&st);
    }
}

/* ---- validation -------------------------------------------------------------------------- */

#define ITEM(p, q, c)  "{\"product_id\":\"" p "\",\"quantity\":" #q ",\"unit_price_cents\":" #c "}"
#define CITEM(p, q)    "{\"product_id\":\"" p "\",\"quantity\":" #q "}"
#define HEAD           "\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"EUR\""
#define SC             ",\"shipping_cents\":0,\"card_last4\":\"4242\""
#define CREATE(fields) "{" HEAD SC fields "}"
#define CREATE_SHIP(value)                                                                         \
    "{" HEAD ",\"card_last4\":\"4242\",\"shipping_cents\":" value ONE_ITEM "}"
#define CREATE_CARD(value) "{" HEAD ",\"shipping_cents\":0,\"card_last4\":" value ONE_ITEM "}"
#define ITEMS(list)        ",\"items\":[" list "]"
#define ONE_ITEM           ITEMS(ITEM(P1, 1, 100))
/* The client's checkout: a card, then `fields`. */
#define CHECKOUT(fields) "{\"payment\":{\"card_number\":\"" CARD "\"}" fields "}"
#define ONE_LINE         ITEMS(CITEM(P1, 1))
#define PAYING(payment)  "{\"items\":[" CITEM(P1, 1) "],\"payment\":" payment "}"

enum { MALFORMED, INVALID };

static const struct bad {
    const char *command, *cmd, *field;
    int list;
} bad_commands[] = {
    /* ids */
    {ORDER_CMD_CREATE, "{\"user_id\":\"" USER "\",\"currency\":\"EUR\"" SC ONE_ITEM "}", "order_id",
     INVALID},
    {ORDER_CMD_CREATE, "{\"order_id\":\"" ORDER "\",\"currency\":\"EUR\"" SC ONE_ITEM "}",
     "user_id", INVALID},
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"not-a-uuid\",\"user_id\":\"" USER "\",\"currency\":\"EUR\"" SC ONE_ITEM "}",
     "order_id", INVALID},
    {ORDER_CMD_CREATE,
     "{\"order_id\":7,\"user_id\":\"" USER "\",\"currency\":\"EUR\"" SC ONE_ITEM "}", "order_id",
     MALFORMED},
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "x\",\"currency\":\"EUR\"" SC ONE_ITEM "}",
     "user_id", INVALID},
    /* fields a client must not set, or that do not exist */
    {ORDER_CMD_CREATE, CREATE(ONE_ITEM ",\"total_cents\":1"), "total_cents", MALFORMED},
    {ORDER_CMD_CREATE, CREATE(ONE_ITEM ",\"subtotal_cents\":1"), "subtotal_cents", MALFORMED},
    {ORDER_CMD_CREATE, CREATE(ONE_ITEM ",\"status\":\"delivered\""), "status", MALFORMED},
    /* the card itself never reaches CreateOrder (its event is stored forever) */
    {ORDER_CMD_CREATE, CREATE(ONE_ITEM ",\"payment\":{\"card_number\":\"" CARD "\"}"), "payment",
     MALFORMED},
    /* currency */
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"eur\"" SC ONE_ITEM "}",
     "currency", INVALID},
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"XXX\"" SC ONE_ITEM "}",
     "currency", INVALID},
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":\"EURO\"" SC ONE_ITEM "}",
     "currency", INVALID},
    {ORDER_CMD_CREATE, "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\"" SC ONE_ITEM "}",
     "currency", INVALID},
    {ORDER_CMD_CREATE,
     "{\"order_id\":\"" ORDER "\",\"user_id\":\"" USER "\",\"currency\":978" SC ONE_ITEM "}",
     "currency", MALFORMED},
    /* shipping, from the service's rule */
    {ORDER_CMD_CREATE, "{" HEAD ",\"card_last4\":\"4242\"" ONE_ITEM "}", "shipping_cents", INVALID},
    {ORDER_CMD_CREATE, CREATE_SHIP("-1"), "shipping_cents", INVALID},
    {ORDER_CMD_CREATE, CREATE_SHIP("100000001"), "shipping_cents", INVALID},
    {ORDER_CMD_CREATE, CREATE_SHIP("\"499\""), "shipping_cents", MALFORMED},
    {ORDER_CMD_CREATE, CREATE_SHIP("4.99"), "shipping_cents", MALFORMED},
    {ORDER_CMD_CREATE, CREATE_SHIP("null"), "shipping_cents", MALFORMED},
    /* the card's last digits */
    {ORDER_CMD_CREATE, "{" HEAD ",\"shipping_cents\":0" ONE_ITEM "}", "card_last4", INVALID},
    {ORDER_CMD_CREATE, CREATE_CARD("\"424\""), "card_last4", INVALID},
    {ORDER_CMD_CREATE, CREATE_CARD("\"42424\""), "card_last4", INVALID},
    {ORDER_CMD_CREATE, CREATE_CARD("\"42a2\""), "card_last4", INVALID},
    {ORDER_CMD_CREATE, CREATE_CARD("\"\""), "card_last4", INVALID},
    {ORDER_CMD_CREATE, CREATE_CARD("4242"), "card_last4", MALFORMED},
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
    {ORDER_CMD_CREATE, CREATE(ITEMS(CITEM(P1, 1))), "items[0].unit_price_cents", INVALID},
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
    /* Checkout: the client names no price, no currency, no total */
    {ORDER_CMD_CHECKOUT, CHECKOUT(ITEMS(ITEM(P1, 1, 100))), "items[0].unit_price_cents", MALFORMED},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ONE_LINE ",\"currency\":\"EUR\""), "currency", MALFORMED},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ONE_LINE ",\"total_cents\":100"), "total_cents", MALFORMED},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ONE_LINE ",\"user_id\":\"" USER "\""), "user_id", MALFORMED},
    /* Checkout: its items */
    {ORDER_CMD_CHECKOUT, CHECKOUT(""), "items", INVALID},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ITEMS("")), "items", INVALID},
    {ORDER_CMD_CHECKOUT, CHECKOUT(",\"items\":{}"), "items", MALFORMED},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ITEMS(CITEM(P1, 0))), "items[0].quantity", INVALID},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ITEMS(CITEM(P1, 10001))), "items[0].quantity", INVALID},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ITEMS(CITEM(P1, "1"))), "items[0].quantity", MALFORMED},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ITEMS(CITEM("p-1", 1))), "items[0].product_id", INVALID},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ITEMS("{\"quantity\":1}")), "items[0].product_id", INVALID},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ITEMS(CITEM(P1, 1) "," CITEM(P1, 2))), "items[1].product_id",
     INVALID},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ITEMS(CITEM(P1, 1) ",\"x\"")), "items[1]", MALFORMED},
    {ORDER_CMD_CHECKOUT, CHECKOUT(ONE_LINE ",\"shipping_address\":\"Berlin\""), "shipping_address",
     MALFORMED},
    {ORDER_CMD_CHECKOUT,
     CHECKOUT(ONE_LINE ",\"shipping_address\":{\"line1\":\"x\",\"city\":\"Berlin\","
                       "\"postal_code\":\"10115\",\"country\":\"de\"}"),
     "shipping_address.country", INVALID},
    /* Checkout: the payment (the shared card rule: 12 to 19 digits, Luhn) */
    {ORDER_CMD_CHECKOUT, "{\"items\":[" CITEM(P1, 1) "]}", "payment", INVALID},
    {ORDER_CMD_CHECKOUT, PAYING("null"), "payment", MALFORMED},
    {ORDER_CMD_CHECKOUT, PAYING("\"" CARD "\""), "payment", MALFORMED},
    {ORDER_CMD_CHECKOUT, PAYING("{}"), "payment.card_number", INVALID},
    {ORDER_CMD_CHECKOUT, PAYING("{\"card_number\":\"4242424242424241\"}"), "payment.card_number",
     INVALID},
    {ORDER_CMD_CHECKOUT, PAYING("{\"card_number\":\"4242 4242 4242 4242\"}"), "payment.card_number",
     INVALID},
    {ORDER_CMD_CHECKOUT, PAYING("{\"card_number\":\"00000000000\"}"), "payment.card_number",
     INVALID},
    {ORDER_CMD_CHECKOUT, PAYING("{\"card_number\":\"00000000000000000000\"}"),
     "payment.card_number", INVALID},
    {ORDER_CMD_CHECKOUT, PAYING("{\"card_number\":\"\"}"), "payment.card_number", INVALID},
    {ORDER_CMD_CHECKOUT, PAYING("{\"card_number\":4242424242424242}"), "payment.card_number",
     MALFORMED},
    {ORDER_CMD_CHECKOUT, PAYING("{\"card_number\":\"" CARD "\",\"cvc\":\"123\"}"), "payment.cvc",
     MALFORMED},
    /* UpdateOrderStatus: shipped or delivered only (confirmed and rejected are the saga's) */
    {ORDER_CMD_UPDATE_STATUS, "{}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"pending\"}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"confirmed\"}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"rejected\"}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"cancelled\"}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"Shipped\"}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"lost\"}", "status", INVALID},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":3}", "status", MALFORMED},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":null}", "status", MALFORMED},
    {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"shipped\",\"reason\":\"why\"}", "reason", MALFORMED},
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
    {ORDER_CMD_CHECKOUT, "[]", "body", MALFORMED},
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
    const char *message = json_string_value(json_object_get(json_array_get(want, 0), "message"));
    assert_non_null(message);
    /* no message quotes a card number */
    assert_null(strstr(message, "4242"));
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

/* The fields of every error in `errors`, each followed by a space. */
static void fields_of(json_t *errors, char *out, size_t n)
{
    size_t i, len = 0;
    json_t *e;
    out[0] = '\0';
    json_array_foreach(errors, i, e)
    {
        len += (size_t)snprintf(out + len, n - len, "%s ",
                                json_string_value(json_object_get(e, "field")));
        assert_true(len < n);
    }
}

/* Cases too long to write out: 101 items, 501-character reasons, a 201-character line1; and
 * commands with several errors. */
static void test_bad_commands_built(void **state)
{
    (void)state;
    char long_text[600];
    memset(long_text, 'x', sizeof long_text);

    json_t *cmd = create_cmd();
    json_t *items = json_object_get(cmd, "items");
    json_t *checkout = obj(CHECKOUT(ITEMS("")));
    json_t *lines = json_object_get(checkout, "items");
    json_array_clear(items);
    for (int i = 0; i < ORDER_MAX_ITEMS + 1; i++) {
        char id[MS_UUID_LEN + 1];
        snprintf(id, sizeof id, "00000000-0000-7000-8000-%012d", i);
        json_array_append_new(items, json_pack("{s:s, s:i, s:i}", "product_id", id, "quantity", 1,
                                               "unit_price_cents", 1));
        json_array_append_new(lines, json_pack("{s:s, s:i}", "product_id", id, "quantity", 1));
    }
    expect_bad(ORDER_CMD_CREATE, cmd, "items", INVALID, "101 items");
    expect_bad(ORDER_CMD_CHECKOUT, checkout, "items", INVALID, "101 lines");
    json_array_remove(items, 0); /* 100 is fine */
    json_array_remove(lines, 0);
    assert_int_equal(order_validate(ORDER_CMD_CREATE, cmd, NULL, NULL), 0);
    assert_int_equal(order_validate(ORDER_CMD_CHECKOUT, checkout, NULL, NULL), 0);
    json_decref(cmd);
    json_decref(checkout);

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
    char fields[200];
    cmd = obj("{\"order_id\":\"x\",\"user_id\":\"y\",\"currency\":\"eur\",\"shipping_cents\":-1,"
              "\"card_last4\":\"12\",\"items\":[" ITEM(P1, 0, -1) "]}");
    json_t *errors = json_array();
    assert_int_equal(order_validate(ORDER_CMD_CREATE, cmd, errors, errors), MS_EINVAL);
    fields_of(errors, fields, sizeof fields);
    assert_string_equal(fields, "order_id user_id currency card_last4 shipping_cents "
                                "items[0].quantity items[0].unit_price_cents ");
    json_decref(errors);
    json_decref(cmd);

    cmd = obj("{\"items\":[{\"product_id\":\"p\",\"quantity\":0,\"unit_price_cents\":1}],"
              "\"payment\":{\"card_number\":\"1\"}}");
    errors = json_array();
    assert_int_equal(order_validate(ORDER_CMD_CHECKOUT, cmd, errors, errors), MS_EINVAL);
    fields_of(errors, fields, sizeof fields);
    assert_string_equal(fields, "items[0].unit_price_cents items[0].product_id items[0].quantity "
                                "payment.card_number ");
    json_decref(errors);
    json_decref(cmd);

    /* a reason on UpdateOrderStatus is unknown (malformed) and rejected is the saga's */
    cmd = obj("{\"status\":\"rejected\",\"reason\":\"out of stock\"}");
    json_t *malformed = json_array(), *invalid = json_array();
    assert_int_equal(order_validate(ORDER_CMD_UPDATE_STATUS, cmd, malformed, invalid), MS_EINVAL);
    fields_of(malformed, fields, sizeof fields);
    assert_string_equal(fields, "reason ");
    fields_of(invalid, fields, sizeof fields);
    assert_string_equal(fields, "status ");
    json_decref(malformed);
    json_decref(invalid);
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
        {ORDER_CMD_CREATE, CREATE_SHIP("499")},
        {ORDER_CMD_CREATE, CREATE_SHIP("100000000")},
        {ORDER_CMD_CREATE, CREATE_CARD("\"0000\"")},
        {ORDER_CMD_CREATE, CREATE(ONE_ITEM ",\"shipping_address\":{\"line1\":\"Rua São Bento 1\","
                                           "\"city\":\"São Paulo\",\"postal_code\":\"01010-000\","
                                           "\"country\":\"BR\"}")},
        {ORDER_CMD_CHECKOUT, CHECKOUT(ONE_LINE)},
        {ORDER_CMD_CHECKOUT, CHECKOUT(ONE_LINE ",\"shipping_address\":null")},
        {ORDER_CMD_CHECKOUT,
         CHECKOUT(ITEMS(CITEM(P1, 10000) "," CITEM(P2, 1)) ",\"shipping_address\":" ADDRESS)},
        {ORDER_CMD_CHECKOUT, PAYING("{\"card_number\":\"4000000000000002\"}")},
        {ORDER_CMD_CHECKOUT, PAYING("{\"card_number\":\"000000000000\"}")},        /* 12 */
        {ORDER_CMD_CHECKOUT, PAYING("{\"card_number\":\"0000000000000000000\"}")}, /* 19 */
        {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"shipped\"}"},
        {ORDER_CMD_UPDATE_STATUS, "{\"status\":\"delivered\"}"},
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

/* A checkout is validated only: deciding it writes nothing, even when it is valid. */
static void test_checkout_decides_nothing(void **state)
{
    (void)state;
    json_t *cmd = obj(CHECKOUT(ONE_LINE));
    assert_int_equal(order_validate(ORDER_CMD_CHECKOUT, cmd, NULL, NULL), 0);
    order_state s;
    order_state_init(&s);
    order_decision d;
    order_decision_init(&d);
    json_t *errors = json_array();
    assert_int_equal(order_decide(&s, ORDER_CMD_CHECKOUT, cmd, NOW, errors, errors, &d), MS_EINVAL);
    assert_int_equal(json_array_size(errors), 0);
    assert_int_equal(d.nevents, 0);
    assert_false(d.has_next);
    assert_true(d.reason[0] != '\0');
    order_decision_release(&d);
    json_decref(errors);
    json_decref(cmd);
}

/* ---- totals, shipping -------------------------------------------------------------------- */

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
    /* a subtotal of exactly 10^12: ten lines of 10000 x 10^7 (free shipping) */
    json_t *cmd = create_cmd();
    json_object_set_new(cmd, "shipping_cents", json_integer(0));
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
    assert_int_equal(s.subtotal_cents, ORDER_MAX_TOTAL_CENTS);
    assert_int_equal(s.shipping_cents, 0);
    assert_int_equal(s.total_cents, ORDER_MAX_TOTAL_CENTS);
    /* one cent more is refused */
    json_array_append_new(items, json_pack("{s:s, s:i, s:i}", "product_id", P1, "quantity", 1,
                                           "unit_price_cents", 1));
    expect_bad(ORDER_CMD_CREATE, cmd, "items", INVALID, "total 10^12 + 1");
    json_decref(cmd);
    order_state_release(&s);
    stream_release(&st);
}

static void test_shipping_rule(void **state)
{
    (void)state;
    assert_int_equal(order_shipping_cents(0), 499);
    assert_int_equal(order_shipping_cents(1), 499);
    assert_int_equal(order_shipping_cents(4999), 499);
    assert_int_equal(order_shipping_cents(5000), 0);
    assert_int_equal(order_shipping_cents(5001), 0);
    assert_int_equal(order_shipping_cents(ORDER_MAX_TOTAL_CENTS), 0);
    assert_int_equal(ORDER_SHIPPING_FLAT_CENTS, 499);
    assert_int_equal(ORDER_FREE_SHIPPING_FROM_CENTS, 5000);
}

/* ---- the saga: what comes next ----------------------------------------------------------- */

static void test_saga_next(void **state)
{
    (void)state;
    static const struct {
        const char *events;
        order_saga_step with_card, without_card;
    } cases[] = {
        /* no order: nothing to do */
        {"", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        /* pending: forward with the card; a lost card gives the order up */
        {"created", ORDER_SAGA_RESERVE, ORDER_SAGA_REJECT},
        {"created reserved", ORDER_SAGA_PAY, ORDER_SAGA_REJECT},
        {"created reserved captured", ORDER_SAGA_CONFIRM, ORDER_SAGA_CONFIRM},
        {"created reserved declined", ORDER_SAGA_REJECT, ORDER_SAGA_REJECT},
        {"created declined", ORDER_SAGA_REJECT, ORDER_SAGA_REJECT},
        /* rejected out of stock: the reservation (if any) and the capture (if any) go back */
        {"created oos", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        {"created reserved oos", ORDER_SAGA_RELEASE, ORDER_SAGA_RELEASE},
        {"created reserved oos released", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        {"created reserved captured oos", ORDER_SAGA_REFUND, ORDER_SAGA_REFUND},
        {"created reserved captured oos refunded", ORDER_SAGA_RELEASE, ORDER_SAGA_RELEASE},
        /* rejected, payment declined: release, then done */
        {"created reserved declined pdeclined", ORDER_SAGA_RELEASE, ORDER_SAGA_RELEASE},
        {"created reserved declined pdeclined released", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        {"created declined pdeclined", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        /* rejected on a timeout: void and release even what was never recorded */
        {"created timeout", ORDER_SAGA_VOID, ORDER_SAGA_VOID},
        {"created timeout voided", ORDER_SAGA_RELEASE, ORDER_SAGA_RELEASE},
        {"created timeout refunded", ORDER_SAGA_RELEASE, ORDER_SAGA_RELEASE},
        {"created timeout voided released", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        {"created timeout released", ORDER_SAGA_VOID, ORDER_SAGA_VOID},
        {"created reserved timeout", ORDER_SAGA_VOID, ORDER_SAGA_VOID},
        {"created reserved timeout voided", ORDER_SAGA_RELEASE, ORDER_SAGA_RELEASE},
        {"created reserved timeout voided released", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        {"created reserved captured timeout", ORDER_SAGA_REFUND, ORDER_SAGA_REFUND},
        {"created reserved captured timeout refunded", ORDER_SAGA_RELEASE, ORDER_SAGA_RELEASE},
        {"created reserved captured timeout refunded released", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        /* confirmed: nothing; shipped or delivered: commit the reservation once; cancelled:
         * refund, then release */
        {"created reserved captured confirmed", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        {"created reserved captured confirmed shipped", ORDER_SAGA_COMMIT, ORDER_SAGA_COMMIT},
        {"created reserved captured confirmed shipped committed", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        {"created reserved captured confirmed shipped delivered", ORDER_SAGA_COMMIT,
         ORDER_SAGA_COMMIT},
        {"created reserved captured confirmed shipped committed delivered", ORDER_SAGA_DONE,
         ORDER_SAGA_DONE},
        {"created reserved captured confirmed cancelled", ORDER_SAGA_REFUND, ORDER_SAGA_REFUND},
        {"created reserved captured confirmed cancelled refunded", ORDER_SAGA_RELEASE,
         ORDER_SAGA_RELEASE},
        {"created reserved captured confirmed cancelled refunded released", ORDER_SAGA_DONE,
         ORDER_SAGA_DONE},
        /* orders from before the saga hold no stock and no payment: nothing to give back */
        {"old", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        {"old shipped", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        {"old cancelled", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
        {"created cancelled", ORDER_SAGA_DONE, ORDER_SAGA_DONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        order_state s;
        order_state_init(&s);
        events(&s, cases[i].events);
        order_saga_step got = order_saga_next(&s, true), got_lost = order_saga_next(&s, false);
        if (got != cases[i].with_card || got_lost != cases[i].without_card)
            fail_msg("\"%s\": got %s/%s, expected %s/%s", cases[i].events,
                     order_saga_step_name(got), order_saga_step_name(got_lost),
                     order_saga_step_name(cases[i].with_card),
                     order_saga_step_name(cases[i].without_card));
        order_state_release(&s);
    }
    static const char *const names[] = {"done",   "reserve", "pay",  "confirm",
                                        "reject", "refund",  "void", "release"};
    for (int i = ORDER_SAGA_DONE; i <= ORDER_SAGA_RELEASE; i++)
        assert_string_equal(order_saga_step_name((order_saga_step)i), names[i]);
    assert_string_equal(order_saga_step_name((order_saga_step)99), "unknown");
}

/* ---- the saga: recording outcomes -------------------------------------------------------- */

static void test_saga_decide(void **state)
{
    (void)state;
    static const struct {
        const char *spec; /* play */
        order_saga_outcome outcome;
        const char *payment_id;
        int rc;
        const char *types;   /* when rc == 0: the events, comma-separated */
        order_status status; /* after them */
        order_stock stock;
        order_payment payment;
        const char *reason, *payment_id_after;
    } cases[] = {
        /* forward */
        {"created", ORDER_OUTCOME_RESERVED, NULL, 0, "StockReserved", ORDER_STATUS_PENDING,
         ORDER_STOCK_RESERVED, ORDER_PAYMENT_NONE, NULL, ""},
        {"created", ORDER_OUTCOME_OUT_OF_STOCK, NULL, 0, "OrderRejected", ORDER_STATUS_REJECTED,
         ORDER_STOCK_NONE, ORDER_PAYMENT_NONE, "out_of_stock", ""},
        {"created reserve", ORDER_OUTCOME_CAPTURED, PAY, 0, "PaymentCaptured,OrderConfirmed",
         ORDER_STATUS_CONFIRMED, ORDER_STOCK_RESERVED, ORDER_PAYMENT_CAPTURED, NULL, PAY},
        {"created reserve", ORDER_OUTCOME_CAPTURED, "0190C2A4-0000-7000-8000-0000000000FF", 0,
         "PaymentCaptured,OrderConfirmed", ORDER_STATUS_CONFIRMED, ORDER_STOCK_RESERVED,
         ORDER_PAYMENT_CAPTURED, NULL, PAY},
        {"created reserve", ORDER_OUTCOME_DECLINED, PAY, 0, "PaymentDeclined,OrderRejected",
         ORDER_STATUS_REJECTED, ORDER_STOCK_RESERVED, ORDER_PAYMENT_DECLINED, "payment_declined",
         PAY},
        {"created reserve", ORDER_OUTCOME_DECLINED, NULL, 0, "PaymentDeclined,OrderRejected",
         ORDER_STATUS_REJECTED, ORDER_STOCK_RESERVED, ORDER_PAYMENT_DECLINED, "payment_declined",
         ""},
        {"created reserve", ORDER_OUTCOME_DECLINED, "not-a-uuid", 0,
         "PaymentDeclined,OrderRejected", ORDER_STATUS_REJECTED, ORDER_STOCK_RESERVED,
         ORDER_PAYMENT_DECLINED, "payment_declined", ""},
        {"created", ORDER_OUTCOME_TIMEOUT, NULL, 0, "OrderRejected", ORDER_STATUS_REJECTED,
         ORDER_STOCK_NONE, ORDER_PAYMENT_NONE, "timeout", ""},
        {"created reserve", ORDER_OUTCOME_TIMEOUT, NULL, 0, "OrderRejected", ORDER_STATUS_REJECTED,
         ORDER_STOCK_RESERVED, ORDER_PAYMENT_NONE, "timeout", ""},
        /* compensation */
        {"created timeout", ORDER_OUTCOME_VOIDED, NULL, 0, "PaymentVoided", ORDER_STATUS_REJECTED,
         ORDER_STOCK_NONE, ORDER_PAYMENT_VOIDED, "timeout", ""},
        {"created timeout", ORDER_OUTCOME_REFUNDED, PAY, 0, "PaymentRefunded",
         ORDER_STATUS_REJECTED, ORDER_STOCK_NONE, ORDER_PAYMENT_REFUNDED, "timeout", PAY},
        {"created timeout void", ORDER_OUTCOME_RELEASED, NULL, 0, "StockReleased",
         ORDER_STATUS_REJECTED, ORDER_STOCK_RELEASED, ORDER_PAYMENT_VOIDED, "timeout", ""},
        {"created reserve decline", ORDER_OUTCOME_RELEASED, NULL, 0, "StockReleased",
         ORDER_STATUS_REJECTED, ORDER_STOCK_RELEASED, ORDER_PAYMENT_DECLINED, "payment_declined",
         PAY},
        {"created reserve capture cancel", ORDER_OUTCOME_REFUNDED, PAY, 0, "PaymentRefunded",
         ORDER_STATUS_CANCELLED, ORDER_STOCK_RESERVED, ORDER_PAYMENT_REFUNDED, "changed my mind",
         PAY},
        {"created reserve capture cancel refund", ORDER_OUTCOME_RELEASED, NULL, 0, "StockReleased",
         ORDER_STATUS_CANCELLED, ORDER_STOCK_RELEASED, ORDER_PAYMENT_REFUNDED, "changed my mind",
         PAY},
        /* outcomes that do not fit the order */
        {"created reserve", ORDER_OUTCOME_RESERVED, NULL, MS_ECONFLICT, NULL, 0, 0, 0, NULL, NULL},
        {"created", ORDER_OUTCOME_CAPTURED, PAY, MS_ECONFLICT, NULL, 0, 0, 0, NULL, NULL},
        {"created reserve decline", ORDER_OUTCOME_CAPTURED, PAY, MS_ECONFLICT, NULL, 0, 0, 0, NULL,
         NULL},
        {"created reserve capture", ORDER_OUTCOME_CAPTURED, PAY, MS_ECONFLICT, NULL, 0, 0, 0, NULL,
         NULL},
        {"created reserve capture", ORDER_OUTCOME_DECLINED, PAY, MS_ECONFLICT, NULL, 0, 0, 0, NULL,
         NULL},
        {"created reserve capture", ORDER_OUTCOME_CONFIRMED, NULL, MS_ECONFLICT, NULL, 0, 0, 0,
         NULL, NULL},
        {"created reserve capture", ORDER_OUTCOME_TIMEOUT, NULL, MS_ECONFLICT, NULL, 0, 0, 0, NULL,
         NULL},
        {"created reserve capture", ORDER_OUTCOME_REFUNDED, PAY, MS_ECONFLICT, NULL, 0, 0, 0, NULL,
         NULL},
        {"created", ORDER_OUTCOME_REFUNDED, NULL, MS_ECONFLICT, NULL, 0, 0, 0, NULL, NULL},
        {"created", ORDER_OUTCOME_VOIDED, NULL, MS_ECONFLICT, NULL, 0, 0, 0, NULL, NULL},
        {"created", ORDER_OUTCOME_RELEASED, NULL, MS_ECONFLICT, NULL, 0, 0, 0, NULL, NULL},
        {"created reserve", ORDER_OUTCOME_RELEASED, NULL, MS_ECONFLICT, NULL, 0, 0, 0, NULL, NULL},
        {"created oos", ORDER_OUTCOME_OUT_OF_STOCK, NULL, MS_ECONFLICT, NULL, 0, 0, 0, NULL, NULL},
        {"created oos", ORDER_OUTCOME_RESERVED, NULL, MS_ECONFLICT, NULL, 0, 0, 0, NULL, NULL},
        {"created reserve capture cancel", ORDER_OUTCOME_VOIDED, NULL, MS_ECONFLICT, NULL, 0, 0, 0,
         NULL, NULL},
        {"created reserve capture cancel refund", ORDER_OUTCOME_REFUNDED, PAY, MS_ECONFLICT, NULL,
         0, 0, 0, NULL, NULL},
        {"created timeout void", ORDER_OUTCOME_VOIDED, NULL, MS_ECONFLICT, NULL, 0, 0, 0, NULL,
         NULL},
        {"created timeout void release", ORDER_OUTCOME_RELEASED, NULL, MS_ECONFLICT, NULL, 0, 0, 0,
         NULL, NULL},
        {"created reserve capture ship", ORDER_OUTCOME_RELEASED, NULL, MS_ECONFLICT, NULL, 0, 0, 0,
         NULL, NULL},
        /* a capture needs a payment id; no order, no outcome */
        {"created reserve", ORDER_OUTCOME_CAPTURED, NULL, MS_EINVAL, NULL, 0, 0, 0, NULL, NULL},
        {"created reserve", ORDER_OUTCOME_CAPTURED, "pay-1", MS_EINVAL, NULL, 0, 0, 0, NULL, NULL},
        {"created", (order_saga_outcome)99, NULL, MS_EINVAL, NULL, 0, 0, 0, NULL, NULL},
        {"", ORDER_OUTCOME_RESERVED, NULL, MS_ENOTFOUND, NULL, 0, 0, 0, NULL, NULL},
        {"", ORDER_OUTCOME_TIMEOUT, NULL, MS_ENOTFOUND, NULL, 0, 0, 0, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        order_state s, before;
        stream st = {0};
        order_state_init(&s);
        play(&s, &st, cases[i].spec);
        clone(&s, &before);
        order_decision d;
        order_decision_init(&d);
        int rc = order_saga_decide(&s, cases[i].outcome, cases[i].payment_id, LATER, &d);
        if (rc != cases[i].rc)
            fail_msg("case %zu (%s, outcome %d): got %s (%s)", i, cases[i].spec,
                     (int)cases[i].outcome, ms_errname(rc), d.reason);
        assert_true(order_state_equal(&s, &before)); /* deciding changes nothing */
        if (rc != 0) {
            assert_int_equal(d.nevents, 0);
            assert_true(d.reason[0] != '\0');
            if (rc == MS_ENOTFOUND)
                assert_string_equal(d.reason, "order not found");
        } else {
            char types[128] = "";
            size_t len = 0;
            for (size_t e = 0; e < d.nevents; e++)
                len += (size_t)snprintf(types + len, sizeof types - len, "%s%s", e ? "," : "",
                                        d.events[e].type);
            if (strcmp(types, cases[i].types) != 0)
                fail_msg("case %zu: decided %s, expected %s", i, types, cases[i].types);
            record(&s, &st, &d);
            assert_int_equal(s.status, cases[i].status);
            assert_int_equal(s.stock, cases[i].stock);
            assert_int_equal(s.payment, cases[i].payment);
            assert_string_equal(s.payment_id, cases[i].payment_id_after);
            if (cases[i].reason)
                assert_string_equal(s.reason, cases[i].reason);
            else
                assert_null(s.reason);
            assert_int_equal(s.version, before.version + (int64_t)d.nevents);
            assert_string_equal(s.updated_at, LATER);
            /* and the stream so far rebuilds the same state */
            order_state rebuilt;
            order_state_init(&rebuilt);
            assert_int_equal(order_rebuild(&rebuilt, st.ev, st.n, NULL), 0);
            assert_true(order_state_equal(&rebuilt, &s));
            order_state_release(&rebuilt);
        }
        order_decision_release(&d);
        order_state_release(&s);
        order_state_release(&before);
        stream_release(&st);
    }
    /* a decision reused without release: the old events are freed (ASan) */
    order_state s;
    stream st = {0};
    order_state_init(&s);
    play(&s, &st, "created reserve");
    order_decision d;
    order_decision_init(&d);
    assert_int_equal(order_saga_decide(&s, ORDER_OUTCOME_CAPTURED, PAY, LATER, &d), 0);
    assert_int_equal(order_saga_decide(&s, ORDER_OUTCOME_DECLINED, PAY, LATER, &d), 0);
    assert_int_equal(d.nevents, 2);
    assert_string_equal(d.events[0].type, ORDER_EVENT_PAYMENT_DECLINED);
    order_decision_release(&d);
    order_state_release(&s);
    stream_release(&st);
}

/* The whole sagas, driven by order_saga_next as the service does: each step's outcome is
 * recorded until the saga is done. */
static void test_saga_runs(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        bool has_card;
        order_saga_outcome on_reserve, on_pay; /* what inventory and payment answer */
        const char *steps;                     /* the steps taken, in order */
        order_status status;
        order_stock stock;
        order_payment payment;
        const char *reason;
    } cases[] = {
        {"checkout", true, ORDER_OUTCOME_RESERVED, ORDER_OUTCOME_CAPTURED, "reserve pay ",
         ORDER_STATUS_CONFIRMED, ORDER_STOCK_RESERVED, ORDER_PAYMENT_CAPTURED, NULL},
        {"out of stock", true, ORDER_OUTCOME_OUT_OF_STOCK, ORDER_OUTCOME_CAPTURED, "reserve ",
         ORDER_STATUS_REJECTED, ORDER_STOCK_NONE, ORDER_PAYMENT_NONE, "out_of_stock"},
        {"declined", true, ORDER_OUTCOME_RESERVED, ORDER_OUTCOME_DECLINED, "reserve pay release ",
         ORDER_STATUS_REJECTED, ORDER_STOCK_RELEASED, ORDER_PAYMENT_DECLINED, "payment_declined"},
        {"card lost", false, ORDER_OUTCOME_RESERVED, ORDER_OUTCOME_CAPTURED, "reject void release ",
         ORDER_STATUS_REJECTED, ORDER_STOCK_RELEASED, ORDER_PAYMENT_VOIDED, "timeout"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        order_state s;
        stream st = {0};
        order_state_init(&s);
        play(&s, &st, "create");
        char steps[128] = "";
        size_t len = 0;
        order_saga_step step;
        int guard = 0;
        while ((step = order_saga_next(&s, cases[i].has_card)) != ORDER_SAGA_DONE) {
            assert_true(++guard < 10);
            len += (size_t)snprintf(steps + len, sizeof steps - len, "%s ",
                                    order_saga_step_name(step));
            switch (step) {
            case ORDER_SAGA_RESERVE:
                saga(&s, &st, cases[i].on_reserve, NULL);
                break;
            case ORDER_SAGA_PAY:
                saga(&s, &st, cases[i].on_pay, PAY);
                break;
            case ORDER_SAGA_CONFIRM:
                saga(&s, &st, ORDER_OUTCOME_CONFIRMED, NULL);
                break;
            case ORDER_SAGA_REJECT:
                saga(&s, &st,
                     s.payment == ORDER_PAYMENT_DECLINED ? ORDER_OUTCOME_DECLINED
                                                         : ORDER_OUTCOME_TIMEOUT,
                     NULL);
                break;
            case ORDER_SAGA_REFUND:
                saga(&s, &st, ORDER_OUTCOME_REFUNDED, s.payment_id);
                break;
            case ORDER_SAGA_VOID:
                saga(&s, &st, ORDER_OUTCOME_VOIDED, NULL);
                break;
            case ORDER_SAGA_RELEASE:
                saga(&s, &st, ORDER_OUTCOME_RELEASED, NULL);
                break;
            default:
                fail_msg("step %d", (int)step);
            }
        }
        if (strcmp(steps, cases[i].steps) != 0)
            fail_msg("%s: steps %s, expected %s", cases[i].name, steps, cases[i].steps);
        assert_int_equal(s.status, cases[i].status);
        assert_int_equal(s.stock, cases[i].stock);
        assert_int_equal(s.payment, cases[i].payment);
        if (cases[i].reason)
            assert_string_equal(s.reason, cases[i].reason);
        else
            assert_null(s.reason);
        order_state_release(&s);
        stream_release(&st);
    }

    /* a confirmed order cancelled: refund, then release, then ship is refused */
    order_state s;
    stream st = {0};
    order_state_init(&s);
    play(&s, &st, "create reserve capture cancel");
    assert_int_equal(order_saga_next(&s, false), ORDER_SAGA_REFUND);
    play(&s, &st, "refund");
    assert_int_equal(order_saga_next(&s, false), ORDER_SAGA_RELEASE);
    play(&s, &st, "release");
    assert_int_equal(order_saga_next(&s, false), ORDER_SAGA_DONE);
    assert_int_equal(s.payment, ORDER_PAYMENT_REFUNDED);
    assert_int_equal(s.stock, ORDER_STOCK_RELEASED);
    assert_string_equal(s.payment_id, PAY);
    assert_int_equal(s.version, 7);
    order_state_release(&s);
    stream_release(&st);
}

/* A saga resumed between the two events of one outcome (the step recorded, not the move) goes
 * on with the move alone. */
static void test_saga_decide_resumed(void **state)
{
    (void)state;
    static const struct {
        const char *events;
        order_saga_outcome outcome;
        const char *payment_id, *types;
        order_status status;
        order_payment payment;
    } cases[] = {
        {"created reserved captured", ORDER_OUTCOME_CAPTURED, PAY, "OrderConfirmed",
         ORDER_STATUS_CONFIRMED, ORDER_PAYMENT_CAPTURED},
        {"created reserved captured", ORDER_OUTCOME_CONFIRMED, NULL, "OrderConfirmed",
         ORDER_STATUS_CONFIRMED, ORDER_PAYMENT_CAPTURED},
        {"created reserved declined", ORDER_OUTCOME_DECLINED, NULL, "OrderRejected",
         ORDER_STATUS_REJECTED, ORDER_PAYMENT_DECLINED},
        {"created declined", ORDER_OUTCOME_DECLINED, PAY, "OrderRejected", ORDER_STATUS_REJECTED,
         ORDER_PAYMENT_DECLINED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        order_state s;
        stream st = {0};
        order_state_init(&s);
        events(&s, cases[i].events);
        order_decision d;
        order_decision_init(&d);
        assert_int_equal(order_saga_decide(&s, cases[i].outcome, cases[i].payment_id, LATER, &d),
                         0);
        assert_int_equal(d.nevents, 1);
        assert_string_equal(d.events[0].type, cases[i].types);
        record(&s, &st, &d);
        assert_int_equal(s.status, cases[i].status);
        assert_int_equal(s.payment, cases[i].payment);
        order_decision_release(&d);
        order_state_release(&s);
        stream_release(&st);
    }
}

/* ---- evolve: the saga's step events ------------------------------------------------------ */

static void test_step_events(void **state)
{
    (void)state;
    /* each step event moves the stock or the payment, nothing else but updated_at/version */
    static const struct {
        const char *before, *step;
        order_stock stock;
        order_payment payment;
        const char *payment_id;
    } good[] = {
        {"created", "reserved", ORDER_STOCK_RESERVED, ORDER_PAYMENT_NONE, ""},
        {"created reserved", "captured", ORDER_STOCK_RESERVED, ORDER_PAYMENT_CAPTURED, PAY},
        {"created reserved", "declined", ORDER_STOCK_RESERVED, ORDER_PAYMENT_DECLINED, ""},
        {"created", "declined", ORDER_STOCK_NONE, ORDER_PAYMENT_DECLINED, ""},
        {"created reserved captured confirmed cancelled", "refunded", ORDER_STOCK_RESERVED,
         ORDER_PAYMENT_REFUNDED, PAY},
        {"created reserved captured confirmed cancelled refunded", "released", ORDER_STOCK_RELEASED,
         ORDER_PAYMENT_REFUNDED, PAY},
        {"created timeout", "voided", ORDER_STOCK_NONE, ORDER_PAYMENT_VOIDED, ""},
        {"created timeout", "refunded", ORDER_STOCK_NONE, ORDER_PAYMENT_REFUNDED, ""},
        {"created timeout", "released", ORDER_STOCK_RELEASED, ORDER_PAYMENT_NONE, ""},
        {"created reserved oos", "released", ORDER_STOCK_RELEASED, ORDER_PAYMENT_NONE, ""},
        {"created reserved declined pdeclined", "released", ORDER_STOCK_RELEASED,
         ORDER_PAYMENT_DECLINED, ""},
        {"old cancelled", "released", ORDER_STOCK_RELEASED, ORDER_PAYMENT_NONE, ""},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        order_state s, before;
        order_state_init(&s);
        events(&s, good[i].before);
        clone(&s, &before);
        events(&s, good[i].step);
        if (s.stock != good[i].stock || s.payment != good[i].payment)
            fail_msg("%s + %s: stock %d payment %d", good[i].before, good[i].step, (int)s.stock,
                     (int)s.payment);
        assert_string_equal(s.payment_id, good[i].payment_id);
        assert_int_equal(s.status, before.status);
        assert_int_equal(s.version, before.version + 1);
        assert_string_equal(s.updated_at, LATER);
        assert_true(same_reason(s.reason, before.reason));
        round_trip(&s);
        order_state_release(&s);
        order_state_release(&before);
    }

    /* misplaced step events are refused and change nothing */
    static const struct {
        const char *before, *type, *data;
    } bad[] = {
        {"", ORDER_EVENT_STOCK_RESERVED, "{\"at\":\"" LATER "\"}"},
        {"", ORDER_EVENT_PAYMENT_VOIDED, "{\"at\":\"" LATER "\"}"},
        {"created", ORDER_EVENT_STOCK_RELEASED, "{\"at\":\"" LATER "\"}"},
        {"created reserved", ORDER_EVENT_STOCK_RELEASED, "{\"at\":\"" LATER "\"}"},
        {"created reserved", ORDER_EVENT_STOCK_RESERVED, "{\"at\":\"" LATER "\"}"},
        {"created oos", ORDER_EVENT_STOCK_RESERVED, "{\"at\":\"" LATER "\"}"},
        {"created reserved captured confirmed", ORDER_EVENT_STOCK_RESERVED,
         "{\"at\":\"" LATER "\"}"},
        {"created", ORDER_EVENT_PAYMENT_CAPTURED,
         "{\"at\":\"" LATER "\",\"payment_id\":\"" PAY "\"}"},
        {"created reserved", ORDER_EVENT_PAYMENT_CAPTURED, "{\"at\":\"" LATER "\"}"},
        {"created reserved", ORDER_EVENT_PAYMENT_CAPTURED,
         "{\"at\":\"" LATER "\",\"payment_id\":\"x\"}"},
        {"created reserved", ORDER_EVENT_PAYMENT_CAPTURED,
         "{\"at\":\"" LATER "\",\"payment_id\":null}"},
        {"created reserved", ORDER_EVENT_PAYMENT_CAPTURED,
         "{\"at\":\"" LATER "\",\"payment_id\":7}"},
        {"created reserved captured", ORDER_EVENT_PAYMENT_CAPTURED,
         "{\"at\":\"" LATER "\",\"payment_id\":\"" PAY "\"}"},
        {"old", ORDER_EVENT_PAYMENT_CAPTURED, "{\"at\":\"" LATER "\",\"payment_id\":\"" PAY "\"}"},
        {"created reserved declined", ORDER_EVENT_PAYMENT_DECLINED, "{\"at\":\"" LATER "\"}"},
        {"created reserved captured", ORDER_EVENT_PAYMENT_DECLINED, "{\"at\":\"" LATER "\"}"},
        {"created timeout", ORDER_EVENT_PAYMENT_DECLINED, "{\"at\":\"" LATER "\"}"},
        {"created reserved", ORDER_EVENT_PAYMENT_DECLINED,
         "{\"at\":\"" LATER "\",\"payment_id\":\"nope\"}"},
        {"created", ORDER_EVENT_PAYMENT_REFUNDED, "{\"at\":\"" LATER "\"}"},
        {"created reserved captured", ORDER_EVENT_PAYMENT_REFUNDED, "{\"at\":\"" LATER "\"}"},
        {"created reserved captured confirmed", ORDER_EVENT_PAYMENT_REFUNDED,
         "{\"at\":\"" LATER "\"}"},
        {"created reserved captured confirmed cancelled refunded", ORDER_EVENT_PAYMENT_REFUNDED,
         "{\"at\":\"" LATER "\"}"},
        {"created reserved declined pdeclined", ORDER_EVENT_PAYMENT_REFUNDED,
         "{\"at\":\"" LATER "\"}"},
        {"created", ORDER_EVENT_PAYMENT_VOIDED, "{\"at\":\"" LATER "\"}"},
        {"created reserved captured confirmed cancelled", ORDER_EVENT_PAYMENT_VOIDED,
         "{\"at\":\"" LATER "\"}"},
        {"created timeout voided", ORDER_EVENT_PAYMENT_VOIDED, "{\"at\":\"" LATER "\"}"},
        {"created timeout voided released", ORDER_EVENT_STOCK_RELEASED, "{\"at\":\"" LATER "\"}"},
        {"created reserved captured confirmed shipped", ORDER_EVENT_STOCK_RELEASED,
         "{\"at\":\"" LATER "\"}"},
        {"created reserved captured confirmed", ORDER_EVENT_STOCK_COMMITTED,
         "{\"at\":\"" LATER "\"}"},
        {"created reserved captured confirmed shipped committed", ORDER_EVENT_STOCK_COMMITTED,
         "{\"at\":\"" LATER "\"}"},
        {"old shipped", ORDER_EVENT_STOCK_COMMITTED, "{\"at\":\"" LATER "\"}"},
        /* only a payment event names a payment */
        {"created", ORDER_EVENT_STOCK_RESERVED,
         "{\"at\":\"" LATER "\",\"payment_id\":\"" PAY "\"}"},
        {"old", ORDER_EVENT_STOCK_RELEASED, "{\"at\":\"" LATER "\"}"},
        /* the shape: at is required and a timestamp */
        {"created", ORDER_EVENT_STOCK_RESERVED, "{}"},
        {"created", ORDER_EVENT_STOCK_RESERVED, "{\"at\":\"soon\"}"},
        {"created", ORDER_EVENT_STOCK_RESERVED, "[]"},
        {"created timeout", ORDER_EVENT_PAYMENT_VOIDED, "not json"},
        {"created", "stockReserved", "{\"at\":\"" LATER "\"}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        order_state s, before;
        order_state_init(&s);
        events(&s, bad[i].before);
        clone(&s, &before);
        if (order_evolve(&s, bad[i].type, bad[i].data) != MS_EINVAL)
            fail_msg("%s on \"%s\" applied: %s", bad[i].type, bad[i].before, bad[i].data);
        assert_true(order_state_equal(&s, &before));
        order_state_release(&s);
        order_state_release(&before);
    }
}

static void test_shipping_commits_stock(void **state)
{
    (void)state;
    order_state s;
    stream st = {0};
    order_state_init(&s);
    play(&s, &st, "create reserve capture");
    assert_int_equal(s.stock, ORDER_STOCK_RESERVED);
    /* the shipment is recorded first; the reservation is then the saga's to commit */
    play(&s, &st, "ship");
    assert_int_equal(s.status, ORDER_STATUS_SHIPPED);
    assert_int_equal(s.stock, ORDER_STOCK_RESERVED);
    assert_int_equal(order_saga_next(&s, false), ORDER_SAGA_COMMIT);
    play(&s, &st, "commit");
    assert_int_equal(s.stock, ORDER_STOCK_COMMITTED);
    assert_int_equal(s.payment, ORDER_PAYMENT_CAPTURED);
    assert_int_equal(order_saga_next(&s, false), ORDER_SAGA_DONE);
    play(&s, &st, "deliver");
    assert_int_equal(s.stock, ORDER_STOCK_COMMITTED);
    /* a committed reservation is not released, whatever happens next */
    order_decision d;
    order_decision_init(&d);
    assert_int_equal(order_saga_decide(&s, ORDER_OUTCOME_RELEASED, NULL, LATER, &d), MS_ECONFLICT);
    order_decision_release(&d);
    assert_int_equal(order_saga_next(&s, true), ORDER_SAGA_DONE);
    order_state_release(&s);
    stream_release(&st);

    /* an order from before the saga reserved nothing: shipping it commits nothing */
    order_state_init(&s);
    events(&s, "old shipped");
    assert_int_equal(s.status, ORDER_STATUS_SHIPPED);
    assert_int_equal(s.stock, ORDER_STOCK_NONE);
    order_state_release(&s);
}

/* ---- evolve: orders from before the saga ------------------------------------------------- */

static void test_old_created(void **state)
{
    (void)state;
    order_state s;
    order_state_init(&s);
    events(&s, "old");
    assert_int_equal(s.status, ORDER_STATUS_CONFIRMED);
    assert_int_equal(s.subtotal_cents, 2500);
    assert_int_equal(s.shipping_cents, 0);
    assert_int_equal(s.total_cents, 2500);
    assert_int_equal(s.stock, ORDER_STOCK_NONE);
    assert_int_equal(s.payment, ORDER_PAYMENT_NONE);
    assert_string_equal(s.payment_id, "");
    assert_int_equal(s.version, 1);
    round_trip(&s);
    json_t *view = order_state_to_json(&s);
    assert_int_equal(json_integer_value(json_object_get(view, "subtotal_cents")), 2500);
    assert_int_equal(json_integer_value(json_object_get(view, "shipping_cents")), 0);
    assert_string_equal(json_string_value(json_object_get(view, "payment_status")), "none");
    assert_string_equal(json_string_value(json_object_get(view, "stock_status")), "none");
    assert_null(json_object_get(view, "payment_id"));
    json_decref(view);
    /* it ships and is delivered, or is cancelled, as before */
    order_state t;
    clone(&s, &t);
    events(&s, "shipped delivered");
    assert_int_equal(s.status, ORDER_STATUS_DELIVERED);
    events(&t, "cancelled");
    assert_int_equal(t.status, ORDER_STATUS_CANCELLED);
    order_state_release(&s);
    order_state_release(&t);

    /* a pending OrderCreated without subtotal and shipping reads as well */
    order_state_init(&s);
    assert_int_equal(
        order_evolve(&s, ORDER_EVENT_CREATED,
                     CREATED_DATA(LINE(2, 1250), "\"status\":\"pending\",\"total_cents\":2500")),
        0);
    assert_int_equal(s.status, ORDER_STATUS_PENDING);
    assert_int_equal(s.subtotal_cents, 2500);
    assert_int_equal(s.shipping_cents, 0);
    order_state_release(&s);
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
         CREATED_DATA(LINE(2, 1250), "\"status\":\"pending\",\"total_cents\":2501")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(2, 9223372036854775807), "\"status\":\"pending\",\"total_cents\":-2")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA("", "\"status\":\"pending\",\"total_cents\":0")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(2, 1250), "\"status\":\"shipped\",\"total_cents\":2500")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(2, 1250), "\"status\":\"rejected\",\"total_cents\":2500")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(0, 1250), "\"status\":\"pending\",\"total_cents\":0")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":[" LINE(
             2, 1250) "],\"order_id\":\"" ORDER "\",\"shipping_address\":\"Berlin\",\"status\":"
                      "\"pending\",\"total_cents\":2500,\"user_id\":\"" USER "\"}"},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         "{\"at\":\"" NOW "\",\"created_at\":\"" NOW "\",\"currency\":\"EUR\",\"items\":[" LINE(
             2, 1250) "],\"order_id\":\"" ORDER "\",\"shipping_address\":null,\"status\":"
                      "\"pending\",\"total_cents\":2500,\"user_id\":\"nobody\"}"},
        /* the checkout's amounts: total = subtotal + shipping, subtotal = the items */
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(2, 1250), "\"shipping_cents\":499,\"status\":\"pending\","
                                     "\"subtotal_cents\":2500,\"total_cents\":3000")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(2, 1250), "\"shipping_cents\":499,\"status\":\"pending\","
                                     "\"subtotal_cents\":2500,\"total_cents\":2500")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(2, 1250), "\"shipping_cents\":499,\"status\":\"pending\","
                                     "\"subtotal_cents\":2501,\"total_cents\":3000")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(2, 1250), "\"status\":\"pending\",\"subtotal_cents\":2500,"
                                     "\"total_cents\":2999")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(2, 1250), "\"shipping_cents\":-1,\"status\":\"pending\","
                                     "\"subtotal_cents\":2500,\"total_cents\":2499")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(2, 1250), "\"shipping_cents\":\"499\",\"status\":\"pending\","
                                     "\"subtotal_cents\":2500,\"total_cents\":2999")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(2, 1250), "\"shipping_cents\":499,\"status\":\"pending\","
                                     "\"subtotal_cents\":null,\"total_cents\":2999")},
        {ORDER_STATUS_NONE, ORDER_EVENT_CREATED,
         CREATED_DATA(LINE(1, 1), "\"shipping_cents\":9223372036854775807,\"status\":\"pending\","
                                  "\"subtotal_cents\":1,\"total_cents\":-9223372036854775808")},
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
        order_evolve(&s, ORDER_EVENT_STOCK_RESERVED, "{\"at\":\"" LATER "\",\"warehouse\":2}"), 0);
    assert_int_equal(
        order_evolve(&s, ORDER_EVENT_CONFIRMED, "{\"at\":\"2026-11-25T08:00:00+01:00\",\"by\":1}"),
        0);
    assert_string_equal(s.updated_at, "2026-11-25T08:00:00+01:00");
    order_state_release(&s);
}

static void test_rebuild_stops_at_bad_event(void **state)
{
    (void)state;
    const order_event events_[] = {
        {ORDER_EVENT_CREATED, CREATED_PENDING},
        {ORDER_EVENT_STOCK_RESERVED, "{\"at\":\"" LATER "\"}"},
        {ORDER_EVENT_STOCK_RESERVED, "{\"at\":\"" LATER "\"}"},
        {ORDER_EVENT_PAYMENT_CAPTURED, "{\"at\":\"" LATER "\",\"payment_id\":\"" PAY "\"}"},
    };
    order_state s;
    order_state_init(&s);
    size_t failed = 99;
    assert_int_equal(order_rebuild(&s, events_, 4, &failed), MS_EINVAL);
    assert_int_equal(failed, 2);
    assert_int_equal(s.status, ORDER_STATUS_PENDING);
    assert_int_equal(s.stock, ORDER_STOCK_RESERVED);
    assert_int_equal(s.version, 2);
    order_state_release(&s);
    order_state_init(&s);
    assert_int_equal(order_rebuild(&s, events_, 2, NULL), 0);
    order_state_release(&s);
}

/* ---- rebuild equals live, snapshots ------------------------------------------------------ */

static void test_rebuild_equals_live(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        order_status end;
    } cases[] = {
        {"created", ORDER_STATUS_PENDING},
        {"create", ORDER_STATUS_PENDING},
        {"create reserve", ORDER_STATUS_PENDING},
        {"create reserve capture", ORDER_STATUS_CONFIRMED},
        {"create reserve capture ship", ORDER_STATUS_SHIPPED},
        {"create reserve capture ship deliver", ORDER_STATUS_DELIVERED},
        {"create oos", ORDER_STATUS_REJECTED},
        {"create reserve decline release", ORDER_STATUS_REJECTED},
        {"create reserve timeout void release", ORDER_STATUS_REJECTED},
        {"create timeout refund release", ORDER_STATUS_REJECTED},
        {"create reserve capture cancel", ORDER_STATUS_CANCELLED},
        {"create reserve capture cancel refund release", ORDER_STATUS_CANCELLED},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        order_state live, rebuilt;
        stream st = {0};
        order_state_init(&live);
        order_state_init(&rebuilt);
        play(&live, &st, cases[c].spec);
        assert_int_equal(live.status, cases[c].end);
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

/* order_state_equal sees every field the saga added (else the round trips prove nothing). */
static void test_state_equal_sees_saga_fields(void **state)
{
    (void)state;
    order_state a, b;
    order_state_init(&a);
    events(&a, "created reserved captured confirmed cancelled refunded");
    for (int field = 0; field < 5; field++) {
        clone(&a, &b);
        assert_true(order_state_equal(&a, &b));
        switch (field) {
        case 0:
            b.subtotal_cents++;
            break;
        case 1:
            b.shipping_cents++;
            break;
        case 2:
            b.stock = ORDER_STOCK_RELEASED;
            break;
        case 3:
            b.payment = ORDER_PAYMENT_VOIDED;
            break;
        default:
            b.payment_id[0] = 'f';
            break;
        }
        if (order_state_equal(&a, &b))
            fail_msg("field %d: a change was not seen", field);
        order_state_release(&b);
    }
    order_state_release(&a);
}

static void test_snapshot_errors(void **state)
{
    (void)state;
    order_state s, out;
    stream st = {0};
    order_state_init(&s);
    order_state_init(&out);
    assert_null(order_snapshot_write(&s)); /* no order, no snapshot */
    play(&s, &st, "create reserve capture");
    char *snap = order_snapshot_write(&s);
    json_t *doc = obj(snap);
    char keys[512];
    keys_of(doc, keys, sizeof keys);
    assert_string_equal(keys,
                        "created_at,currency,format,id,items,payment_id,payment_status,reason,"
                        "shipping_address,shipping_cents,status,stock_status,subtotal_cents,"
                        "total_cents,updated_at,user_id,version");
    assert_int_equal(json_integer_value(json_object_get(doc, "subtotal_cents")), 3499);
    assert_int_equal(json_integer_value(json_object_get(doc, "shipping_cents")), 499);
    assert_int_equal(json_integer_value(json_object_get(doc, "total_cents")), 3998);
    assert_string_equal(json_string_value(json_object_get(doc, "payment_status")), "captured");
    assert_string_equal(json_string_value(json_object_get(doc, "stock_status")), "reserved");
    assert_string_equal(json_string_value(json_object_get(doc, "payment_id")), PAY);
    /* reading into a state that holds an order replaces it (no leak: ASan) */
    assert_int_equal(order_snapshot_read(snap, &out), 0);
    assert_int_equal(order_snapshot_read(snap, &out), 0);
    assert_true(order_state_equal(&s, &out));

    static const struct {
        const char *key, *value;
    } breaks[] = {
        {"format", "2"},
        {"format", "\"1\""},
        {"version", "0"},
        {"version", "\"1\""},
        {"id", "\"x\""},
        {"status", "\"lost\""},
        {"total_cents", "1"},
        {"total_cents", "3499"}, /* subtotal alone: the shipping is missing */
        {"subtotal_cents", "3498"},
        {"subtotal_cents", "\"3499\""},
        {"shipping_cents", "500"}, /* total no longer subtotal + shipping */
        {"shipping_cents", "-1"},
        {"shipping_cents", "null"},
        {"stock_status", "\"lost\""},
        {"stock_status", "1"},
        {"stock_status", "\"Reserved\""},
        {"payment_status", "\"paid\""},
        {"payment_status", "null"},
        {"payment_id", "\"x\""},
        {"payment_id", "null"},
        {"payment_id", "7"},
        {"items", "[]"},
        {"updated_at", "null"},
        {"reason", "7"},
        {"currency", "\"eu\""},
        {"shipping_address", "[]"},
        {"created_at", "\"now\""},
    };
    for (size_t i = 0; i < sizeof breaks / sizeof breaks[0]; i++) {
        json_t *bad = json_deep_copy(doc);
        json_object_set_new(bad, breaks[i].key, obj(breaks[i].value));
        char *text = json_dumps(bad, 0);
        if (order_snapshot_read(text, &out) != MS_EINVAL)
            fail_msg("snapshot with %s=%s read", breaks[i].key, breaks[i].value);
        /* a view has no format number; every other break holds for views too */
        if (strcmp(breaks[i].key, "format") != 0 && order_view_read(text, &out) != MS_EINVAL)
            fail_msg("view with %s=%s read", breaks[i].key, breaks[i].value);
        assert_true(order_state_equal(&s, &out)); /* unchanged on failure */
        free(text);
        json_decref(bad);
    }
    assert_int_equal(order_snapshot_read(NULL, &out), MS_EINVAL);
    assert_int_equal(order_snapshot_read("", &out), MS_EINVAL);
    assert_int_equal(order_snapshot_read("[1]", &out), MS_EINVAL);
    assert_int_equal(order_snapshot_read("{\"format\":1}", &out), MS_EINVAL);
    assert_true(order_state_equal(&s, &out));

    /* a snapshot from before the saga (no subtotal, shipping, stock, payment) still reads:
     * subtotal = total, shipping 0, none/none */
    json_t *old = json_deep_copy(doc);
    static const char *const saga_keys[] = {"subtotal_cents", "shipping_cents", "stock_status",
                                            "payment_status", "payment_id"};
    for (size_t i = 0; i < sizeof saga_keys / sizeof saga_keys[0]; i++)
        json_object_del(old, saga_keys[i]);
    json_object_set_new(old, "total_cents", json_integer(3499));
    char *text = json_dumps(old, 0);
    assert_int_equal(order_snapshot_read(text, &out), 0);
    assert_int_equal(out.status, ORDER_STATUS_CONFIRMED);
    assert_int_equal(out.subtotal_cents, 3499);
    assert_int_equal(out.shipping_cents, 0);
    assert_int_equal(out.total_cents, 3499);
    assert_int_equal(out.stock, ORDER_STOCK_NONE);
    assert_int_equal(out.payment, ORDER_PAYMENT_NONE);
    assert_string_equal(out.payment_id, "");
    free(text);
    /* and so does a view from before the saga (no format, no reason) */
    json_object_del(old, "format");
    json_object_del(old, "reason");
    text = json_dumps(old, 0);
    order_state view;
    order_state_init(&view);
    assert_int_equal(order_view_read(text, &view), 0);
    assert_true(order_state_equal(&view, &out));
    free(text);
    order_state_release(&view);
    json_decref(old);

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
    play(&s, &st, "create");
    json_t *view = order_state_to_json(&s);
    char keys[512];
    keys_of(view, keys, sizeof keys);
    assert_string_equal(keys, "created_at,currency,id,items,payment_status,shipping_address,"
                              "shipping_cents,status,stock_status,subtotal_cents,total_cents,"
                              "updated_at,user_id,version");
    assert_string_equal(json_string_value(json_object_get(view, "id")), ORDER);
    assert_string_equal(json_string_value(json_object_get(view, "status")), "pending");
    assert_int_equal(json_integer_value(json_object_get(view, "subtotal_cents")), 3499);
    assert_int_equal(json_integer_value(json_object_get(view, "shipping_cents")), 499);
    assert_int_equal(json_integer_value(json_object_get(view, "total_cents")), 3998);
    assert_string_equal(json_string_value(json_object_get(view, "payment_status")), "none");
    assert_string_equal(json_string_value(json_object_get(view, "stock_status")), "none");
    assert_int_equal(json_integer_value(json_object_get(view, "version")), 1);
    assert_int_equal(json_array_size(json_object_get(view, "items")), 2);
    json_t *addr = obj(ADDRESS);
    assert_true(json_equal(json_object_get(view, "shipping_address"), addr));
    json_decref(addr);
    json_decref(view);

    play(&s, &st, "reserve capture");
    view = order_state_to_json(&s);
    assert_string_equal(json_string_value(json_object_get(view, "status")), "confirmed");
    assert_string_equal(json_string_value(json_object_get(view, "payment_id")), PAY);
    assert_string_equal(json_string_value(json_object_get(view, "payment_status")), "captured");
    assert_string_equal(json_string_value(json_object_get(view, "stock_status")), "reserved");
    assert_int_equal(json_integer_value(json_object_get(view, "version")), 4);
    assert_null(json_object_get(view, "reason"));
    json_decref(view);

    play(&s, &st, "cancel refund release");
    view = order_state_to_json(&s);
    assert_string_equal(json_string_value(json_object_get(view, "reason")), "changed my mind");
    assert_string_equal(json_string_value(json_object_get(view, "status")), "cancelled");
    assert_string_equal(json_string_value(json_object_get(view, "payment_status")), "refunded");
    assert_string_equal(json_string_value(json_object_get(view, "stock_status")), "released");
    assert_string_equal(json_string_value(json_object_get(view, "updated_at")), LATER);
    assert_int_equal(json_integer_value(json_object_get(view, "version")), 7);
    json_decref(view);
    order_state_release(&s);
    stream_release(&st);

    /* every other value of the saga's fields, by name */
    static const struct {
        const char *events, *payment, *stock;
    } names[] = {
        {"created reserved declined", "declined", "reserved"},
        {"created timeout voided released", "voided", "released"},
        {"created reserved captured confirmed shipped committed", "captured", "committed"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        order_state_init(&s);
        events(&s, names[i].events);
        view = order_state_to_json(&s);
        assert_string_equal(json_string_value(json_object_get(view, "payment_status")),
                            names[i].payment);
        assert_string_equal(json_string_value(json_object_get(view, "stock_status")),
                            names[i].stock);
        json_decref(view);
        round_trip(&s);
        order_state_release(&s);
    }

    /* no address: null in the view; a rejected order says why */
    order_state_init(&s);
    play(&s, &st, "created");
    view = order_state_to_json(&s);
    assert_true(json_is_null(json_object_get(view, "shipping_address")));
    assert_null(json_object_get(view, "reason"));
    assert_null(json_object_get(view, "payment_id"));
    json_decref(view);
    play(&s, &st, "oos");
    view = order_state_to_json(&s);
    assert_string_equal(json_string_value(json_object_get(view, "reason")), "out_of_stock");
    json_decref(view);
    order_state_release(&s);
    stream_release(&st);
}

/* ---- registry, decide edge cases --------------------------------------------------------- */

static void test_registry(void **state)
{
    (void)state;
    static const char *const names[] = {"Checkout", "CreateOrder", "UpdateOrderStatus",
                                        "CancelOrder"};
    for (int i = 0; i < 4; i++) {
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
        cmocka_unit_test(test_step_event_shapes),
        cmocka_unit_test(test_bad_commands),
        cmocka_unit_test(test_bad_commands_built),
        cmocka_unit_test(test_good_commands),
        cmocka_unit_test(test_checkout_decides_nothing),
        cmocka_unit_test(test_total),
        cmocka_unit_test(test_total_cap),
        cmocka_unit_test(test_shipping_rule),
        cmocka_unit_test(test_saga_next),
        cmocka_unit_test(test_saga_decide),
        cmocka_unit_test(test_saga_decide_resumed),
        cmocka_unit_test(test_saga_runs),
        cmocka_unit_test(test_step_events),
        cmocka_unit_test(test_shipping_commits_stock),
        cmocka_unit_test(test_old_created),
        cmocka_unit_test(test_bad_events),
        cmocka_unit_test(test_rebuild_stops_at_bad_event),
        cmocka_unit_test(test_rebuild_equals_live),
        cmocka_unit_test(test_state_equal_sees_saga_fields),
        cmocka_unit_test(test_snapshot_errors),
        cmocka_unit_test(test_view),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_currency_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
