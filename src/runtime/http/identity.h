/*
 * identity.h — who is calling. Until the gateway issues tokens, the gateway (and the tests)
 * set X-User-Id (a UUID) and X-User-Role (customer | admin) and services trust that pair.
 * Loop-thread only: failures are answered here (401 / 403).
 */
#ifndef MS_IDENTITY_H
#define MS_IDENTITY_H

#include <stdbool.h>

#include "runtime/http/http.h"

typedef struct ms_identity {
    const char *user_id;
    bool is_admin;
} ms_identity;

/* Reads the caller. Answers 401 and returns MS_EUNAUTHENTICATED when the pair is missing or
 * invalid. */
int ms_identity_get(ms_http_request *req, ms_identity *out);
/* Requires the caller to be `owner_id` or an admin: otherwise answers 401 or 403 and returns
 * MS_EUNAUTHENTICATED or MS_EFORBIDDEN. */
int ms_identity_require_self(ms_http_request *req, const char *owner_id);

#endif
