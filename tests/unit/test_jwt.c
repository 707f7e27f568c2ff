/* test_jwt.c — runtime/auth/jwt.c (HS256 and RS256, every refusal) and the identity signature
 * of runtime/http/identity.c */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "runtime/auth/jwt.h"
#include "runtime/core/base64.h"
#include "runtime/core/buf.h"
#include "runtime/core/error.h"
#include "runtime/http/identity.h"
#include "runtime/core/banned.h"

static const char SECRET[] = "0123456789abcdef0123456789abcdef-test";
static const char SUB[] = "0190b2a0-1234-7abc-8def-0123456789ab";
static const int64_t NOW = 1800000000;

static char token[MS_JWT_MAX_LEN + 1];
/* what raw_token's HMAC signs with: SECRET, or (key confusion) an RSA public key's PEM */
static const char *hmac_secret = SECRET;

/* ---- helpers ---- */

static ms_jwt_keys *hs_keys(void)
{
    ms_jwt_keys *k;
    assert_int_equal(ms_jwt_keys_hs256(SECRET, strlen(SECRET), &k), 0);
    return k;
}

/* Claims valid at NOW, from a jansson pack of extra members that replace the defaults. */
static json_t *claims_at(int64_t exp)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "sub", SUB, "role", "customer", "iat",
                     (json_int_t)(NOW - 10), "exp", (json_int_t)exp, "iss", "microshop", "aud",
                     "microshop");
}

static const ms_jwt_verify_opts OPTS = {.iss = "microshop", .aud = "microshop", .now = NOW};

static int verify(const ms_jwt_keys *k, const char *t, const char **why)
{
    ms_jwt_claims c;
    return ms_jwt_verify(k, t, strlen(t), &OPTS, &c, why);
}

static void assert_refused(const ms_jwt_keys *k, const char *t, const char *why_part)
{
    const char *why = NULL;
    assert_int_equal(verify(k, t, &why), MS_EUNAUTHENTICATED);
    assert_non_null(why);
    if (!strstr(why, why_part))
        fail_msg("refused for '%s', expected '%s'", why, why_part);
}

static void add_b64(ms_buf *b, const char *text)
{
    ms_base64url_encode(b, text, strlen(text));
}

/* A token from raw header and claims text, HMAC-signed with SECRET (sign true) or with the
 * signature `sig` as given. */
static char *raw_token(const char *header, const char *claims, bool sign, const char *sig)
{
    ms_buf b = {0};
    add_b64(&b, header);
    ms_buf_add(&b, ".", 1);
    add_b64(&b, claims);
    if (sign) {
        unsigned char mac[32];
        unsigned int len;
        HMAC(EVP_sha256(), hmac_secret, (int)strlen(hmac_secret), (unsigned char *)b.p, b.n, mac,
             &len);
        ms_buf_add(&b, ".", 1);
        ms_base64url_encode(&b, mac, len);
    } else {
        ms_buf_add(&b, ".", 1);
        ms_buf_adds(&b, sig);
    }
    ms_buf_add(&b, "", 1);
    char *t = strdup(b.p);
    ms_buf_release(&b);
    return t;
}

static char *claims_text(int64_t exp)
{
    json_t *c = claims_at(exp);
    char *s = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    return s;
}

/* ---- HS256 ---- */

static void test_hs256_round_trip(void **state)
{
    ms_jwt_keys *k = hs_keys();
    assert_int_equal(ms_jwt_keys_alg(k), MS_JWT_HS256);
    ms_jwt_mint_opts o = {.sub = SUB,
                          .role = "admin",
                          .iss = "microshop",
                          .aud = "microshop",
                          .ttl_s = 900,
                          .now = NOW};
    assert_int_equal(ms_jwt_mint(k, &o, token, sizeof token), 0);
    ms_jwt_claims c;
    const char *why = NULL;
    assert_int_equal(ms_jwt_verify(k, token, strlen(token), &OPTS, &c, &why), 0);
    assert_null(why);
    assert_string_equal(c.sub, SUB);
    assert_string_equal(c.role, "admin");
    assert_int_equal(c.iat, NOW);
    assert_int_equal(c.exp, NOW + 900);
    /* without iss/aud requirements, and an audience list holding ours */
    ms_jwt_verify_opts open = {.now = NOW};
    assert_int_equal(ms_jwt_verify(k, token, strlen(token), &open, &c, &why), 0);
    json_t *claims = claims_at(NOW + 60);
    json_object_set_new(claims, "aud", json_pack("[s, s]", "other", "microshop"));
    assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
    assert_int_equal(verify(k, token, &why), 0);
    json_decref(claims);
    ms_jwt_keys_free(k);
}

