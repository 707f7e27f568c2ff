/* JSON Web Tokens, HS256 and RS256; see jwt.h. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/auth/jwt.h"
#include "runtime/core/base64.h"
#include "runtime/core/buf.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/banned.h"

enum { MAX_KEYS = 16, KID_MAX = 128, JWKS_MAX = 1 << 20, HS_LEN = 32 };

typedef struct rsa_key {
    char kid[KID_MAX];
    EVP_PKEY *pkey;
} rsa_key;

struct ms_jwt_keys {
    ms_jwt_alg alg;
    unsigned char *secret; /* HS256 */
    size_t secret_len;
    rsa_key keys[MAX_KEYS]; /* RS256, by kid */
    int nkeys;
    EVP_PKEY *signer; /* RS256 with a private key; keys[0] is its public half */
};

ms_jwt_alg ms_jwt_keys_alg(const ms_jwt_keys *k)
{
    return k->alg;
}

void ms_jwt_keys_free(ms_jwt_keys *k)
{
    if (!k)
        return;
    if (k->secret) {
        OPENSSL_cleanse(k->secret, k->secret_len);
        free(k->secret);
    }
    for (int i = 0; i < k->nkeys; i++)
        EVP_PKEY_free(k->keys[i].pkey);
    EVP_PKEY_free(k->signer);
    free(k);
}

int ms_jwt_keys_hs256(const void *secret, size_t n, ms_jwt_keys **out)
{
    *out = NULL;
    if (n < MS_JWT_MIN_SECRET)
        return MS_EINVAL;
    ms_jwt_keys *k = ms_xcalloc(1, sizeof *k);
    k->alg = MS_JWT_HS256;
    k->secret = ms_xmalloc(n);
    memcpy(k->secret, secret, n);
    k->secret_len = n;
    *out = k;
    return 0;
}

/* ---- RS256 keys ---- */

static BIGNUM *b64_bignum(const char *text)
{
    ms_buf raw = {0};
    BIGNUM *bn = NULL;
    if (text && *text && ms_base64url_decode(&raw, text, strlen(text)) == 0 && raw.n > 0)
        bn = BN_bin2bn((const unsigned char *)raw.p, (int)raw.n, NULL);
    ms_buf_release(&raw);
    return bn;
}

/* An RSA public key from its base64url modulus and exponent. */
static EVP_PKEY *rsa_from_ne(const char *n64, const char *e64)
{
    BIGNUM *n = b64_bignum(n64), *e = b64_bignum(e64);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    if (!n || !e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
        goto out;
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return pkey;
}

static int add_rsa_key(ms_jwt_keys *k, const char *kid, EVP_PKEY *pkey, const char **why)
{
    if (EVP_PKEY_get_bits(pkey) < MS_JWT_MIN_RSA_BITS) {
        *why = "an RSA key is shorter than 2048 bits";
        return MS_EINVAL;
    }
    if (strlen(kid) >= KID_MAX || !*kid) {
        *why = "a key's kid is empty or too long";
        return MS_EINVAL;
    }
    if (k->nkeys >= MAX_KEYS) {
        *why = "too many keys (at most 16)";
        return MS_EINVAL;
    }
    snprintf(k->keys[k->nkeys].kid, KID_MAX, "%s", kid);
    k->keys[k->nkeys++].pkey = pkey;
    return 0;
}

static int jwks_key(ms_jwt_keys *k, json_t *jwk, const char **why)
{
    if (!json_is_object(jwk)) {
        *why = "a key is not a JSON object";
        return MS_EINVAL;
    }
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *use = json_string_value(json_object_get(jwk, "use"));
    json_t *alg = json_object_get(jwk, "alg");
    if (!kty || strcmp(kty, "RSA") != 0 || (use && strcmp(use, "sig") != 0))
        return 0; /* not ours to use: skipped */
    if (alg && (!json_is_string(alg) || strcmp(json_string_value(alg), "RS256") != 0)) {
        *why = "an RSA key's alg is not RS256";
        return MS_EINVAL;
    }
    const char *kid = json_string_value(json_object_get(jwk, "kid"));
    if (!kid) {
        *why = "an RSA key has no kid";
        return MS_EINVAL;
    }
    EVP_PKEY *pkey = rsa_from_ne(json_string_value(json_object_get(jwk, "n")),
                                 json_string_value(json_object_get(jwk, "e")));
    if (!pkey) {
        *why = "an RSA key's n or e is not a base64url number";
        return MS_EINVAL;
    }
    int rc = add_rsa_key(k, kid, pkey, why);
    if (rc < 0)
        EVP_PKEY_free(pkey);
    return rc;
}

int ms_jwt_keys_jwks(const char *text, size_t n, ms_jwt_keys **out, const char **why)
{
    *out = NULL;
    json_t *doc = json_loadb(text, n, JSON_REJECT_DUPLICATES, NULL);
    json_t *keys = json_object_get(doc, "keys");
    ms_jwt_keys *k = ms_xcalloc(1, sizeof *k);
    k->alg = MS_JWT_RS256;
    int rc = 0;
    if (!json_is_array(keys)) {
        *why = "not a JWKS document ({\"keys\": [...]})";
        rc = MS_EINVAL;
        goto out;
    }
    size_t i;
    json_t *jwk;
    json_array_foreach(keys, i, jwk)
    {
        rc = jwks_key(k, jwk, why);
        if (rc < 0)
            goto out;
    }
    if (k->nkeys == 0) {
        *why = "the JWKS has no RSA signing key";
        rc = MS_EINVAL;
    }
out:
    json_decref(doc);
    if (rc < 0)
        ms_jwt_keys_free(k);
    else
        *out = k;
    return rc;
}

int ms_jwt_keys_jwks_file(const char *path, ms_jwt_keys **out, const char **why)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        *why = "the JWKS file cannot be read";
        return MS_EIO;
    }
    char *text = ms_xmalloc(JWKS_MAX);
    size_t n = fread(text, 1, JWKS_MAX, f);
    int rc;
    if (ferror(f)) {
        *why = "the JWKS file cannot be read";
        rc = MS_EIO;
    } else if (n == JWKS_MAX) {
        *why = "the JWKS file is larger than 1 MiB";
        rc = MS_EINVAL;
    } else {
        rc = ms_jwt_keys_jwks(text, n, out, why);
    }
    fclose(f);
    free(text);
    return rc;
}

