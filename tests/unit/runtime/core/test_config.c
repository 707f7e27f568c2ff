/* test_config.c — config.c: flags, env fallback, range/usage errors, --help, split_listen */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/banned.h"

#define ENV_LISTEN  "MS_TEST_CONFIG_LISTEN"
#define ENV_THREADS "MS_TEST_CONFIG_THREADS"
#define ENV_LOG     "MS_TEST_CONFIG_ACCESS_LOG"

typedef struct targets {
    const char *listen;
    long threads;
    bool access_log;
    const char *name; /* no environment variable */
    ms_option opts[4];
} targets;

static int setup(void **state)
{
    static targets t;
    memset(&t, 0, sizeof t);
    t.listen = "127.0.0.1:8080";
    t.threads = 4;
    t.access_log = false;
    t.name = NULL;
    t.opts[0] = (ms_option){"listen", ENV_LISTEN, MS_OPT_STRING, &t.listen, 0, 0, "address"};
    t.opts[1] = (ms_option){"threads", ENV_THREADS, MS_OPT_INT, &t.threads, 1, 64, "loops"};
    t.opts[2] = (ms_option){"access-log", ENV_LOG, MS_OPT_BOOL, &t.access_log, 0, 0, "log"};
    t.opts[3] = (ms_option){"name", NULL, MS_OPT_STRING, &t.name, 0, 0, "a name"};
    unsetenv(ENV_LISTEN);
    unsetenv(ENV_THREADS);
    unsetenv(ENV_LOG);
    *state = &t;
    return 0;
}

static int teardown(void **state)
{
    unsetenv(ENV_LISTEN);
    unsetenv(ENV_THREADS);
    unsetenv(ENV_LOG);
    return 0;
}

