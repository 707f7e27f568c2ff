/* test_json_scan.c — the in-place JSON reader: it accepts and refuses what jansson does,
 * reads the same strings and integers, and writes jansson's compact sorted bytes back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "runtime/core/error.h"
#include "runtime/json/json_scan.h"
#include "runtime/core/banned.h"

enum { CAP = 256 };

static int scan(ms_js *js, ms_js_token *tok, const char *text)
{
    return ms_js_scan(js, text, strlen(text), tok, CAP);
}

/* Texts both readers must take, and texts both must refuse. */
static const char *const good[] = {
    "{}",
    "[]",
    " {\"a\" : [1, -2.5e3, true, false, null, \"x\"]} ",
    "0",
    "-0",
    "1E+2",
    "\"\"",
    "\"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00 \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t\"",
    "{\"a\":{\"b\":{\"c\":[[[]]]}}}",
    "\"\xf0\x9f\x98\x80\"",
    "[\"\\u20ac\"]",
};
static const char *const bad[] = {
    "",
    " ",
    "{",
    "}",
    "[1,]",
    "{\"a\":1,}",
    "{\"a\" 1}",
    "{a:1}",
    "[01]",
    "[1.]",
    "[.5]",
    "[1e]",
    "[-]",
    "[+1]",
    "tru",
    "nul",
    "[true false]",
    "{} {}",
    "\"abc",
    "\"a\x01\"",
    "\"\\x\"",
    "\"\\u12\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\udc00\"",
    "\"\\ud800\\u0041\"",
    "\"\xc3\"",
    "\"\xc0\xaf\"",
    "\"\xed\xa0\x80\"",
    "\"\xf5\x80\x80\x80\"",
    "\"\xff\"",
    "[\"a\"]]",
    "'a'",
    "[NaN]",
};

static void test_accepts_and_refuses_as_jansson_does(void **state)
{
    (void)state;
    ms_js_token tok[CAP];
    ms_js js;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        json_t *doc = json_loads(good[i], JSON_DECODE_ANY, NULL);
        assert_non_null(doc);
        json_decref(doc);
        assert_int_equal(scan(&js, tok, good[i]), 0);
        assert_true(js.n >= 1);
        assert_int_equal(js.tok[0].next, js.n);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *doc = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        if (doc)
            fail_msg("jansson took %s", bad[i]);
        assert_int_equal(scan(&js, tok, bad[i]), MS_EINVAL);
    }
}

static void test_lookups(void **state)
{
    (void)state;
    ms_js_token tok[CAP];
    ms_js js;
    const char *text = "{\"id\":\"x\",\"items\":[{\"q\":1},{\"q\":2},{\"q\":3}],\"n\":null,"
                       "\"d\":1,\"d\":2,\"k\\u0065y\":\"v\"}";
    assert_int_equal(scan(&js, tok, text), 0);
    assert_int_equal(js.tok[0].size, 6);
    int items = ms_js_get(&js, 0, "items");
    assert_true(ms_js_is(&js, items, MS_JS_ARRAY));
    assert_int_equal(js.tok[items].size, 3);
    int64_t q = 0, want = 1;
    for (int e = ms_js_first(&js, items); e >= 0; e = ms_js_after(&js, items, e), want++) {
        assert_true(ms_js_int(&js, ms_js_get(&js, e, "q"), &q));
        assert_int_equal(q, want);
    }
    assert_int_equal(want, 4);
    assert_true(ms_js_int(&js, ms_js_get(&js, ms_js_at(&js, items, 2), "q"), &q));
    assert_int_equal(q, 3);
    assert_int_equal(ms_js_at(&js, items, 3), -1);
    assert_true(ms_js_is(&js, ms_js_get(&js, 0, "n"), MS_JS_NULL));
    assert_int_equal(ms_js_get(&js, 0, "absent"), -1);
    assert_int_equal(ms_js_get(&js, 0, "d"), -1);     /* twice: refused */
    assert_int_equal(ms_js_get(&js, items, "q"), -1); /* not an object */
    char out[8];
    assert_int_equal(ms_js_string(&js, ms_js_get(&js, 0, "key"), out, sizeof out), 1);
    assert_string_equal(out, "v");
    assert_int_equal(ms_js_string(&js, ms_js_get(&js, 0, "id"), out, 1), -1); /* no room */
    assert_int_equal(ms_js_string(&js, items, out, sizeof out), -1);          /* not a string */
}

