/*
 * token_cache.h — the tokens a loop thread verified lately. A client sends the same token with
 * every request; remembering that its signature and claims were good turns the next check
 * into a hash and a compare instead of two JSON parses and an HMAC (or RSA) check. The times
 * are checked again at every use (exp and nbf, with the verifier's leeway), so an entry never
 * outlives its token; a token is remembered only once it verified, with the process's one
 * key set and settings.
 *
 * Threading: per thread (thread-local), no locks. Tokens longer than GATEWAY_TOKEN_CACHE_MAX
 * are not remembered.
 */
#ifndef MS_GATEWAY_TOKEN_CACHE_H
#define MS_GATEWAY_TOKEN_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/auth/jwt.h"

enum { GATEWAY_TOKEN_CACHE_MAX = 1024 };

/* The claims of token[0..n) when it verified before and is still within its times at `now`
 * (unix seconds). */
bool gateway_token_cache_get(const char *token, size_t n, int64_t now, ms_jwt_claims *out);
/* Remembers a token that verified. */
void gateway_token_cache_put(const char *token, size_t n, const ms_jwt_claims *claims);

#endif
