/* test_http_etag.c — If-None-Match matching (RFC 9110 13.1.2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "runtime/http/http.h"
#include "runtime/core/banned.h"

static void test_matches(void **state)
{
    (void)state;
    assert_true(ms_http_none_match("\"3\"", "\"3\""));
    assert_true(ms_http_none_match("*", "\"3\""));
    assert_true(ms_http_none_match("W/\"3\"", "\"3\"")); /* weak comparison */
    assert_true(ms_http_none_match("\"3\"", "W/\"3\""));
    assert_true(ms_http_none_match("\"1\", \"2\",\"3\"", "\"3\""));
    assert_true(ms_http_none_match(" \"9\" ,\tW/\"3\"", "\"3\""));
    assert_true(ms_http_none_match("\"\"", "\"\""));
}

static void test_does_not_match(void **state)
{
    (void)state;
    assert_false(ms_http_none_match(NULL, "\"3\""));
    assert_false(ms_http_none_match("\"3\"", NULL));
    assert_false(ms_http_none_match("", "\"3\""));
    assert_false(ms_http_none_match("\"4\"", "\"3\""));
    assert_false(ms_http_none_match("\"33\"", "\"3\""));
    assert_false(ms_http_none_match("\"1\", \"2\"", "\"3\""));
    /* malformed: unquoted, unterminated, garbage before a good tag */
    assert_false(ms_http_none_match("3", "\"3\""));
    assert_false(ms_http_none_match("\"3", "\"3\""));
    assert_false(ms_http_none_match("x, \"3\"", "\"3\""));
    assert_false(ms_http_none_match("w/\"3\"", "\"3\"")); /* W is case-sensitive */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches),
        cmocka_unit_test(test_does_not_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
