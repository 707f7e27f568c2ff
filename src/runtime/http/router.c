/* Router: a short list of templates matched segment by segment. Few routes per service make a
 * linear scan faster than any tree, and it keeps the code obvious. */
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/http/router.h"
#include "runtime/core/banned.h"

enum { MAX_SEGMENTS = 12 };

typedef struct {
    ms_route pub;
    int nseg;
    ms_str seg[MAX_SEGMENTS]; /* literal text, or the parameter name when is_param */
    bool is_param[MAX_SEGMENTS];
} route_entry;

struct ms_router {
    route_entry routes[MS_ROUTER_MAX_ROUTES];
    int n;
};

ms_router *ms_router_new(void)
{
    return ms_xcalloc(1, sizeof(ms_router));
}

void ms_router_free(ms_router *r)
{
    free(r);
}

int ms_router_count(const ms_router *r)
{
    return r->n;
}

const ms_route *ms_router_route(const ms_router *r, int index)
{
    return index >= 0 && index < r->n ? &r->routes[index].pub : NULL;
}

int ms_router_add(ms_router *r, const char *method, const char *template, ms_http_handler h)
{
    if (r->n == MS_ROUTER_MAX_ROUTES || template[0] != '/')
        return MS_EINVAL;
    route_entry *e = &r->routes[r->n];
    memset(e, 0, sizeof *e);
    int nparams = 0;
    const char *p = template + 1;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || e->nseg == MAX_SEGMENTS)
            return MS_EINVAL;
        bool param = p[0] == '{';
        if (param && (len < 3 || p[len - 1] != '}' || ++nparams > MS_HTTP_MAX_PARAMS))
            return MS_EINVAL;
        e->is_param[e->nseg] = param;
        e->seg[e->nseg++] = param ? (ms_str){p + 1, len - 2} : (ms_str){p, len};
        p += len + (slash ? 1 : 0);
        if (slash && !*p)
            return MS_EINVAL; /* trailing slash */
    }
    e->pub = (ms_route){method, template, h, r->n};
    r->n++;
    return 0;
}

/* Matches the segments only; binds parameters into req when `bind`. */
static bool match_path(const route_entry *e, const char *path, ms_http_request *req, bool bind)
{
    if (path[0] != '/')
        return false; /* "*" (OPTIONS) names no resource */
    const char *p = path + 1;
    int nparams = 0;
    for (int i = 0; i < e->nseg; i++) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0)
            return false;
        if (e->is_param[i]) {
            if (bind) {
                req->param_names[nparams] = ms_arena_strndup(&req->arena, e->seg[i].p, e->seg[i].n);
                req->param_values[nparams] = ms_arena_strndup(&req->arena, p, len);
            }
            nparams++;
        } else if (len != e->seg[i].n || memcmp(p, e->seg[i].p, len) != 0) {
            return false;
        }
        if (i + 1 < e->nseg && !slash)
            return false;
        p += len + (slash ? 1 : 0);
        if (i + 1 == e->nseg && slash)
            return false; /* the path is longer than the template */
    }
    if (bind)
        req->nparams = nparams;
    return e->nseg > 0 || path[1] == '\0';
}

ms_route_result ms_router_match(const ms_router *r, ms_http_request *req, const ms_route **route,
                                char *allow, size_t allow_n)
{
    const char *method = http_method_str((enum http_method)req->method);
    bool path_known = false;
    size_t used = 0;
    if (allow_n)
        allow[0] = '\0';
    for (int i = 0; i < r->n; i++) {
        const route_entry *e = &r->routes[i];
        if (!match_path(e, req->path, req, false))
            continue;
        path_known = true;
        if (strcmp(e->pub.method, method) == 0 ||
            (req->method == HTTP_HEAD && strcmp(e->pub.method, "GET") == 0)) {
            match_path(e, req->path, req, true);
            *route = &e->pub;
            return MS_ROUTE_FOUND;
        }
        /* a GET route also answers HEAD, so Allow names both */
        const char *m = strcmp(e->pub.method, "GET") == 0 ? "GET, HEAD" : e->pub.method;
        size_t mlen = strlen(m);
        if (used + mlen + 3 < allow_n && !strstr(allow, e->pub.method)) {
            if (used) {
                memcpy(allow + used, ", ", 2);
                used += 2;
            }
            memcpy(allow + used, m, mlen + 1);
            used += mlen;
        }
    }
    *route = NULL;
    return path_known ? MS_ROUTE_BAD_METHOD : MS_ROUTE_NOT_FOUND;
}