/* Parses a NULL-ended list of arguments after a program name. */
static int parse(targets *t, char *err, size_t errn, ...)
{
    char *argv[16];
    int argc = 0;
    argv[argc++] = "microshop";
    va_list ap;
    va_start(ap, errn);
    for (char *a; (a = va_arg(ap, char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    err[0] = '\0';
    return ms_config_parse(t->opts, 4, argc, argv, 1, err, errn);
}

static void test_defaults_kept(void **state)
{
    targets *t = *state;
    char err[256];
    assert_int_equal(parse(t, err, sizeof err, NULL), 0);
    assert_string_equal(t->listen, "127.0.0.1:8080");
    assert_int_equal(t->threads, 4);
    assert_false(t->access_log);
    assert_null(t->name);
}

static void test_flag_space_value(void **state)
{
    targets *t = *state;
    char err[256];
    assert_int_equal(parse(t, err, sizeof err, "--listen", "0.0.0.0:9000", "--threads", "8", NULL),
                     0);
    assert_string_equal(t->listen, "0.0.0.0:9000");
    assert_int_equal(t->threads, 8);
}

static void test_flag_equals_value(void **state)
{
    targets *t = *state;
    char err[256];
    assert_int_equal(parse(t, err, sizeof err, "--threads=16", "--name=a=b", "--listen=", NULL), 0);
    assert_int_equal(t->threads, 16);
    assert_string_equal(t->name, "a=b"); /* only the first '=' splits */
    assert_string_equal(t->listen, "");
}

static void test_bool_alone_and_explicit(void **state)
{
    targets *t = *state;
    char err[256];
    assert_int_equal(parse(t, err, sizeof err, "--access-log", NULL), 0);
    assert_true(t->access_log);
    /* alone, followed by another flag */
    t->access_log = false;
    assert_int_equal(parse(t, err, sizeof err, "--access-log", "--threads", "2", NULL), 0);
    assert_true(t->access_log);
    assert_int_equal(t->threads, 2);
    assert_int_equal(parse(t, err, sizeof err, "--access-log=false", NULL), 0);
    assert_false(t->access_log);
    assert_int_equal(parse(t, err, sizeof err, "--access-log", "yes", NULL), 0);
    assert_true(t->access_log);
    assert_int_equal(parse(t, err, sizeof err, "--access-log=maybe", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "--access-log"));
    assert_non_null(strstr(err, "maybe"));
}

static void test_env_fallback(void **state)
{
    targets *t = *state;
    char err[256];
    setenv(ENV_LISTEN, "[::1]:7000", 1);
    setenv(ENV_THREADS, "3", 1);
    setenv(ENV_LOG, "1", 1);
    assert_int_equal(parse(t, err, sizeof err, NULL), 0);
    assert_string_equal(t->listen, "[::1]:7000");
    assert_int_equal(t->threads, 3);
    assert_true(t->access_log);
}

static void test_empty_env_ignored(void **state)
{
    targets *t = *state;
    char err[256];
    setenv(ENV_THREADS, "", 1);
    assert_int_equal(parse(t, err, sizeof err, NULL), 0);
    assert_int_equal(t->threads, 4);
}

static void test_flag_wins_over_env(void **state)
{
    targets *t = *state;
    char err[256];
    setenv(ENV_LISTEN, "10.0.0.1:1", 1);
    setenv(ENV_THREADS, "3", 1);
    setenv(ENV_LOG, "true", 1);
    assert_int_equal(
        parse(t, err, sizeof err, "--listen", "10.0.0.2:2", "--threads=5", "--access-log=no", NULL),
        0);
    assert_string_equal(t->listen, "10.0.0.2:2");
    assert_int_equal(t->threads, 5);
    assert_false(t->access_log);
}

static void test_int_range_error_names_flag(void **state)
{
    targets *t = *state;
    char err[256];
    assert_int_equal(parse(t, err, sizeof err, "--threads", "65", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "--threads"));
    assert_non_null(strstr(err, "1 to 64"));
    assert_non_null(strstr(err, "65"));
    assert_int_equal(t->threads, 4); /* untouched */

    assert_int_equal(parse(t, err, sizeof err, "--threads=0", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "--threads"));
    assert_int_equal(parse(t, err, sizeof err, "--threads", "4x", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "'4x'"));
    assert_int_equal(parse(t, err, sizeof err, "--threads=", NULL), MS_EINVAL);
    assert_int_equal(parse(t, err, sizeof err, "--threads", "99999999999999999999999", NULL),
                     MS_EINVAL);
    assert_int_equal(t->threads, 4);
}

static void test_int_range_error_names_env(void **state)
{
    targets *t = *state;
    char err[256];
    setenv(ENV_THREADS, "100", 1);
    assert_int_equal(parse(t, err, sizeof err, NULL), MS_EINVAL);
    assert_non_null(strstr(err, ENV_THREADS));
    assert_null(strstr(err, "--threads"));
    assert_non_null(strstr(err, "100"));
    assert_int_equal(t->threads, 4);
}

static void test_unknown_flag(void **state)
{
    targets *t = *state;
    char err[256];
    assert_int_equal(parse(t, err, sizeof err, "--listn", "x", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "--listn"));
    /* a prefix of a real flag is not that flag */
    assert_int_equal(parse(t, err, sizeof err, "--list=x", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "--list"));
    /* a flag's name with a suffix is not that flag either */
    assert_int_equal(parse(t, err, sizeof err, "--threadsx=1", NULL), MS_EINVAL);
    assert_string_equal(t->listen, "127.0.0.1:8080");
}

static void test_missing_value(void **state)
{
    targets *t = *state;
    char err[256];
    assert_int_equal(parse(t, err, sizeof err, "--listen", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "--listen"));
    assert_non_null(strstr(err, "value"));
    assert_int_equal(parse(t, err, sizeof err, "--threads=2", "--threads", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "--threads"));
}

static void test_positional_rejected(void **state)
{
    targets *t = *state;
    char err[256];
    assert_int_equal(parse(t, err, sizeof err, "serve", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "serve"));
    assert_int_equal(parse(t, err, sizeof err, "--threads", "2", "extra", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "extra"));
    assert_int_equal(parse(t, err, sizeof err, "-threads", "2", NULL), MS_EINVAL);
}

static void test_first_skips_command_words(void **state)
{
    targets *t = *state;
    char err[256];
    char *argv[] = {"microshop", "serve", "--threads", "7"};
    assert_int_equal(ms_config_parse(t->opts, 4, 4, argv, 2, err, sizeof err), 0);
    assert_int_equal(t->threads, 7);
}

static void test_help_returns_1(void **state)
{
    targets *t = *state;
    char err[256];
    /* usage goes to stdout: keep the test output readable */
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_non_null(freopen("/dev/null", "w", stdout));
    int rc = parse(t, err, sizeof err, "--threads", "2", "--help", NULL);
    int rc_short = parse(t, err, sizeof err, "-h", NULL);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    assert_int_equal(rc, 1);
    assert_int_equal(rc_short, 1);
}

static void test_usage_lists_flags(void **state)
{
    targets *t = *state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    ms_config_usage(f, t->opts, 4);
    fclose(f);
    assert_non_null(strstr(text, "--listen"));
    assert_non_null(strstr(text, "(default 127.0.0.1:8080)"));
    assert_non_null(strstr(text, "[" ENV_LISTEN "]"));
    assert_non_null(strstr(text, "(default 4)"));
    assert_non_null(strstr(text, "(default false)"));
    assert_non_null(strstr(text, "--name"));
    free(text);
}

static void test_split_listen_ipv4(void **state)
{
    char host[64];
    int port = -1;
    assert_int_equal(ms_config_split_listen("127.0.0.1:8081", host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8081);
    assert_int_equal(ms_config_split_listen("0.0.0.0:0", host, &port), 0);
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 0);
}

static void test_split_listen_ipv6(void **state)
{
    char host[64];
    int port = -1;
    assert_int_equal(ms_config_split_listen("[::1]:80", host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 80);
    assert_int_equal(ms_config_split_listen("[2001:db8::7]:65535", host, &port), 0);
    assert_string_equal(host, "2001:db8::7");
    assert_int_equal(port, 65535);
}

static void test_split_listen_localhost(void **state)
{
    char host[64];
    int port = -1;
    assert_int_equal(ms_config_split_listen("localhost:1", host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 1);
}

static void test_flag_wins_over_bad_env(void **state)
{
    /* a valid flag is enough even when the variable it overrides is invalid */
    targets *t = *state;
    char err[256];
    setenv(ENV_THREADS, "lots", 1);
    assert_int_equal(parse(t, err, sizeof err, "--threads", "2", NULL), 0);
    assert_int_equal(t->threads, 2);
}

static void test_flag_value_is_not_a_flag(void **state)
{
    targets *t = *state;
    char err[256];
    assert_int_equal(parse(t, err, sizeof err, "--listen", "--threads", "2", NULL), MS_EINVAL);
    assert_non_null(strstr(err, "--listen needs a value"));
    assert_string_equal(t->listen, "127.0.0.1:8080");
}

static void test_split_listen_bad_forms(void **state)
{
    static const char *const bad[] = {
        "127.0.0.1",        /* no port */
        "127.0.0.1:",       /* empty port */
        "127.0.0.1:70000",  /* port out of range */
        "127.0.0.1:-1",     /* negative port */
        "127.0.0.1:80x",    /* junk after the port */
        "example.com:80",   /* a name, not an address */
        ":80",              /* empty host */
        "[]:80",            /* empty v6 host */
        "[::1]",            /* v6 without port */
        "[::1]80",          /* v6 without colon */
        "[::1:80",          /* unclosed bracket */
        "256.0.0.1:80",     /* not an address */
        "::1:80",           /* v6 without brackets: which colon ends the host? */
        "127.0.0.1:+80",    /* a sign is not a port */
        "127.0.0.1: 80",    /* nor is a space */
        "127.0.0.1:000080", /* six digits */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char host[64];
        int port = -7;
        int rc = ms_config_split_listen(bad[i], host, &port);
        if (rc != MS_EINVAL)
            fail_msg("'%s': expected MS_EINVAL, got %d", bad[i], rc);
        if (port != -7)
            fail_msg("'%s': port written on failure", bad[i]);
    }
}

static void test_split_listen_long_host(void **state)
{
    char s[128], host[64];
    int port = 0;
    memset(s, '1', 80);
    memcpy(s + 80, ":80", 4);
    assert_int_equal(ms_config_split_listen(s, host, &port), MS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_space_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_equals_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bool_alone_and_explicit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_env_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_wins_over_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_wins_over_bad_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_value_is_not_a_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int_range_error_names_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int_range_error_names_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_positional_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_skips_command_words, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_returns_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_lists_flags, setup, teardown),
        cmocka_unit_test(test_split_listen_ipv4),
        cmocka_unit_test(test_split_listen_ipv6),
        cmocka_unit_test(test_split_listen_localhost),
        cmocka_unit_test(test_split_listen_bad_forms),
        cmocka_unit_test(test_split_listen_long_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