static void test_strings_read_as_jansson_reads_them(void **state)
{
    (void)state;
    ms_js_token tok[CAP];
    ms_js js;
    const char *text = good[7];
    assert_int_equal(scan(&js, tok, text), 0);
    json_t *doc = json_loads(text, JSON_DECODE_ANY, NULL);
    char *mine = ms_js_strdup(&js, 0);
    assert_string_equal(mine, json_string_value(doc));
    free(mine);
    json_decref(doc);
    assert_null(ms_js_strdup(&js, 1));
}

static void test_integers(void **state)
{
    (void)state;
    ms_js_token tok[CAP];
    ms_js js;
    const char *text = "[0,-0,42,9223372036854775807,-9223372036854775808,9223372036854775808,"
                       "-9223372036854775809,1.5,1e3,\"7\"]";
    assert_int_equal(scan(&js, tok, text), 0);
    int64_t v;
    const int64_t want[] = {0, 0, 42, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < 5; i++) {
        assert_true(ms_js_int(&js, ms_js_at(&js, 0, i), &v));
        assert_int_equal(v, want[i]);
    }
    for (size_t i = 5; i < 10; i++)
        assert_false(ms_js_int(&js, ms_js_at(&js, 0, i), &v));
}

static void test_compact_sorted_bytes_equal_janssons(void **state)
{
    (void)state;
    ms_js_token tok[CAP];
    ms_js js;
    const char *texts[] = {
        "{ \"z\": 1, \"a\": [ {\"y\":true, \"b\":null}, \"s\\\"\\n\\u00e9\" ], \"m\": {} }",
        "{\"line1\":\"Hauptstra\xc3\x9f"
        "e 1\",\"city\":\"Berlin\",\"postal_code\":\"10115\",\"country\":\"DE\"}",
        "[1,-2.5e3,[],{}]",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        json_t *doc = json_loads(texts[i], 0, NULL);
        assert_non_null(doc);
        char *theirs = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(doc);
        /* what jansson wrote reads back to the same bytes; so does the original text */
        const char *inputs[] = {theirs, texts[i]};
        for (int k = 0; k < 2; k++) {
            assert_int_equal(scan(&js, tok, inputs[k]), 0);
            ms_buf out;
            ms_buf_init(&out, 0);
            ms_js_write_compact(&js, 0, &out);
            ms_buf_add(&out, "", 1);
            if (k == 0 || i == 1) /* escapes and numbers stay as written */
                assert_string_equal(out.p, theirs);
            ms_buf_release(&out);
        }
        free(theirs);
    }
}

static void test_limits(void **state)
{
    (void)state;
    ms_js_token tok[CAP];
    ms_js js;
    char deep[2 * MS_JS_MAX_DEPTH + 3];
    memset(deep, '[', MS_JS_MAX_DEPTH + 1);
    memset(deep + MS_JS_MAX_DEPTH + 1, ']', MS_JS_MAX_DEPTH + 1);
    deep[2 * MS_JS_MAX_DEPTH + 2] = '\0';
    assert_int_equal(scan(&js, tok, deep), MS_EINVAL);
    assert_int_equal(ms_js_scan(&js, deep + 1, 2 * MS_JS_MAX_DEPTH, tok, CAP), 0);
    /* more tokens than room: refused with its own code, the array never overrun */
    assert_int_equal(ms_js_scan(&js, "[1,2,3]", 7, tok, 3), MS_ETOOBIG);
    assert_int_equal(ms_js_scan(&js, "[1,2,3]", 7, tok, ms_js_max_tokens(7)), 0);
    /* the length given is the text: a value cut short is refused, bytes after it ignored */
    assert_int_equal(ms_js_scan(&js, "[1,2]xyz", 5, tok, CAP), 0);
    assert_int_equal(ms_js_scan(&js, "[1,2]", 4, tok, CAP), MS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_and_refuses_as_jansson_does), cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_strings_read_as_jansson_reads_them),  cmocka_unit_test(test_integers),
        cmocka_unit_test(test_compact_sorted_bytes_equal_janssons), cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