static void test_hs256_short_secret_refused(void **state)
{
    ms_jwt_keys *k = NULL;
    assert_int_equal(ms_jwt_keys_hs256("short", 5, &k), MS_EINVAL);
    assert_null(k);
    assert_int_equal(
        ms_jwt_sign_hs256("0123456789abcdef0123456789abcde", SUB, "admin", 60, token, sizeof token),
        MS_EINVAL);
}

static void test_sign_hs256_for_the_supervisor(void **state)
{
    assert_int_equal(ms_jwt_sign_hs256(SECRET, SUB, "customer", 60, token, sizeof token), 0);
    ms_jwt_keys *k = hs_keys();
    ms_jwt_verify_opts now = {.iss = "microshop", .aud = "microshop"};
    ms_jwt_claims c;
    const char *why;
    assert_int_equal(ms_jwt_verify(k, token, strlen(token), &now, &c, &why), 0);
    assert_string_equal(c.role, "customer");
    assert_true(c.exp - c.iat == 60);
    char small[32];
    assert_int_equal(ms_jwt_sign_hs256(SECRET, SUB, "customer", 60, small, sizeof small),
                     MS_ETOOBIG);
    ms_jwt_keys_free(k);
}

static void test_hs256_bad_signature(void **state)
{
    ms_jwt_keys *k = hs_keys();
    json_t *claims = claims_at(NOW + 60);
    assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
    size_t n = strlen(token);
    token[n - 2] = token[n - 2] == 'A' ? 'B' : 'A';
    assert_refused(k, token, "signature is invalid");
    /* another secret */
    ms_jwt_keys *other;
    assert_int_equal(ms_jwt_keys_hs256("another secret of at least 32 bytes!", 36, &other), 0);
    assert_int_equal(ms_jwt_sign(other, claims, token, sizeof token), 0);
    assert_refused(k, token, "signature is invalid");
    /* a truncated signature */
    assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
    token[strlen(token) - 4] = '\0';
    assert_refused(k, token, "signature is invalid");
    json_decref(claims);
    ms_jwt_keys_free(other);
    ms_jwt_keys_free(k);
}

static void test_alg_none_and_others_refused(void **state)
{
    ms_jwt_keys *k = hs_keys();
    char *c = claims_text(NOW + 60);
    char *t = raw_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", c, false, "");
    assert_refused(k, t, "algorithm is not the one configured");
    free(t);
    t = raw_token("{\"alg\":\"none\"}", c, true, NULL); /* even with a valid HMAC */
    assert_refused(k, t, "algorithm is not the one configured");
    free(t);
    t = raw_token("{\"alg\":\"HS512\"}", c, true, NULL);
    assert_refused(k, t, "algorithm is not the one configured");
    free(t);
    t = raw_token("{\"alg\":\"RS256\",\"kid\":\"k\"}", c, true, NULL);
    assert_refused(k, t, "algorithm is not the one configured");
    free(t);
    t = raw_token("{\"typ\":\"JWT\"}", c, true, NULL);
    assert_refused(k, t, "no alg");
    free(t);
    t = raw_token("{\"alg\":\"HS256\",\"crit\":[\"x\"],\"x\":1}", c, true, NULL);
    assert_refused(k, t, "critical");
    free(t);
    /* the same header without crit is fine: the helper signs right */
    t = raw_token("{\"alg\":\"HS256\"}", c, true, NULL);
    const char *why;
    assert_int_equal(verify(k, t, &why), 0);
    free(t);
    free(c);
    ms_jwt_keys_free(k);
}

