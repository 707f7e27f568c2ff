/*
 * otlp_doc.h — reading OTLP/HTTP JSON documents at the gateway's receivers (trace_store.c,
 * log_store.c): ids, fixed64 numbers, AnyValue and KeyValue lists as plain JSON with their
 * strings capped, so one exporter cannot fill a store with one item.
 * Pure functions; any thread. Returned JSON is new (the caller owns it).
 */
#ifndef MS_GATEWAY_OTLP_DOC_H
#define MS_GATEWAY_OTLP_DOC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { GATEWAY_OTLP_ATTRS_MAX = 64, GATEWAY_OTLP_STRING_MAX = 1024 };

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

#endif
