/*
 * consistency.c — through the gateway a client reads its own writes in its lists, sending
 * nothing extra. The order service's lists come from a projection that trails its event
 * store by milliseconds; its writes answer X-Position (the store's position of the write), and
 * a list read carrying X-Min-Position waits until the projection has passed it.
 *
 * The gateway remembers each caller's last write position two ways:
 *   - in the process, by user id (client_table.h), for a minute: a projection that has not
 *     caught up in a minute is stalled, and waiting on it would not help;
 *   - in a cookie on the answer (ms_pos=<position>.<signature>, HttpOnly), signed with
 *     HMAC-SHA256 over the user id and the position, so another gateway instance that shares
 *     the secret (MICROSHOP_IDENTITY_SECRET; else a random one per process) honours it and no
 *     client can make another's reads wait.
 * A GET to the order service by that caller then carries X-Min-Position: the larger of the
 * two (unless the client sent its own).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "runtime/core/base64.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/server.h"
#include "services/gateway/client_table.h"
#include "services/gateway/gateway_internal.h"
#include "runtime/core/banned.h"

enum { KEEP_MS = 60000, SECRET_MAX = 256, SIG_BYTES = 16, COOKIE_MAX = 96 };

static const char COOKIE[] = "ms_pos=";

static struct {
    gateway_table *positions;
    unsigned char secret[SECRET_MAX];
    size_t secret_len;
} ss;

/* The cookie's signature of (user, position), base64url, into out (>= 32 bytes). */
static void sign(const char *user_id, int64_t position, char *out, size_t n)
{
    char msg[96];
    int len = snprintf(msg, sizeof msg, "%s|%" PRId64, user_id, position);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    HMAC(EVP_sha256(), ss.secret, (int)ss.secret_len, (const unsigned char *)msg, (size_t)len, mac,
         &maclen);
    ms_buf b;
    ms_buf_init(&b, 32);
    ms_base64url_encode(&b, mac, SIG_BYTES);
    snprintf(out, n, "%.*s", (int)b.n, b.p);
    ms_buf_release(&b);
}

/* The position a valid ms_pos cookie of this caller carries, else 0. */
static int64_t cookie_position(const gateway_call *c)
{
    const char *h = ms_http_header_get(c->req, "Cookie");
    const char *at = h;
    while (at && (at = strstr(at, COOKIE)) && at != h && at[-1] != ' ' && at[-1] != ';')
        at += sizeof COOKIE - 1; /* "xms_pos=" is another cookie */
    if (!at)
        return 0;
    at += sizeof COOKIE - 1;
    char *dot;
    long long pos = strtoll(at, &dot, 10);
    if (dot == at || *dot != '.' || pos <= 0)
        return 0;
    char want[48];
    sign(c->user_id, pos, want, sizeof want);
    size_t n = strlen(want);
    if (strncmp(dot + 1, want, n) != 0 || (dot[1 + n] && dot[1 + n] != ';'))
        return 0;
    return pos;
}

void gateway_session_apply(gateway_call *c)
{
    ms_http_request *req = c->req;
    if (!c->user_id || strcmp(c->route->route->method, "GET") != 0 ||
        strcmp(gateway_backend_name(c->route->backend), "order") != 0 ||
        ms_http_header_get(req, "X-Min-Position"))
        return;
    uint64_t now = uv_now(&req->loop->uv);
    int64_t pos = cookie_position(c);
    gateway_record *r = gateway_table_get(ss.positions, c->user_id, now, NULL);
    if (r) {
        if (now < r->used_ms + KEEP_MS && r->v.position > pos)
            pos = r->v.position;
        gateway_table_put(ss.positions, r, r->used_ms); /* a read does not prolong it */
    }
    if (pos > 0)
        gateway_call_add_header(c, "X-Min-Position", ms_arena_printf(&req->arena, "%" PRId64, pos));
}

void gateway_session_observe(gateway_call *c, const ms_http_client_resp *resp)
{
    const char *v = ms_http_client_resp_header(resp, "X-Position");
    if (!c->user_id || !v || resp->status < 200 || resp->status > 299 ||
        strcmp(c->route->route->method, "GET") == 0)
        return;
    char *end;
    long long pos = strtoll(v, &end, 10);
    if (end == v || *end || pos <= 0)
        return;
    uint64_t now = uv_now(&c->req->loop->uv);
    bool fresh;
    gateway_record *r = gateway_table_get(ss.positions, c->user_id, now, &fresh);
    if (fresh || now >= r->used_ms + KEEP_MS || r->v.position < pos)
        r->v.position = pos;
    gateway_table_put(ss.positions, r, now);
    char sig[48];
    sign(c->user_id, pos, sig, sizeof sig);
    char cookie[COOKIE_MAX + 64];
    snprintf(cookie, sizeof cookie, "%s%lld.%s; Path=/api/v1; Max-Age=60; HttpOnly; SameSite=Lax",
             COOKIE, pos, sig);
    ms_http_set_header(c->req, "Set-Cookie", cookie);
}

int gateway_session_start(void)
{
    const char *secret = getenv("MICROSHOP_IDENTITY_SECRET");
    if (secret && *secret) {
        ss.secret_len = strnlen(secret, SECRET_MAX);
        memcpy(ss.secret, secret, ss.secret_len);
    } else {
        ss.secret_len = 32;
        if (RAND_bytes(ss.secret, (int)ss.secret_len) != 1)
            return MS_EINTERNAL;
    }
    ss.positions = gateway_table_new();
    return 0;
}

void gateway_session_stop(void)
{
    gateway_table_free(ss.positions);
    ss.positions = NULL;
    OPENSSL_cleanse(ss.secret, sizeof ss.secret);
}
