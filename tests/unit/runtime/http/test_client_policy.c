/* test_client_policy.c — the service client's resilience rules alone: the breaker's window and
 * half-open trials, ejection times and caps, active health thresholds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "runtime/http/client_policy.h"

static void record_n(ms_breaker *b, int n, ms_outcome o, uint64_t now)
{
    for (int i = 0; i < n; i++) {
        bool trial;
        assert_true(ms_breaker_admit(b, now, &trial));
        assert_false(trial);
        ms_breaker_record(b, trial, o, now, 5000);
    }
}

static void test_breaker_needs_a_full_window(void **state)
{
    ms_breaker b = {0};
    record_n(&b, 19, MS_OUTCOME_FAIL, 0); /* every one failed, but fewer than 20 */
    assert_int_equal(b.state, MS_BREAKER_CLOSED);
    record_n(&b, 1, MS_OUTCOME_FAIL, 0);
    assert_int_equal(b.state, MS_BREAKER_OPEN);
    bool trial;
    assert_false(ms_breaker_admit(&b, 4999, &trial));
}

static void test_breaker_rolling_window(void **state)
{
    ms_breaker b = {0};
    /* 9 failures in 20: closed; the window then rolls, old successes leave it */
    record_n(&b, 11, MS_OUTCOME_OK, 0);
    record_n(&b, 9, MS_OUTCOME_FAIL, 0);
    assert_int_equal(b.state, MS_BREAKER_CLOSED);
    record_n(&b, 1, MS_OUTCOME_OK, 0); /* replaces an OK: still 9 of 20 */
    assert_int_equal(b.state, MS_BREAKER_CLOSED);
    record_n(&b, 1, MS_OUTCOME_FAIL, 0); /* replaces an OK: 10 of 20 */
    assert_int_equal(b.state, MS_BREAKER_OPEN);
    /* neutral outcomes do not enter the window */
    ms_breaker c = {0};
    record_n(&c, 10, MS_OUTCOME_OK, 0);
    record_n(&c, 30, MS_OUTCOME_NEUTRAL, 0);
    record_n(&c, 9, MS_OUTCOME_FAIL, 0);
    assert_int_equal(c.state, MS_BREAKER_CLOSED);
    assert_int_equal(c.n, 19);
}

static void test_breaker_slow(void **state)
{
    ms_breaker b = {0};
    record_n(&b, 10, MS_OUTCOME_OK, 0);
    record_n(&b, 5, MS_OUTCOME_SLOW, 0);
    record_n(&b, 4, MS_OUTCOME_FAIL, 0);
    record_n(&b, 1, MS_OUTCOME_OK, 0); /* 5 slow, 4 failed of 20: neither half */
    assert_int_equal(b.state, MS_BREAKER_CLOSED);
    record_n(&b, 5, MS_OUTCOME_SLOW, 0); /* 10 slow of 20 */
    assert_int_equal(b.state, MS_BREAKER_OPEN);
}

static void open_breaker(ms_breaker *b)
{
    *b = (ms_breaker){0};
    record_n(b, 20, MS_OUTCOME_FAIL, 1000);
    assert_int_equal(b->state, MS_BREAKER_OPEN);
}

