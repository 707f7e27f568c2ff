/*
 * consistency.c — through the gateway a client reads its own writes, sending nothing extra.
 *
 * Lists. The order service's lists come from a projection that trails its event store by
 * milliseconds; its writes answer X-Position (the store's position of the write), and a list
 * read carrying X-Min-Position waits until the projection has passed it. The gateway remembers
 * each caller's last write position two ways:
 *   - in the process, by user id (client_table.h), for a minute: a projection that has not
 *     caught up in a minute is stalled, and waiting on it would not help;
 *   - in a cookie on the answer (ms_pos=<position>.<signature>).
 * A GET to the order service by that caller then carries X-Min-Position: the larger of the
 * two (unless the client sent its own).
 *
 * Cached reads. A write through one gateway drops the entry from that gateway's LRU and from
 * Redis, but another gateway's LRU keeps the old answer until the event reaches its follower
 * (and a read racing the delete may put the old one back in Redis). So a caller's 2xx write
 * (not GET/HEAD) to a service the cache fronts (cache.c: user, inventory) is remembered for a
 * minute — events arrive well inside it — by user and that service's bit, in the process and
 * in a cookie (ms_fresh=<until, Unix ms>.<mask>.<signature>; mask: 1 the user service, 2 the
 * inventory). That caller's cacheable reads on those services skip both tiers meanwhile
 * (gateway_session_wrote). A cookie holds one until and the union of the services written: a
 * new write keeps the bits of a cookie not yet expired and moves the until to a minute from
 * now, so the window of each service written is at least its own minute.
 *
 * Both cookies are HttpOnly, Path=/api/v1, Max-Age=60, SameSite=Lax, and signed with
 * HMAC-SHA256 over "<user id>|<position>" and "<user id>|<until>|<mask>", so another gateway
 * instance that shares the secret (MICROSHOP_IDENTITY_SECRET; else a random one per process)
 * honours them and no client can make another's reads wait or skip the cache; an unsigned, forged
 * or other caller's cookie is ignored.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

enum { KEEP_MS = 60000, SECRET_MAX = 256, SIG_BYTES = 16, SIG_MAX = 48, COOKIE_MAX = 160 };

static const char POS_COOKIE[] = "ms_pos";
static const char FRESH_COOKIE[] = "ms_fresh";
static const char COOKIE_ATTRS[] = "Path=/api/v1; Max-Age=60; HttpOnly; SameSite=Lax";

static struct {
    gateway_table *positions;
    gateway_table *fresh; /* "<bit>|<user id>" -> until (Unix ms) in v.position */
    unsigned char secret[SECRET_MAX];
    size_t secret_len;
} ss;

/* The signature of (user, what), base64url, into out[SIG_MAX]: an HMAC-SHA256 of
 * "<user id>|<what>" cut to SIG_BYTES. */
static void sign(const char *user_id, const char *what, char out[SIG_MAX])
{
    ms_buf msg;
    ms_buf_init(&msg, 96);
    ms_buf_printf(&msg, "%s|%s", user_id, what);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    HMAC(EVP_sha256(), ss.secret, (int)ss.secret_len, (const unsigned char *)msg.p, msg.n, mac,
         &maclen);
    ms_buf_release(&msg);
    ms_buf b;
    ms_buf_init(&b, 32);
    ms_base64url_encode(&b, mac, SIG_BYTES);
    snprintf(out, SIG_MAX, "%.*s", (int)b.n, b.p);
    ms_buf_release(&b);
}

/* True when `at` is the signature of (user, what), ending the cookie. */
static bool signed_by(const char *at, const char *user_id, const char *what)
{
    char want[SIG_MAX];
    sign(user_id, what, want);
    size_t n = strlen(want);
    return strnlen(at, n) == n && CRYPTO_memcmp(at, want, n) == 0 && (!at[n] || at[n] == ';');
}

/* The value of the request's cookie `name` (up to its ';' or the end), or NULL. */
static const char *cookie_value(const gateway_call *c, const char *name)
{
    const char *h = ms_http_header_get(c->req, "Cookie");
    size_t n = strlen(name);
    for (const char *at = h; at && (at = strstr(at, name)); at += n)
        if ((at == h || at[-1] == ' ' || at[-1] == ';') && at[n] == '=')
            return at + n + 1; /* "xms_pos=" is another cookie */
    return NULL;
}

/* Adds Set-Cookie: name=value.<signature of what> with the session cookies' attributes. */
static void set_cookie(gateway_call *c, const char *name, const char *value, const char *what)
{
    char sig[SIG_MAX];
    sign(c->user_id, what, sig);
    char cookie[COOKIE_MAX];
    snprintf(cookie, sizeof cookie, "%s=%s.%s; %s", name, value, sig, COOKIE_ATTRS);
    ms_http_set_header(c->req, "Set-Cookie", cookie);
}

