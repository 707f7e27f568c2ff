/* test_json.c — json.c (ms_json_check, utf8 length, field errors) and json_arena.c */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/core/arena.h"
#include "runtime/core/error.h"
#include "runtime/json/json.h"
#include "runtime/json/json_arena.h"

static const ms_json_field user_fields[] = {
    {"email", MS_JSON_STRING, true, false},     {"name", MS_JSON_STRING, true, false},
    {"nickname", MS_JSON_STRING, false, true},  {"age", MS_JSON_INTEGER, false, false},
    {"newsletter", MS_JSON_BOOL, false, false}, {"address", MS_JSON_OBJECT, false, true},
};
enum { NUSER = sizeof user_fields / sizeof user_fields[0] };

typedef struct lists {
    json_t *malformed, *invalid;
} lists;

static int setup(void **state)
{
    static lists l;
    l.malformed = json_array();
    l.invalid = json_array();
    *state = &l;
    return 0;
}

static int teardown(void **state)
{
    lists *l = *state;
    json_decref(l->malformed);
    json_decref(l->invalid);
    return 0;
}

/* Parses a JSON object literal; fails the test on a syntax error. */
static json_t *obj(const char *text)
{
    json_error_t err;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    if (!o || !json_is_object(o))
        fail_msg("bad fixture %s: %s", text, err.text);
    return o;
}

/* True when `list` has an entry {field, message}. */
static bool has_error(json_t *list, const char *field, const char *message)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        const char *f = json_string_value(json_object_get(e, "field"));
        const char *m = json_string_value(json_object_get(e, "message"));
        if (f && m && strcmp(f, field) == 0 && strcmp(m, message) == 0)
            return true;
    }
    return false;
}

static void check(lists *l, const char *text, const char *prefix)
{
    json_t *o = obj(text);
    ms_json_check(o, user_fields, NUSER, prefix, l->malformed, l->invalid);
    json_decref(o);
}

static void test_check_valid_object(void **state)
{
    lists *l = *state;
    check(l,
          "{\"email\":\"a@b.c\",\"name\":\"Ann\",\"nickname\":\"an\",\"age\":3,"
          "\"newsletter\":true,\"address\":{}}",
          "");
    assert_int_equal(json_array_size(l->malformed), 0);
    assert_int_equal(json_array_size(l->invalid), 0);
}

static void test_check_unknown_field(void **state)
{
    lists *l = *state;
    check(l, "{\"email\":\"a@b.c\",\"name\":\"Ann\",\"role\":\"admin\"}", "");
    assert_int_equal(json_array_size(l->malformed), 1);
    assert_true(has_error(l->malformed, "role", "unknown field"));
    assert_int_equal(json_array_size(l->invalid), 0);
}

static void test_check_wrong_kind(void **state)
{
    lists *l = *state;
    check(l, "{\"email\":5,\"name\":\"Ann\",\"age\":\"3\",\"newsletter\":1}", "");
    assert_int_equal(json_array_size(l->malformed), 3);
    assert_true(has_error(l->malformed, "email", "must be a string"));
    assert_true(has_error(l->malformed, "age", "must be an integer"));
    assert_true(has_error(l->malformed, "newsletter", "must be a boolean"));
    /* a present field of the wrong kind is malformed, not missing */
    assert_int_equal(json_array_size(l->invalid), 0);
}

static void test_check_real_is_not_integer(void **state)
{
    lists *l = *state;
    check(l, "{\"email\":\"e\",\"name\":\"n\",\"age\":3.0}", "");
    assert_int_equal(json_array_size(l->malformed), 1);
    assert_true(has_error(l->malformed, "age", "must be an integer"));
}

static void test_check_wrong_kind_nullable_message(void **state)
{
    lists *l = *state;
    check(l, "{\"email\":\"e\",\"name\":\"n\",\"nickname\":[],\"address\":\"x\"}", "");
    assert_int_equal(json_array_size(l->malformed), 2);
    assert_true(has_error(l->malformed, "nickname", "must be a string or null"));
    assert_true(has_error(l->malformed, "address", "must be an object or null"));
}

