/* test_id.c — UUIDv7 and RFC 3339 timestamps (id.h), including the per-thread caches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/core/id.h"
#include "runtime/core/banned.h"

/* The realtime clock's second, as ms_time_now reads it: time() reads a coarse clock that lags
 * by up to a tick, so at a second's edge it could name the second before the timestamp's. */
static time_t realtime_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec;
}

static void test_time_format_and_order(void **state)
{
    (void)state;
    char prev[MS_TIME_LEN + 1] = "";
    for (int i = 0; i < 3000; i++) { /* across at least one second boundary */
        char now[MS_TIME_LEN + 1];
        time_t before = realtime_seconds();
        ms_time_now(now);
        time_t after = realtime_seconds();
        assert_int_equal(strlen(now), MS_TIME_LEN);
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *rest = strptime(now, "%Y-%m-%dT%H:%M:%S", &tm);
        assert_non_null(rest);
        assert_true(rest[0] == '.' && rest[4] == 'Z' && rest[5] == '\0');
        for (int k = 1; k <= 3; k++)
            assert_true(rest[k] >= '0' && rest[k] <= '9');
        time_t t = timegm(&tm);
        assert_true(t >= before && t <= after); /* the clock's second, however slow the call */
        assert_true(strcmp(prev, now) <= 0);    /* sorts as text, never goes back */
        memcpy(prev, now, sizeof now);
        if (i % 100 == 0)
            usleep(1000);
    }
}

static int compare_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* A given time, also right after ms_time_now cached another second on this thread. */
static void test_time_of_given_milliseconds(void **state)
{
    (void)state;
    char out[MS_TIME_LEN + 1], now[MS_TIME_LEN + 1];
    ms_time_now(now);
    ms_time_format(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    ms_time_format(1764979200123ULL, out);
    assert_string_equal(out, "2025-12-06T00:00:00.123Z");
    ms_time_format(1764979259009ULL, out);
    assert_string_equal(out, "2025-12-06T00:00:59.009Z");
}

static void test_uuids_valid_and_distinct(void **state)
{
    (void)state;
    enum { N = 2000 }; /* many refills of the per-thread pool */
    static char ids[N][MS_UUID_LEN + 1];
    for (int i = 0; i < N; i++) {
        ms_uuid_new(ids[i]);
        assert_true(ms_uuid_valid(ids[i]));
        assert_int_equal(ids[i][14], '7'); /* version 7 */
        assert_true(strchr("89ab", ids[i][19]) != NULL);
    }
    qsort(ids, N, sizeof ids[0], compare_ids);
    for (int i = 1; i < N; i++)
        assert_true(strcmp(ids[i - 1], ids[i]) != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_format_and_order),
        cmocka_unit_test(test_time_of_given_milliseconds),
        cmocka_unit_test(test_uuids_valid_and_distinct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
