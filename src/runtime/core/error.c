#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"

const char *ms_strerror(int code)
{
    switch (code) {
    case MS_OK:
        return "ok";
#define MS_ERR_MSG_(name, msg)                                                                     \
    case MS_E##name:                                                                               \
        return msg;
        MS_ERRNO_MAP(MS_ERR_MSG_)
#undef MS_ERR_MSG_
    }
    return "unknown error";
}

const char *ms_errname(int code)
{
    switch (code) {
    case MS_OK:
        return "OK";
#define MS_ERR_NAME_(name, msg)                                                                    \
    case MS_E##name:                                                                               \
        return "E" #name;
        MS_ERRNO_MAP(MS_ERR_NAME_)
#undef MS_ERR_NAME_
    }
    return "EUNKNOWN";
}

void ms_bug__internal(const char *file, int line, const char *msg)
{
    fprintf(stderr, "BUG: %s:%d: %s\n", file, line, msg);
    abort();
}

static void oom(size_t n) __attribute__((noreturn));
static void oom(size_t n)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void *ms_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *ms_xcalloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p)
        oom(count * n);
    return p;
}

void *ms_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *ms_xstrdup(const char *s)
{
    return ms_xstrndup(s, strlen(s));
}

char *ms_xstrndup(const char *s, size_t n)
{
    char *p = ms_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
