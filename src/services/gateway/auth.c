/*
 * auth.c — who the caller is, and what a route allows them.
 *
 * With a token configuration (MICROSHOP_JWT_SECRET: HS256, or MICROSHOP_JWKS_FILE: RS256 keys
 * by kid) the caller is the subject of the access token in `Authorization: Bearer`, checked
 * against MICROSHOP_JWT_ISSUER / MICROSHOP_JWT_AUDIENCE (both "microshop" unless set; set
 * empty, not checked). A token is verified wherever it comes, on a public route too; every
 * failure is a 401 with `WWW-Authenticate: Bearer error="invalid_token"` and a detail that
 * says why, never the token. Without one the gateway runs open, as the services do: the caller
 * is whatever X-User-Id / X-User-Role pair it sends (a development mode, logged at start).
 * Either way routes need what they need: a signed-in caller for customer routes, an admin for
 * admin routes; and the identity goes to the service as X-User-Id / X-User-Role, signed with
 * X-Identity-Signature when MICROSHOP_IDENTITY_SECRET is set (identity.h).
 *
 * Threading: the key set and the options are made at start, then read-only.
 */
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "runtime/auth/jwt.h"
#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/http/identity.h"
#include "runtime/http/problem.h"
#include "services/gateway/gateway_internal.h"
#include "services/gateway/token_cache.h"
#include "runtime/core/banned.h"

static const char INVALID_TOKEN[] = "Bearer error=\"invalid_token\"";

static struct {
    ms_jwt_keys *keys; /* NULL: the development mode */
    ms_jwt_verify_opts opts;
} auth;

/* Routes anyone may call, and routes only admins may; every other route needs a caller. */
static const struct access_rule {
    const char *method, *template;
    gateway_access access;
} rules[] = {
    {"POST", "/api/v1/users", GATEWAY_PUBLIC},
    {"POST", "/api/v1/auth/token", GATEWAY_PUBLIC},
    {"GET", "/api/v1/products", GATEWAY_PUBLIC},
    {"GET", "/api/v1/products/{id}", GATEWAY_PUBLIC},
    {"POST", "/api/v1/products", GATEWAY_ADMIN},
    {"PUT", "/api/v1/products/{id}/price", GATEWAY_ADMIN},
    {"PUT", "/api/v1/products/{id}/stock", GATEWAY_ADMIN},
    {"GET", "/api/v1/products/{id}/price-history", GATEWAY_ADMIN},
    {"PATCH", "/api/v1/orders/{id}/status", GATEWAY_ADMIN},
};

gateway_access gateway_route_access(const char *method, const char *template)
{
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (strcmp(rules[i].method, method) == 0 && strcmp(rules[i].template, template) == 0)
            return rules[i].access;
    return GATEWAY_CUSTOMER;
}

bool gateway_is_identity_header(const char *name)
{
    return strcasecmp(name, "X-User-Id") == 0 || strcasecmp(name, "X-User-Role") == 0 ||
           strcasecmp(name, MS_IDENTITY_SIG_HEADER) == 0;
}

static int unauthenticated(ms_http_request *req, const char *www, const char *why)
{
    ms_http_set_header(req, "WWW-Authenticate", www);
    ms_problem_from_error(req, MS_EUNAUTHENTICATED, why);
    return MS_EUNAUTHENTICATED;
}

/* The token of an `Authorization: Bearer` header: 0 with *token NULL when there is no header,
 * 0 with the token, or MS_EUNAUTHENTICATED after answering. */
static int bearer_token(ms_http_request *req, const char **token)
{
    *token = NULL;
    const char *h = ms_http_header_get(req, "Authorization");
    if (!h)
        return 0;
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return unauthenticated(req, INVALID_TOKEN,
                               "the Authorization header is not a Bearer token");
    h += 7;
    while (*h == ' ')
        h++;
    if (!*h)
        return unauthenticated(req, INVALID_TOKEN, "the bearer token is empty");
    *token = h;
    return 0;
}

/* The caller from its token (token mode); 0 with c->user_id NULL for an anonymous caller. */
static int identify_by_token(gateway_call *c, const char **role)
{
    ms_http_request *req = c->req;
    const char *token;
    int rc = bearer_token(req, &token);
    if (rc < 0 || !token)
        return rc;
    ms_jwt_claims claims;
    const char *why;
    size_t n = strlen(token);
    if (!gateway_token_cache_get(token, n, (int64_t)time(NULL), &claims)) {
        if (ms_jwt_verify(auth.keys, token, n, &auth.opts, &claims, &why) < 0)
            return unauthenticated(req, INVALID_TOKEN, why);
        gateway_token_cache_put(token, n, &claims);
    }
    c->user_id = ms_arena_strndup(&req->arena, claims.sub, strlen(claims.sub));
    c->is_admin = strcmp(claims.role, "admin") == 0;
    *role = c->is_admin ? "admin" : "customer";
    return 0;
}

