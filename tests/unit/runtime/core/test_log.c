/*
 * test_log.c — log lines: trace ids from the context hook inside a request and none outside,
 * the level changed while running, a thread's own level, the sink seeing every written line, and
 * every line valid JSON whatever its values hold (quotes, control bytes, bytes that are not UTF-8,
 * values longer than a line).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "runtime/core/log.h"
#include "runtime/obs/trace.h"
#include "runtime/core/banned.h"

/* What the logs wrote to stderr while `fn` ran, NUL-terminated (the caller frees it). */
static char *capture(void (*fn)(void))
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
    close(fds[1]);
    fn();
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    ssize_t r;
    while ((r = read(fds[0], out + n, cap - n - 1)) > 0)
        n += (size_t)r;
    close(fds[0]);
    out[n] = '\0';
    return out;
}

/* The lines of `text` parsed; fails the test on a line that is not one JSON object. */
static size_t parse_lines(char *text, json_t **lines, size_t max)
{
    size_t n = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        json_error_t err;
        json_t *doc = json_loads(line, 0, &err);
        if (!doc)
            fail_msg("not JSON (%s): %s", err.text, line);
        assert_true(json_is_object(doc));
        assert_true(n < max);
        lines[n++] = doc;
    }
    return n;
}

static const char *str(json_t *line, const char *key)
{
    return json_string_value(json_object_get(line, key));
}

static bool fixed_ids(char trace_id[33], char span_id[17])
{
    static bool inside;
    inside = !inside; /* every other call: inside, then outside */
    if (!inside)
        return false;
    memcpy(trace_id, "0af7651916cd43dd8448eb211c80319c", 33);
    memcpy(span_id, "b7ad6b7169203331", 17);
    return true;
}

static void write_two(void)
{
    ms_log(MS_LOG_INFO, "inside", "k", "v", NULL);
    ms_log(MS_LOG_INFO, "outside", "k", "v", NULL);
}

static void test_ids_from_the_context_hook(void **state)
{
    (void)state;
    ms_log_init("test_log", MS_LOG_INFO);
    ms_log_set_context_fn(fixed_ids);
    char *text = capture(write_two);
    ms_log_set_context_fn(NULL);
    json_t *lines[4];
    assert_int_equal(parse_lines(text, lines, 4), 2);
    assert_string_equal(str(lines[0], "msg"), "inside");
    assert_string_equal(str(lines[0], "trace_id"), "0af7651916cd43dd8448eb211c80319c");
    assert_string_equal(str(lines[0], "span_id"), "b7ad6b7169203331");
    assert_string_equal(str(lines[0], "k"), "v");
    /* right after msg, before the fields */
    assert_non_null(strstr(text, "\"msg\":\"inside\",\"trace_id\":\"0af7"));
    assert_string_equal(str(lines[1], "msg"), "outside");
    assert_null(json_object_get(lines[1], "trace_id"));
    assert_null(json_object_get(lines[1], "span_id"));
    for (int i = 0; i < 2; i++)
        json_decref(lines[i]);
    free(text);
}

static ms_trace_ctx request_ctx;

static void write_in_and_out_of_a_request(void)
{
    ms_trace_set_current(&request_ctx);
    ms_log(MS_LOG_INFO, "handling", NULL);
    ms_trace_set_current(NULL);
    ms_log(MS_LOG_INFO, "idle", NULL);
}