int ms_jwt_keys_rs256_pem_file(const char *path, const char *kid, ms_jwt_keys **out,
                               const char **why)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        *why = "the private key file cannot be read";
        return MS_EIO;
    }
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!pkey || !EVP_PKEY_is_a(pkey, "RSA")) {
        EVP_PKEY_free(pkey);
        *why = "the private key file holds no RSA private key (PEM)";
        return MS_EINVAL;
    }
    ms_jwt_keys *k = ms_xcalloc(1, sizeof *k);
    k->alg = MS_JWT_RS256;
    int rc = add_rsa_key(k, kid ? kid : "", pkey, why);
    if (rc < 0) {
        EVP_PKEY_free(pkey);
        ms_jwt_keys_free(k);
        return rc;
    }
    /* the same key object verifies too: a private key holds its public half */
    EVP_PKEY_up_ref(pkey);
    k->signer = pkey;
    *out = k;
    return 0;
}

/* ---- signing ---- */

static int hs256(const ms_jwt_keys *k, const char *data, size_t n, unsigned char mac[HS_LEN])
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), k->secret, (int)k->secret_len, (const unsigned char *)data, n, mac,
              &len) ||
        len != HS_LEN)
        return MS_EINTERNAL;
    return 0;
}

static int rs256_sign(EVP_PKEY *pkey, const char *data, size_t n, ms_buf *sig)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t len = 0;
    int rc = MS_EINTERNAL;
    if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) <= 0 ||
        EVP_DigestSign(ctx, NULL, &len, (const unsigned char *)data, n) <= 0)
        goto out;
    unsigned char *p = (unsigned char *)ms_buf_reserve(sig, len);
    if (EVP_DigestSign(ctx, p, &len, (const unsigned char *)data, n) <= 0)
        goto out;
    sig->n += len;
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

static void add_b64_json(ms_buf *b, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    if (!text)
        MS_BUG("a JSON object could not be serialised");
    ms_base64url_encode(b, text, strlen(text));
    free(text);
}

