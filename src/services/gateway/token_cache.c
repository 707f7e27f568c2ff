/* The verified tokens of a loop thread; see token_cache.h. */
#include <string.h>

#include "runtime/core/hash.h"
#include "services/gateway/token_cache.h"
#include "runtime/core/banned.h"

/* Direct-mapped: a client's token has one slot, and a collision only costs a verification.
 * 64 slots of 1 KiB per loop thread. */
enum { SLOTS = 64 };

typedef struct slot {
    uint16_t n; /* 0: empty */
    char token[GATEWAY_TOKEN_CACHE_MAX];
    ms_jwt_claims claims;
} slot;

static __thread slot slots[SLOTS];

static slot *slot_of(const char *token, size_t n)
{
    return &slots[ms_hash(token, n) % SLOTS];
}

bool gateway_token_cache_get(const char *token, size_t n, int64_t now, ms_jwt_claims *out)
{
    if (n == 0 || n > GATEWAY_TOKEN_CACHE_MAX)
        return false;
    const slot *s = slot_of(token, n);
    if (s->n != n || memcmp(s->token, token, n) != 0)
        return false;
    const ms_jwt_claims *c = &s->claims;
    if (now > c->exp + MS_JWT_LEEWAY_S || (c->nbf && now + MS_JWT_LEEWAY_S < c->nbf))
        return false;
    *out = *c;
    return true;
}

void gateway_token_cache_put(const char *token, size_t n, const ms_jwt_claims *claims)
{
    if (n == 0 || n > GATEWAY_TOKEN_CACHE_MAX)
        return;
    slot *s = slot_of(token, n);
    memcpy(s->token, token, n);
    s->n = (uint16_t)n;
    s->claims = *claims;
}
