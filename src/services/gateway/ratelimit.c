/* ratelimit.c — per-client token buckets. Not yet: every request goes on. */
#include "services/gateway/gateway_internal.h"
#include "runtime/core/banned.h"

int gateway_ratelimit(gateway_call *c)
{
    (void)c;
    return 0;
}

int gateway_ratelimit_start(void)
{
    return 0;
}

void gateway_ratelimit_stop(void) {}
