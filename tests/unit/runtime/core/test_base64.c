/* test_base64.c — base64url without padding: RFC 4648 vectors, round trips, bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/core/base64.h"
#include "runtime/core/error.h"
#include "runtime/core/banned.h"

static void test_rfc4648_vectors(void **state)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        ms_buf out;
        ms_buf_init(&out, 0);
        ms_base64url_encode(&out, plain[i], strlen(plain[i]));
        ms_buf_add(&out, "", 1);
        assert_string_equal(out.p, coded[i]);
        out.n = 0;
        assert_int_equal(ms_base64url_decode(&out, coded[i], strlen(coded[i])), 0);
        assert_int_equal(out.n, strlen(plain[i]));
        assert_memory_equal(out.p, plain[i], out.n);
        ms_buf_release(&out);
    }
}

static void test_url_alphabet_round_trip(void **state)
{
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    ms_buf out, back;
    ms_buf_init(&out, 0);
    ms_buf_init(&back, 0);
    ms_base64url_encode(&out, all, sizeof all);
    assert_null(memchr(out.p, '+', out.n));
    assert_null(memchr(out.p, '/', out.n));
    assert_null(memchr(out.p, '=', out.n));
    assert_int_equal(ms_base64url_decode(&back, out.p, out.n), 0);
    assert_int_equal(back.n, sizeof all);
    assert_memory_equal(back.p, all, sizeof all);
    ms_buf_release(&out);
    ms_buf_release(&back);
}

static void test_bad_input_changes_nothing(void **state)
{
    static const char *const bad[] = {"Zm9v=", "Zm+v", "Zm/v", "Z", "Zm9vY", "Zm9 v"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ms_buf out;
        ms_buf_init(&out, 0);
        assert_int_equal(ms_base64url_decode(&out, bad[i], strlen(bad[i])), MS_EINVAL);
        assert_int_equal(out.n, 0);
        ms_buf_release(&out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_url_alphabet_round_trip),
        cmocka_unit_test(test_bad_input_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
