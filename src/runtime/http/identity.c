/* Caller identity from the gateway's headers, signed or not; see identity.h. */
#include <http_parser.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "runtime/core/base64.h"
#include "runtime/core/buf.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/http/identity.h"
#include "runtime/http/problem.h"
#include "runtime/core/banned.h"

enum { MAC_LEN = 32, SECRET_MAX = 1024 };

/* Written once under pthread_once, then read-only. */
static struct {
    pthread_once_t once;
    bool set, valid;
    unsigned char secret[SECRET_MAX];
    size_t len;
} cfg = {.once = PTHREAD_ONCE_INIT};

static void read_config(void)
{
    const char *s = getenv("MICROSHOP_IDENTITY_SECRET");
    if (!s || !*s)
        return;
    size_t n = strlen(s);
    cfg.set = true;
    cfg.valid = n >= MS_IDENTITY_SECRET_MIN && n <= SECRET_MAX;
    if (!cfg.valid) {
        ms_log(MS_LOG_ERROR,
               "MICROSHOP_IDENTITY_SECRET must be 32 to 1024 bytes; every identity is refused",
               NULL);
        return;
    }
    memcpy(cfg.secret, s, n);
    cfg.len = n;
}

int ms_identity_config(void)
{
    pthread_once(&cfg.once, read_config);
    return cfg.set && !cfg.valid ? MS_EINVAL : 0;
}

bool ms_identity_signed(void)
{
    ms_identity_config();
    return cfg.set;
}

int ms_identity_sign_with(const void *secret, size_t n, int64_t t, const char *user_id,
                          const char *role, const char *method, const char *path_query, char *out,
                          size_t cap)
{
    ms_buf msg = {0}, b = {0};
    ms_buf_printf(&msg, "v1\n%lld\n%s\n%s\n%s\n%s", (long long)t, user_id, role, method,
                  path_query);
    unsigned char mac[MAC_LEN];
    unsigned int len = 0;
    int rc = 0;
    if (!HMAC(EVP_sha256(), secret, (int)n, (const unsigned char *)msg.p, msg.n, mac, &len) ||
        len != MAC_LEN)
        rc = MS_EINTERNAL;
    if (rc == 0) {
        ms_buf_printf(&b, "v1;t=%lld;sig=", (long long)t);
        ms_base64url_encode(&b, mac, sizeof mac);
        if (b.n >= cap)
            rc = MS_ETOOBIG;
    }
    if (rc == 0) {
        memcpy(out, b.p, b.n);
        out[b.n] = '\0';
    }
    ms_buf_release(&msg);
    ms_buf_release(&b);
    return rc;
}

int ms_identity_sign(int64_t t, const char *user_id, const char *role, const char *method,
                     const char *path_query, char *out, size_t cap)
{
    if (ms_identity_config() < 0 || !cfg.set)
        return MS_EINVAL;
    return ms_identity_sign_with(cfg.secret, cfg.len, t, user_id, role, method, path_query, out,
                                 cap);
}

int ms_identity_headers(const char *user_id, const char *role, const char *method,
                        const char *path_query, char *sig, ms_http_header out[3])
{
    out[0] = (ms_http_header){"X-User-Id", user_id};
    out[1] = (ms_http_header){"X-User-Role", role};
    if (!ms_identity_signed())
        return 2;
    int rc = ms_identity_sign((int64_t)time(NULL), user_id, role, method, path_query, sig,
                              MS_IDENTITY_SIG_MAX);
    if (rc < 0)
        return rc;
    out[2] = (ms_http_header){MS_IDENTITY_SIG_HEADER, sig};
    return 3;
}

/* Why a request's signature does not vouch for its identity, or NULL when it does. */
static const char *check_signature(ms_http_request *req, const char *id, const char *role)
{
    if (!cfg.valid)
        return "the service's identity secret is misconfigured";
    const char *sig = ms_http_header_get(req, MS_IDENTITY_SIG_HEADER);
    if (!sig)
        return "the caller's identity is not signed";
    long long t = 0;
    int used = 0;
    if (sscanf(sig, "v1;t=%lld;sig=%n", &t, &used) != 1 || used == 0)
        return "the caller's identity signature is malformed";
    long long now = (long long)time(NULL);
    if (t > now + MS_IDENTITY_WINDOW_S || t < now - MS_IDENTITY_WINDOW_S)
        return "the caller's identity signature is out of its time window";
    const char *path =
        req->query[0] ? ms_arena_printf(&req->arena, "%s?%s", req->path, req->query) : req->path;
    char want[MS_IDENTITY_SIG_MAX];
    if (ms_identity_sign_with(cfg.secret, cfg.len, t, id, role,
                              http_method_str((enum http_method)req->method), path, want,
                              sizeof want) < 0)
        return "the caller's identity signature is invalid";
    size_t n = strlen(want);
    if (strlen(sig) != n || CRYPTO_memcmp(want, sig, n) != 0)
        return "the caller's identity signature is invalid";
    return NULL;
}

static int refuse(ms_http_request *req, const char *why)
{
    ms_http_set_header(req, "WWW-Authenticate", "Bearer");
    ms_problem_from_error(req, MS_EUNAUTHENTICATED, why);
    return MS_EUNAUTHENTICATED;
}

int ms_identity_get(ms_http_request *req, ms_identity *out)
{
    const char *id = ms_http_header_get(req, "X-User-Id");
    const char *role = ms_http_header_get(req, "X-User-Role");
    if (!id || !role)
        return refuse(req, "the caller is not identified");
    bool admin = strcmp(role, "admin") == 0;
    if (!ms_uuid_valid(id) || (!admin && strcmp(role, "customer") != 0))
        return refuse(req, "the caller's identity is invalid");
    const char *why;
    if (ms_identity_signed() && (why = check_signature(req, id, role)))
        return refuse(req, why);
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
