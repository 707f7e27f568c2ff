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

/* The exporter: handing an ended span over (it owns it after); whether spans are recorded at
 * all is ms_trace_recording (trace.h). */
void ms_trace_export_span(ms_span *s);
/* Counts a started span. */
void ms_trace_count_started(void);

/* The resource's service.name into out[size]: OTEL_SERVICE_NAME when set and not empty, else
 * a service.name in OTEL_RESOURCE_ATTRIBUTES (key=value pairs split by commas, values
 * percent-decoded), else `fallback` (the service's own name). Reads the environment: call it
 * from ms_trace_init. */
void ms_trace_service_name(const char *fallback, char *out, size_t size);

/* Appends an OTLP/HTTP JSON ExportTraceServiceRequest of spans[0..n) (ms_span *). */
void ms_trace_encode(ms_buf *out, const char *service, const char *instance, void *const *spans,
                     size_t n);

#endif