/* The caller as it says it is (development mode). */
static void identify_by_headers(gateway_call *c, const char **role)
{
    const char *id = ms_http_header_get(c->req, "X-User-Id");
    const char *r = ms_http_header_get(c->req, "X-User-Role");
    if (id && r && ms_uuid_valid(id) && (strcmp(r, "admin") == 0 || strcmp(r, "customer") == 0)) {
        c->user_id = id;
        c->is_admin = strcmp(r, "admin") == 0;
        *role = c->is_admin ? "admin" : "customer";
    }
}

/* Adds the identity headers, signed when identities are. */
static int forward_identity(gateway_call *c, const char *role)
{
    ms_http_request *req = c->req;
    const char *path =
        req->query[0] ? ms_arena_printf(&req->arena, "%s?%s", req->path, req->query) : req->path;
    char *sig = ms_arena_alloc(&req->arena, MS_IDENTITY_SIG_MAX);
    ms_http_header h[3];
    int n = ms_identity_headers(c->user_id, role, http_method_str((enum http_method)req->method),
                                path, sig, h);
    if (n < 0) {
        ms_problem_from_error(req, MS_EINTERNAL, "the caller's identity could not be signed");
        return MS_EINTERNAL;
    }
    for (int i = 0; i < n; i++)
        gateway_call_add_header(c, h[i].name, h[i].value);
    return 0;
}

int gateway_auth(gateway_call *c)
{
    ms_http_request *req = c->req;
    const char *role = NULL;
    if (auth.keys) {
        int rc = identify_by_token(c, &role);
        if (rc < 0)
            return rc;
    } else {
        identify_by_headers(c, &role);
    }
    if (c->user_id) {
        int rc = forward_identity(c, role);
        if (rc < 0)
            return rc;
    }
    if (c->route->access == GATEWAY_PUBLIC)
        return 0;
    if (!c->user_id)
        return unauthenticated(req, auth.keys ? INVALID_TOKEN : "Bearer",
                               auth.keys ? "a bearer token is required"
                                         : "the caller is not identified");
    if (c->route->access == GATEWAY_ADMIN && !c->is_admin) {
        ms_problem_from_error(req, MS_EFORBIDDEN, "this route is for admins");
        return MS_EFORBIDDEN;
    }
    return 0;
}

int gateway_auth_start(void)
{
    const char *secret = getenv("MICROSHOP_JWT_SECRET");
    const char *jwks = getenv("MICROSHOP_JWKS_FILE");
    const char *why = NULL;
    if (secret && !*secret)
        secret = NULL;
    if (jwks && !*jwks)
        jwks = NULL;
    if (ms_identity_config() < 0)
        ms_config_refuse("gateway: MICROSHOP_IDENTITY_SECRET is invalid",
                         "must be 32 to 1024 bytes");
    if (secret && jwks)
        ms_config_refuse(
            "gateway: token configuration is ambiguous",
            "set MICROSHOP_JWT_SECRET (HS256) or MICROSHOP_JWKS_FILE (RS256), not both");
    if (secret && ms_jwt_keys_hs256(secret, strlen(secret), &auth.keys) < 0)
        ms_config_refuse("gateway: MICROSHOP_JWT_SECRET is invalid", "must be at least 32 bytes");
    if (jwks && ms_jwt_keys_jwks_file(jwks, &auth.keys, &why) < 0)
        ms_config_refuse("gateway: MICROSHOP_JWKS_FILE is invalid", why);
    auth.opts.iss = ms_jwt_claim_setting("MICROSHOP_JWT_ISSUER");
    auth.opts.aud = ms_jwt_claim_setting("MICROSHOP_JWT_AUDIENCE");
    if (!auth.keys)
        ms_log(MS_LOG_WARN, "gateway: no token configuration; callers are who they say they are",
               NULL);
    else
        ms_log(MS_LOG_INFO, "gateway: bearer tokens required", "algorithm",
               secret ? "HS256" : "RS256", NULL);
    if (!ms_identity_signed())
        ms_log(MS_LOG_WARN,
               "gateway: MICROSHOP_IDENTITY_SECRET is not set; identities go to services unsigned",
               NULL);
    return 0;
}

void gateway_auth_stop(void)
{
    ms_jwt_keys_free(auth.keys);
    auth.keys = NULL;
}