static void test_malformed_refused(void **state)
{
    ms_jwt_keys *k = hs_keys();
    assert_refused(k, "", "malformed");
    assert_refused(k, "abc", "malformed");
    assert_refused(k, "a.b", "malformed");
    assert_refused(k, "a.b.c.d", "malformed");
    assert_refused(k, "..", "malformed");
    assert_refused(k, "eyJ!.eyJ.c2ln", "malformed");
    char *c = claims_text(NOW + 60);
    char *t = raw_token("not json", c, true, NULL);
    assert_refused(k, t, "malformed");
    free(t);
    t = raw_token("[\"HS256\"]", c, true, NULL);
    assert_refused(k, t, "malformed");
    free(t);
    t = raw_token("{\"alg\":\"HS256\"}", "[1,2]", true, NULL);
    assert_refused(k, t, "malformed");
    free(t);
    t = raw_token("{\"alg\":\"HS256\",\"alg\":\"none\"}", c, true, NULL); /* duplicate keys */
    assert_refused(k, t, "malformed");
    free(t);
    t = raw_token("{\"alg\":\"HS256\"}", c, false, "not*base64");
    assert_refused(k, t, "malformed");
    free(t);
    free(c);
    ms_jwt_keys_free(k);
}

static void test_too_long_refused(void **state)
{
    ms_jwt_keys *k = hs_keys();
    json_t *claims = claims_at(NOW + 60);
    char pad[7000];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    json_object_set_new(claims, "pad", json_string(pad));
    /* the signer refuses to make it, so build it by hand */
    assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), MS_ETOOBIG);
    char *c = json_dumps(claims, JSON_COMPACT);
    char *t = raw_token("{\"alg\":\"HS256\"}", c, true, NULL);
    assert_true(strlen(t) > MS_JWT_MAX_LEN);
    assert_refused(k, t, "longer than 8 KiB");
    free(t);
    free(c);
    json_decref(claims);
    ms_jwt_keys_free(k);
}

static void test_time_claims(void **state)
{
    ms_jwt_keys *k = hs_keys();
    const char *why;
    /* exp: passed beyond the leeway is refused, within it accepted */
    json_t *claims = claims_at(NOW - MS_JWT_LEEWAY_S - 1);
    assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
    assert_refused(k, token, "expired");
    json_decref(claims);
    claims = claims_at(NOW - MS_JWT_LEEWAY_S + 1);
    assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
    assert_int_equal(verify(k, token, &why), 0);
    /* exp missing, or not a number */
    json_object_del(claims, "exp");
    assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
    assert_refused(k, token, "no expiry");
    json_object_set_new(claims, "exp", json_string("tomorrow"));
    assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
    assert_refused(k, token, "not a number");
    json_decref(claims);
    /* nbf: in the future beyond the leeway is refused, within it accepted */
    claims = claims_at(NOW + 600);
    json_object_set_new(claims, "nbf", json_integer(NOW + MS_JWT_LEEWAY_S + 1));
    assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
    assert_refused(k, token, "not valid yet");
    json_object_set_new(claims, "nbf", json_integer(NOW + MS_JWT_LEEWAY_S - 1));
    assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
    assert_int_equal(verify(k, token, &why), 0);
    json_decref(claims);
    ms_jwt_keys_free(k);
}

