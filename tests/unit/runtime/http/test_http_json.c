/* test_http_json.c — http_json.c's content-type rule (is_json_type) and problem.c's one mapping
 * of error codes to statuses */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/http/http_json.c" /* for the static is_json_type */

static void test_json_type_accepted(void **state)
{
    static const char *const ok[] = {
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/json; CHARSET=Utf-8",
        "application/json; charset=\"utf-8\"",
        "  application/json  ",
        "application/merge-patch+json",
        "application/problem+json; charset=utf-8",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!is_json_type(ok[i]))
            fail_msg("'%s' should be accepted", ok[i]);
}

static void test_json_type_rejected(void **state)
{
    static const char *const bad[] = {
        "",
        "text/plain",
        "text/json",
        "application/json; charset=latin1",
        "application/json; charset=iso-8859-1",
        "application/json; boundary=x",
        "application/jsonx",
        "application/json-patch",
        "application/+json",
        "application/x-www-form-urlencoded",
        "multipart/form-data+json",
        "application/xml",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (is_json_type(bad[i]))
            fail_msg("'%s' should be rejected", bad[i]);
    assert_false(is_json_type(NULL));
}

static void test_status_for_every_code(void **state)
{
    static const struct {
        int code, status;
    } want[] = {
        {MS_ENOMEM, 500},        {MS_EINVAL, 400},     {MS_ENOTFOUND, 404},
        {MS_ECONFLICT, 409},     {MS_EBUSY, 503},      {MS_ETIMEDOUT, 504},
        {MS_EPOOLTIMEOUT, 503},  {MS_EDB, 500},        {MS_ECONN, 503},
        {MS_EIO, 500},           {MS_ETOOBIG, 413},    {MS_ESHUTDOWN, 503},
        {MS_EINTERNAL, 500},     {MS_EMALFORMED, 400}, {MS_EUNAUTHENTICATED, 401},
        {MS_EFORBIDDEN, 403},    {MS_EMEDIATYPE, 415}, {MS_EVALIDATION, 422},
        {MS_EPRECONDITION, 428}, {MS_EDECLINED, 402},
    };
    /* every code of the X-macro table has an expectation here */
    static const int all[] = {
#define CODE_(name, msg) MS_E##name,
        MS_ERRNO_MAP(CODE_)
#undef CODE_
    };
    size_t n = sizeof want / sizeof want[0];
    assert_int_equal(n, sizeof all / sizeof all[0]);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        size_t j = 0;
        while (j < n && want[j].code != all[i])
            j++;
        if (j == n)
            fail_msg("no expected status for %s", ms_errname(all[i]));
        int got = ms_http_status_for(all[i]);
        if (got != want[j].status)
            fail_msg("%s: expected %d, got %d", ms_errname(all[i]), want[j].status, got);
    }
}

static void test_status_for_unknown_code(void **state)
{
    assert_int_equal(ms_http_status_for(-1000), 500);
}

/* Codes are distinct, each has its own message and name, and the new ones came after the old
 * ones (a code read in an old log names the same error). */
static void test_error_codes_distinct_and_named(void **state)
{
    static const int all[] = {
#define CODE_(name, msg) MS_E##name,
        MS_ERRNO_MAP(CODE_)
#undef CODE_
    };
    size_t n = sizeof all / sizeof all[0];
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(all[i], all[0] - (int)i); /* one table, one code each, in order */
        assert_string_not_equal(ms_strerror(all[i]), "unknown error");
        assert_string_not_equal(ms_errname(all[i]), "EUNKNOWN");
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(ms_strerror(all[i]), ms_strerror(all[j]));
    }
    assert_true(MS_EMALFORMED < MS_EINTERNAL);
    assert_string_equal(ms_errname(MS_EPRECONDITION), "EPRECONDITION");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_type_accepted),
        cmocka_unit_test(test_json_type_rejected),
        cmocka_unit_test(test_status_for_every_code),
        cmocka_unit_test(test_status_for_unknown_code),
        cmocka_unit_test(test_error_codes_distinct_and_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
