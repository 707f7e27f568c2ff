/*
 * http_etag.c — If-None-Match against an entity tag (RFC 9110 13.1.2): "*" matches any
 * current representation; otherwise a comma-separated list of entity tags, compared weakly
 * (W/"3" matches "3"), since a GET only asks whether its copy is still good.
 */
#include <stdbool.h>
#include <string.h>

#include "runtime/http/http.h"
#include "runtime/core/banned.h"

/* The opaque part of an entity tag at *p ("..." or W/"..."), or false when it is malformed;
 * *p moves past it. */
static bool next_tag(const char **p, const char **tag, size_t *len)
{
    const char *s = *p;
    if (s[0] == 'W' && s[1] == '/')
        s += 2;
    if (*s != '"')
        return false;
    const char *end = strchr(s + 1, '"');
    if (!end)
        return false;
    *tag = s + 1;
    *len = (size_t)(end - s - 1);
    *p = end + 1;
    return true;
}

bool ms_http_none_match(const char *header, const char *etag)
{
    if (!header || !etag)
        return false;
    const char *mine, *p = etag;
    size_t mine_len;
    if (!next_tag(&p, &mine, &mine_len))
        return false;
    for (p = header;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            return false;
        if (*p == '*')
            return true;
        const char *tag;
        size_t len;
        if (!next_tag(&p, &tag, &len))
            return false; /* a malformed list matches nothing: the full answer is safe */
        if (len == mine_len && memcmp(tag, mine, len) == 0)
            return true;
    }
}
