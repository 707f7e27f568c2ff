/* A striped table of per-client records; see client_table.h. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/hash.h"
#include "services/gateway/client_table.h"
#include "runtime/core/banned.h"

enum { STRIPES = 16, SLOTS = 1024, PROBE = 8 };

typedef struct stripe {
    pthread_mutex_t mu;
    gateway_record slots[SLOTS];
} stripe;

struct gateway_table {
    stripe stripes[STRIPES];
};

gateway_table *gateway_table_new(void)
{
    gateway_table *t = ms_xcalloc(1, sizeof *t);
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&t->stripes[i].mu, NULL);
    return t;
}

void gateway_table_free(gateway_table *t)
{
    if (!t)
        return;
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&t->stripes[i].mu);
    free(t);
}

static stripe *stripe_of(gateway_table *t, uint64_t h)
{
    return &t->stripes[h % STRIPES];
}

gateway_record *gateway_table_get(gateway_table *t, const char *key, uint64_t now_ms, bool *fresh)
{
    char k[GATEWAY_TABLE_KEY_MAX + 1];
    snprintf(k, sizeof k, "%s", key);
    uint64_t h = ms_hash_text(k);
    stripe *s = stripe_of(t, h);
    size_t first = (size_t)(h / STRIPES) % SLOTS;
    pthread_mutex_lock(&s->mu);
    gateway_record *oldest = NULL;
    for (size_t i = 0; i < PROBE; i++) {
        gateway_record *r = &s->slots[(first + i) % SLOTS];
        if (strcmp(r->key, k) == 0) {
            if (fresh)
                *fresh = false;
            return r;
        }
        if (!oldest || r->used_ms < oldest->used_ms)
            oldest = r;
    }
    if (!fresh) {
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    memset(oldest, 0, sizeof *oldest);
    memcpy(oldest->key, k, sizeof k);
    oldest->used_ms = now_ms;
    *fresh = true;
    return oldest;
}

void gateway_table_put(gateway_table *t, gateway_record *r, uint64_t now_ms)
{
    r->used_ms = now_ms;
    pthread_mutex_unlock(&stripe_of(t, ms_hash_text(r->key))->mu);
}
