/* test_arena_buf.c — arena.c (with its cleanups), buf.c and id.c (UUIDv7 layout and order,
 * timestamps) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "runtime/core/arena.h"
#include "runtime/core/buf.h"
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

/* ---- arena ---- */

static void test_arena_alignment(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    static const size_t sizes[] = {1, 3, 16, 17, 31, 100, 1, 7, 4000, 5, 9000, 2};
    char *prev = NULL;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *p = ms_arena_alloc(&a, sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xAB, sizes[i]); /* ASan: the whole size is ours */
        assert_true(p != prev);
        prev = p;
    }
    ms_arena_release(&a);
    assert_null(a.head);
}

static void test_arena_allocations_do_not_overlap(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    enum { N = 600 }; /* spans several 4 KiB chunks */
    unsigned char *ptrs[N];
    for (int i = 0; i < N; i++) {
        ptrs[i] = ms_arena_alloc(&a, 24);
        memset(ptrs[i], i & 0xFF, 24);
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 24; j++)
            if (ptrs[i][j] != (i & 0xFF))
                fail_msg("allocation %d was overwritten", i);
    ms_arena_release(&a);
}

static void test_arena_big_allocation(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    char *small = ms_arena_alloc(&a, 10);
    memcpy(small, "before", 7);
    size_t big_n = 3 * 4096 + 5;
    char *big = ms_arena_alloc(&a, big_n);
    assert_int_equal((uintptr_t)big % 16, 0);
    memset(big, 'z', big_n);
    assert_int_equal(big[0], 'z');
    assert_int_equal(big[big_n - 1], 'z');
    char *after = ms_arena_alloc(&a, 10);
    memcpy(after, "after", 6);
    assert_string_equal(small, "before");
    assert_int_equal(big[big_n - 1], 'z');
    assert_string_equal(after, "after");
    ms_arena_release(&a);
}

static void test_arena_reset_reuses_first_chunk(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    ms_arena_reset(&a); /* on an empty arena: nothing to do */
    assert_null(a.head);
    char *first = ms_arena_alloc(&a, 32);
    for (int i = 0; i < 50; i++)
        memset(ms_arena_alloc(&a, 1000), 1, 1000); /* forces more chunks */
    ms_arena_reset(&a);
    char *again = ms_arena_alloc(&a, 32);
    assert_ptr_equal(again, first);
    memset(again, 2, 32);
    /* the arena keeps working after a reset, including across chunks */
    for (int i = 0; i < 50; i++)
        memset(ms_arena_alloc(&a, 1000), 3, 1000);
    ms_arena_reset(&a);
    assert_ptr_equal(ms_arena_alloc(&a, 1), first);
    ms_arena_release(&a);
    assert_null(a.head);
    /* and after a release it starts over */
    memset(ms_arena_alloc(&a, 64), 4, 64);
    ms_arena_release(&a);
}

static void test_arena_strndup(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    char *s = ms_arena_strndup(&a, "hello world", 5);
    assert_string_equal(s, "hello");
    char *e = ms_arena_strndup(&a, "x", 0);
    assert_string_equal(e, "");
    ms_arena_release(&a);
}

static void test_arena_printf(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    char *s = ms_arena_printf(&a, "%s-%d-%05.1f", "order", 42, 3.14159);
    assert_string_equal(s, "order-42-003.1");
    assert_int_equal((uintptr_t)s % 16, 0);
    /* longer than a chunk */
    char *long_s = ms_arena_printf(&a, "%6000d|", 7);
    assert_int_equal(strlen(long_s), 6001);
    assert_int_equal(long_s[5999], '7');
    assert_int_equal(long_s[6000], '|');
    assert_string_equal(s, "order-42-003.1");
    ms_arena_release(&a);
}

/* ---- arena cleanups ---- */

/* A log of which cleanups ran, in order; each cleanup's arg is one record. */
typedef struct cleanup_log {
    int order[700];
    int n;
} cleanup_log;

