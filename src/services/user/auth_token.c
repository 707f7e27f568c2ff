/*
 * auth_token.c — POST /api/v1/auth/token: an email and password for an access token (jwt.h).
 *
 * The password is checked with argon2id_verify on the thread pool, as registration hashes it.
 * A wrong email and a wrong password get the same 401, after the same work: an unknown email
 * is verified against a dummy hash made at start with registration's parameters, so neither
 * the answer nor its time tells which emails are registered.
 *
 * Configuration (read at start; a bad value stops the process with status 2):
 *   MICROSHOP_JWT_SECRET        HS256 secret, at least 32 bytes; or
 *   MICROSHOP_JWT_PRIVATE_KEY   a PEM RSA private key file (RS256) with MICROSHOP_JWT_KID
 *   MICROSHOP_JWT_TTL           seconds a token lives (default 900)
 *   MICROSHOP_JWT_ISSUER / MICROSHOP_JWT_AUDIENCE  iss / aud (default "microshop"; empty: none)
 * Without a key the route answers 503. Threading: the key set is made at start, then
 * read-only; signing runs on the pool's workers.
 */
#include <argon2.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/auth/jwt.h"
#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/http/http_json.h"
#include "runtime/http/identity.h"
#include "runtime/http/problem.h"
#include "runtime/http/server.h"
#include "runtime/json/json.h"
#include "services/user/user_internal.h"
#include "runtime/core/banned.h"

enum {
    ARGON2_T = 2, /* registration's (users.c): the dummy costs what a real hash does */
    ARGON2_M_KIB = 19456,
    ARGON2_P = 1,
    HASH_LEN = 32,
    ENCODED_MAX = 160,
    DEFAULT_TTL = 900,
    MAX_TTL = 7 * 24 * 3600,
};

static struct {
    ms_jwt_keys *keys; /* NULL: tokens are not configured */
    int64_t ttl_s;
    const char *iss, *aud;
    char dummy_hash[ENCODED_MAX];
} tok;

static const char *nonempty_env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int user_token_start(void)
{
    const char *secret = nonempty_env("MICROSHOP_JWT_SECRET");
    const char *pem = nonempty_env("MICROSHOP_JWT_PRIVATE_KEY");
    const char *kid = nonempty_env("MICROSHOP_JWT_KID");
    const char *ttl = nonempty_env("MICROSHOP_JWT_TTL");
    const char *why = NULL;
    if (ms_identity_config() < 0)
        ms_config_refuse("user: MICROSHOP_IDENTITY_SECRET is invalid", "must be 32 to 1024 bytes");
    if (secret && pem)
        ms_config_refuse("user: token configuration is ambiguous",
                         "set MICROSHOP_JWT_SECRET (HS256) or MICROSHOP_JWT_PRIVATE_KEY (RS256), "
                         "not both");
    if (secret && ms_jwt_keys_hs256(secret, strlen(secret), &tok.keys) < 0)
        ms_config_refuse("user: MICROSHOP_JWT_SECRET is invalid", "must be at least 32 bytes");
    if (pem && !kid)
        ms_config_refuse("user: MICROSHOP_JWT_KID is missing",
                         "an RS256 key needs the kid the gateway's JWKS names it by");
    if (pem && ms_jwt_keys_rs256_pem_file(pem, kid, &tok.keys, &why) < 0)
        ms_config_refuse("user: MICROSHOP_JWT_PRIVATE_KEY is invalid", why);
    tok.ttl_s = DEFAULT_TTL;
    if (ttl) {
        char *end;
        errno = 0;
        long long v = strtoll(ttl, &end, 10);
        if (errno || *end || v < 1 || v > MAX_TTL)
            ms_config_refuse("user: MICROSHOP_JWT_TTL is invalid",
                             "must be a whole number of seconds from 1 to 604800");
        tok.ttl_s = v;
    }
    tok.iss = ms_jwt_claim_setting("MICROSHOP_JWT_ISSUER");
    tok.aud = ms_jwt_claim_setting("MICROSHOP_JWT_AUDIENCE");
    if (!tok.keys) {
        ms_log(MS_LOG_WARN, "user: no token key; POST /api/v1/auth/token answers 503", NULL);
        return 0;
    }
    /* what an unknown email is verified against: a real hash of a password nobody knows */
    unsigned char pw[32], salt[16];
    ms_random_bytes(pw, sizeof pw);
    ms_random_bytes(salt, sizeof salt);
    int rc = argon2id_hash_encoded(ARGON2_T, ARGON2_M_KIB, ARGON2_P, pw, sizeof pw, salt,
                                   sizeof salt, HASH_LEN, tok.dummy_hash, sizeof tok.dummy_hash);
    explicit_bzero(pw, sizeof pw);
    if (rc != ARGON2_OK) {
        ms_log(MS_LOG_ERROR, "user: the dummy password hash failed", "error",
               argon2_error_message(rc), NULL);
        return MS_EINTERNAL;
    }
    return 0;
}

void user_token_stop(void)
{
    ms_jwt_keys_free(tok.keys);
    tok.keys = NULL;
}

/* ---- POST /api/v1/auth/token ---- */

typedef struct {
    ms_http_request *req;
    uv_work_t job;
    char *email_key, *password;
    bool found;
    char user_id[MS_UUID_LEN + 1];
    char role[MS_JWT_ROLE_MAX];
    char hash[ENCODED_MAX];
    int rc; /* of the work: 0, MS_EUNAUTHENTICATED, or another error */
    char token[MS_JWT_MAX_LEN + 1];
} token_call;

