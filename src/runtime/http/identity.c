/* Caller identity from the gateway's headers; see identity.h. */
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/http/identity.h"
#include "runtime/http/problem.h"
#include "runtime/core/banned.h"

int ms_identity_get(ms_http_request *req, ms_identity *out)
{
    const char *id = ms_http_header_get(req, "X-User-Id");
    const char *role = ms_http_header_get(req, "X-User-Role");
    if (!id || !role) {
        ms_http_set_header(req, "WWW-Authenticate", "Bearer");
        ms_problem_from_error(req, MS_EUNAUTHENTICATED, "the caller is not identified");
        return MS_EUNAUTHENTICATED;
    }
    bool admin = strcmp(role, "admin") == 0;
    if (!ms_uuid_valid(id) || (!admin && strcmp(role, "customer") != 0)) {
        ms_http_set_header(req, "WWW-Authenticate", "Bearer");
        ms_problem_from_error(req, MS_EUNAUTHENTICATED, "the caller's identity is invalid");
        return MS_EUNAUTHENTICATED;
    }
    out->user_id = id;
    out->is_admin = admin;
    return 0;
}

int ms_identity_require_self(ms_http_request *req, const char *owner_id)
{
    ms_identity who;
    int rc = ms_identity_get(req, &who);
    if (rc == 0 && !who.is_admin && strcasecmp(who.user_id, owner_id) != 0) {
        rc = MS_EFORBIDDEN;
        ms_problem_from_error(req, rc, "customers may only reach their own data");
    }
    return rc;
}