static void test_issuer_audience_subject_role(void **state)
{
    ms_jwt_keys *k = hs_keys();
    static const struct {
        const char *claim, *value, *why;
    } cases[] = {
        {"iss", "someone-else", "issuer"},
        {"aud", "someone-else", "audience"},
        {"sub", "not-a-uuid", "subject"},
        {"role", "root", "role"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *claims = claims_at(NOW + 60);
        json_object_set_new(claims, cases[i].claim, json_string(cases[i].value));
        assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
        assert_refused(k, token, cases[i].why);
        json_object_del(claims, cases[i].claim);
        assert_int_equal(ms_jwt_sign(k, claims, token, sizeof token), 0);
        assert_refused(k, token, cases[i].why); /* missing is refused too */
        json_decref(claims);
    }
    ms_jwt_keys_free(k);
}

/* ---- RS256 ---- */

typedef struct rsa_fixture {
    char dir[64], pem[128], jwks[128];
    EVP_PKEY *pkey;
} rsa_fixture;

static rsa_fixture rsa;

static char *bn_b64(EVP_PKEY *pkey, const char *name)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pkey, name, &bn), 1);
    int n = BN_num_bytes(bn);
    unsigned char *raw = malloc((size_t)n);
    BN_bn2bin(bn, raw);
    ms_buf b = {0};
    ms_base64url_encode(&b, raw, (size_t)n);
    ms_buf_add(&b, "", 1);
    char *s = strdup(b.p);
    ms_buf_release(&b);
    free(raw);
    BN_free(bn);
    return s;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A JWKS with `pkey` under kid "k1" (and an EC key, which is skipped). */
static char *jwks_text(EVP_PKEY *pkey, const char *kid, const char *alg)
{
    char *n = bn_b64(pkey, OSSL_PKEY_PARAM_RSA_N), *e = bn_b64(pkey, OSSL_PKEY_PARAM_RSA_E);
    json_t *key = json_pack("{s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "kid", kid, "n", n, "e", e,
                            "use", "sig");
    if (alg)
        json_object_set_new(key, "alg", json_string(alg));
    json_t *doc = json_pack("{s:[{s:s, s:s, s:s}, o]}", "keys", "kty", "EC", "kid", "ec1", "crv",
                            "P-256", key);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    free(n);
    free(e);
    return text;
}

static int rsa_setup(void **state)
{
    snprintf(rsa.dir, sizeof rsa.dir, "/tmp/test_jwt.XXXXXX");
    if (!mkdtemp(rsa.dir))
        return -1;
    snprintf(rsa.pem, sizeof rsa.pem, "%s/key.pem", rsa.dir);
    snprintf(rsa.jwks, sizeof rsa.jwks, "%s/jwks.json", rsa.dir);
    rsa.pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    if (!rsa.pkey)
        return -1;
    FILE *f = fopen(rsa.pem, "w");
    if (!f || !PEM_write_PrivateKey(f, rsa.pkey, NULL, NULL, 0, NULL, NULL))
        return -1;
    fclose(f);
    char *text = jwks_text(rsa.pkey, "k1", "RS256");
    write_file(rsa.jwks, text);
    free(text);
    return 0;
}

static int rsa_teardown(void **state)
{
    EVP_PKEY_free(rsa.pkey);
    unlink(rsa.pem);
    unlink(rsa.jwks);
    rmdir(rsa.dir);
    return 0;
}

static ms_jwt_keys *signer(const char *kid)
{
    ms_jwt_keys *k;
    const char *why = NULL;
    assert_int_equal(ms_jwt_keys_rs256_pem_file(rsa.pem, kid, &k, &why), 0);
    return k;
}

static ms_jwt_keys *verifier(void)
{
    ms_jwt_keys *k;
    const char *why = NULL;
    int rc = ms_jwt_keys_jwks_file(rsa.jwks, &k, &why);
    if (rc < 0)
        fail_msg("jwks refused: %s", why);
    return k;
}

static void test_rs256_round_trip(void **state)
{
    ms_jwt_keys *s = signer("k1"), *v = verifier();
    assert_int_equal(ms_jwt_keys_alg(v), MS_JWT_RS256);
    ms_jwt_mint_opts o = {
        .sub = SUB, .role = "customer", .iss = "microshop", .aud = "microshop", .ttl_s = 60};
    o.now = NOW;
    assert_int_equal(ms_jwt_mint(s, &o, token, sizeof token), 0);
    const char *why;
    ms_jwt_claims c;
    assert_int_equal(ms_jwt_verify(v, token, strlen(token), &OPTS, &c, &why), 0);
    assert_string_equal(c.sub, SUB);
    assert_string_equal(c.role, "customer");
    /* the signer verifies its own tokens too */
    assert_int_equal(verify(s, token, &why), 0);
    /* a verify-only key set cannot sign */
    json_t *claims = claims_at(NOW + 60);
    assert_int_equal(ms_jwt_sign(v, claims, token, sizeof token), MS_EINVAL);
    json_decref(claims);
    ms_jwt_keys_free(s);
    ms_jwt_keys_free(v);
}

