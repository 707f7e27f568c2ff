/*
 * otlp_doc.h — reading OTLP/HTTP JSON documents at the gateway's receivers (trace_store.c,
 * log_store.c): ids, fixed64 numbers, AnyValue and KeyValue lists as plain JSON with their
 * strings capped, so one exporter cannot fill a store with one item.
 * Also what the receivers share beyond the document: the common request handling
 * (gateway_otlp_receive_export: 413 past GATEWAY_OTLP_BODY_MAX, 415 for anything but JSON, 400
 * for a document of the wrong shape or with no well-formed item, else 200 {} or 200 with
 * partialSuccess), the checks every item ends with (gateway_otlp_item_attributes), the
 * matching of operations routes, and the store's counters and metrics (gateway_otlp_collect),
 * each kind of export naming its own (gateway_otlp_kind).
 * Pure functions but for the receive function (admin loop) and the collector (scraping
 * thread), which take the store's lock. Returned JSON is new (the caller owns it).
 */
#ifndef MS_GATEWAY_OTLP_DOC_H
#define MS_GATEWAY_OTLP_DOC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

#include "runtime/core/buf.h"
#include "runtime/http/server.h"

enum {
    GATEWAY_OTLP_ATTRS_MAX = 64,
    GATEWAY_OTLP_STRING_MAX = 1024,
    GATEWAY_OTLP_BODY_MAX = 4 << 20,
    GATEWAY_OTLP_ERRORS_SHOWN = 10, /* problems named in one answer */
};

/* `s` is n hex digits (either case), not all zero (W3C's invalid id). */
bool gateway_otlp_is_hex(const char *s, size_t n);
/* Copies n hex digits lower-cased and NUL-terminates dst (n + 1 bytes). */
void gateway_otlp_lower_hex(char *dst, const char *src, size_t n);
/* A fixed64 of OTLP JSON: a decimal string (the encoding's rule) or a plain integer. */
bool gateway_otlp_u64(json_t *v, uint64_t *out);
/* `s` cut to GATEWAY_OTLP_STRING_MAX bytes at a character, as a JSON string; adds its size. */
json_t *gateway_otlp_string(const char *s, size_t *bytes);
/* An AnyValue as plain JSON (strings capped); NULL when it has no known member. */
json_t *gateway_otlp_any_value(json_t *v, size_t *bytes);
/* A KeyValue list into the object `out` (at most GATEWAY_OTLP_ATTRS_MAX); false when it is not
 * a list of {key, value}. Absent (NULL) is an empty list. */
bool gateway_otlp_attributes(json_t *list, json_t *out, size_t *bytes);
/* A resource's string attribute (service.name...), or NULL. */
const char *gateway_otlp_resource_attr(json_t *resource, const char *key);
/* `path` is one of exact[] or begins with one of prefix[] (both NULL-terminated): an
 * operations route (probes, scrapes, exports, the console), whose items are not kept. */
bool gateway_otlp_route_in(const char *path, const char *const exact[], const char *const prefix[]);

/* One item of an export being read (a span, a log record), for the kind's doc function. */
typedef struct gateway_otlp_item {
    const struct gateway_otlp_kind *kind;
    const char *service;  /* the resource's service.name, else "unknown_service" */
    const char *instance; /* its service.instance.id, or NULL */
    size_t at[3];         /* resource, scope and item index */
    json_t *errors;       /* where problems are named; NULL past GATEWAY_OTLP_ERRORS_SHOWN */
} gateway_otlp_item;

/* Names a problem of the item: `member` ("" for the item itself) with `why`, under its path
 * (resourceSpans[0].scopeSpans[1].spans[2].name). */
void gateway_otlp_item_error(const gateway_otlp_item *it, const char *member, const char *why);
/* The item's attributes (a new object, adding their size to *bytes) once its other members
 * were checked: NULL with the problem named when `bad` is set (the member, `why` the problem)
 * or the attributes are not a list of {key, value}. */
json_t *gateway_otlp_item_attributes(json_t *item, const gateway_otlp_item *it, const char *bad,
                                     const char *why, size_t *bytes);

/* A store's counters since start, for /metrics (under its lock). */
typedef struct gateway_otlp_counts {
    uint64_t accepted, ignored, rejected;
    uint64_t evicted; /* the store's own unit: traces, log records */
} gateway_otlp_counts;

/* A metric's name and HELP text. */
typedef struct gateway_otlp_metric {
    const char *name, *help;
} gateway_otlp_metric;

/* What one kind of export is and where its items go. */
typedef struct gateway_otlp_kind {
    const char *what;                       /* "trace": "not an OTLP trace export" */
    const char *item;                       /* "span": "no span of the export is..." */
    const char *resources, *scopes, *items; /* resourceSpans, scopeSpans, spans */
    const char *rejected_name;              /* partialSuccess's member: rejectedSpans */
    /* The item's document (adding its size to *bytes, its times, as the store wants them, in
     * times), or NULL with the problem named by gateway_otlp_item_error. */
    json_t *(*doc)(json_t *item, const gateway_otlp_item *it, size_t *bytes, uint64_t times[2]);
    bool (*operational)(json_t *doc); /* accepted, not kept */
    /* Keeps a document (consumed) under *lock; false when the store refuses it. */
    bool (*keep)(json_t *doc, size_t bytes, const uint64_t times[2]);
    pthread_mutex_t *lock;
    gateway_otlp_counts *counts; /* the store's, under *lock */
    size_t (*held)(void);        /* how many items the store holds now, under *lock */
    /* The store's metrics: items received by outcome, evicted, held now (a gauge). */
    gateway_otlp_metric received, evicted, stored;
} gateway_otlp_kind;

/* Answers an OTLP/HTTP JSON export of `kind` (see the top). `refused_why` is the errorMessage
 * when items were refused by keep and none was malformed (NULL where keep never refuses). */
void gateway_otlp_receive_export(ms_http_request *req, const gateway_otlp_kind *kind,
                                 const char *refused_why);

/* A metrics collector (metrics.h), `kind` a const gateway_otlp_kind: its store's counters as
 * <received>{outcome=accepted|ignored|rejected}, <evicted> and <stored>. */
void gateway_otlp_collect(ms_buf *out, void *kind);

#endif
