/*
 * ratelimit.c — per-client token buckets: MICROSHOP_RATE_LIMIT_RPS requests a second
 * (default 1000; 0 turns limiting off) with bursts of MICROSHOP_RATE_LIMIT_BURST (default
 * twice the rate). A client over its rate gets 429 with Retry-After (whole seconds until a
 * token is back) and the request goes no further: it costs no token check, no service call.
 *
 * A client is its address: the limit runs before the token is verified, so a flood of bad
 * tokens is limited too and cannot buy verification work. The buckets are the process's, not
 * a loop's (a client's connections land on any loop), in a fixed table (client_table.h); a
 * forgotten client starts again with a full bucket, which only errs on the side of letting
 * requests through.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/problem.h"
#include "runtime/http/server.h"
#include "services/gateway/client_table.h"
#include "services/gateway/gateway_internal.h"
#include "runtime/core/banned.h"

static struct {
    double rate, burst; /* rate 0: off */
    gateway_table *buckets;
} rl;

/* Takes a token from key's bucket at now_ms: 0, or the seconds until one is back. */
static unsigned take(const char *key, uint64_t now_ms)
{
    bool fresh;
    gateway_record *b = gateway_table_get(rl.buckets, key, now_ms, &fresh);
    if (fresh)
        b->v.tokens = rl.burst;
    /* loops read the clock at slightly different times: another loop's use may look later */
    double refill = now_ms > b->used_ms ? (double)(now_ms - b->used_ms) / 1000.0 * rl.rate : 0;
    double tokens = fmin(rl.burst, b->v.tokens + refill);
    unsigned wait_s = 0;
    if (tokens >= 1.0)
        tokens -= 1.0;
    else
        wait_s = (unsigned)ceil((1.0 - tokens) / rl.rate);
    b->v.tokens = tokens;
    gateway_table_put(rl.buckets, b, now_ms);
    return wait_s;
}

int gateway_ratelimit(gateway_call *c)
{
    if (rl.rate <= 0)
        return 0;
    char ip[GATEWAY_TABLE_KEY_MAX + 1];
    if (ms_http_peer_ip(c->req, ip, sizeof ip) < 0)
        return 0; /* the client is gone: its answer goes nowhere anyway */
    unsigned wait_s = take(ip, uv_now(&c->req->loop->uv));
    if (wait_s == 0)
        return 0;
    char retry[16];
    snprintf(retry, sizeof retry, "%u", wait_s < 1 ? 1 : wait_s);
    ms_http_set_header(c->req, "Retry-After", retry);
    ms_problem(c->req, 429, "too many requests from this client; retry after the time given");
    return MS_EBUSY;
}

int gateway_ratelimit_start(void)
{
    long rate, burst;
    char err[160];
    if (ms_config_env_long("MICROSHOP_RATE_LIMIT_RPS", 1000, 0, 1000000, &rate, err, sizeof err) <
            0 ||
        ms_config_env_long("MICROSHOP_RATE_LIMIT_BURST", 2 * rate, 1, 2000000, &burst, err,
                           sizeof err) < 0) {
        ms_config_refuse("gateway: bad rate limit", err);
    }
    rl.rate = (double)rate;
    rl.burst = (double)(burst < 1 ? 1 : burst);
    if (rate == 0)
        return 0;
    rl.buckets = gateway_table_new();
    return 0;
}

void gateway_ratelimit_stop(void)
{
    gateway_table_free(rl.buckets);
    rl.buckets = NULL;
}
