/* test_token_cache.c — token_cache.c: a verified token is found again, only byte for byte,
 * and never past its times; over-long tokens are not kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "services/gateway/token_cache.h"
#include "runtime/core/banned.h"

enum { NOW = 1800000000 };

static ms_jwt_claims claims(int64_t nbf, int64_t exp)
{
    ms_jwt_claims c = {.iat = NOW - 10, .nbf = nbf, .exp = exp};
    snprintf(c.sub, sizeof c.sub, "%s", "01a24ae9-9dee-71f4-86d2-a43ab1d3e4c4");
    snprintf(c.role, sizeof c.role, "%s", "customer");
    return c;
}

static void test_a_verified_token_is_found_again(void **state)
{
    (void)state;
    const char *t = "aaa.bbb.ccc";
    ms_jwt_claims in = claims(0, NOW + 600), out;
    assert_false(gateway_token_cache_get(t, strlen(t), NOW, &out));
    gateway_token_cache_put(t, strlen(t), &in);
    assert_true(gateway_token_cache_get(t, strlen(t), NOW, &out));
    assert_string_equal(out.sub, in.sub);
    assert_string_equal(out.role, "customer");
    assert_int_equal(out.exp, NOW + 600);
}

static void test_only_the_same_bytes_match(void **state)
{
    (void)state;
    const char *t = "hdr.payload.sig1";
    ms_jwt_claims in = claims(0, NOW + 600), out;
    gateway_token_cache_put(t, strlen(t), &in);
    const char *forged = "hdr.payload.sig2"; /* same length, another signature */
    assert_false(gateway_token_cache_get(forged, strlen(forged), NOW, &out));
    assert_false(gateway_token_cache_get(t, strlen(t) - 1, NOW, &out));
}

static void test_times_are_checked_at_every_use(void **state)
{
    (void)state;
    const char *t = "exp.iring.token";
    ms_jwt_claims in = claims(NOW + 100, NOW + 600), out;
    gateway_token_cache_put(t, strlen(t), &in);
    assert_false(gateway_token_cache_get(t, strlen(t), NOW, &out)); /* not yet valid */
    assert_true(gateway_token_cache_get(t, strlen(t), NOW + 100 - MS_JWT_LEEWAY_S, &out));
    assert_true(gateway_token_cache_get(t, strlen(t), NOW + 600 + MS_JWT_LEEWAY_S, &out));
    assert_false(gateway_token_cache_get(t, strlen(t), NOW + 601 + MS_JWT_LEEWAY_S, &out));
}

static void test_over_long_tokens_are_not_kept(void **state)
{
    (void)state;
    static char big[GATEWAY_TOKEN_CACHE_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    ms_jwt_claims in = claims(0, NOW + 600), out;
    gateway_token_cache_put(big, strlen(big), &in);
    assert_false(gateway_token_cache_get(big, strlen(big), NOW, &out));
    assert_false(gateway_token_cache_get("", 0, NOW, &out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_verified_token_is_found_again),
        cmocka_unit_test(test_only_the_same_bytes_match),
        cmocka_unit_test(test_times_are_checked_at_every_use),
        cmocka_unit_test(test_over_long_tokens_are_not_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
