/* Reading OTLP/HTTP JSON documents; see otlp_doc.h. */
#include <stdlib.h>
#include <string.h>

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