static int lookup_work(ms_db_conn *c, void *arg)
{
    token_call *k = arg;
    ms_db_result *r = NULL;
    const char *params[] = {k->email_key};
    int rc = ms_db_exec(c, "SELECT id, password_hash, role FROM users WHERE email_key = $1", 1,
                        params, &r);
    if (rc == 0 && ms_db_nrows(r) > 0) {
        const char *id = ms_db_get(r, 0, 0), *hash = ms_db_get(r, 0, 1), *role = ms_db_get(r, 0, 2);
        /* a row that does not fit is treated as no user: the same 401 */
        k->found = strlen(id) == MS_UUID_LEN && strlen(hash) < sizeof k->hash &&
                   strlen(role) < sizeof k->role;
        if (k->found) {
            snprintf(k->user_id, sizeof k->user_id, "%s", id);
            snprintf(k->hash, sizeof k->hash, "%s", hash);
            snprintf(k->role, sizeof k->role, "%s", role);
        }
    }
    ms_db_result_free(r);
    return rc;
}

static void verify_work(uv_work_t *w)
{
    token_call *k = w->data;
    size_t plen = strlen(k->password);
    int v = argon2id_verify(k->found ? k->hash : tok.dummy_hash, k->password, plen);
    explicit_bzero(k->password, plen);
    if (v != ARGON2_OK || !k->found) {
        k->rc = MS_EUNAUTHENTICATED;
        return;
    }
    ms_jwt_mint_opts o = {
        .sub = k->user_id, .role = k->role, .iss = tok.iss, .aud = tok.aud, .ttl_s = tok.ttl_s};
    k->rc = ms_jwt_mint(tok.keys, &o, k->token, sizeof k->token);
}

static void verify_done(uv_work_t *w, int status)
{
    token_call *k = w->data;
    ms_http_request *req = k->req;
    if (status < 0) {
        ms_problem_from_error(req, MS_EINTERNAL, "the password could not be checked");
    } else if (k->rc == MS_EUNAUTHENTICATED) {
        ms_http_set_header(req, "WWW-Authenticate", "Bearer");
        ms_problem_from_error(req, MS_EUNAUTHENTICATED, "the email or the password is wrong");
    } else if (k->rc < 0) {
        ms_log(MS_LOG_ERROR, "token signing failed", "error", ms_strerror(k->rc), NULL);
        ms_problem_from_error(req, MS_EINTERNAL, "the token could not be made");
    } else {
        ms_buf body = {0};
        ms_buf_adds(&body, "{\"access_token\":");
        ms_json_put_string(&body, k->token);
        ms_buf_printf(&body, ",\"token_type\":\"Bearer\",\"expires_in\":%lld}",
                      (long long)tok.ttl_s);
        ms_http_set_header(req, "Cache-Control", "no-store");
        ms_http_respond(req, 200, "application/json", body.p, body.n);
        ms_buf_release(&body);
    }
    explicit_bzero(k->token, sizeof k->token);
}

static void lookup_done(int rc, void *arg)
{
    token_call *k = arg;
    k->job.data = k;
    if (rc < 0) {
        if (ms_http_status_for(rc) >= 500)
            ms_log(MS_LOG_ERROR, "user lookup failed", "error", ms_strerror(rc), NULL);
        ms_problem_from_error(k->req, rc, NULL);
    } else if (uv_queue_work(&k->req->loop->uv, &k->job, verify_work, verify_done) < 0) {
        ms_problem_from_error(k->req, MS_EINTERNAL, "the password could not be checked");
    }
}

static void wipe_password(void *arg)
{
    token_call *k = arg;
    explicit_bzero(k->password, strlen(k->password));
}

static int check_body(ms_http_request *req, json_t *body)
{
    static const ms_json_field fields[] = {
        {"email", MS_JSON_STRING, true, false},
        {"password", MS_JSON_STRING, true, false},
    };
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 2, "", malformed, invalid);
    const char *email = json_string_value(json_object_get(body, "email"));
    const char *password = json_string_value(json_object_get(body, "password"));
    const char *why;
    if (email && (why = user_check_email(email)))
        ms_field_error(invalid, "email", "%s", why);
    /* registration's rule: a password it refused cannot be anyone's */
    if (password && (why = user_check_password(password)))
        ms_field_error(invalid, "password", "%s", why);
    int rc = ms_http_reject_fields(req, malformed, invalid);
    if (rc == 0 && (!email || !password))
        MS_BUG("user_token: a required field passed validation unset");
    return rc;
}

void user_token(ms_http_request *req)
{
    if (!tok.keys) {
        ms_problem_from_error(req, MS_EBUSY, "tokens are not configured");
        return;
    }
    json_t *body;
    int rc = ms_http_json_body(req, &body);
    if (rc == 0)
        rc = check_body(req, body);
    if (rc < 0)
        return;
    ms_arena *a = &req->arena;
    token_call *k = ms_arena_alloc(a, sizeof *k);
    memset(k, 0, sizeof *k);
    k->req = req;
    const char *email = json_string_value(json_object_get(body, "email"));
    const char *password = json_string_value(json_object_get(body, "password"));
    k->email_key = ms_arena_strndup(a, email, strlen(email));
    for (char *p = k->email_key; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    k->password = ms_arena_strndup(a, password, strlen(password));
    ms_arena_on_reset(a, wipe_password, k);
    /* the body held the password too: drop the parsed copy and wipe the buffer now */
    json_object_del(body, "password");
    explicit_bzero((char *)req->body, req->body_len);
    ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, lookup_work, lookup_done, k);
}