static void test_rs256_refusals(void **state)
{
    ms_jwt_keys *s = signer("k1"), *v = verifier();
    json_t *claims = claims_at(NOW + 60);
    /* bad signature */
    assert_int_equal(ms_jwt_sign(s, claims, token, sizeof token), 0);
    size_t n = strlen(token);
    token[n - 3] = token[n - 3] == 'A' ? 'B' : 'A';
    assert_refused(v, token, "signature is invalid");
    /* unknown kid */
    ms_jwt_keys *other = signer("k2");
    assert_int_equal(ms_jwt_sign(other, claims, token, sizeof token), 0);
    assert_refused(v, token, "key id is unknown");
    /* no kid at all */
    char *c = json_dumps(claims, JSON_COMPACT);
    char *t = raw_token("{\"alg\":\"RS256\"}", c, false, "c2ln");
    assert_refused(v, t, "key id is unknown");
    free(t);
    /* key confusion: an HS256 token whose secret is the public key's text */
    BIO *mem = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(mem, rsa.pkey), 1);
    char *pub;
    long publen = BIO_get_mem_data(mem, &pub);
    char *secret = malloc((size_t)publen + 1); /* the BIO's text is not NUL-terminated */
    assert_non_null(secret);
    memcpy(secret, pub, (size_t)publen);
    secret[publen] = '\0';
    hmac_secret = secret;
    t = raw_token("{\"alg\":\"HS256\",\"kid\":\"k1\"}", c, true, NULL);
    assert_refused(v, t, "algorithm is not the one configured");
    free(t);
    free((char *)hmac_secret);
    hmac_secret = SECRET;
    BIO_free(mem);
    /* an HS256 key set refuses RS256 tokens */
    ms_jwt_keys *hs = hs_keys();
    assert_int_equal(ms_jwt_sign(s, claims, token, sizeof token), 0);
    assert_refused(hs, token, "algorithm is not the one configured");
    /* alg none with a known kid */
    t = raw_token("{\"alg\":\"none\",\"kid\":\"k1\"}", c, false, "");
    assert_refused(v, t, "algorithm is not the one configured");
    free(t);
    free(c);
    /* expired, with RSA too */
    json_decref(claims);
    claims = claims_at(NOW - 3600);
    assert_int_equal(ms_jwt_sign(s, claims, token, sizeof token), 0);
    assert_refused(v, token, "expired");
    json_decref(claims);
    ms_jwt_keys_free(hs);
    ms_jwt_keys_free(other);
    ms_jwt_keys_free(s);
    ms_jwt_keys_free(v);
}

static void assert_jwks_refused(const char *text, const char *why_part)
{
    ms_jwt_keys *k = NULL;
    const char *why = NULL;
    assert_int_equal(ms_jwt_keys_jwks(text, strlen(text), &k, &why), MS_EINVAL);
    assert_null(k);
    assert_non_null(why);
    if (!strstr(why, why_part))
        fail_msg("refused for '%s', expected '%s'", why, why_part);
}