typedef struct cleanup_rec {
    cleanup_log *log;
    int id;
    ms_arena *arena; /* for the cleanup that registers another */
} cleanup_rec;

static void record(void *arg)
{
    cleanup_rec *r = arg;
    if (r->log->n >= (int)(sizeof r->log->order / sizeof r->log->order[0]))
        fail_msg("more cleanups ran than were registered");
    r->log->order[r->log->n++] = r->id;
}

/* The record lives in the arena itself: a cleanup runs before the memory it points to goes. */
static cleanup_rec *on_reset_record(ms_arena *a, cleanup_log *log, int id)
{
    cleanup_rec *r = ms_arena_alloc(a, sizeof *r);
    r->log = log;
    r->id = id;
    r->arena = a;
    ms_arena_on_reset(a, record, r);
    return r;
}

static void test_arena_cleanups_run_newest_first_on_reset(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    cleanup_log log = {.n = 0};
    for (int i = 1; i <= 3; i++)
        on_reset_record(&a, &log, i);
    assert_int_equal(log.n, 0); /* nothing before the reset */
    ms_arena_reset(&a);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.order[0], 3);
    assert_int_equal(log.order[1], 2);
    assert_int_equal(log.order[2], 1);
    /* they ran once: the next reset has none left, and new ones start a fresh list */
    ms_arena_reset(&a);
    assert_int_equal(log.n, 3);
    on_reset_record(&a, &log, 4);
    ms_arena_reset(&a);
    assert_int_equal(log.n, 4);
    assert_int_equal(log.order[3], 4);
    ms_arena_release(&a);
    assert_int_equal(log.n, 4);
}

static void test_arena_cleanups_run_on_release(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    cleanup_log log = {.n = 0};
    on_reset_record(&a, &log, 1);
    on_reset_record(&a, &log, 2);
    ms_arena_release(&a);
    assert_int_equal(log.n, 2);
    assert_int_equal(log.order[0], 2);
    assert_int_equal(log.order[1], 1);
    assert_null(a.head);
    assert_null(a.cleanups);
    /* a released arena is as new: it takes cleanups again */
    on_reset_record(&a, &log, 3);
    ms_arena_release(&a);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.order[2], 3);
}

static void test_arena_many_cleanups_across_chunks(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    cleanup_log log = {.n = 0};
    enum { N = 600 }; /* records and cleanups spread over several 4 KiB chunks */
    for (int i = 0; i < N; i++) {
        on_reset_record(&a, &log, i);
        if (i % 50 == 0)
            memset(ms_arena_alloc(&a, 5000), 0xEE, 5000); /* a chunk of its own in between */
    }
    ms_arena_reset(&a);
    assert_int_equal(log.n, N);
    for (int i = 0; i < N; i++)
        if (log.order[i] != N - 1 - i)
            fail_msg("cleanup %d ran as number %d", log.order[i], i);
    /* the arena still works after the records' chunks went */
    log.n = 0;
    on_reset_record(&a, &log, 7);
    ms_arena_release(&a);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.order[0], 7);
}

static void register_another(void *arg)
{
    cleanup_rec *r = arg;
    record(r);
    on_reset_record(r->arena, r->log, r->id + 100);
}

static void test_arena_cleanup_registered_by_a_cleanup(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    cleanup_log log = {.n = 0};
    on_reset_record(&a, &log, 1);
    cleanup_rec *r = ms_arena_alloc(&a, sizeof *r);
    *r = (cleanup_rec){.log = &log, .id = 2, .arena = &a};
    ms_arena_on_reset(&a, register_another, r);
    ms_arena_reset(&a);
    /* the late one runs in the same reset, before the older ones */
    assert_int_equal(log.n, 3);
    assert_int_equal(log.order[0], 2);
    assert_int_equal(log.order[1], 102);
    assert_int_equal(log.order[2], 1);
    assert_null(a.cleanups);
    ms_arena_release(&a);
    assert_int_equal(log.n, 3);
}

