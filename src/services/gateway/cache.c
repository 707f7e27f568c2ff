/*
 * cache.c — product and user reads answered without the service. Not yet: every read is
 * forwarded.
 */
#include "services/gateway/gateway_internal.h"
#include "runtime/core/banned.h"

void gateway_cache_get(gateway_call *c)
{
    gateway_forward(c);
}

void gateway_cache_observe(gateway_call *c, const ms_http_client_resp *resp)
{
    (void)c;
    (void)resp;
}

int gateway_cache_start(void)
{
    return 0;
}

void gateway_cache_stop(void) {}
