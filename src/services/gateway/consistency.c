/* consistency.c — a client's own writes in its lists. Not yet. */
#include "services/gateway/gateway_internal.h"
#include "runtime/core/banned.h"

void gateway_session_apply(gateway_call *c)
{
    (void)c;
}

void gateway_session_observe(gateway_call *c, const ms_http_client_resp *resp)
{
    (void)c;
    (void)resp;
}

int gateway_session_start(void)
{
    return 0;
}

void gateway_session_stop(void) {}
