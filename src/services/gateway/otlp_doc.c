/* Reading OTLP/HTTP JSON documents; see otlp_doc.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/obs/metrics.h"
#include "services/gateway/otlp_doc.h"
#include "runtime/core/banned.h"

enum { VALUE_DEPTH_MAX = 4 };

bool gateway_otlp_is_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n)
        return false;
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
        nonzero |= c != '0';
    }
    return nonzero;
}

void gateway_otlp_lower_hex(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)(src[i] >= 'A' && src[i] <= 'F' ? src[i] - 'A' + 'a' : src[i]);
    dst[n] = '\0';
}

bool gateway_otlp_u64(json_t *v, uint64_t *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return true;
    }
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) > 20)
        return false;
    uint64_t x = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        uint64_t d = (uint64_t)(*p - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

json_t *gateway_otlp_string(const char *s, size_t *bytes)
{
    size_t n = strlen(s);
    if (n > GATEWAY_OTLP_STRING_MAX) {
        n = GATEWAY_OTLP_STRING_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    *bytes += n;
    return json_stringn(s, n);
}

static json_t *any_value(json_t *v, int depth, size_t *bytes)
{
    json_t *x;
    if (!json_is_object(v) || depth > VALUE_DEPTH_MAX)
        return NULL;
    if ((x = json_object_get(v, "stringValue")) && json_is_string(x))
        return gateway_otlp_string(json_string_value(x), bytes);
    if ((x = json_object_get(v, "boolValue")) && json_is_boolean(x))
        return json_boolean(json_is_true(x));
    if ((x = json_object_get(v, "intValue"))) {
        if (json_is_integer(x))
            return json_integer(json_integer_value(x));
        const char *s = json_string_value(x);
        char *end;
        long long i = s ? strtoll(s, &end, 10) : 0;
        return s && *s && !*end ? json_integer(i) : NULL;
    }
    if ((x = json_object_get(v, "doubleValue")) && json_is_number(x))
        return json_real(json_number_value(x));
    if ((x = json_object_get(v, "bytesValue")) && json_is_string(x))
        return gateway_otlp_string(json_string_value(x), bytes);
    if ((x = json_object_get(v, "arrayValue"))) {
        json_t *out = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(x, "values"), i, e)
        {
            if (i >= GATEWAY_OTLP_ATTRS_MAX)
                break;
            json_t *c = any_value(e, depth + 1, bytes);
            json_array_append_new(out, c ? c : json_null());
        }
        return out;
    }
    if ((x = json_object_get(v, "kvlistValue"))) {
        json_t *out = json_object();
        size_t i;
        json_t *kv;
        json_array_foreach(json_object_get(x, "values"), i, kv)
        {
            const char *k = json_string_value(json_object_get(kv, "key"));
            json_t *c = k && i < GATEWAY_OTLP_ATTRS_MAX
                            ? any_value(json_object_get(kv, "value"), depth + 1, bytes)
                            : NULL;
            if (c)
                json_object_set_new(out, k, c);
        }
        return out;
    }
    return NULL;
}

json_t *gateway_otlp_any_value(json_t *v, size_t *bytes)
{
    return any_value(v, 0, bytes);
}

bool gateway_otlp_attributes(json_t *list, json_t *out, size_t *bytes)
{
    if (!list)
        return true;
    if (!json_is_array(list))
        return false;
    size_t i;
    json_t *kv;
    json_array_foreach(list, i, kv)
    {
        const char *k = json_string_value(json_object_get(kv, "key"));
        if (!k)
            return false;
        if (i >= GATEWAY_OTLP_ATTRS_MAX)
            continue;
        json_t *v = any_value(json_object_get(kv, "value"), 0, bytes);
        *bytes += strlen(k);
        json_object_set_new(out, k, v ? v : json_null());
    }
    return true;
}

const char *gateway_otlp_resource_attr(json_t *resource, const char *key)
{
    size_t i;
    json_t *kv;
    json_array_foreach(json_object_get(resource, "attributes"), i, kv)
    {
        if (json_is_string(json_object_get(kv, "key")) &&
            strcmp(json_string_value(json_object_get(kv, "key")), key) == 0)
            return json_string_value(json_object_get(json_object_get(kv, "value"), "stringValue"));
    }
    return NULL;
}

bool gateway_otlp_route_in(const char *path, const char *const exact[], const char *const prefix[])
{
    for (size_t i = 0; exact[i]; i++)
        if (strcmp(path, exact[i]) == 0)
            return true;
    for (size_t i = 0; prefix[i]; i++)
        if (strncmp(path, prefix[i], strlen(prefix[i])) == 0)
            return true;
    return false;
}

/* ---- the request ---- */

