/* Spans: started, annotated and ended by their owner, then handed to the exporter; see
 * trace.h. A span is one allocation: its strings are copied into its own text area, and what
 * does not fit there is dropped (an attribute) or cut (a name, a message). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/core/error.h"
#include "runtime/obs/trace_internal.h"
#include "runtime/core/banned.h"

static uint64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Copies at most `max` bytes of `s` with a NUL into the text area: its offset, or 0 ("") when
 * not even one byte fits. */
static uint16_t text_add(ms_span *s, const char *str, size_t max)
{
    size_t n = strlen(str), room = MS_SPAN_TEXT - s->used;
    if (n > max)
        n = max;
    if (room < 2)
        return 0;
    if (n > room - 1)
        n = room - 1;
    uint16_t at = (uint16_t)s->used;
    memcpy(s->text + at, str, n);
    s->text[at + n] = '\0';
    s->used += n + 1;
    return at;
}

static bool text_fits(const ms_span *s, size_t n)
{
    return s->used + n + 1 <= MS_SPAN_TEXT;
}

ms_span *ms_span_start(const char *name, ms_span_kind kind, const ms_trace_ctx *parent,
                       ms_trace_ctx *ctx)
{
    ms_trace_child(parent, ctx);
    if (!ms_trace_sampled(ctx) || !ms_trace_recording())
        return NULL;
    ms_span *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    s->ctx = *ctx;
    s->has_parent = parent && parent->valid;
    if (s->has_parent)
        memcpy(s->parent_span_id, parent->span_id, sizeof s->parent_span_id);
    s->is_error = false;
    s->kind = kind;
    s->start_ns = unix_ns();
    s->end_ns = s->error_ns = 0;
    s->nattrs = 0;
    s->text[0] = '\0';
    s->used = 1;
    s->message = 0;
    s->name = text_add(s, name ? name : "", 256);
    ms_trace_count_started();
    return s;
}

void ms_span_set_str(ms_span *s, const char *key, const char *value)
{
    if (!s || !key || !value || s->nattrs == MS_SPAN_MAX_ATTRS)
        return;
    size_t kn = strlen(key), vn = strlen(value);
    if (!text_fits(s, kn + 1 + vn)) /* both, or neither */
        return;
    ms_span_attr *a = &s->attrs[s->nattrs++];
    a->is_int = false;
    a->key = text_add(s, key, kn);
    a->value = text_add(s, value, vn);
}

void ms_span_set_int(ms_span *s, const char *key, int64_t value)
{
    if (!s || !key || s->nattrs == MS_SPAN_MAX_ATTRS || !text_fits(s, strlen(key)))
        return;
    ms_span_attr *a = &s->attrs[s->nattrs++];
    a->is_int = true;
    a->key = text_add(s, key, strlen(key));
    a->i = value;
}

void ms_span_error(ms_span *s, const char *message)
{
    if (!s)
        return;
    s->is_error = true;
    s->error_ns = unix_ns();
    s->message = text_add(s, message ? message : "", 512);
}

void ms_span_end(ms_span *s)
{
    if (!s)
        return;
    s->end_ns = unix_ns();
    ms_trace_export_span(s);
}
