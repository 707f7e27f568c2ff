/* Upstream lists for the service client; see client.h. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/http/client.h"
#include "runtime/core/banned.h"

static int bad_entry(ms_http_upstream_list *out, const char *entry, size_t n, const char *why)
{
    snprintf(out->error, sizeof out->error, "bad upstream entry \"%.*s\": %s",
             (int)(n > 200 ? 200 : n), entry, why);
    return MS_EINVAL;
}

static bool host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.';
}

/* One entry: http://host:port or http://host:port/ (n bytes at e, spaces trimmed). */
static int parse_entry(ms_http_upstream_list *out, const char *e, size_t n)
{
    if (n == 0)
        return bad_entry(out, e, n, "empty entry");
    if (n < 7 || strncasecmp(e, "http://", 7) != 0)
        return bad_entry(out, e, n, "only http://host:port is supported");
    const char *p = e + 7, *end = e + n;
    if (end > p && end[-1] == '/')
        end--;
    const char *host = p, *host_end;
    if (p < end && *p == '[') { /* an IPv6 literal */
        host = ++p;
        while (p < end && *p != ']')
            p++;
        if (p == end)
            return bad_entry(out, e, n, "unterminated [IPv6] host");
        host_end = p++;
        for (const char *q = host; q < host_end; q++)
            if (!host_char(*q) && *q != ':')
                return bad_entry(out, e, n, "bad character in the IPv6 host");
    } else {
        while (p < end && host_char(*p))
            p++;
        host_end = p;
    }
    if (host_end == host)
        return bad_entry(out, e, n, "missing host");
    if ((size_t)(host_end - host) > MS_HTTP_HOST_MAX)
        return bad_entry(out, e, n, "host too long");
    if (p == end || *p != ':')
        return bad_entry(out, e, n,
                         p < end && strchr("/?#@", *p) ? "no path, query or user allowed"
                         : p == end                    ? "missing :port"
                                                       : "bad character in the host");
    p++;
    unsigned long port = 0;
    const char *digits = p;
    while (p < end && *p >= '0' && *p <= '9' && port <= 65535)
        port = port * 10 + (unsigned long)(*p++ - '0');
    if (p == digits)
        return bad_entry(out, e, n, "missing port");
    if (p != end)
        return bad_entry(out, e, n,
                         port > 65535 ? "port out of range" : "only http://host:port[/]");
    if (port == 0 || port > 65535)
        return bad_entry(out, e, n, "port out of range");
    if (out->n == MS_HTTP_UPSTREAM_MAX)
        return bad_entry(out, e, n, "too many entries (16 at most)");
    ms_http_upstream_addr *a = &out->addr[out->n++];
    memcpy(a->host, host, (size_t)(host_end - host));
    a->host[host_end - host] = '\0';
    a->port = (uint16_t)port;
    return 0;
}

int ms_http_upstream_parse(const char *spec, ms_http_upstream_list *out)
{
    memset(out, 0, sizeof *out);
    if (!spec || !*spec) {
        snprintf(out->error, sizeof out->error, "empty upstream list");
        return MS_EINVAL;
    }
    for (const char *p = spec;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *b = p, *e = end;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        int rc = parse_entry(out, b, (size_t)(e - b));
        if (rc < 0) {
            out->n = 0;
            return rc;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}
