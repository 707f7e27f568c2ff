/*
 * identity.h — who is calling. The gateway (and, without it, the tests) sets X-User-Id (a
 * UUID) and X-User-Role (customer | admin); services read that pair here.
 *
 * Signed identity. With MICROSHOP_IDENTITY_SECRET set (at least 32 bytes, the same in the
 * gateway and every service), the gateway adds
 *     X-Identity-Signature: v1;t=<unix seconds>;sig=<base64url HMAC-SHA256(secret,
 *         "v1\n" t "\n" user_id "\n" role "\n" METHOD "\n" path-with-query)>
 * and a service refuses (401) an identity without a valid signature or whose t is more than
 * 60 s away from its clock. This is an HMAC signature, not mTLS: one shared secret, so any
 * holder of it (the gateway, a service) can speak for any user, and the link itself is not
 * encrypted; what it buys is that a caller who can reach a service directly cannot forge an
 * identity, and a captured header cannot be replayed on another route (method and path are
 * signed) or, past 60 s, at all. Without the secret services trust the pair as it comes (a
 * development mode; tests rely on it).
 *
 * The secret is read once, on first use or at ms_identity_config, thread-safely, and never
 * logged. Requests: loop-thread only; failures are answered here (401 / 403).
 */
#ifndef MS_IDENTITY_H
#define MS_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/http/http.h"

enum {
    MS_IDENTITY_SECRET_MIN = 32, /* bytes */
    MS_IDENTITY_WINDOW_S = 60,   /* how far a signature's t may be from the clock */
    MS_IDENTITY_SIG_MAX = 96,    /* room for a header value */
};

#define MS_IDENTITY_SIG_HEADER "X-Identity-Signature"

typedef struct ms_identity {
    const char *user_id;
    bool is_admin;
} ms_identity;

/* Reads MICROSHOP_IDENTITY_SECRET (once per process). 0 when unset or valid; MS_EINVAL when
 * set but shorter than MS_IDENTITY_SECRET_MIN bytes: a process should refuse to start, and if
 * it does not, every identity is refused (fail closed). */
int ms_identity_config(void);
/* True when identities are signed (the secret is set). */
bool ms_identity_signed(void);
/* Writes the X-Identity-Signature value for a request to out[0..cap) with the configured
 * secret, t the unix time in seconds. 0, MS_EINVAL (no valid secret) or MS_ETOOBIG. */
int ms_identity_sign(int64_t t, const char *user_id, const char *role, const char *method,
                     const char *path_query, char *out, size_t cap);
/*
 * The identity headers of a call made as user_id / role (a service calling another, a tool):
 * X-User-Id, X-User-Role and, when identities are signed, X-Identity-Signature for method
 * ("GET") and path_query, signed now. sig must hold MS_IDENTITY_SIG_MAX bytes; the headers
 * point at the arguments and sig, which must outlive them. Returns how many headers (2 or 3)
 * were written, or MS_EINVAL.
 */
int ms_identity_headers(const char *user_id, const char *role, const char *method,
                        const char *path_query, char *sig, ms_http_header out[3]);
/* The same with an explicit secret (tests, tools). */
int ms_identity_sign_with(const void *secret, size_t n, int64_t t, const char *user_id,
                          const char *role, const char *method, const char *path_query, char *out,
                          size_t cap);

/* Reads the caller. Answers 401 and returns MS_EUNAUTHENTICATED when the pair is missing or
 * invalid, or (signed mode) its signature is missing, wrong or out of its window. */
int ms_identity_get(ms_http_request *req, ms_identity *out);
/* Requires the caller to be `owner_id` or an admin: otherwise answers 401 or 403 and returns
 * MS_EUNAUTHENTICATED or MS_EFORBIDDEN. */
int ms_identity_require_self(ms_http_request *req, const char *owner_id);

#endif