void gateway_otlp_item_error(const gateway_otlp_item *it, const char *member, const char *why)
{
    char field[200];
    snprintf(field, sizeof field, "%s[%zu].%s[%zu].%s[%zu]%s%s", it->kind->resources, it->at[0],
             it->kind->scopes, it->at[1], it->kind->items, it->at[2], *member ? "." : "", member);
    ms_field_error(it->errors, field, "%s", why);
}

json_t *gateway_otlp_item_attributes(json_t *item, const gateway_otlp_item *it, const char *bad,
                                     const char *why, size_t *bytes)
{
    if (bad) {
        gateway_otlp_item_error(it, bad, why);
        return NULL;
    }
    json_t *attrs = json_object();
    if (!gateway_otlp_attributes(json_object_get(item, "attributes"), attrs, bytes)) {
        json_decref(attrs);
        gateway_otlp_item_error(it, "attributes", "must be a list of {key, value}");
        return NULL;
    }
    return attrs;
}

static bool array_or_absent(json_t *v)
{
    return !v || json_is_array(v);
}

/* The document's shape (nothing is kept from one that is not OTLP): its problems in errors,
 * and how many items it holds. */
static size_t check_shape(const gateway_otlp_kind *kind, json_t *r_list, json_t *errors)
{
    size_t total = 0, i, j;
    json_t *r, *sc;
    char at[128];
    if (!array_or_absent(r_list))
        ms_field_error(errors, kind->resources, "must be a list");
    json_array_foreach(r_list, i, r)
    {
        json_t *res = json_object_get(r, "resource");
        if (!json_is_object(r) || (res && !json_is_object(res)) ||
            !array_or_absent(json_object_get(res, "attributes"))) {
            snprintf(at, sizeof at, "%s[%zu].resource", kind->resources, i);
            ms_field_error(errors, at, "must be an object with a list of attributes");
            continue;
        }
        if (!array_or_absent(json_object_get(r, kind->scopes))) {
            snprintf(at, sizeof at, "%s[%zu].%s", kind->resources, i, kind->scopes);
            ms_field_error(errors, at, "must be a list");
            continue;
        }
        json_array_foreach(json_object_get(r, kind->scopes), j, sc)
        {
            if (!json_is_object(sc) || !array_or_absent(json_object_get(sc, kind->items))) {
                snprintf(at, sizeof at, "%s[%zu].%s[%zu].%s", kind->resources, i, kind->scopes, j,
                         kind->items);
                ms_field_error(errors, at, "must be a list");
                continue;
            }
            total += json_array_size(json_object_get(sc, kind->items));
        }
    }
    return total;
}