int ms_jwt_sign(const ms_jwt_keys *k, json_t *claims, char *out, size_t cap)
{
    if (k->alg == MS_JWT_RS256 && !k->signer)
        return MS_EINVAL;
    if (!json_is_object(claims))
        return MS_EINVAL;
    json_t *header =
        json_pack("{s:s, s:s}", "alg", k->alg == MS_JWT_HS256 ? "HS256" : "RS256", "typ", "JWT");
    if (k->alg == MS_JWT_RS256)
        json_object_set_new(header, "kid", json_string(k->keys[0].kid));
    ms_buf b = {0}, sig = {0};
    add_b64_json(&b, header);
    ms_buf_add(&b, ".", 1);
    add_b64_json(&b, claims);
    json_decref(header);
    int rc;
    if (k->alg == MS_JWT_HS256) {
        unsigned char mac[HS_LEN];
        rc = hs256(k, b.p, b.n, mac);
        if (rc == 0)
            ms_buf_add(&sig, mac, sizeof mac);
    } else {
        rc = rs256_sign(k->signer, b.p, b.n, &sig);
    }
    if (rc == 0) {
        ms_buf_add(&b, ".", 1);
        ms_base64url_encode(&b, sig.p, sig.n);
        if (b.n >= cap || b.n > MS_JWT_MAX_LEN)
            rc = MS_ETOOBIG;
    }
    if (rc == 0) {
        memcpy(out, b.p, b.n);
        out[b.n] = '\0';
    }
    ms_buf_release(&b);
    ms_buf_release(&sig);
    return rc;
}

static int64_t clock_now(int64_t now)
{
    return now ? now : (int64_t)time(NULL);
}

int ms_jwt_mint(const ms_jwt_keys *k, const ms_jwt_mint_opts *o, char *out, size_t cap)
{
    if (!o->sub || !o->role || o->ttl_s <= 0)
        return MS_EINVAL;
    int64_t now = clock_now(o->now);
    json_t *claims = json_pack("{s:s, s:s, s:I, s:I}", "sub", o->sub, "role", o->role, "iat",
                               (json_int_t)now, "exp", (json_int_t)(now + o->ttl_s));
    if (o->iss)
        json_object_set_new(claims, "iss", json_string(o->iss));
    if (o->aud)
        json_object_set_new(claims, "aud", json_string(o->aud));
    int rc = ms_jwt_sign(k, claims, out, cap);
    json_decref(claims);
    return rc;
}

int ms_jwt_sign_hs256(const char *secret, const char *sub, const char *role, int64_t ttl_s,
                      char *out, size_t cap)
{
    ms_jwt_keys *k;
    int rc = ms_jwt_keys_hs256(secret, strlen(secret), &k);
    if (rc < 0)
        return rc;
    ms_jwt_mint_opts o = {
        .sub = sub, .role = role, .iss = "microshop", .aud = "microshop", .ttl_s = ttl_s};
    rc = ms_jwt_mint(k, &o, out, cap);
    ms_jwt_keys_free(k);
    return rc;
}

/* ---- verifying ---- */

static const rsa_key *find_kid(const ms_jwt_keys *k, const char *kid)
{
    for (int i = 0; kid && i < k->nkeys; i++)
        if (strcmp(k->keys[i].kid, kid) == 0)
            return &k->keys[i];
    return NULL;
}

static bool rs256_verify(EVP_PKEY *pkey, const char *data, size_t n, const ms_buf *sig)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) > 0 &&
              EVP_DigestVerify(ctx, (const unsigned char *)sig->p, sig->n,
                               (const unsigned char *)data, n) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* A base64url part decoded and parsed as a JSON object, or NULL. */
static json_t *json_part(const char *p, size_t n)
{
    ms_buf raw = {0};
    json_t *doc = NULL;
    if (n > 0 && ms_base64url_decode(&raw, p, n) == 0 && raw.n > 0)
        doc = json_loadb(raw.p, raw.n, JSON_REJECT_DUPLICATES, NULL);
    ms_buf_release(&raw);
    if (doc && !json_is_object(doc)) {
        json_decref(doc);
        doc = NULL;
    }
    return doc;
}

/* Checks the header against the pinned algorithm: the token never chooses it. */
static const char *check_header(const ms_jwt_keys *k, json_t *h, const rsa_key **rsa)
{
    const char *alg = json_string_value(json_object_get(h, "alg"));
    if (!alg)
        return "the token's header has no alg";
    if (strcmp(alg, k->alg == MS_JWT_HS256 ? "HS256" : "RS256") != 0)
        return "the token's algorithm is not the one configured";
    if (json_object_get(h, "crit"))
        return "the token has critical header extensions";
    if (k->alg == MS_JWT_RS256) {
        *rsa = find_kid(k, json_string_value(json_object_get(h, "kid")));
        if (!*rsa)
            return "the token's key id is unknown";
    }
    return NULL;
}

