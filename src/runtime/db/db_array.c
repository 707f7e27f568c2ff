/* PostgreSQL array literals of texts; see db_array.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/db/db_array.h"
#include "runtime/core/banned.h"

static void put(ms_db_array *a, const char *s, size_t n)
{
    if (a->len + n + 2 > a->cap) {
        while (a->len + n + 2 > a->cap)
            a->cap = a->cap ? a->cap * 2 : 1024;
        a->p = ms_xrealloc(a->p, a->cap);
    }
    memcpy(a->p + a->len, s, n);
    a->len += n;
    a->p[a->len] = '\0';
}

void ms_db_array_add(ms_db_array *a, const char *s)
{
    put(a, a->len ? ",\"" : "{\"", 2);
    for (const char *run = s;; s++) {
        if (*s == '"' || *s == '\\' || !*s) {
            put(a, run, (size_t)(s - run));
            if (!*s)
                break;
            put(a, "\\", 1);
            run = s;
        }
    }
    put(a, "\"", 1);
}

void ms_db_array_add_int(ms_db_array *a, int64_t v)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, v);
    ms_db_array_add(a, text);
}

const char *ms_db_array_text(ms_db_array *a)
{
    put(a, a->len ? "}" : "{}", a->len ? 1 : 2);
    return a->p;
}

void ms_db_array_reset(ms_db_array *a)
{
    a->len = 0;
}

void ms_db_array_free(ms_db_array *a)
{
    free(a->p);
    *a = (ms_db_array){0};
}