static void test_check_null_only_when_nullable(void **state)
{
    lists *l = *state;
    check(l, "{\"email\":\"e\",\"name\":null,\"nickname\":null,\"address\":null,\"age\":null}", "");
    assert_int_equal(json_array_size(l->malformed), 2);
    assert_true(has_error(l->malformed, "name", "must be a string"));
    assert_true(has_error(l->malformed, "age", "must be an integer"));
    assert_false(has_error(l->malformed, "nickname", "must be a string or null"));
    /* a null required field is present (and malformed), not missing */
    assert_int_equal(json_array_size(l->invalid), 0);
}

static void test_check_missing_required(void **state)
{
    lists *l = *state;
    check(l, "{\"nickname\":\"x\"}", "");
    assert_int_equal(json_array_size(l->malformed), 0);
    assert_int_equal(json_array_size(l->invalid), 2);
    assert_true(has_error(l->invalid, "email", "is required"));
    assert_true(has_error(l->invalid, "name", "is required"));
}

static void test_check_empty_object(void **state)
{
    lists *l = *state;
    check(l, "{}", "");
    assert_int_equal(json_array_size(l->malformed), 0);
    assert_int_equal(json_array_size(l->invalid), 2);
}

static void test_check_nested_prefix(void **state)
{
    static const ms_json_field address_fields[] = {
        {"street", MS_JSON_STRING, true, false},
        {"city", MS_JSON_STRING, true, false},
        {"zip", MS_JSON_STRING, false, false},
    };
    lists *l = *state;
    json_t *o = obj("{\"street\":1,\"zip\":\"75001\",\"planet\":\"earth\"}");
    ms_json_check(o, address_fields, 3, "address.", l->malformed, l->invalid);
    json_decref(o);
    assert_int_equal(json_array_size(l->malformed), 2);
    assert_true(has_error(l->malformed, "address.street", "must be a string"));
    assert_true(has_error(l->malformed, "address.planet", "unknown field"));
    assert_int_equal(json_array_size(l->invalid), 1);
    assert_true(has_error(l->invalid, "address.city", "is required"));
}

static void test_check_appends(void **state)
{
    /* the lists collect across calls (top level, then a nested object) */
    lists *l = *state;
    check(l, "{\"x\":1}", "");
    check(l, "{\"y\":1}", "inner.");
    assert_int_equal(json_array_size(l->malformed), 2);
    assert_true(has_error(l->malformed, "x", "unknown field"));
    assert_true(has_error(l->malformed, "inner.y", "unknown field"));
    assert_int_equal(json_array_size(l->invalid), 4);
}

static void test_utf8_length(void **state)
{
    assert_int_equal(ms_utf8_length(""), 0);
    assert_int_equal(ms_utf8_length("abc"), 3);
    assert_int_equal(ms_utf8_length("caf\xc3\xa9"), 4);              /* café */
    assert_int_equal(ms_utf8_length("\xe2\x82\xac"), 1);             /* € */
    assert_int_equal(ms_utf8_length("\xf0\x9f\x98\x80!"), 2);        /* 😀! */
    assert_int_equal(ms_utf8_length("\xe6\x97\xa5\xe6\x9c\xac"), 2); /* 日本 */
}

/* A tree given to an arena loses the arena's reference at reset, not before. */
static void test_json_own_drops_at_reset(void **state)
{
    ms_arena a;
    ms_arena_init(&a);
    json_t *doc = json_pack("{s:[i,i]}", "items", 1, 2);
    json_incref(doc); /* ours, to watch the count */
    assert_ptr_equal(ms_json_own(&a, doc), doc);
    assert_null(ms_json_own(&a, NULL));
    assert_int_equal(doc->refcount, 2);
    ms_arena_reset(&a);
    assert_int_equal(doc->refcount, 1);
    /* and at release: under ASan a missed decref is a leak */
    ms_json_own(&a, json_pack("{s:s}", "k", "v"));
    ms_arena_release(&a);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check_valid_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_unknown_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_wrong_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_real_is_not_integer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_wrong_kind_nullable_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_null_only_when_nullable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_missing_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_empty_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_nested_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_appends, setup, teardown),
        cmocka_unit_test(test_utf8_length),
        cmocka_unit_test(test_json_own_drops_at_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
