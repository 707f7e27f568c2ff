/*
 * chaos.c — fault injection for the provider calls (charge and refund), so the order saga's
 * retries and compensations can be exercised against a slow or failing payment service.
 *
 * The settings are process-wide atomics: a PUT on any loop thread changes them for every
 * loop, and a reader sees either the old or the new value of each. Latency is a timer on the
 * request's loop, never a sleep: the loop serves other requests meanwhile. A failure is
 * decided before the database is touched, so a 503 never leaves anything written and a retry
 * is always safe.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/http/server.h"
#include "runtime/json/json.h"
#include "services/payment/payment_flags.h"
#include "services/payment/payment_internal.h"
#include "runtime/core/banned.h"

enum { LATENCY_MAX_MS = 30000, PPM = 1000000 };

static atomic_long latency_ms;
static atomic_long failure_ppm; /* the failure rate in parts per million */

/* ---- start-up flags ---- */

static long flag_latency_ms;
static const char *flag_failure_rate = "0";

const ms_option payment_flags[] = {
    {"chaos-latency-ms", "MICROSHOP_CHAOS_LATENCY_MS", MS_OPT_INT, &flag_latency_ms, 0,
     LATENCY_MAX_MS, "delay every charge and refund by this long (chaos; PUT /internal/v1/chaos)"},
    {"chaos-failure-rate", "MICROSHOP_CHAOS_FAILURE_RATE", MS_OPT_STRING, &flag_failure_rate, 0, 0,
     "share of charges and refunds answered 503, 0.0 to 1.0 (chaos)"},
};
const size_t payment_nflags = sizeof payment_flags / sizeof payment_flags[0];

/* A rate from 0.0 to 1.0 in parts per million; false when it is no such number. */
static bool rate_ppm(double rate, long *out)
{
    if (!isfinite(rate) || rate < 0.0 || rate > 1.0)
        return false;
    *out = lround(rate * PPM);
    return true;
}

int payment_flags_apply(char *err, size_t errn)
{
    char *end;
    double rate = strtod(flag_failure_rate, &end);
    long ppm;
    if (end == flag_failure_rate || *end || !rate_ppm(rate, &ppm)) {
        snprintf(err, errn, "--chaos-failure-rate must be a number from 0.0 to 1.0, not '%s'",
                 flag_failure_rate);
        return MS_EINVAL;
    }
    atomic_store(&latency_ms, flag_latency_ms);
    atomic_store(&failure_ppm, ppm);
    return 0;
}

/* ---- applying ---- */

typedef struct {
    uv_timer_t timer;
    ms_http_request *req;
    void (*go)(void *arg);
    void *arg;
} chaos_wait;

static bool rolls_failure(void)
{
    long ppm = atomic_load(&failure_ppm);
    if (ppm <= 0)
        return false;
    uint32_t r;
    ms_random_bytes(&r, sizeof r);
    return (long)(r % PPM) < ppm;
}

static void proceed(ms_http_request *req, void (*go)(void *arg), void *arg)
{
    if (rolls_failure())
        ms_problem_reason(req, MS_ECONN, "provider_unavailable",
                          "the payment provider is unavailable (chaos); retry later", NULL);
    else
        go(arg);
}

/* The timer's memory is the request's: the request goes on only once the handle is closed. */
static void on_closed(uv_handle_t *h)
{
    chaos_wait *w = h->data;
    proceed(w->req, w->go, w->arg);
}

static void on_latency(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, on_closed);
}

void payment_chaos_then(ms_http_request *req, void (*go)(void *arg), void *arg)
{
    long delay = atomic_load(&latency_ms);
    if (delay <= 0) {
        proceed(req, go, arg);
        return;
    }
    chaos_wait *w = ms_arena_alloc(&req->arena, sizeof *w);
    *w = (chaos_wait){.req = req, .go = go, .arg = arg};
    uv_timer_init(&req->loop->uv, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_latency, (uint64_t)delay, 0);
}

/* ---- GET and PUT /internal/v1/chaos ---- */

static void answer_settings(ms_http_request *req)
{
    json_t *doc = json_pack("{s:I, s:f}", "latency_ms", (json_int_t)atomic_load(&latency_ms),
                            "failure_rate", (double)atomic_load(&failure_ppm) / PPM);
    ms_http_respond_json(req, 200, doc);
}

void payment_chaos_get(ms_http_request *req)
{
    answer_settings(req);
}

void payment_chaos_put(ms_http_request *req)
{
    json_t *body;
    if (ms_http_json_body(req, &body) < 0)
        return;
    /* ms_json_check knows no fractional numbers: the rate is checked here, the rest there */
    json_t *rate = json_incref(json_object_get(body, "failure_rate"));
    json_object_del(body, "failure_rate");
    static const ms_json_field fields[] = {{"latency_ms", MS_JSON_INTEGER, true, false}};
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 1, "", malformed, invalid);
    json_t *latency = json_object_get(body, "latency_ms");
    if (json_is_integer(latency) &&
        (json_integer_value(latency) < 0 || json_integer_value(latency) > LATENCY_MAX_MS))
        ms_field_error(invalid, "latency_ms", "must be from 0 to %d", LATENCY_MAX_MS);
    long ppm = 0;
    if (!rate)
        ms_field_error(invalid, "failure_rate", "is required");
    else if (!json_is_number(rate))
        ms_field_error(malformed, "failure_rate", "must be a number");
    else if (!rate_ppm(json_number_value(rate), &ppm))
        ms_field_error(invalid, "failure_rate", "must be from 0.0 to 1.0");
    json_decref(rate);
    if (ms_http_reject_fields(req, malformed, invalid) < 0)
        return;
    atomic_store(&latency_ms, (long)json_integer_value(latency));
    atomic_store(&failure_ppm, ppm);
    answer_settings(req);
}