static void test_jwks_refusals(void **state)
{
    assert_jwks_refused("", "not a JWKS");
    assert_jwks_refused("{\"keys\":{}}", "not a JWKS");
    assert_jwks_refused("{\"keys\":[]}", "no RSA signing key");
    assert_jwks_refused("{\"keys\":[{\"kty\":\"EC\",\"kid\":\"e\"}]}", "no RSA signing key");
    assert_jwks_refused("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"!!\",\"e\":\"AQAB\"}]}",
                        "n or e");
    char *text = jwks_text(rsa.pkey, "k1", "RS512");
    assert_jwks_refused(text, "alg is not RS256");
    free(text);
    char *n = bn_b64(rsa.pkey, OSSL_PKEY_PARAM_RSA_N);
    json_t *doc = json_pack("{s:[{s:s, s:s, s:s}]}", "keys", "kty", "RSA", "n", n, "e", "AQAB");
    text = json_dumps(doc, JSON_COMPACT);
    assert_jwks_refused(text, "no kid");
    free(text);
    json_decref(doc);
    free(n);
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    assert_non_null(small);
    text = jwks_text(small, "small", NULL);
    assert_jwks_refused(text, "shorter than 2048");
    free(text);
    EVP_PKEY_free(small);
    /* a missing file and a file without a private key */
    ms_jwt_keys *k = NULL;
    const char *why;
    assert_int_equal(ms_jwt_keys_jwks_file("/nonexistent/jwks.json", &k, &why), MS_EIO);
    assert_int_equal(ms_jwt_keys_rs256_pem_file(rsa.jwks, "k1", &k, &why), MS_EINVAL);
    assert_null(k);
}

/* ---- identity signature ---- */

static void test_identity_signature(void **state)
{
    char a[MS_IDENTITY_SIG_MAX], b[MS_IDENTITY_SIG_MAX];
    assert_int_equal(ms_identity_sign_with(SECRET, strlen(SECRET), 1700000000, SUB, "customer",
                                           "GET", "/api/v1/orders?limit=5", a, sizeof a),
                     0);
    /* an independent HMAC over the documented message */
    char msg[256];
    snprintf(msg, sizeof msg, "v1\n1700000000\n%s\ncustomer\nGET\n/api/v1/orders?limit=5", SUB);
    unsigned char mac[32];
    unsigned int len;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (unsigned char *)msg, strlen(msg), mac, &len);
    ms_buf want = {0};
    ms_buf_adds(&want, "v1;t=1700000000;sig=");
    ms_base64url_encode(&want, mac, len);
    ms_buf_add(&want, "", 1);
    assert_string_equal(a, want.p);
    ms_buf_release(&want);
    /* every part is bound: another method, path, role or time signs differently */
    assert_int_equal(ms_identity_sign_with(SECRET, strlen(SECRET), 1700000000, SUB, "customer",
                                           "DELETE", "/api/v1/orders?limit=5", b, sizeof b),
                     0);
    assert_string_not_equal(a, b);
    assert_int_equal(ms_identity_sign_with(SECRET, strlen(SECRET), 1700000000, SUB, "admin", "GET",
                                           "/api/v1/orders?limit=5", b, sizeof b),
                     0);
    assert_string_not_equal(a, b);
    char tiny[8];
    assert_int_equal(ms_identity_sign_with(SECRET, strlen(SECRET), 1, SUB, "admin", "GET", "/",
                                           tiny, sizeof tiny),
                     MS_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest hs[] = {
        cmocka_unit_test(test_hs256_round_trip),
        cmocka_unit_test(test_hs256_short_secret_refused),
        cmocka_unit_test(test_sign_hs256_for_the_supervisor),
        cmocka_unit_test(test_hs256_bad_signature),
        cmocka_unit_test(test_alg_none_and_others_refused),
        cmocka_unit_test(test_malformed_refused),
        cmocka_unit_test(test_too_long_refused),
        cmocka_unit_test(test_time_claims),
        cmocka_unit_test(test_issuer_audience_subject_role),
        cmocka_unit_test(test_identity_signature),
    };
    const struct CMUnitTest rs[] = {
        cmocka_unit_test(test_rs256_round_trip),
        cmocka_unit_test(test_rs256_refusals),
        cmocka_unit_test(test_jwks_refusals),
    };
    int failed = cmocka_run_group_tests_name("hs256", hs, NULL, NULL);
    failed += cmocka_run_group_tests_name("rs256", rs, rsa_setup, rsa_teardown);
    return failed;
}