static void test_ids_from_the_current_trace(void **state)
{
    (void)state;
    ms_log_init("test_log", MS_LOG_INFO);
    ms_trace_log_hook_install();
    /* the ids of W3C's example traceparent, set by hand: only the contract is tested here */
    static const uint8_t trace_id[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                         0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
    static const uint8_t span_id[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
    memcpy(request_ctx.trace_id, trace_id, 16);
    memcpy(request_ctx.span_id, span_id, 8);
    request_ctx.flags = 1;
    request_ctx.valid = true;
    char *text = capture(write_in_and_out_of_a_request);
    ms_log_set_context_fn(NULL);
    json_t *lines[4];
    assert_int_equal(parse_lines(text, lines, 4), 2);
    assert_string_equal(str(lines[0], "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(str(lines[0], "span_id"), "00f067aa0ba902b7");
    assert_null(json_object_get(lines[1], "trace_id"));
    for (int i = 0; i < 2; i++)
        json_decref(lines[i]);
    free(text);
}

static void write_levels(void)
{
    ms_log(MS_LOG_DEBUG, "d1", NULL);
    ms_log_set_level(MS_LOG_DEBUG);
    ms_log(MS_LOG_DEBUG, "d2", NULL);
    ms_log_set_level(MS_LOG_WARN);
    ms_log(MS_LOG_INFO, "i1", NULL);
    ms_log(MS_LOG_WARN, "w1", NULL);
}

static void test_level_changes_while_running(void **state)
{
    (void)state;
    ms_log_init("test_log", MS_LOG_INFO);
    assert_int_equal(ms_log_get_level(), MS_LOG_INFO);
    char *text = capture(write_levels);
    assert_int_equal(ms_log_get_level(), MS_LOG_WARN);
    assert_false(ms_log_enabled(MS_LOG_INFO));
    assert_true(ms_log_enabled(MS_LOG_ERROR));
    json_t *lines[4];
    assert_int_equal(parse_lines(text, lines, 4), 2);
    assert_string_equal(str(lines[0], "msg"), "d2");
    assert_string_equal(str(lines[0], "level"), "debug");
    assert_string_equal(str(lines[1], "msg"), "w1");
    for (int i = 0; i < 2; i++)
        json_decref(lines[i]);
    free(text);
    assert_string_equal(ms_log_level_name(MS_LOG_ERROR), "error");
}

static void *quiet_thread(void *arg)
{
    (void)arg;
    ms_log_set_thread_level(MS_LOG_ERROR);
    ms_log(MS_LOG_WARN, "quiet warn", NULL);
    ms_log(MS_LOG_ERROR, "quiet error", NULL);
    return NULL;
}

static void write_from_a_quiet_thread(void)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, quiet_thread, NULL), 0);
    pthread_join(t, NULL);
    ms_log(MS_LOG_WARN, "loud warn", NULL); /* another thread: unchanged */
}

static void test_a_threads_own_level(void **state)
{
    (void)state;
    ms_log_init("test_log", MS_LOG_INFO);
    char *text = capture(write_from_a_quiet_thread);
    json_t *lines[4];
    assert_int_equal(parse_lines(text, lines, 4), 2);
    assert_string_equal(str(lines[0], "msg"), "quiet error");
    assert_string_equal(str(lines[1], "msg"), "loud warn");
    for (int i = 0; i < 2; i++)
        json_decref(lines[i]);
    free(text);
}

static void write_awkward(void)
{
    ms_log(MS_LOG_INFO, "quote \" backslash \\ newline \n tab \t del \x7f", "k\"ey",
           "bad utf-8 \xff\xc0\xaf ok \xc3\xa9 \xe2\x82\xac cut \xe2\x82", "#n", "42", "nil", NULL,
           NULL);
    static char big[6000];
    memset(big, 'a', sizeof big - 1);
    big[100] = '"';
    big[101] = '\xc3';
    big[102] = '\xa9';
    ms_log(MS_LOG_INFO, "long", "first", "x", "big", big, "after", "y", NULL);
    ms_log(MS_LOG_INFO, big, "k", "v", NULL);
    /* a field array, as the gateway's access line writes */
    const char *kv[] = {"method", "GET", "#status", "200", "user", "u\"1"};
    ms_log_fields(MS_LOG_INFO, "access", kv, 3);
}

static void test_every_line_is_json(void **state)
{
    (void)state;
    ms_log_init("test_log", MS_LOG_INFO);
    char *text = capture(write_awkward);
    json_t *lines[8];
    assert_int_equal(parse_lines(text, lines, 8), 4);
    assert_string_equal(str(lines[0], "msg"), "quote \" backslash \\ newline \n tab \t del \x7f");
    assert_string_equal(str(lines[0], "k\"ey"),
                        "bad utf-8 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd ok \xc3\xa9 \xe2\x82\xac "
                        "cut \xef\xbf\xbd\xef\xbf\xbd");
    assert_int_equal(json_integer_value(json_object_get(lines[0], "n")), 42);
    assert_true(json_is_null(json_object_get(lines[0], "nil")));
    /* a value longer than the line is cut (at a character) and the fields after it left out;
     * the line still parses */
    assert_string_equal(str(lines[1], "first"), "x");
    const char *cut = str(lines[1], "big");
    assert_non_null(cut);
    assert_true(strlen(cut) > 1000 && strlen(cut) < 4096);
    assert_memory_equal(cut + 99,
                        "a\"\xc3\xa9"
                        "a",
                        5);
    assert_null(json_object_get(lines[1], "after"));
    /* a message longer than the line is cut, at a character */
    assert_true(strlen(str(lines[2], "msg")) > 1000);
    assert_true(strlen(str(lines[2], "msg")) < 4096);
    assert_string_equal(str(lines[3], "msg"), "access");
    assert_string_equal(str(lines[3], "user"), "u\"1");
    assert_int_equal(json_integer_value(json_object_get(lines[3], "status")), 200);
    for (int i = 0; i < 4; i++)
        json_decref(lines[i]);
    free(text);
}

/* What the sink saw, copied (the record is borrowed for the call only). */
static struct {
    int calls;
    ms_log_level level;
    char msg[64], keys[128], trace_id[33], line[4200];
    uint64_t time_unix_ns;
    bool traced;
} seen;

static void sink(const ms_log_record *r)
{
    seen.calls++;
    seen.level = r->level;
    seen.time_unix_ns = r->time_unix_ns;
    snprintf(seen.msg, sizeof seen.msg, "%s", r->msg);
    seen.keys[0] = '\0';
    for (size_t i = 0; i < r->nfields; i++) {
        size_t n = strlen(seen.keys);
        snprintf(seen.keys + n, sizeof seen.keys - n, "%s=%s;", r->fields[2 * i],
                 r->fields[2 * i + 1] ? r->fields[2 * i + 1] : "(null)");
    }
    seen.traced = r->trace_id != NULL;
    snprintf(seen.trace_id, sizeof seen.trace_id, "%s", r->trace_id ? r->trace_id : "");
    assert_true(r->line_len < sizeof seen.line);
    memcpy(seen.line, r->line, r->line_len);
    seen.line[r->line_len] = '\0';
}

static void write_for_the_sink(void)
{
    ms_log(MS_LOG_DEBUG, "below the level", NULL);
    ms_log(MS_LOG_WARN, "inside", "k", "v", "#n", "7", "nil", NULL, NULL);
}

static void test_the_sink_sees_every_written_line(void **state)
{
    (void)state;
    ms_log_init("test_log", MS_LOG_INFO);
    ms_log_set_context_fn(fixed_ids);
    ms_log_set_sink_fn(sink);
    memset(&seen, 0, sizeof seen);
    char *text = capture(write_for_the_sink);
    assert_int_equal(seen.calls, 1); /* a line not written is not seen */
    assert_int_equal(seen.level, MS_LOG_WARN);
    assert_string_equal(seen.msg, "inside");
    assert_string_equal(seen.keys, "k=v;#n=7;nil=(null);");
    assert_true(seen.traced);
    assert_string_equal(seen.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_string_equal(seen.line, text); /* the line as written, newline included */
    assert_true(seen.time_unix_ns > 1600000000ull * 1000000000ull);
    free(text);

    /* lines of every shape, and a field array */
    memset(&seen, 0, sizeof seen);
    ms_log_set_context_fn(fixed_ids); /* its next call: outside */
    text = capture(write_awkward);
    ms_log_set_sink_fn(NULL);
    ms_log_set_context_fn(NULL);
    assert_int_equal(seen.calls, 4);
    assert_string_equal(seen.msg, "access");
    assert_string_equal(seen.keys, "method=GET;#status=200;user=u\"1;");
    free(text);
    ms_log(MS_LOG_INFO, "after the sink", NULL); /* none set: nothing called */
    assert_int_equal(seen.calls, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_from_the_context_hook),
        cmocka_unit_test(test_ids_from_the_current_trace),
        cmocka_unit_test(test_level_changes_while_running),
        cmocka_unit_test(test_a_threads_own_level),
        cmocka_unit_test(test_every_line_is_json),
        cmocka_unit_test(test_the_sink_sees_every_written_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