void gateway_otlp_receive_export(ms_http_request *req, const gateway_otlp_kind *kind,
                                 const char *refused_why)
{
    if (req->body_len > GATEWAY_OTLP_BODY_MAX) {
        ms_problem(req, 413, "an OTLP export may carry at most 4 MiB: send smaller batches");
        return;
    }
    json_t *body;
    if (ms_http_json_body(req, &body) < 0)
        return;
    json_t *errors = json_array();
    json_t *r_list = json_object_get(body, kind->resources);
    size_t total = check_shape(kind, r_list, errors), kept = 0, ignored = 0;
    if (json_array_size(errors)) {
        char detail[160];
        snprintf(detail, sizeof detail, "the body is not an OTLP %s export (%s[].%s[].%s[])",
                 kind->what, kind->resources, kind->scopes, kind->items);
        ms_problem_fields(req, 400, detail, errors);
        return;
    }
    /* then each item: the well-formed ones are kept, the others named */
    json_t *docs = json_array();
    uint64_t(*times)[2] = malloc((total ? total : 1) * sizeof *times);
    size_t *sizes = malloc((total ? total : 1) * sizeof *sizes);
    gateway_otlp_item it = {.kind = kind};
    size_t i, j, k;
    json_t *r, *sc, *item;
    json_array_foreach(r_list, i, r)
    {
        json_t *res = json_object_get(r, "resource");
        const char *service = gateway_otlp_resource_attr(res, "service.name");
        it.service = service ? service : "unknown_service";
        it.instance = gateway_otlp_resource_attr(res, "service.instance.id");
        json_array_foreach(json_object_get(r, kind->scopes), j, sc)
        {
            json_array_foreach(json_object_get(sc, kind->items), k, item)
            {
                /* the item's path is written only for an error (a snprintf per span was a
                 * tenth of the receiver's own code) */
                it.at[0] = i, it.at[1] = j, it.at[2] = k;
                it.errors = json_array_size(errors) < GATEWAY_OTLP_ERRORS_SHOWN ? errors : NULL;
                size_t n = json_array_size(docs), bytes = 0;
                json_t *d = kind->doc(item, &it, &bytes, times[n]);
                if (d && kind->operational(d)) {
                    json_decref(d);
                    ignored++;
                } else if (d) {
                    sizes[n] = bytes;
                    json_array_append_new(docs, d);
                }
            }
        }
    }
    pthread_mutex_lock(kind->lock);
    for (size_t n = 0; n < json_array_size(docs); n++)
        kept += kind->keep(json_incref(json_array_get(docs, n)), sizes[n], times[n]);
    kind->counts->accepted += kept;
    kind->counts->ignored += ignored;
    kind->counts->rejected += total - kept - ignored;
    pthread_mutex_unlock(kind->lock);
    size_t malformed = total - ignored - json_array_size(docs);
    json_decref(docs);
    free(times);
    free(sizes);
    if (total > 0 && malformed == total) {
        char detail[96];
        snprintf(detail, sizeof detail, "no %s of the export is well-formed", kind->item);
        ms_problem_fields(req, 400, detail, errors);
        return;
    }
    if (kept + ignored == total) {
        json_decref(errors);
        ms_http_respond_json(req, 200, json_object());
        return;
    }
    char why[300];
    json_t *first = json_array_get(errors, 0);
    if (first)
        snprintf(why, sizeof why, "%s %s", json_string_value(json_object_get(first, "field")),
                 json_string_value(json_object_get(first, "message")));
    else
        snprintf(why, sizeof why, "%s", refused_why ? refused_why : "");
    json_decref(errors);
    ms_http_respond_json(req, 200,
                         json_pack("{s:{s:I, s:s}}", "partialSuccess", kind->rejected_name,
                                   (json_int_t)(total - kept - ignored), "errorMessage", why));
}

/* ---- metrics ---- */

void gateway_otlp_collect(ms_buf *out, void *kind)
{
    const gateway_otlp_kind *k = kind;
    const gateway_otlp_counts *c = k->counts;
    pthread_mutex_lock(k->lock);
    const char *received = k->received.name;
    ms_metrics_family(out, received, "counter", k->received.help);
    ms_metrics_sample(out, received, (double)c->accepted, "outcome", "accepted", NULL);
    ms_metrics_sample(out, received, (double)c->ignored, "outcome", "ignored", NULL);
    ms_metrics_sample(out, received, (double)c->rejected, "outcome", "rejected", NULL);
    ms_metrics_family(out, k->evicted.name, "counter", k->evicted.help);
    ms_metrics_sample(out, k->evicted.name, (double)c->evicted, NULL);
    ms_metrics_family(out, k->stored.name, "gauge", k->stored.help);
    ms_metrics_sample(out, k->stored.name, (double)k->held(), NULL);
    pthread_mutex_unlock(k->lock);
}