static void test_arena_own_frees_with_the_arena(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    /* under ASan a leak or a double free of these fails the test */
    char *s = ms_arena_own(&a, strdup("heap string"));
    assert_string_equal(s, "heap string");
    assert_null(ms_arena_own(&a, NULL));
    for (int i = 0; i < 100; i++)
        memset(ms_arena_own(&a, malloc(100)), i, 100);
    ms_arena_reset(&a);
    ms_arena_own(&a, malloc(10));
    ms_arena_release(&a);
}

/* ---- buf ---- */

static void test_str_ieq(void **state)
{
    assert_true(ms_str_ieq(MS_STR("Content-Length"), "content-length"));
    assert_true(ms_str_ieq(MS_STR("HOST"), "host"));
    assert_false(ms_str_ieq(MS_STR("Host"), "hos"));
    assert_false(ms_str_ieq(MS_STR("Hos"), "host"));
    assert_false(ms_str_ieq(MS_STR("[ost"), "{ost")); /* not a blind |0x20 */
    assert_true(ms_str_eq(MS_STR("abc"), "abc"));
    assert_false(ms_str_eq(MS_STR("abc"), "ABC"));
}

static void test_buf_reserve_growth(void **state)
{
    ms_buf b;
    ms_buf_init(&b, 0);
    assert_null(b.p);
    assert_int_equal(b.cap, 0);
    char *w = ms_buf_reserve(&b, 1);
    assert_non_null(w);
    assert_true(b.cap >= 1);
    size_t cap = b.cap;
    w[0] = 'x';
    b.n = 1;
    /* reserving more than the space left grows, keeping the content */
    w = ms_buf_reserve(&b, cap * 3);
    assert_true(b.cap - b.n >= cap * 3);
    assert_ptr_equal(w, b.p + 1);
    assert_int_equal(b.p[0], 'x');
    /* reserving what fits does not grow */
    size_t before = b.cap;
    ms_buf_reserve(&b, b.cap - b.n);
    assert_int_equal(b.cap, before);
    ms_buf_release(&b);
    assert_null(b.p);
    assert_int_equal(b.n, 0);
}

static void test_buf_add_many(void **state)
{
    ms_buf b;
    ms_buf_init(&b, 4);
    for (int i = 0; i < 1000; i++)
        ms_buf_add(&b, "0123456789", 10);
    ms_buf_add(&b, "ignored", 0);
    assert_int_equal(b.n, 10000);
    for (size_t i = 0; i < b.n; i++)
        if (b.p[i] != (char)('0' + i % 10))
            fail_msg("byte %zu is wrong", i);
    ms_buf_adds(&b, "!");
    assert_int_equal(b.n, 10001);
    assert_int_equal(b.p[10000], '!');
    ms_buf_release(&b);
}

static void test_buf_printf_growth(void **state)
{
    ms_buf b;
    ms_buf_init(&b, 0);
    ms_buf_printf(&b, "%s=%d;", "a", 1);
    assert_int_equal(b.n, 4);
    assert_memory_equal(b.p, "a=1;", 4);
    /* longer than the 128 bytes printf reserves at first */
    char big[301];
    memset(big, 'q', 300);
    big[300] = '\0';
    ms_buf_printf(&b, "[%s]", big);
    assert_int_equal(b.n, 4 + 302);
    assert_memory_equal(b.p, "a=1;[", 5);
    assert_int_equal(b.p[5], 'q');
    assert_int_equal(b.p[304], 'q');
    assert_int_equal(b.p[305], ']');
    /* the byte after the content is the NUL printf wrote: content is not cut */
    assert_true(b.cap > b.n);
    assert_int_equal(b.p[b.n], '\0');
    /* and on a buffer that is nearly full */
    ms_buf c;
    ms_buf_init(&c, 8);
    ms_buf_add(&c, "1234567", 7);
    ms_buf_printf(&c, "%0200d", 5);
    assert_int_equal(c.n, 207);
    assert_memory_equal(c.p, "1234567000", 10);
    assert_int_equal(c.p[206], '5');
    ms_buf_release(&c);
    ms_buf_release(&b);
}

