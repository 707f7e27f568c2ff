/*
 * trace_internal.h — what span.c and trace_export.c share: the span's layout (one allocation:
 * strings live in its own text area) and the exporter's hooks. Not for other modules; tests use
 * ms_trace_encode to check the OTLP JSON.
 */
#ifndef MS_TRACE_INTERNAL_H
#define MS_TRACE_INTERNAL_H

#include "runtime/obs/trace.h"

enum { MS_SPAN_MAX_ATTRS = 32, MS_SPAN_TEXT = 1536 };

typedef struct ms_span_attr {
    uint16_t key, value; /* offsets in text; value unused for an int */
    bool is_int;
    int64_t i;
} ms_span_attr;

struct ms_span {
    ms_trace_ctx ctx;
    uint8_t parent_span_id[8];
    bool has_parent, is_error;
    ms_span_kind kind;
    uint64_t start_ns, end_ns, error_ns; /* Unix time in ns */
    uint16_t name, message;              /* offsets in text */
    int nattrs;
    ms_span_attr attrs[MS_SPAN_MAX_ATTRS];
    size_t used; /* of text; offset 0 is "" */
    char text[MS_SPAN_TEXT];
};

/* The exporter: whether spans are recorded at all (tracing on with an endpoint), and handing
 * an ended span over (it owns it after). */
bool ms_trace_recording(void);
void ms_trace_export_span(ms_span *s);
/* Counts a started span. */
void ms_trace_count_started(void);

/* Appends an OTLP/HTTP JSON ExportTraceServiceRequest of spans[0..n) (ms_span *). */
void ms_trace_encode(ms_buf *out, const char *service, const char *instance, void *const *spans,
                     size_t n);

#endif