static void test_breaker_half_open(void **state)
{
    ms_breaker b;
    open_breaker(&b);
    bool t[4];
    assert_false(ms_breaker_admit(&b, 5999, &t[0]));
    /* after open_ms: three trials, no more */
    for (int i = 0; i < 3; i++) {
        assert_true(ms_breaker_admit(&b, 6000, &t[i]));
        assert_true(t[i]);
    }
    assert_int_equal(b.state, MS_BREAKER_HALF_OPEN);
    assert_false(ms_breaker_admit(&b, 6000, &t[3]));
    /* a call admitted before it opened says nothing now */
    ms_breaker_record(&b, false, MS_OUTCOME_FAIL, 6000, 5000);
    assert_int_equal(b.state, MS_BREAKER_HALF_OPEN);
    /* a neutral trial gives its place back */
    ms_breaker_record(&b, true, MS_OUTCOME_NEUTRAL, 6000, 5000);
    assert_true(ms_breaker_admit(&b, 6000, &t[3]));
    ms_breaker_record(&b, true, MS_OUTCOME_OK, 6000, 5000);
    ms_breaker_record(&b, true, MS_OUTCOME_OK, 6000, 5000);
    assert_int_equal(b.state, MS_BREAKER_HALF_OPEN);
    ms_breaker_record(&b, true, MS_OUTCOME_OK, 6000, 5000);
    assert_int_equal(b.state, MS_BREAKER_CLOSED);
    assert_int_equal(b.n, 0);

    /* one failed trial opens it again, for open_ms from then */
    open_breaker(&b);
    assert_true(ms_breaker_admit(&b, 7000, &t[0]));
    assert_true(ms_breaker_admit(&b, 7000, &t[1]));
    ms_breaker_record(&b, true, MS_OUTCOME_OK, 7000, 5000);
    ms_breaker_record(&b, true, MS_OUTCOME_SLOW, 7100, 5000);
    assert_int_equal(b.state, MS_BREAKER_OPEN);
    assert_false(ms_breaker_admit(&b, 12099, &t[0]));
    assert_true(ms_breaker_admit(&b, 12100, &t[0]));
    assert_int_equal(b.trials, 1); /* a new round of trials */
}

static void test_eject_times(void **state)
{
    assert_int_equal(ms_eject_ms(30000, 300000, 1), 30000);
    assert_int_equal(ms_eject_ms(30000, 300000, 3), 90000);
    assert_int_equal(ms_eject_ms(30000, 300000, 10), 300000);
    assert_int_equal(ms_eject_ms(30000, 300000, 1000000), 300000);
    assert_int_equal(ms_eject_ms(100, 250, 2), 200);
    assert_int_equal(ms_eject_ms(100, 250, 3), 250);
}

static void test_eject_cap(void **state)
{
    assert_false(ms_eject_allowed(1, 0, 10)); /* never all */
    assert_true(ms_eject_allowed(2, 0, 10));  /* always one */
    assert_false(ms_eject_allowed(2, 1, 10));
    assert_true(ms_eject_allowed(3, 0, 10));
    assert_false(ms_eject_allowed(3, 1, 10));
    assert_true(ms_eject_allowed(3, 1, 100)); /* 100 %: all but one */
    assert_false(ms_eject_allowed(3, 2, 100));
    assert_true(ms_eject_allowed(16, 0, 10));
    assert_false(ms_eject_allowed(16, 1, 10));
    assert_true(ms_eject_allowed(16, 7, 50));
    assert_false(ms_eject_allowed(16, 8, 50));
}

static void test_health_thresholds(void **state)
{
    ms_health h = {0};
    assert_false(ms_health_record(&h, false));
    assert_false(ms_health_record(&h, false));
    assert_false(ms_health_record(&h, true)); /* a pass resets the count */
    assert_false(ms_health_record(&h, false));
    assert_false(ms_health_record(&h, false));
    assert_true(ms_health_record(&h, false)); /* three in a row: down */
    assert_true(h.down);
    assert_false(ms_health_record(&h, false));
    assert_false(ms_health_record(&h, true));
    assert_false(ms_health_record(&h, false)); /* a failure resets the passes */
    assert_false(ms_health_record(&h, true));
    assert_true(ms_health_record(&h, true)); /* two in a row: up */
    assert_false(h.down);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker_needs_a_full_window),
        cmocka_unit_test(test_breaker_rolling_window),
        cmocka_unit_test(test_breaker_slow),
        cmocka_unit_test(test_breaker_half_open),
        cmocka_unit_test(test_eject_times),
        cmocka_unit_test(test_eject_cap),
        cmocka_unit_test(test_health_thresholds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