static void test_buf_consume(void **state)
{
    ms_buf b;
    ms_buf_init(&b, 0);
    ms_buf_adds(&b, "GET / HTTP/1.1\r\n");
    ms_buf_consume(&b, 4);
    assert_int_equal(b.n, 12);
    assert_memory_equal(b.p, "/ HTTP/1.1\r\n", 12);
    ms_buf_consume(&b, 0);
    assert_int_equal(b.n, 12);
    ms_buf_consume(&b, 12);
    assert_int_equal(b.n, 0);
    ms_buf_adds(&b, "ab");
    ms_buf_consume(&b, 100); /* more than held: empties */
    assert_int_equal(b.n, 0);
    ms_buf_adds(&b, "cd");
    assert_memory_equal(b.p, "cd", 2);
    ms_buf_release(&b);
}

/* ---- id ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static uint64_t uuid_ms(const char *u)
{
    /* the first 48 bits: 8 hex digits, a dash, 4 hex digits */
    uint64_t ms = 0;
    for (int i = 0; i < 13; i++)
        if (i != 8)
            ms = ms * 16 + (uint64_t)hexval(u[i]);
    return ms;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void test_uuid_layout(void **state)
{
    for (int i = 0; i < 100; i++) {
        char u[MS_UUID_LEN + 1];
        memset(u, 'X', sizeof u);
        ms_uuid_new(u);
        assert_int_equal(strlen(u), MS_UUID_LEN);
        assert_true(ms_uuid_valid(u));
        for (int j = 0; j < MS_UUID_LEN; j++)
            if (j != 8 && j != 13 && j != 18 && j != 23 && hexval(u[j]) < 0)
                fail_msg("%s: not lower-case hex at %d", u, j);
        assert_int_equal(u[14], '7');           /* version 7 */
        assert_non_null(strchr("89ab", u[19])); /* variant 10xx */
        assert_true(u[19] != '\0');
    }
}

static void test_uuid_embeds_now(void **state)
{
    uint64_t before = now_ms();
    char u[MS_UUID_LEN + 1];
    ms_uuid_new(u);
    uint64_t after = now_ms();
    uint64_t ms = uuid_ms(u);
    assert_true(ms >= before);
    assert_true(ms <= after);
}

static void test_uuid_distinct(void **state)
{
    enum { N = 64 };
    char ids[N][MS_UUID_LEN + 1];
    for (int i = 0; i < N; i++)
        ms_uuid_new(ids[i]);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            if (strcmp(ids[i], ids[j]) == 0)
                fail_msg("two equal ids: %s", ids[i]);
}

static void test_uuid_sorts_by_time(void **state)
{
    char a[MS_UUID_LEN + 1], b[MS_UUID_LEN + 1], c[MS_UUID_LEN + 1];
    struct timespec two_ms = {0, 2 * 1000 * 1000};
    ms_uuid_new(a);
    nanosleep(&two_ms, NULL);
    ms_uuid_new(b);
    nanosleep(&two_ms, NULL);
    ms_uuid_new(c);
    assert_true(strcmp(a, b) < 0);
    assert_true(strcmp(b, c) < 0);
    assert_true(uuid_ms(b) >= uuid_ms(a) + 2);
}

