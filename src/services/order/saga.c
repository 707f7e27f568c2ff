/*
 * saga.c — the checkout saga's engine: runs an order's remaining steps (order_saga_next) on
 * a loop, one at a time: a remote call through the service client, then the event that
 * records its answer, appended with the order's version as the expected one. Design:
 * docs/internals/checkout.md.
 *
 * A step is recorded only after its call answered, so a crash between the two repeats the
 * call, which every service answers as the first time (idempotent by order id). A failed call
 * or append is retried with full-jitter backoff, without end for compensations (they may not
 * fail for good). Going forward has a limit: after ORDER_SAGA_GIVE_UP_MS the card number is
 * dropped, which makes the next step a rejection with reason "timeout".
 *
 * A saga attached to a request answers it: done_status (201 checkout, 200 cancel) when it
 * ends before the request's deadline, else 202 with Location, and it goes on detached.
 * Each process claims the orders it runs (one runner per order here); the resumer (on the
 * first loop) finds open sagas in the views and runs those nobody runs: all of them just
 * after start, later only those idle for ORDER_SAGA_STALE_MS (another instance's crash).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventstore/relay.h"
#include "runtime/core/error.h"
#include "runtime/core/hash.h"
#include "runtime/core/log.h"
#include "runtime/http/problem.h"
#include "runtime/json/json.h"
#include "runtime/obs/metrics.h"
#include "services/inventory/inventory_client.h"
#include "services/order/order_internal.h"
#include "services/payment/payment_client.h"
#include "runtime/core/banned.h"

enum {
    ORDER_SAGA_GIVE_UP_MS = 30000,     /* going forward: then the card is dropped (timeout) */
    ORDER_SAGA_STALE_MS = 30000,       /* an open saga idle this long has lost its runner */
    ORDER_SAGA_CALL_MS = 5000,         /* a detached saga's remote call */
    ORDER_SAGA_ANSWER_MARGIN_MS = 250, /* answered 202 this long before the request's deadline */
    ORDER_SAGA_BACKOFF_MAX_MS = 2000,
    ORDER_SAGA_RESUME_EVERY_MS = 1000,
    ORDER_SAGA_CATCH_UP_MS = 50, /* the resumer's pace while the views catch up after a start */
    ORDER_SAGA_RESUME_PAGE = 200,
};

struct order_saga {
    order_loop *ol;
    ms_http_request *req; /* attached: the saga answers it; NULL once answered */
    int done_status;
    uint64_t answer_by; /* attached: when 202 is due (uv_now ms) */
    char id[MS_UUID_LEN + 1], stream[ORDER_STREAM_LEN + 1];
    order_state state;
    char *card; /* heap, wiped when dropped; NULL: lost (resumed) or given up */
    uint64_t give_up_at;
    unsigned failures;
    int64_t position; /* of the last append, for X-Position */
    uint64_t call_started_ns;
    char traceparent[MS_TRACEPARENT_LEN + 1]; /* the checkout request's span ("": none) */
    ms_span *span;                            /* the step in flight's INTERNAL span */
    uv_timer_t timer;
    order_decision decision;
    ms_es_event events[ORDER_MAX_DECIDED];
    ms_es_outbox_row outbox[ORDER_MAX_DECIDED];
    ms_es_append_req append;
    order_saga *prev, *next; /* the loop's sagas */
};

/* ---- metrics (atomics: sagas run on every loop) ---- */

enum { NSTEPS = ORDER_SAGA_COMMIT + 1, NENDS = 6 };
static const double step_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1,   0.25,   0.5,   1,    2.5,   5};
enum { NBOUNDS = sizeof step_bounds / sizeof step_bounds[0] };
static const char *const end_names[NENDS] = {"confirmed", "out_of_stock", "payment_declined",
                                             "timeout",   "cancelled",    "shipped"};
static struct {
    uint64_t ended[NENDS], resumed, running;
    uint64_t steps_ok[NSTEPS], steps_retried[NSTEPS];
    uint64_t step_hist[NSTEPS][NBOUNDS + 1], step_ns[NSTEPS];
} stats;