/* The position a valid ms_pos cookie of this caller carries, else 0. */
static int64_t cookie_position(const gateway_call *c)
{
    const char *at = cookie_value(c, POS_COOKIE);
    if (!at)
        return 0;
    char *dot;
    long long pos = strtoll(at, &dot, 10);
    if (dot == at || *dot != '.' || pos <= 0)
        return 0;
    char value[24];
    snprintf(value, sizeof value, "%lld", pos);
    return signed_by(dot + 1, c->user_id, value) ? pos : 0;
}

/* The until (Unix ms) and mask of a valid ms_fresh cookie of this caller, else false. */
static bool cookie_fresh(const gateway_call *c, int64_t *until, unsigned *mask)
{
    const char *at = cookie_value(c, FRESH_COOKIE);
    if (!at)
        return false;
    char *dot, *dot2;
    long long u = strtoll(at, &dot, 10);
    if (dot == at || *dot != '.' || u <= 0)
        return false;
    unsigned long m = strtoul(dot + 1, &dot2, 10);
    if (dot2 == dot + 1 || *dot2 != '.' || m == 0 || m > 0xff)
        return false;
    char what[48];
    snprintf(what, sizeof what, "%lld|%lu", u, m);
    if (!signed_by(dot2 + 1, c->user_id, what))
        return false;
    *until = u;
    *mask = (unsigned)m;
    return true;
}

/* Wall-clock ms: a cookie's until is read by other gateways, whose loops keep other times. */
static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The in-process key of (caller, cached service bit). */
static void fresh_key(const gateway_call *c, unsigned bit, char out[GATEWAY_TABLE_KEY_MAX + 1])
{
    snprintf(out, GATEWAY_TABLE_KEY_MAX + 1, "%u|%s", bit, c->user_id);
}

bool gateway_session_wrote(const gateway_call *c)
{
    unsigned bit = gateway_cache_backend_bit(c->route->backend);
    if (!c->user_id || !bit)
        return false;
    int64_t now = unix_ms(), until;
    unsigned mask;
    if (cookie_fresh(c, &until, &mask) && (mask & bit) && now < until)
        return true;
    char key[GATEWAY_TABLE_KEY_MAX + 1];
    fresh_key(c, bit, key);
    gateway_record *r = gateway_table_get(ss.fresh, key, uv_now(&c->req->loop->uv), NULL);
    if (!r)
        return false;
    bool wrote = now < r->v.position;
    gateway_table_put(ss.fresh, r, r->used_ms); /* a read does not prolong it */
    return wrote;
}

/* After a caller's 2xx write to a service the cache fronts: the window, here and in ms_fresh. */
static void observe_write(gateway_call *c)
{
    unsigned bit = gateway_cache_backend_bit(c->route->backend);
    if (!bit)
        return;
    int64_t now = unix_ms(), until = now + KEEP_MS, old_until;
    char key[GATEWAY_TABLE_KEY_MAX + 1];
    fresh_key(c, bit, key);
    bool made;
    gateway_record *r = gateway_table_get(ss.fresh, key, uv_now(&c->req->loop->uv), &made);
    r->v.position = until;
    gateway_table_put(ss.fresh, r, uv_now(&c->req->loop->uv));
    unsigned mask = bit, old_mask;
    if (cookie_fresh(c, &old_until, &old_mask) && now < old_until)
        mask |= old_mask;
    char value[48], what[48];
    snprintf(value, sizeof value, "%" PRId64 ".%u", until, mask);
    snprintf(what, sizeof what, "%" PRId64 "|%u", until, mask);
    set_cookie(c, FRESH_COOKIE, value, what);
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
    if (!c->user_id || resp->status < 200 || resp->status > 299 || c->req->method == HTTP_GET ||
        c->req->method == HTTP_HEAD)
        return;
    observe_write(c);
    const char *v = ms_http_client_resp_header(resp, "X-Position");
    if (!v)
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
    char value[24];
    snprintf(value, sizeof value, "%lld", pos);
    set_cookie(c, POS_COOKIE, value, value);
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
    ss.fresh = gateway_table_new();
    return 0;
}

void gateway_session_stop(void)
{
    gateway_table_free(ss.positions);
    gateway_table_free(ss.fresh);
    ss.positions = ss.fresh = NULL;
    OPENSSL_cleanse(ss.secret, sizeof ss.secret);
}