static void test_uuid_valid_cases(void **state)
{
    assert_true(ms_uuid_valid("0190c2a4-7b1e-7c3d-8e4f-0123456789ab"));
    assert_true(ms_uuid_valid("0190C2A4-7B1E-7C3D-8E4F-0123456789AB"));
    assert_true(ms_uuid_valid("00000000-0000-0000-0000-000000000000"));
    assert_false(ms_uuid_valid(""));
    assert_false(ms_uuid_valid("0190c2a4-7b1e-7c3d-8e4f-0123456789a"));   /* 35 */
    assert_false(ms_uuid_valid("0190c2a4-7b1e-7c3d-8e4f-0123456789abc")); /* 37 */
    assert_false(ms_uuid_valid("0190c2a47b1e-7c3d-8e4f-0123456789ab-"));  /* dash moved */
    assert_false(ms_uuid_valid("0190c2a4-7b1e-7c3d-8e4f_0123456789ab"));
    assert_false(ms_uuid_valid("0190c2a4-7b1e-7c3d-8e4f-0123456789ag"));
    assert_false(ms_uuid_valid("{0190c2a4-7b1e-7c3d-8e4f-0123456789a}"));
    assert_false(ms_uuid_valid("0190c2a47b1e7c3d8e4f0123456789abcdef"));
    assert_false(ms_uuid_valid(" 0190c2a4-7b1e-7c3d-8e4f-0123456789ab"));
    assert_false(ms_uuid_valid("0190c2a4-7b1e-7c3d-8e4f-0123456789ab\n"));
}

static void test_time_now_format(void **state)
{
    char t[MS_TIME_LEN + 1];
    memset(t, 'X', sizeof t);
    time_t before = realtime_seconds();
    ms_time_now(t);
    time_t after = realtime_seconds();
    assert_int_equal(strlen(t), MS_TIME_LEN);
    /* "2026-11-25T06:15:47.123Z" */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (int i = 0; i < MS_TIME_LEN; i++) {
        if (shape[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != shape[i])
            fail_msg("%s: unexpected '%c' at %d", t, t[i], i);
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
    assert_non_null(rest);
    assert_string_equal(rest + 4, "Z");
    time_t parsed = timegm(&tm);
    assert_true(parsed >= before);
    assert_true(parsed <= after);
}

static void test_time_now_sorts(void **state)
{
    char a[MS_TIME_LEN + 1], b[MS_TIME_LEN + 1];
    struct timespec two_ms = {0, 2 * 1000 * 1000};
    ms_time_now(a);
    nanosleep(&two_ms, NULL);
    ms_time_now(b);
    assert_true(strcmp(a, b) < 0);
}

static void test_random_bytes(void **state)
{
    unsigned char a[32], b[32];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    ms_random_bytes(a, sizeof a);
    ms_random_bytes(b, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alignment),
        cmocka_unit_test(test_arena_allocations_do_not_overlap),
        cmocka_unit_test(test_arena_big_allocation),
        cmocka_unit_test(test_arena_reset_reuses_first_chunk),
        cmocka_unit_test(test_arena_strndup),
        cmocka_unit_test(test_arena_printf),
        cmocka_unit_test(test_arena_cleanups_run_newest_first_on_reset),
        cmocka_unit_test(test_arena_cleanups_run_on_release),
        cmocka_unit_test(test_arena_many_cleanups_across_chunks),
        cmocka_unit_test(test_arena_cleanup_registered_by_a_cleanup),
        cmocka_unit_test(test_arena_own_frees_with_the_arena),
        cmocka_unit_test(test_str_ieq),
        cmocka_unit_test(test_buf_reserve_growth),
        cmocka_unit_test(test_buf_add_many),
        cmocka_unit_test(test_buf_printf_growth),
        cmocka_unit_test(test_buf_consume),
        cmocka_unit_test(test_uuid_layout),
        cmocka_unit_test(test_uuid_embeds_now),
        cmocka_unit_test(test_uuid_distinct),
        cmocka_unit_test(test_uuid_sorts_by_time),
        cmocka_unit_test(test_uuid_valid_cases),
        cmocka_unit_test(test_time_now_format),
        cmocka_unit_test(test_time_now_sorts),
        cmocka_unit_test(test_random_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