static void count(uint64_t *c, uint64_t n)
{
    __atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint64_t read_count(const uint64_t *c)
{
    return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* How a finished saga ended, for order_sagas_ended_total. */
static void count_end(const order_state *s)
{
    int i = -1;
    if (s->status == ORDER_STATUS_CONFIRMED)
        i = 0;
    else if (s->status == ORDER_STATUS_CANCELLED)
        i = 4;
    else if (s->status == ORDER_STATUS_SHIPPED || s->status == ORDER_STATUS_DELIVERED)
        i = 5;
    else if (s->status == ORDER_STATUS_REJECTED)
        for (int k = 1; k < 4 && s->reason; k++)
            if (strcmp(s->reason, end_names[k]) == 0)
                i = k;
    if (i >= 0)
        count(&stats.ended[i], 1);
}

static void count_step(order_saga_step step, uint64_t ns, bool ok)
{
    count(ok ? &stats.steps_ok[step] : &stats.steps_retried[step], 1);
    count(&stats.step_hist[step][ms_metrics_bucket(step_bounds, NBOUNDS, (double)ns / 1e9)], 1);
    count(&stats.step_ns[step], ns);
}

void order_saga_collect(ms_buf *out, void *arg)
{
    (void)arg;
    ms_metrics_family(out, "order_sagas_running", "gauge", "Checkout sagas running now.");
    ms_metrics_sample(out, "order_sagas_running", (double)read_count(&stats.running), NULL);
    ms_metrics_family(out, "order_sagas_resumed_total", "counter",
                      "Sagas resumed after a restart or from a runner that went away.");
    ms_metrics_sample(out, "order_sagas_resumed_total", (double)read_count(&stats.resumed), NULL);
    ms_metrics_family(out, "order_sagas_ended_total", "counter",
                      "Sagas that ran to their end, by outcome (confirmed, a rejection's reason, "
                      "cancelled: refunded and released, or shipped: stock committed).");
    for (int i = 0; i < NENDS; i++)
        ms_metrics_sample(out, "order_sagas_ended_total", (double)read_count(&stats.ended[i]),
                          "outcome", end_names[i], NULL);
    ms_metrics_family(out, "order_saga_steps_total", "counter",
                      "Remote saga steps, by step and result (ok: answered; retry: failed and "
                      "tried again).");
    for (int st = ORDER_SAGA_RESERVE; st < NSTEPS; st++) {
        if (st == ORDER_SAGA_CONFIRM || st == ORDER_SAGA_REJECT)
            continue; /* local steps: no call */
        ms_metrics_sample(out, "order_saga_steps_total", (double)read_count(&stats.steps_ok[st]),
                          "step", order_saga_step_name(st), "result", "ok", NULL);
        ms_metrics_sample(out, "order_saga_steps_total",
                          (double)read_count(&stats.steps_retried[st]), "step",
                          order_saga_step_name(st), "result", "retry", NULL);
    }
    ms_metrics_family(out, "order_saga_step_duration_seconds", "histogram",
                      "A remote saga step's call, from sending to its answer.");
    for (int st = ORDER_SAGA_RESERVE; st < NSTEPS; st++) {
        if (st == ORDER_SAGA_CONFIRM || st == ORDER_SAGA_REJECT)
            continue;
        uint64_t hist[NBOUNDS + 1];
        for (int b = 0; b <= NBOUNDS; b++)
            hist[b] = read_count(&stats.step_hist[st][b]);
        const char *labels[] = {"step", order_saga_step_name(st)};
        ms_metrics_histogram(out, "order_saga_step_duration_seconds", labels, 1, step_bounds,
                             NBOUNDS, hist, (double)read_count(&stats.step_ns[st]) / 1e9);
    }
}

/* ---- claims: one runner per order in this process ---- */

enum { CLAIM_BUCKETS = 1024 };
typedef struct claim {
    char id[MS_UUID_LEN + 1];
    struct claim *next;
} claim;
static struct {
    uv_once_t once;
    uv_mutex_t lock;
    claim *buckets[CLAIM_BUCKETS];
} claims = {.once = UV_ONCE_INIT};

static void claims_init(void)
{
    uv_mutex_init(&claims.lock);
}

int order_saga_claim(const char *order_id)
{
    uv_once(&claims.once, claims_init);
    claim **b = &claims.buckets[ms_hash_text(order_id) % CLAIM_BUCKETS];
    int rc = 0;
    uv_mutex_lock(&claims.lock);
    for (claim *c = *b; c && rc == 0; c = c->next)
        if (strcmp(c->id, order_id) == 0)
            rc = MS_ECONFLICT;
    if (rc == 0) {
        claim *c = ms_xcalloc(1, sizeof *c);
        snprintf(c->id, sizeof c->id, "%s", order_id);
        c->next = *b;
        *b = c;
    }
    uv_mutex_unlock(&claims.lock);
    return rc;
}

void order_saga_unclaim(const char *order_id)
{
    uv_once(&claims.once, claims_init);
    uv_mutex_lock(&claims.lock);
    for (claim **p = &claims.buckets[ms_hash_text(order_id) % CLAIM_BUCKETS]; *p; p = &(*p)->next)
        if (strcmp((*p)->id, order_id) == 0) {
            claim *c = *p;
            *p = c->next;
            free(c);
            break;
        }
    uv_mutex_unlock(&claims.lock);
}

/* ---- life ---- */

static void drop_card(order_saga *g)
{
    if (g->card)
        explicit_bzero(g->card, strlen(g->card));
    free(g->card);
    g->card = NULL;
}

static void on_timer_closed(uv_handle_t *h)
{
    order_saga *g = h->data;
    order_state_release(&g->state);
    order_decision_release(&g->decision);
    free(g);
}

/* The answer of an attached saga (status 202 while it goes on). */
static void answer(order_saga *g, int status)
{
    if (!g->req)
        return;
    order_answer(g->req, &g->state, status, g->position);
    g->req = NULL;
}

static void finish(order_saga *g, int rc)
{
    if (g->req && rc < 0) {
        ms_problem_from_error(g->req, rc, "the order's checkout could not go on");
        g->req = NULL;
    }
    answer(g, g->done_status);
    if (rc == 0)
        count_end(&g->state);
    __atomic_fetch_sub(&stats.running, 1, __ATOMIC_RELAXED);
    drop_card(g);
    order_saga_unclaim(g->id);
    if (g->prev)
        g->prev->next = g->next;
    else
        g->ol->sagas = g->next;
    if (g->next)
        g->next->prev = g->prev;
    uv_timer_stop(&g->timer);
    uv_close((uv_handle_t *)&g->timer, on_timer_closed);
}

static void step(order_saga *g);

static void on_timer(uv_timer_t *t)
{
    step(t->data);
}

/* Tries the step again later: full jitter over a doubling cap. An attached saga whose wait
 * would pass its answer time answers 202 now and goes on detached. */
static void retry_later(order_saga *g, const char *why, int rc)
{
    if (g->ol->is_closing) {
        finish(g, MS_ESHUTDOWN);
        return;
    }
    unsigned cap = 25u << (g->failures < 7 ? g->failures : 7);
    if (cap > ORDER_SAGA_BACKOFF_MAX_MS)
        cap = ORDER_SAGA_BACKOFF_MAX_MS;
    uint32_t r;
    ms_random_bytes(&r, sizeof r);
    uint64_t wait = 1 + r % cap, now = uv_now(&g->ol->loop->uv);
    g->failures++;
    if (g->failures == 3 || g->failures % 20 == 0)
        ms_log(MS_LOG_WARN, "checkout step failing; retrying", "order_id", g->id, "step", why,
               "error", ms_strerror(rc), NULL);
    if (g->req && now + wait >= g->answer_by)
        answer(g, 202);
    uv_timer_start(&g->timer, on_timer, wait, 0);
}

/* ---- appending what a step answered ---- */

static void reloaded(int rc, void *arg);

static int reload_work(ms_db_conn *c, void *arg)
{
    order_saga *g = arg;
    order_state_release(&g->state);
    int64_t top = 0;
    int rc = order_load(c, g->stream, &g->state, NULL, &top);
    if (rc == 0 && top > g->position)
        g->position = top; /* the answer's X-Position: what this state was read at */
    return rc;
}

/* Someone else moved the order (another runner, a cancel): read it again and go on. */
static void reload(order_saga *g)
{
    ms_db_pool_run(g->ol->loop->db, MS_DB_READ, uv_now(&g->ol->loop->uv) + ORDER_SAGA_CALL_MS,
                   reload_work, reloaded, g);
}

static void reloaded(int rc, void *arg)
{
    order_saga *g = arg;
    if (rc < 0)
        retry_later(g, "reload", rc);
    else
        step(g);
}

static void appended(int rc, ms_es_append_req *a, void *arg)
{
    order_saga *g = arg;
    if (rc == MS_ECONFLICT) {
        reload(g);
        return;
    }
    if (rc < 0) {
        retry_later(g, "append", rc);
        return;
    }
    if (order_apply_decision(&g->state, &g->decision) < 0)
        MS_BUG("a saga event the aggregate decided does not apply to it");
    g->position = a->last_position;
    g->failures = 0;
    ms_relay_kick(order_proc.relay);
    step(g);
}

/* Records an outcome: decided on the state, appended at its version. */
static void record(order_saga *g, order_saga_outcome outcome, const char *payment_id)
{
    char now[MS_TIME_LEN + 1];
    ms_time_now(now);
    int rc = order_saga_decide(&g->state, outcome, payment_id, now, &g->decision);
    if (rc < 0) { /* it does not fit what we hold: the stream moved on */
        reload(g);
        return;
    }
    order_fill_append(g->stream, g->id, &g->decision, NULL, NULL, g->events, g->outbox,
                      g->state.version, &g->append);
    ms_es_append(g->ol->port, &g->append, appended, g);
}

/* ---- remote steps ---- */

typedef struct call_answer {
    int status;
    const char *reason;     /* the problem's "reason", or NULL */
    const char *payment_id; /* a payment's id, or NULL */
    const char *pay_status; /* a payment's status, or NULL */
} call_answer;

/* What the step's call answered, read from the response (which lives until the callback
 * returns: everything is used before then). */
static void read_answer(const ms_http_client_resp *resp, json_t **doc, call_answer *out)
{
    *doc = json_loadb(resp->body, resp->body_len, 0, NULL);
    out->status = resp->status;
    out->reason = json_string_value(json_object_get(*doc, "reason"));
    out->payment_id = json_string_value(json_object_get(*doc, "id"));
    out->pay_status = json_string_value(json_object_get(*doc, "status"));
}

static bool is_reason(const call_answer *a, const char *reason)
{
    return a->reason && strcmp(a->reason, reason) == 0;
}

/* The outcome a step's answer stands for; false: no outcome, try again. */
static bool outcome_of(order_saga_step s, const call_answer *a, order_saga_outcome *out)
{
    switch (s) {
    case ORDER_SAGA_RESERVE:
        if (a->status == 200 || a->status == 201)
            *out = ORDER_OUTCOME_RESERVED;
        else if (a->status == 422 || (a->status == 409 && is_reason(a, "out_of_stock")))
            *out = ORDER_OUTCOME_OUT_OF_STOCK; /* 422: a product went away since the quote */
        else if (a->status == 409)
            *out = ORDER_OUTCOME_TIMEOUT; /* released first: a timed-out runner got there */
        else
            return false;
        return true;
    case ORDER_SAGA_PAY:
        if (a->status == 200 || a->status == 201)
            *out = ORDER_OUTCOME_CAPTURED;
        else if (a->status == 409 && is_reason(a, "voided"))
            *out = ORDER_OUTCOME_TIMEOUT;
        else if (a->status == 402 || a->status == 409 || a->status == 422)
            *out = ORDER_OUTCOME_DECLINED;
        else
            return false;
        return true;
    case ORDER_SAGA_REFUND:
    case ORDER_SAGA_VOID:
        if (a->status == 200 && a->pay_status && strcmp(a->pay_status, "refunded") == 0)
            *out = ORDER_OUTCOME_REFUNDED;
        else if (s == ORDER_SAGA_VOID && (a->status == 200 || a->status == 404))
            *out = ORDER_OUTCOME_VOIDED; /* voided, declined, or none at all */
        else
            return false;
        return true;
    case ORDER_SAGA_RELEASE:
    case ORDER_SAGA_COMMIT:
        if (a->status != 200)
            return false;
        *out = s == ORDER_SAGA_RELEASE ? ORDER_OUTCOME_RELEASED : ORDER_OUTCOME_COMMITTED;
        return true;
    default:
        return false;
    }
}

static void called(int err, const ms_http_client_resp *resp, void *arg)
{
    order_saga *g = arg;
    order_saga_step s = order_saga_next(&g->state, g->card != NULL);
    json_t *doc = NULL;
    call_answer a = {0};
    order_saga_outcome outcome;
    if (err == 0)
        read_answer(resp, &doc, &a);
    bool ok = err == 0 && outcome_of(s, &a, &outcome);
    count_step(s, uv_hrtime() - g->call_started_ns, ok);
    if (!ok)
        ms_span_error(g->span, err < 0 ? ms_strerror(err) : "unexpected answer");
    ms_span_end(g->span);
    g->span = NULL;
    if (!ok) {
        if (err == 0 && a.status < 500)
            ms_log(MS_LOG_WARN, "checkout step answered unexpectedly", "order_id", g->id, "step",
                   order_saga_step_name(s), "status", a.status == 409 ? "409" : "4xx", NULL);
        json_decref(doc);
        retry_later(g, order_saga_step_name(s), err < 0 ? err : MS_EIO);
        return;
    }
    char payment_id[MS_UUID_LEN + 1] = "";
    /* a capture answers the payment; a decline (a problem) names it in Location */
    const char *location = ms_http_client_resp_header(resp, "Location");
    const char *slash = location ? strrchr(location, '/') : NULL;
    if (a.payment_id && ms_uuid_valid(a.payment_id))
        snprintf(payment_id, sizeof payment_id, "%s", a.payment_id);
    else if (s == ORDER_SAGA_PAY && slash && ms_uuid_valid(slash + 1))
        snprintf(payment_id, sizeof payment_id, "%s", slash + 1);
    json_decref(doc);
    record(g, outcome, payment_id[0] ? payment_id : NULL);
}

/* The body of a step's call (NULL: none). */
static json_t *call_body(order_saga *g, order_saga_step s)
{
    const order_state *o = &g->state;
    if (s == ORDER_SAGA_RESERVE) {
        json_t *items = json_array();
        for (size_t i = 0; i < o->nitems; i++)
            json_array_append_new(items,
                                  json_pack("{s:s, s:i}", "product_id", o->items[i].product_id,
                                            "quantity", o->items[i].quantity));
        return json_pack("{s:s, s:o}", "order_id", o->id, "items", items);
    }
    if (s == ORDER_SAGA_PAY)
        return json_pack("{s:s, s:s, s:I, s:s, s:s}", "order_id", o->id, "user_id", o->user_id,
                         "amount_cents", (json_int_t)o->total_cents, "currency", o->currency,
                         "card_number", g->card);
    if (s == ORDER_SAGA_REFUND || s == ORDER_SAGA_VOID)
        return json_pack("{s:s}", "reason",
                         o->status == ORDER_STATUS_CANCELLED ? "order cancelled"
                                                             : "order rejected");
    return NULL;
}

static void call(order_saga *g, order_saga_step s)
{
    char path[128];
    bool to_inventory =
        s == ORDER_SAGA_RESERVE || s == ORDER_SAGA_RELEASE || s == ORDER_SAGA_COMMIT;
    const char *upstream = to_inventory ? "inventory" : "payment";
    if (s == ORDER_SAGA_RESERVE)
        snprintf(path, sizeof path, "%s", INVENTORY_RESERVATIONS_PATH);
    else if (s == ORDER_SAGA_RELEASE)
        snprintf(path, sizeof path, INVENTORY_RELEASE_FMT, g->id);
    else if (s == ORDER_SAGA_COMMIT)
        snprintf(path, sizeof path, INVENTORY_COMMIT_FMT, g->id);
    else if (s == ORDER_SAGA_PAY)
        snprintf(path, sizeof path, "%s", PAYMENT_PATH_CHARGE);
    else
        snprintf(path, sizeof path, PAYMENT_PATH_REFUND, g->id);
    json_t *body = call_body(g, s);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    uint64_t now = uv_now(&g->ol->loop->uv);
    ms_http_client_req r = {
        .upstream = upstream,
        .method = HTTP_POST,
        .path = path,
        .content_type = text ? "application/json" : NULL,
        .body = text,
        .body_len = text ? strlen(text) : 0,
        .deadline = g->req && g->answer_by > now ? g->answer_by : now + ORDER_SAGA_CALL_MS,
        .idempotent = true, /* every step is keyed by the order id */
    };
    /* each step's call is the child of a span named after the step, under the request's */
    ms_trace_ctx parent, ctx;
    ms_traceparent_parse(g->traceparent[0] ? g->traceparent : NULL, &parent);
    g->span = ms_span_start(order_saga_step_name(s), MS_SPAN_INTERNAL, &parent, &ctx);
    ms_span_set_str(g->span, "order.id", g->id);
    char tp[MS_TRACEPARENT_LEN + 1];
    ms_traceparent_format(&ctx, tp);
    r.traceparent = tp;
    g->call_started_ns = uv_hrtime();
    int rc = ms_http_client_request(g->ol->client, &r, called, g);
    if (text) { /* the call copied it; the card in it is wiped here */
        explicit_bzero(text, strlen(text));
        free(text);
    }
    if (rc < 0) {
        ms_span_error(g->span, ms_strerror(rc));
        ms_span_end(g->span);
        g->span = NULL;
        retry_later(g, order_saga_step_name(s), rc);
    }
}

/* ---- the driver ---- */

static void step(order_saga *g)
{
    if (g->ol->is_closing) {
        finish(g, MS_ESHUTDOWN);
        return;
    }
    if (g->card && uv_now(&g->ol->loop->uv) >= g->give_up_at) {
        ms_log(MS_LOG_WARN, "checkout gave up going forward", "order_id", g->id, NULL);
        drop_card(g);
    }
    order_saga_step s = order_saga_next(&g->state, g->card != NULL);
    switch (s) {
    case ORDER_SAGA_DONE:
        finish(g, 0);
        return;
    case ORDER_SAGA_CONFIRM:
        record(g, ORDER_OUTCOME_CONFIRMED, NULL);
        return;
    case ORDER_SAGA_REJECT:
        record(g,
               g->state.payment == ORDER_PAYMENT_DECLINED ? ORDER_OUTCOME_DECLINED
                                                          : ORDER_OUTCOME_TIMEOUT,
               NULL);
        return;
    default:
        call(g, s);
    }
}

void order_saga_start(order_loop *ol, ms_http_request *req, int done_status, order_state *state,
                      const char *card, int64_t position)
{
    order_saga *g = ms_xcalloc(1, sizeof *g);
    g->ol = ol;
    g->req = req;
    g->done_status = done_status;
    g->state = *state;
    order_state_init(state);
    snprintf(g->id, sizeof g->id, "%s", g->state.id);
    snprintf(g->stream, sizeof g->stream, "%s%s", ORDER_STREAM_PREFIX, g->id);
    g->card = card ? ms_xstrdup(card) : NULL;
    uint64_t now = uv_now(&ol->loop->uv);
    g->give_up_at = now + ORDER_SAGA_GIVE_UP_MS;
    g->position = position;
    if (req) {
        g->answer_by = req->deadline > now + ORDER_SAGA_ANSWER_MARGIN_MS
                           ? req->deadline - ORDER_SAGA_ANSWER_MARGIN_MS
                           : now;
        /* the saga's calls are children of the request's span (they outlive the request) */
        ms_trace_ctx parent = req->trace;
        if (!parent.valid)
            ms_traceparent_parse(ms_http_header_get(req, "traceparent"), &parent);
        if (parent.valid)
            ms_traceparent_format(&parent, g->traceparent);
    }
    order_decision_init(&g->decision);
    uv_timer_init(&ol->loop->uv, &g->timer);
    g->timer.data = g;
    count(&stats.running, 1);
    if (!req && !card)
        count(&stats.resumed, 1);
    g->next = ol->sagas;
    if (ol->sagas)
        ol->sagas->prev = g;
    ol->sagas = g;
    step(g);
}

void order_sagas_stop(order_loop *ol)
{
    ol->is_closing = true;
    /* a saga waiting on its timer ends now; one waiting on a call or an append ends when it
     * is answered (the client and the port fail or finish what they hold) */
    for (order_saga *g = ol->sagas, *next; g; g = next) {
        next = g->next;
        if (uv_is_active((uv_handle_t *)&g->timer))
            finish(g, MS_ESHUTDOWN);
    }
}

/* ---- the resumer (first loop only) ---- */

typedef struct resume_scan {
    order_loop *ol;
    char before[MS_TIME_LEN + 1];
    char (*ids)[MS_UUID_LEN + 1];
    int n;
} resume_scan;

static int scan_work(ms_db_conn *c, void *arg)
{
    resume_scan *r = arg;
    ms_db_result *res = NULL;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", ORDER_SAGA_RESUME_PAGE);
    const char *params[] = {r->before, limit};
    int rc = ms_db_exec(c,
                        "SELECT id FROM order_views WHERE saga_open = 1 AND updated_at < $1"
                        " ORDER BY updated_at LIMIT $2",
                        2, params, &res);
    int n = rc == 0 ? ms_db_nrows(res) : 0;
    r->ids = ms_xcalloc(n ? (size_t)n : 1, sizeof *r->ids);
    for (int i = 0; i < n; i++)
        snprintf(r->ids[r->n++], MS_UUID_LEN + 1, "%s", ms_db_get(res, i, 0));
    ms_db_result_free(res);
    return rc;
}

typedef struct resume_load {
    order_loop *ol;
    order_state state;
    char stream[ORDER_STREAM_LEN + 1];
} resume_load;

static int resume_load_work(ms_db_conn *c, void *arg)
{
    resume_load *l = arg;
    int64_t top = 0;
    return order_load(c, l->stream, &l->state, NULL, &top);
}

static void resume_loaded(int rc, void *arg)
{
    resume_load *l = arg;
    char id[MS_UUID_LEN + 1];
    snprintf(id, sizeof id, "%s", l->stream + sizeof ORDER_STREAM_PREFIX - 1);
    if (rc == 0 && !l->ol->is_closing && order_saga_next(&l->state, false) != ORDER_SAGA_DONE) {
        ms_log(MS_LOG_INFO, "resuming a checkout", "order_id", id, "step",
               order_saga_step_name(order_saga_next(&l->state, false)), NULL);
        order_saga_start(l->ol, NULL, 0, &l->state, NULL, 0);
    } else {
        order_saga_unclaim(id);
    }
    order_state_release(&l->state);
    free(l);
}

static void scanned(int rc, void *arg)
{
    resume_scan *r = arg;
    order_loop *ol = r->ol;
    for (int i = 0; rc == 0 && !ol->is_closing && i < r->n; i++) {
        if (order_saga_claim(r->ids[i]) < 0)
            continue; /* running here */
        resume_load *l = ms_xcalloc(1, sizeof *l);
        l->ol = ol;
        order_state_init(&l->state);
        snprintf(l->stream, sizeof l->stream, "%s%s", ORDER_STREAM_PREFIX, r->ids[i]);
        ms_db_pool_run(ol->loop->db, MS_DB_READ, uv_now(&ol->loop->uv) + ORDER_SAGA_CALL_MS,
                       resume_load_work, resume_loaded, l);
    }
    if (rc < 0 && rc != MS_ESHUTDOWN)
        ms_log(MS_LOG_WARN, "cannot look for checkouts to resume", "error", ms_strerror(rc), NULL);
    free(r->ids);
    free(r);
    /* the views may not show yet every saga a crash left open: until the projector has
     * passed the store's head at start, look again soon (the resume goal is a second) */
    bool catching_up = order_projector_position(order_proc.projector) < order_proc.start_head;
    if (!ol->is_closing)
        uv_timer_start(&ol->resumer, order_saga_resume_tick,
                       catching_up ? ORDER_SAGA_CATCH_UP_MS : ORDER_SAGA_RESUME_EVERY_MS, 0);
}

void order_saga_resume_tick(uv_timer_t *t)
{
    order_loop *ol = t->data;
    resume_scan *r = ms_xcalloc(1, sizeof *r);
    r->ol = ol;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
    /* every saga left open before this process started (nothing here runs them), and later
     * those idle for long (their runner, another instance, is gone) */
    ms_time_format(ms - ORDER_SAGA_STALE_MS, r->before);
    if (strcmp(r->before, order_proc.started_at) < 0)
        snprintf(r->before, sizeof r->before, "%s", order_proc.started_at);
    ms_db_pool_run(ol->read_pool, MS_DB_READ, uv_now(&ol->loop->uv) + ORDER_SAGA_CALL_MS, scan_work,
                   scanned, r);
}
