/*
 * jwt.h — JSON Web Tokens (compact JWS, RFC 7515/7519) for microshop's access tokens.
 *
 * The algorithm is pinned by the key set, never taken from the token: an HS256 key set
 * verifies HS256 tokens only, an RS256 key set (a JWKS file, or a PEM private key) RS256
 * tokens only, so "alg":"none" and key confusion (an HS256 token signed with an RSA public key
 * as its secret) are refused by construction. A token is accepted when it is at most 8 KiB,
 * three base64url parts whose first two are JSON objects, its signature verifies with the key
 * (for RS256 the one its "kid" names), "exp" is present and not passed, "nbf" (if any) not in
 * the future (30 s leeway either way), "iss" / "aud" match when the caller asks for them, and
 * "sub" is a UUID and "role" is "customer" or "admin".
 *
 * Layer: runtime/auth sits on core and json (jansson) and OpenSSL's libcrypto; http uses it.
 * Threading: a key set is immutable once made; any number of threads may sign and verify with
 * it at once. Ownership: the caller frees what *_new / *_load return with ms_jwt_keys_free.
 */
#ifndef MS_JWT_H
#define MS_JWT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/core/id.h"

enum {
    MS_JWT_MAX_LEN = 8192,      /* a longer token is refused unread */
    MS_JWT_LEEWAY_S = 30,       /* clock skew allowed on exp and nbf */
    MS_JWT_MIN_SECRET = 32,     /* bytes of an HS256 secret, at least */
    MS_JWT_MIN_RSA_BITS = 2048, /* a smaller RSA key is refused */
    MS_JWT_ROLE_MAX = 16,       /* "customer" | "admin" and a NUL */
};

typedef enum { MS_JWT_HS256 = 1, MS_JWT_RS256 = 2 } ms_jwt_alg;

typedef struct ms_jwt_keys ms_jwt_keys;

/* An HS256 key set (signs and verifies) from a secret of at least MS_JWT_MIN_SECRET bytes.
 * 0, or MS_EINVAL (too short). */
int ms_jwt_keys_hs256(const void *secret, size_t n, ms_jwt_keys **out);
/* An RS256 key set that verifies, from a JWKS document's text ({"keys":[{"kty":"RSA","kid",
 * "n","e","alg"?:"RS256"}]}; keys of another kty, or whose "use" is not "sig", are skipped).
 * 0, or MS_EINVAL with *why set to a static sentence (no RSA key, a key without kid, a bad
 * n/e, a key under MS_JWT_MIN_RSA_BITS, an "alg" other than RS256). */
int ms_jwt_keys_jwks(const char *text, size_t n, ms_jwt_keys **out, const char **why);
/* The same from a file (MS_EIO when it cannot be read). */
int ms_jwt_keys_jwks_file(const char *path, ms_jwt_keys **out, const char **why);
/* An RS256 key set that signs (with "kid" in the header) and verifies (its public half under
 * that kid), from a PEM private key file. 0, MS_EIO, or MS_EINVAL with *why set. */
int ms_jwt_keys_rs256_pem_file(const char *path, const char *kid, ms_jwt_keys **out,
                               const char **why);
void ms_jwt_keys_free(ms_jwt_keys *k);
ms_jwt_alg ms_jwt_keys_alg(const ms_jwt_keys *k);

/* Signs `claims` (a JSON object; not consumed) with the key set's algorithm (and kid) into
 * out[0..cap) as a NUL-terminated compact token. 0, MS_EINVAL (a verify-only key set),
 * MS_ETOOBIG (cap too small or the token over MS_JWT_MAX_LEN) or MS_EINTERNAL (OpenSSL). */
int ms_jwt_sign(const ms_jwt_keys *k, json_t *claims, char *out, size_t cap);

/* What ms_jwt_mint puts in a token. iss / aud NULL: left out. now 0: the clock. */
typedef struct ms_jwt_mint_opts {
    const char *sub, *role, *iss, *aud;
    int64_t ttl_s, now;
} ms_jwt_mint_opts;
/* An access token: {sub, role, iat, exp = iat + ttl_s, iss?, aud?}; codes as ms_jwt_sign. */
int ms_jwt_mint(const ms_jwt_keys *k, const ms_jwt_mint_opts *o, char *out, size_t cap);
/* For the supervisor and the CLI, in-process: an HS256 access token for sub/role valid ttl_s
 * seconds, with iss and aud "microshop" (the gateway's defaults). `secret` is the text of
 * MICROSHOP_JWT_SECRET (at least MS_JWT_MIN_SECRET bytes, else MS_EINVAL). Codes as
 * ms_jwt_sign; thread-safe. */
int ms_jwt_sign_hs256(const char *secret, const char *sub, const char *role, int64_t ttl_s,
                      char *out, size_t cap);

/* What a verifier requires beyond the signature. iss / aud NULL: not checked. now 0: the
 * clock (tests pass their own). */
typedef struct ms_jwt_verify_opts {
    const char *iss, *aud;
    int64_t now;
} ms_jwt_verify_opts;

typedef struct ms_jwt_claims {
    char sub[MS_UUID_LEN + 1];
    char role[MS_JWT_ROLE_MAX];
    int64_t iat, exp, nbf; /* 0 when absent (exp never is) */
} ms_jwt_claims;

/* The issuer or audience a deployment requires and issues, from its variable (name):
 * "microshop" when unset, none (NULL) when set empty. Start-up only. */
const char *ms_jwt_claim_setting(const char *name);

/* Verifies token[0..n) (not NUL-terminated necessarily). 0 with *out filled, or
 * MS_EUNAUTHENTICATED with *why set to a static sentence saying why (never the token's text). */
int ms_jwt_verify(const ms_jwt_keys *k, const char *token, size_t n, const ms_jwt_verify_opts *o,
                  ms_jwt_claims *out, const char **why);

#endif
