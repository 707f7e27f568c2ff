/* test_sha256.c — sha256.c against the FIPS 180-4 / NIST example vectors, and name-based ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/core/id.h"
#include "runtime/core/sha256.h"
#include "runtime/core/banned.h"

static void test_known_vectors(void **state)
{
    char hex[65];
    ms_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ms_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ms_sha256_hex(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_million_a_in_pieces(void **state)
{
    /* one million 'a' fed in uneven pieces: exercises block boundaries */
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    ms_sha256 s;
    ms_sha256_init(&s);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        ms_sha256_update(&s, chunk, n);
        left -= n;
    }
    unsigned char d[32];
    ms_sha256_final(&s, d);
    static const unsigned char want[32] = {0xcd, 0xc7, 0x6e, 0x5c, 0x99, 0x14, 0xfb, 0x92,
                                           0x81, 0xa1, 0xc7, 0xe2, 0x84, 0xd7, 0x3e, 0x67,
                                           0xf1, 0x80, 0x9a, 0x48, 0xa4, 0x97, 0x20, 0x0e,
                                           0x04, 0x6d, 0x39, 0xcc, 0xc7, 0x11, 0x2c, 0xd0};
    assert_memory_equal(d, want, 32);
}

static void test_uuid_from_name(void **state)
{
    char a[37], b[37], c[37];
    ms_uuid_from_name("user-1/key-1", 12, a);
    ms_uuid_from_name("user-1/key-1", 12, b);
    ms_uuid_from_name("user-1/key-2", 12, c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_true(ms_uuid_valid(a));
    assert_int_equal(a[14], '8'); /* version 8 */
    assert_true(strchr("89ab", a[19]) != NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_million_a_in_pieces),
        cmocka_unit_test(test_uuid_from_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
