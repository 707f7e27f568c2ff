/* The calling thread's current trace context; see trace.h. */
#include "runtime/obs/trace.h"

#include "runtime/core/log.h"

#include "runtime/core/banned.h"

static _Thread_local const ms_trace_ctx *current;

const ms_trace_ctx *ms_trace_current(void)
{
    return current && current->valid ? current : NULL;
}

void ms_trace_set_current(const ms_trace_ctx *ctx)
{
    current = ctx;
}

void ms_trace_ids_hex(const ms_trace_ctx *ctx, char trace_id[MS_TRACE_ID_HEX + 1],
                      char span_id[MS_SPAN_ID_HEX + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        trace_id[2 * i] = digits[ctx->trace_id[i] >> 4];
        trace_id[2 * i + 1] = digits[ctx->trace_id[i] & 15];
    }
    for (int i = 0; i < 8; i++) {
        span_id[2 * i] = digits[ctx->span_id[i] >> 4];
        span_id[2 * i + 1] = digits[ctx->span_id[i] & 15];
    }
    trace_id[MS_TRACE_ID_HEX] = span_id[MS_SPAN_ID_HEX] = '\0';
}

static bool log_context(char trace_id[33], char span_id[17])
{
    const ms_trace_ctx *ctx = ms_trace_current();
    if (!ctx)
        return false;
    ms_trace_ids_hex(ctx, trace_id, span_id);
    return true;
}

void ms_trace_log_hook_install(void)
{
    ms_log_set_context_fn(log_context);
}
