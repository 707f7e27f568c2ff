/* W3C trace context (traceparent, tracestate), the sampler and the resource's service name; see
 * trace.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/obs/trace_internal.h"
#include "runtime/core/banned.h"

/* Set once by ms_trace_init (before threads) or by a test; read by every thread after. */
static struct {
    bool parent_based;
    bool always, never;
    uint64_t threshold; /* a root is sampled when its trace id's low 8 bytes are below it */
} sampler = {.parent_based = true, .always = true};

void ms_trace_sampler_set(bool parent_based, double ratio)
{
    sampler.parent_based = parent_based;
    sampler.always = ratio >= 1.0;
    sampler.never = !(ratio > 0.0); /* NaN too */
    /* 2^64 as a double; ratio is in (0, 1) here so the product fits */
    sampler.threshold =
        sampler.always || sampler.never ? 0 : (uint64_t)(ratio * 18446744073709551616.0);
}

bool ms_trace_ratio_sampled(const uint8_t trace_id[16])
{
    if (sampler.always)
        return true;
    if (sampler.never)
        return false;
    uint64_t low = 0;
    for (int i = 8; i < 16; i++)
        low = low << 8 | trace_id[i];
    return low < sampler.threshold;
}

static int unhex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1; /* upper case too: the spec wants lower-case hex */
}

/* n bytes from 2n lower-case hex digits; false on any other character. */
static bool parse_hex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = unhex(s[2 * i]), lo = unhex(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

int ms_traceparent_parse(const char *h, ms_trace_ctx *out)
{
    memset(out, 0, sizeof *out);
    ms_trace_ctx c = {0};
    uint8_t version;
    /* version 00 only, exactly 55 bytes: a later version's longer form is not understood */
    if (!h || strlen(h) != MS_TRACEPARENT_LEN || !parse_hex(h, &version, 1) || version != 0 ||
        h[2] != '-' || h[35] != '-' || h[52] != '-' || !parse_hex(h + 3, c.trace_id, 16) ||
        !parse_hex(h + 36, c.span_id, 8) || !parse_hex(h + 53, &c.flags, 1) ||
        all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
        return MS_EINVAL;
    c.valid = true;
    *out = c;
    return 0;
}

void ms_traceparent_format(const ms_trace_ctx *ctx, char out[MS_TRACEPARENT_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    char tid[MS_TRACE_ID_HEX + 1], sid[MS_SPAN_ID_HEX + 1];
    ms_trace_ids_hex(ctx, tid, sid);
    memcpy(out, "00-", 3);
    memcpy(out + 3, tid, 32);
    out[35] = '-';
    memcpy(out + 36, sid, 16);
    out[52] = '-';
    out[53] = digits[ctx->flags >> 4];
    out[54] = digits[ctx->flags & 15];
    out[MS_TRACEPARENT_LEN] = '\0';
}

/* A random id, never all zero (W3C: an all-zero id is invalid). */
static void random_id(uint8_t *b, size_t n)
{
    do
        ms_random_pooled(b, n);
    while (all_zero(b, n));
}

void ms_trace_child(const ms_trace_ctx *parent, ms_trace_ctx *out)
{
    ms_trace_ctx c = {.valid = true};
    if (parent && parent->valid) {
        memcpy(c.trace_id, parent->trace_id, sizeof c.trace_id);
        c.flags = parent->flags;
        if (!sampler.parent_based)
            c.flags = (uint8_t)((c.flags & ~MS_TRACE_SAMPLED) |
                                (ms_trace_ratio_sampled(c.trace_id) ? MS_TRACE_SAMPLED : 0));
    } else {
        random_id(c.trace_id, sizeof c.trace_id);
        c.flags = ms_trace_ratio_sampled(c.trace_id) ? MS_TRACE_SAMPLED : 0;
    }
    random_id(c.span_id, sizeof c.span_id);
    *out = c;
}

const char *ms_tracestate_pass(const char *tracestate, const ms_trace_ctx *parent)
{
    if (!tracestate || !parent || !parent->valid || strlen(tracestate) > MS_TRACESTATE_MAX)
        return NULL;
    return tracestate;
}

/* ---- the resource ---- */

static int hex_digit(char ch)
{
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return unhex(ch);
}

/* s[0..n) without the blanks around it, percent-decoded, into out[size] (cut to fit). */
static void resource_value(const char *s, size_t n, char *out, size_t size)
{
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < size; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hex_digit(s[i + 1])) >= 0 &&
            (lo = hex_digit(s[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
}

void ms_trace_service_name(const char *fallback, char *out, size_t size)
{
    const char *name = getenv("OTEL_SERVICE_NAME");
    if (name && *name) {
        snprintf(out, size, "%s", name);
        return;
    }
    snprintf(out, size, "%s", fallback ? fallback : "");
    const char *attrs = getenv("OTEL_RESOURCE_ATTRIBUTES");
    for (const char *p = attrs; p && *p;) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (eq) {
            char key[32];
            resource_value(p, (size_t)(eq - p), key, sizeof key);
            char value[256];
            resource_value(eq + 1, len - (size_t)(eq + 1 - p), value, sizeof value);
            if (strcmp(key, "service.name") == 0 && value[0])
                snprintf(out, size, "%s", value); /* the last one wins, as for any key */
        }
        p += len + (p[len] == ',');
    }
}
