/*
 * test_publisher_nats.c — the event bus publisher (publisher.h, ms_publisher_nats) against a
 * real nats-server with JetStream (a free port and a temporary store directory per test,
 * killed at the end). The stream is read back with libnats itself: its message count, and
 * each message by sequence (subject, payload, headers). Skipped, saying so, when nats-server
 * is not installed (scripts/bootstrap.sh test installs it).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nats/nats.h>

#include "eventstore/publisher.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

enum { DEADLINE_S = 30, PUBLISH_TIMEOUT_MS = 2000 };

typedef struct fixture {
    char server_bin[4200];
    char dir[64];
    char url[64];
    int port;
    pid_t pid;
} fixture;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* nats-server from PATH, else where Debian puts it (/usr/sbin is not on every PATH). */
static bool find_server(char *out, size_t n)
{
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s:/usr/sbin:/usr/bin:/usr/local/bin", path ? path : "");
    for (char *dir = buf, *colon; dir; dir = colon ? colon + 1 : NULL) {
        colon = strchr(dir, ':');
        if (colon)
            *colon = '\0';
        if (!*dir)
            continue;
        snprintf(out, n, "%s/nats-server", dir);
        if (access(out, X_OK) == 0)
            return true;
    }
    return false;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Starts nats-server -js on f->port with its store in f->dir; returns when it accepts. */
static void server_start(fixture *f)
{
    char port[16];
    snprintf(port, sizeof port, "%d", f->port);
    f->pid = fork();
    assert_true(f->pid >= 0);
    if (f->pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(f->server_bin, "nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd", f->dir,
              (char *)NULL);
        _exit(127);
    }
    double deadline = now_s() + DEADLINE_S;
    while (!port_open(f->port)) {
        assert_true(now_s() < deadline);
        assert_int_equal(waitpid(f->pid, NULL, WNOHANG), 0); /* still running */
        sleep_ms(20);
    }
}

static void server_kill(fixture *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    *state = f;
    if (!find_server(f->server_bin, sizeof f->server_bin))
        return 0; /* each test skips */
    snprintf(f->dir, sizeof f->dir, "/tmp/ms_nats.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->port = free_port();
    snprintf(f->url, sizeof f->url, "nats://127.0.0.1:%d", f->port);
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    server_kill(f);
    if (f->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", f->dir);
    }
    free(f);
    return 0;
}

static fixture *need_server(void **state)
{
    fixture *f = *state;
    if (!f->server_bin[0]) {
        fprintf(stderr, "SKIP: nats-server not found on PATH or in /usr/sbin "
                        "(bash scripts/bootstrap.sh test installs it)\n");
        skip();
    }
    return f;
}

/* ---- reading the stream back ---- */

typedef struct reader {
    natsConnection *nc;
    jsCtx *js;
} reader;

static void reader_open(reader *r, const fixture *f)
{
    assert_int_equal(natsConnection_ConnectTo(&r->nc, f->url), NATS_OK);
    assert_int_equal(natsConnection_JetStream(&r->js, r->nc, NULL), NATS_OK);
}

static void reader_close(reader *r)
{
    jsCtx_Destroy(r->js);
    natsConnection_Destroy(r->nc);
}

static uint64_t stream_msgs(reader *r, const char *stream)
{
    jsStreamInfo *si = NULL;
    assert_int_equal(js_GetStreamInfo(&si, r->js, stream, NULL, NULL), NATS_OK);
    uint64_t n = si->State.Msgs;
    assert_int_equal(si->Config->Storage, js_FileStorage);
    assert_int_equal(si->Config->SubjectsLen, 1);
    jsStreamInfo_Destroy(si);
    return n;
}

static void assert_msg(reader *r, const char *stream, uint64_t seq, const char *subject,
                       const ms_outbox_message *m)
{
    natsMsg *msg = NULL;
    assert_int_equal(js_GetMsg(&msg, r->js, stream, seq, NULL, NULL), NATS_OK);
    assert_string_equal(natsMsg_GetSubject(msg), subject);
    assert_int_equal(natsMsg_GetDataLength(msg), (int)strlen(m->payload));
    assert_memory_equal(natsMsg_GetData(msg), m->payload, strlen(m->payload));
    const char *v = NULL;
    assert_int_equal(natsMsgHeader_Get(msg, "Nats-Msg-Id", &v), NATS_OK);
    assert_string_equal(v, m->id);
    assert_int_equal(natsMsgHeader_Get(msg, "Microshop-Aggregate-Id", &v), NATS_OK);
    assert_string_equal(v, m->aggregate_id);
    assert_int_equal(natsMsgHeader_Get(msg, "Microshop-Event-Type", &v), NATS_OK);
    assert_string_equal(v, m->type);
    natsMsg_Destroy(msg);
}

static ms_outbox_message message(int64_t seq, const char *id, const char *type, const char *payload)
{
    return (ms_outbox_message){.seq = seq,
                               .id = id,
                               .aggregate_type = "user",
                               .aggregate_id = "agg-1",
                               .type = type,
                               .payload = payload,
                               .created_at = "2026-12-06T05:00:00.000Z"};
}

/* Publishes until it succeeds (a reconnect takes a while); fails after the deadline. */
static void publish_eventually(ms_publisher *pub, const ms_outbox_message *msgs, size_t n)
{
    double deadline = now_s() + DEADLINE_S;
    while (pub->publish(pub->self, msgs, n) != 0) {
        assert_true(now_s() < deadline);
        sleep_ms(100);
    }
}

/* ---- tests ---- */

static void test_publishes_and_dedupes(void **state)
{
    fixture *f = need_server(state);
    server_start(f);
    ms_publisher pub;
    assert_int_equal(ms_publisher_nats(f->url, "user", PUBLISH_TIMEOUT_MS, &pub), 0);
    assert_string_equal(pub.name, "nats");
    ms_outbox_message batch[] = {
        message(1, "id-1", "user.created", "{\"id\":\"agg-1\",\"email\":\"a@example.com\"}"),
        message(2, "id-2", "user.updated", "{\"id\":\"agg-1\",\"name\":\"A\"}"),
        message(3, "id-3", "OrderCreated", "[1,2,3]"),
    };
    assert_int_equal(pub.publish(pub.self, batch, 3), 0);

    reader r;
    reader_open(&r, f);
    assert_int_equal(stream_msgs(&r, "MICROSHOP_USER"), 3);
    assert_msg(&r, "MICROSHOP_USER", 1, "user.created", &batch[0]);
    assert_msg(&r, "MICROSHOP_USER", 2, "user.updated", &batch[1]);
    assert_msg(&r, "MICROSHOP_USER", 3, "user.OrderCreated", &batch[2]);

    /* the relay repeats a batch it could not mark: the stream drops the repeats */
    assert_int_equal(pub.publish(pub.self, batch, 3), 0);
    assert_int_equal(stream_msgs(&r, "MICROSHOP_USER"), 3);
    pub.close(pub.self);

    /* a second publisher (a restarted service) finds the stream and still dedupes */
    assert_int_equal(ms_publisher_nats(f->url, "user", PUBLISH_TIMEOUT_MS, &pub), 0);
    assert_int_equal(pub.publish(pub.self, batch, 3), 0);
    assert_int_equal(stream_msgs(&r, "MICROSHOP_USER"), 3);
    pub.close(pub.self);
    reader_close(&r);
}

static void test_outage_fails_then_recovers(void **state)
{
    fixture *f = need_server(state);
    server_start(f);
    ms_publisher pub;
    assert_int_equal(ms_publisher_nats(f->url, "order", PUBLISH_TIMEOUT_MS, &pub), 0);
    ms_outbox_message a = message(1, "id-a", "OrderCreated", "{\"n\":1}");
    ms_outbox_message b = message(2, "id-b", "OrderConfirmed", "{\"n\":2}");
    assert_int_equal(pub.publish(pub.self, &a, 1), 0);

    server_kill(f);
    assert_true(pub.publish(pub.self, &b, 1) < 0); /* no server, no ack */

    server_start(f); /* same port and store: the stream survives */
    publish_eventually(&pub, &b, 1);
    reader r;
    reader_open(&r, f);
    /* b once, though its failed attempts may have reached the server after the reconnect */
    assert_int_equal(stream_msgs(&r, "MICROSHOP_ORDER"), 2);
    assert_msg(&r, "MICROSHOP_ORDER", 1, "order.OrderCreated", &a);
    reader_close(&r);
    pub.close(pub.self);
}

static void test_unreachable_at_start_connects_later(void **state)
{
    fixture *f = need_server(state);
    ms_publisher pub;
    /* no server yet: the publisher is made and keeps trying in the background */
    assert_int_equal(ms_publisher_nats(f->url, "payment", PUBLISH_TIMEOUT_MS, &pub), 0);
    ms_outbox_message a = message(1, "id-p", "payment.captured", "{}");
    assert_int_equal(pub.publish(pub.self, &a, 1), MS_ECONN);

    server_start(f);
    publish_eventually(&pub, &a, 1); /* the stream is made on the first publish */
    reader r;
    reader_open(&r, f);
    assert_int_equal(stream_msgs(&r, "MICROSHOP_PAYMENT"), 1);
    assert_msg(&r, "MICROSHOP_PAYMENT", 1, "payment.captured", &a);
    reader_close(&r);
    pub.close(pub.self);
}

static void test_url_check(void **state)
{
    (void)state;
    assert_int_equal(ms_nats_url_check("nats://127.0.0.1:4222"), 0);
    assert_int_equal(ms_nats_url_check("nats://localhost"), 0);
    assert_int_equal(ms_nats_url_check("nats://u:p@nats-1:4222,nats://nats-2:4222"), 0);
    assert_int_equal(ms_nats_url_check("nats://[::1]:4222"), 0);
    assert_int_equal(ms_nats_url_check(NULL), MS_EINVAL);
    assert_int_equal(ms_nats_url_check(""), MS_EINVAL);
    assert_int_equal(ms_nats_url_check("127.0.0.1:4222"), MS_EINVAL);
    assert_int_equal(ms_nats_url_check("http://127.0.0.1:4222"), MS_EINVAL);
    assert_int_equal(ms_nats_url_check("nats://"), MS_EINVAL);
    assert_int_equal(ms_nats_url_check("nats://host:0"), MS_EINVAL);
    assert_int_equal(ms_nats_url_check("nats://host:65536"), MS_EINVAL);
    assert_int_equal(ms_nats_url_check("nats://host:42x"), MS_EINVAL);
    assert_int_equal(ms_nats_url_check("nats://host/path"), MS_EINVAL);
    assert_int_equal(ms_nats_url_check("nats://a:1,"), MS_EINVAL);
    ms_publisher pub;
    assert_int_equal(ms_publisher_nats("http://x", "user", 0, &pub), MS_EINVAL);
    assert_int_equal(ms_publisher_nats("nats://x:1", "User", 0, &pub), MS_EINVAL);
    assert_int_equal(ms_publisher_nats("nats://x:1", "a.b", 0, &pub), MS_EINVAL);
}

int main(void)
{
    ms_log_init("test_publisher_nats", MS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publishes_and_dedupes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outage_fails_then_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_at_start_connects_later, setup, teardown),
        cmocka_unit_test(test_url_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