static const char *check_signature(const ms_jwt_keys *k, const rsa_key *rsa, const char *token,
                                   size_t signed_len, const char *s64, size_t s64_len)
{
    ms_buf sig = {0};
    const char *why = NULL;
    if (s64_len == 0 || ms_base64url_decode(&sig, s64, s64_len) < 0) {
        why = "the token is malformed";
    } else if (k->alg == MS_JWT_HS256) {
        unsigned char mac[HS_LEN];
        if (hs256(k, token, signed_len, mac) < 0 || sig.n != HS_LEN ||
            CRYPTO_memcmp(mac, sig.p, HS_LEN) != 0)
            why = "the token's signature is invalid";
    } else if (!rsa || !rs256_verify(rsa->pkey, token, signed_len, &sig)) {
        why = "the token's signature is invalid";
    }
    ms_buf_release(&sig);
    return why;
}

/* An integer NumericDate claim: 1 present, 0 absent, -1 not an integer. */
static int numeric_claim(json_t *claims, const char *name, int64_t *v)
{
    json_t *j = json_object_get(claims, name);
    *v = 0;
    if (!j)
        return 0;
    if (json_is_integer(j)) {
        *v = json_integer_value(j);
        return 1;
    }
    if (json_is_real(j) && json_real_value(j) > -9e15 && json_real_value(j) < 9e15) {
        *v = (int64_t)json_real_value(j);
        return 1;
    }
    return -1;
}

static bool aud_matches(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v) if (json_is_string(v) &&
                                      strcmp(json_string_value(v), want) == 0) return true;
    return false;
}

static const char *check_claims(json_t *c, const ms_jwt_verify_opts *o, ms_jwt_claims *out)
{
    int64_t now = clock_now(o ? o->now : 0);
    int has_exp = numeric_claim(c, "exp", &out->exp);
    int has_nbf = numeric_claim(c, "nbf", &out->nbf);
    int has_iat = numeric_claim(c, "iat", &out->iat);
    if (has_exp < 0 || has_nbf < 0 || has_iat < 0)
        return "the token's exp, nbf or iat is not a number";
    if (has_exp == 0)
        return "the token has no expiry (exp)";
    if (now > out->exp + MS_JWT_LEEWAY_S)
        return "the token has expired";
    if (has_nbf && now + MS_JWT_LEEWAY_S < out->nbf)
        return "the token is not valid yet (nbf)";
    const char *iss = json_string_value(json_object_get(c, "iss"));
    if (o && o->iss && (!iss || strcmp(iss, o->iss) != 0))
        return "the token's issuer is not accepted";
    if (o && o->aud && !aud_matches(json_object_get(c, "aud"), o->aud))
        return "the token's audience is not accepted";
    const char *sub = json_string_value(json_object_get(c, "sub"));
    const char *role = json_string_value(json_object_get(c, "role"));
    if (!sub || !ms_uuid_valid(sub))
        return "the token's subject is not a user id";
    if (!role || (strcmp(role, "customer") != 0 && strcmp(role, "admin") != 0))
        return "the token's role is not customer or admin";
    snprintf(out->sub, sizeof out->sub, "%s", sub);
    snprintf(out->role, sizeof out->role, "%s", role);
    return NULL;
}

int ms_jwt_verify(const ms_jwt_keys *k, const char *token, size_t n, const ms_jwt_verify_opts *o,
                  ms_jwt_claims *out, const char **why)
{
    memset(out, 0, sizeof *out);
    json_t *header = NULL, *claims = NULL;
    const rsa_key *rsa = NULL;
    *why = NULL;
    if (n > MS_JWT_MAX_LEN) {
        *why = "the token is longer than 8 KiB";
        goto out;
    }
    const char *dot1 = memchr(token, '.', n);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', n - (size_t)(dot1 + 1 - token)) : NULL;
    const char *end = token + n;
    if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1))) {
        *why = "the token is malformed (not three parts)";
        goto out;
    }
    header = json_part(token, (size_t)(dot1 - token));
    claims = json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!header || !claims) {
        *why = "the token is malformed (a part is not base64url JSON)";
        goto out;
    }
    *why = check_header(k, header, &rsa);
    if (!*why)
        *why = check_signature(k, rsa, token, (size_t)(dot2 - token), dot2 + 1,
                               (size_t)(end - dot2 - 1));
    if (!*why)
        *why = check_claims(claims, o, out);
out:
    json_decref(header);
    json_decref(claims);
    if (*why) {
        memset(out, 0, sizeof *out);
        return MS_EUNAUTHENTICATED;
    }
    return 0;
}

const char *ms_jwt_claim_setting(const char *name)
{
    const char *v = getenv(name);
    if (!v)
        return "microshop";
    return *v ? v : NULL;
}
