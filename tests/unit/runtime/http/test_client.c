/*
 * test_client.c — the service client against real upstreams: small libuv HTTP servers on their
 * own loop thread that answer scripted responses (by path), and the client on the test's loop.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/core/error.h"
#include "runtime/http/client.h"
#include "runtime/obs/metrics.h"

/* WAIT_MS: how long any wait polls its condition before the test fails (generous: tests check
 * what happens, never how fast). */
enum { WAIT_MS = 20000, SLOW_MS = 4000 };

/* ---- the upstream: a scripted server ---- */

typedef struct tserver tserver;
typedef struct sconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    tserver *s;
    http_parser p;
    char url[256];
    size_t url_len;
    char field[64];
    size_t field_len;
    int last_cb; /* 1 after a field, 2 after a value */
    char tp[128];
    size_t tp_len;
    char body[256];
    size_t body_len;
    bool closing, close_after;
    struct sconn *prev, *next;
} sconn;

struct tserver {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    uv_thread_t thread;
    int port;
    sconn *conns;
    atomic_int accepts, requests, closed, fail_503_left;
    atomic_bool close_after_response, unhealthy;
    pthread_mutex_t lock;
    char traceparent[128]; /* the last one received */
};

typedef struct {
    uv_write_t w;
    char *data;
    sconn *sc;
    bool close_after;
} swrite;

static void sconn_closed(uv_handle_t *h)
{
    sconn *sc = h->data;
    if (h == (uv_handle_t *)&sc->tcp) {
        atomic_fetch_add(&sc->s->closed, 1);
        free(sc);
    }
}

static void sconn_timer_closed(uv_handle_t *h)
{
    sconn *sc = h->data;
    uv_close((uv_handle_t *)&sc->tcp, sconn_closed);
}

static void sconn_close(sconn *sc)
{
    if (sc->closing)
        return;
    sc->closing = true;
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        sc->s->conns = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    uv_close((uv_handle_t *)&sc->timer, sconn_timer_closed);
}

static void on_swritten(uv_write_t *w, int status)
{
    swrite *sw = (swrite *)w;
    if (sw->close_after)
        sconn_close(sw->sc);
    free(sw->data);
    free(sw);
}

static void sconn_send(sconn *sc, const char *data, size_t n, bool close_after)
{
    swrite *sw = calloc(1, sizeof *sw);
    sw->data = malloc(n);
    memcpy(sw->data, data, n);
    sw->sc = sc;
    sw->close_after = close_after;
    uv_buf_t b = uv_buf_init(sw->data, (unsigned)n);
    uv_write(&sw->w, (uv_stream_t *)&sc->tcp, &b, 1, on_swritten);
}

static void respond(sconn *sc, int status, const char *extra, const char *body)
{
    char head[512];
    bool close_after = atomic_load(&sc->s->close_after_response) || sc->close_after;
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
                     status, strlen(body), extra ? extra : "");
    size_t blen = sc->p.method == HTTP_HEAD ? 0 : strlen(body); /* HEAD: the length only */
    char *all = malloc((size_t)n + blen + 1);
    memcpy(all, head, (size_t)n);
    memcpy(all + n, body, blen);
    sconn_send(sc, all, (size_t)n + blen, close_after);
    free(all);
}

static void on_slow(uv_timer_t *t)
{
    respond(t->data, 200, NULL, "late");
}

static void handle(sconn *sc)
{
    tserver *s = sc->s;
    atomic_fetch_add(&s->requests, 1);
    pthread_mutex_lock(&s->lock);
    snprintf(s->traceparent, sizeof s->traceparent, "%.*s", (int)sc->tp_len, sc->tp);
    pthread_mutex_unlock(&s->lock);
    const char *u = sc->url;
    if (strcmp(u, "/ok") == 0) {
        respond(sc, 200, NULL, "hello");
    } else if (strcmp(u, "/slow") == 0) {
        uv_timer_start(&sc->timer, on_slow, SLOW_MS, 0);
    } else if (strcmp(u, "/flaky") == 0) {
        if (atomic_fetch_sub(&s->fail_503_left, 1) > 0)
            respond(sc, 503, "Retry-After: 1\r\n", "busy");
        else
            respond(sc, 200, NULL, "ok");
    } else if (strcmp(u, "/err") == 0) {
        respond(sc, atomic_fetch_sub(&s->fail_503_left, 1) > 0 ? 500 : 200, NULL, "err?");
    } else if (strcmp(u, "/busy") == 0) {
        if (atomic_fetch_sub(&s->fail_503_left, 1) > 0)
            respond(sc, 503, NULL, "busy");
        else
            uv_timer_start(&sc->timer, on_slow, SLOW_MS, 0);
    } else if (strcmp(u, "/health") == 0) {
        respond(sc, atomic_load(&s->unhealthy) ? 503 : 200, NULL, "health");
    } else if (strcmp(u, "/drop") == 0) {
        sconn_close(sc);
    } else if (strcmp(u, "/trace") == 0) {
        respond(sc, 200, NULL, s->traceparent);
    } else if (strcmp(u, "/echo") == 0) {
        char b[300];
        snprintf(b, sizeof b, "%s %.*s", http_method_str(sc->p.method), (int)sc->body_len,
                 sc->body);
        respond(sc, 200, NULL, b);
    } else if (strcmp(u, "/chunked") == 0) {
        const char *h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
        sconn_send(sc, h, strlen(h), false);
    } else if (strcmp(u, "/bye") == 0) {
        sc->close_after = true;
        respond(sc, 200, "Connection: close\r\n", "bye");
    } else if (strcmp(u, "/big-body") == 0) {
        const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\nabc";
        sconn_send(sc, h, strlen(h), false);
    } else if (strcmp(u, "/big-headers") == 0) {
        size_t n = 20 * 1024;
        char *v = malloc(n + 64);
        int k = snprintf(v, 64, "HTTP/1.1 200 OK\r\nX-Big: ");
        memset(v + k, 'a', n);
        memcpy(v + k + n, "\r\nContent-Length: 0\r\n\r\n", 23);
        sconn_send(sc, v, (size_t)k + n + 23, false);
        free(v);
    } else {
        respond(sc, 404, NULL, "no");
    }
}

static int s_on_message_begin(http_parser *p)
{
    sconn *sc = p->data;
    sc->url_len = sc->field_len = sc->tp_len = sc->body_len = 0;
    sc->url[0] = '\0';
    sc->last_cb = 0;
    return 0;
}

static int s_on_url(http_parser *p, const char *at, size_t n)
{
    sconn *sc = p->data;
    if (sc->url_len + n < sizeof sc->url) {
        memcpy(sc->url + sc->url_len, at, n);
        sc->url_len += n;
        sc->url[sc->url_len] = '\0';
    }
    return 0;
}

static int s_on_field(http_parser *p, const char *at, size_t n)
{
    sconn *sc = p->data;
    if (sc->last_cb != 1)
        sc->field_len = 0;
    if (sc->field_len + n < sizeof sc->field) {
        memcpy(sc->field + sc->field_len, at, n);
        sc->field_len += n;
    }
    sc->last_cb = 1;
    return 0;
}

static int s_on_value(http_parser *p, const char *at, size_t n)
{
    sconn *sc = p->data;
    if (sc->field_len == 11 && strncasecmp(sc->field, "traceparent", 11) == 0 &&
        sc->tp_len + n < sizeof sc->tp) {
        memcpy(sc->tp + sc->tp_len, at, n);
        sc->tp_len += n;
    }
    sc->last_cb = 2;
    return 0;
}

static int s_on_body(http_parser *p, const char *at, size_t n)
{
    sconn *sc = p->data;
    if (sc->body_len + n < sizeof sc->body) {
        memcpy(sc->body + sc->body_len, at, n);
        sc->body_len += n;
    }
    return 0;
}

static int s_on_complete(http_parser *p)
{
    handle(p->data);
    return 0;
}

static const http_parser_settings s_settings = {
    .on_message_begin = s_on_message_begin,
    .on_url = s_on_url,
    .on_header_field = s_on_field,
    .on_header_value = s_on_value,
    .on_body = s_on_body,
    .on_message_complete = s_on_complete,
};

static char s_readbuf[64 * 1024];
static void s_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    *b = uv_buf_init(s_readbuf, sizeof s_readbuf); /* one server thread reads at a time */
}

static void s_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    sconn *sc = st->data;
    if (sc->closing)
        return;
    if (nread < 0) {
        sconn_close(sc);
        return;
    }
    size_t used = http_parser_execute(&sc->p, &s_settings, b->base, (size_t)nread);
    if (!sc->closing && used != (size_t)nread)
        sconn_close(sc);
}

static void s_on_connection(uv_stream_t *l, int status)
{
    tserver *s = l->data;
    if (status < 0)
        return;
    sconn *sc = calloc(1, sizeof *sc);
    sc->s = s;
    uv_tcp_init(&s->loop, &sc->tcp);
    uv_timer_init(&s->loop, &sc->timer);
    sc->tcp.data = sc->timer.data = sc;
    if (uv_accept(l, (uv_stream_t *)&sc->tcp) < 0) {
        sc->closing = true;
        uv_close((uv_handle_t *)&sc->timer, sconn_timer_closed);
        return;
    }
    atomic_fetch_add(&s->accepts, 1);
    http_parser_init(&sc->p, HTTP_REQUEST);
    sc->p.data = sc;
    sc->next = s->conns;
    if (s->conns)
        s->conns->prev = sc;
    s->conns = sc;
    uv_read_start((uv_stream_t *)&sc->tcp, s_alloc, s_on_read);
}

static void s_on_stop(uv_async_t *a)
{
    tserver *s = a->data;
    while (s->conns)
        sconn_close(s->conns);
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_close((uv_handle_t *)&s->stop, NULL);
}

static void s_run(void *arg)
{
    tserver *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

static tserver *server_start(void)
{
    tserver *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    assert_int_equal(uv_loop_init(&s->loop), 0);
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 64, s_on_connection), 0);
    int len = sizeof addr;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&addr, &len);
    s->port = ntohs(addr.sin_port);
    uv_async_init(&s->loop, &s->stop, s_on_stop);
    s->stop.data = s;
    assert_int_equal(uv_thread_create(&s->thread, s_run, s), 0);
    return s;
}

static void server_stop(tserver *s)
{
    uv_async_send(&s->stop);
    uv_thread_join(&s->thread);
    assert_int_equal(uv_loop_close(&s->loop), 0);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* A port nothing listens on: bound, then closed. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, len), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- the client side ---- */

typedef struct {
    uv_loop_t loop;
    ms_http_client *c;
    ms_http_client_metrics *m;
    tserver *s[2];
} fixture;

typedef struct {
    bool done;
    int err, status, attempts, calls;
    char body[256];
    char instance[300];
    char content_type[64];
    uint64_t at; /* uv_now when called back */
} result;

static void on_result(int err, const ms_http_client_resp *r, void *arg)
{
    result *res = arg;
    res->done = true;
    res->calls++;
    res->err = err;
    res->status = r->status;
    res->attempts = r->attempts;
    snprintf(res->body, sizeof res->body, "%.*s", (int)r->body_len, r->body);
    snprintf(res->instance, sizeof res->instance, "%s", r->instance ? r->instance : "");
    const char *ct = ms_http_client_resp_header(r, "content-type");
    snprintf(res->content_type, sizeof res->content_type, "%s", ct ? ct : "");
}

static void on_tick(uv_timer_t *t) {}

/* Runs the loop until *flag (or cond(arg)) holds; fails the test after WAIT_MS. */
static void run_until(fixture *f, const bool *flag, bool (*cond)(void *), void *arg)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    uint64_t end = uv_now(&f->loop) + WAIT_MS;
    while (!(flag ? *flag : cond(arg)) && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(flag ? *flag : cond(arg));
}

static void add_upstream(fixture *f, const char *name, const char *spec)
{
    ms_http_upstream_list l;
    assert_int_equal(ms_http_upstream_parse(spec, &l), 0);
    assert_int_equal(ms_http_client_add_upstream(f->c, name, &l), 0);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->m = ms_http_client_metrics_new();
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    cfg.metrics = f->m;
    cfg.max_body_bytes = 1024 * 1024;
    f->c = ms_http_client_new(&f->loop, &cfg);
    for (int i = 0; i < 2; i++)
        f->s[i] = server_start();
    char spec[128];
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d", f->s[0]->port);
    add_upstream(f, "one", spec);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms_http_client_free(f->c);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    for (int i = 0; i < 2; i++)
        server_stop(f->s[i]);
    ms_http_client_metrics_free(f->m);
    free(f);
    return 0;
}

static ms_http_client_req req_of(const char *upstream, int method, const char *path)
{
    return (ms_http_client_req){.upstream = upstream, .method = method, .path = path};
}

/* One call, run to its callback. */
static result call(fixture *f, ms_http_client_req req)
{
    result r = {0};
    assert_int_equal(ms_http_client_request(f->c, &req, on_result, &r), 0);
    assert_false(r.done); /* never called back inside the request */
    run_until(f, &r.done, NULL, NULL);
    assert_int_equal(r.calls, 1);
    return r;
}

static char *metrics_text(fixture *f)
{
    ms_buf b;
    ms_buf_init(&b, 1024);
    ms_http_client_metrics_render(&b, f->m);
    ms_buf_add(&b, "", 1);
    return b.p;
}

/* ---- tests ---- */

static void test_get_200(void **state)
{
    fixture *f = *state;
    result r = call(f, req_of("one", HTTP_GET, "/ok"));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_string_equal(r.content_type, "text/plain");
    assert_int_equal(r.attempts, 1);
    char *m = metrics_text(f);
    assert_non_null(strstr(m, "http_client_requests_total{upstream=\"one\",status=\"200\"} 1\n"));
    assert_non_null(strstr(m, "http_client_request_duration_seconds_count{upstream=\"one\"} 1\n"));
    assert_non_null(strstr(m, "http_client_request_duration_seconds_bucket{upstream=\"one\","
                              "le=\"+Inf\"} 1\n"));
    free(m);
}

static void test_keepalive_reuse(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 5; i++) {
        result r = call(f, req_of("one", HTTP_GET, "/ok"));
        assert_int_equal(r.status, 200);
    }
    assert_int_equal(atomic_load(&f->s[0]->accepts), 1);
    assert_int_equal(atomic_load(&f->s[0]->requests), 5);
    assert_int_equal(ms_http_client_idle_count(f->c, "one"), 1);
}

static bool no_idle(void *arg)
{
    return ms_http_client_idle_count(((fixture *)arg)->c, "one") == 0;
}

static void test_idle_closed_by_server(void **state)
{
    fixture *f = *state;
    atomic_store(&f->s[0]->close_after_response, true);
    result r = call(f, req_of("one", HTTP_GET, "/ok"));
    assert_int_equal(r.status, 200);
    /* the client sees the EOF on its idle connection and drops it */
    run_until(f, NULL, no_idle, f);
    atomic_store(&f->s[0]->close_after_response, false);
    /* a POST is never retried once sent: it succeeds only on a fresh connection */
    ms_http_client_req post = req_of("one", HTTP_POST, "/ok");
    r = call(f, post);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(atomic_load(&f->s[0]->accepts), 2);
}

static void test_connection_close(void **state)
{
    fixture *f = *state;
    result r = call(f, req_of("one", HTTP_GET, "/bye"));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "bye");
    assert_int_equal(ms_http_client_idle_count(f->c, "one"), 0);
    r = call(f, req_of("one", HTTP_GET, "/ok"));
    assert_int_equal(r.status, 200);
    assert_int_equal(atomic_load(&f->s[0]->accepts), 2);
}

static void test_deadline(void **state)
{
    fixture *f = *state;
    ms_http_client_req req = req_of("one", HTTP_GET, "/slow");
    uint64_t start = uv_now(&f->loop);
    req.deadline = start + 300;
    result r = {0};
    assert_int_equal(ms_http_client_request(f->c, &req, on_result, &r), 0);
    while (!r.done)
        uv_run(&f->loop, UV_RUN_ONCE);
    r.at = uv_now(&f->loop);
    assert_int_equal(r.err, MS_ETIMEDOUT);
    assert_int_equal(r.status, 0);
    assert_true(r.at >= req.deadline);       /* not early */
    assert_true(r.at < start + SLOW_MS - 1); /* and before the answer would have come */

    /* a deadline already gone: called back (later, from the loop) without trying */
    req.deadline = 1;
    r = call(f, req);
    assert_int_equal(r.err, MS_ETIMEDOUT);
    assert_int_equal(r.attempts, 0);
    assert_int_equal(atomic_load(&f->s[0]->requests), 1);
    char *m = metrics_text(f);
    assert_non_null(strstr(m, "http_client_requests_total{upstream=\"one\",status=\"timeout\"} 2"));
    free(m);
}

static void test_retry_503(void **state)
{
    fixture *f = *state;
    atomic_store(&f->s[0]->fail_503_left, 2);
    result r = call(f, req_of("one", HTTP_GET, "/flaky"));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.attempts, 3);
    assert_int_equal(atomic_load(&f->s[0]->requests), 3);

    /* retries spent: the last 503 is the answer */
    atomic_store(&f->s[0]->fail_503_left, 5);
    r = call(f, req_of("one", HTTP_PUT, "/flaky"));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "busy");
    assert_int_equal(r.attempts, 3);
    assert_int_equal(atomic_load(&f->s[0]->requests), 6);

    /* a POST flagged idempotent is retried too */
    atomic_store(&f->s[0]->fail_503_left, 1);
    ms_http_client_req post = req_of("one", HTTP_POST, "/flaky");
    post.idempotent = true;
    post.body = "{}";
    post.body_len = 2;
    post.content_type = "application/json";
    r = call(f, post);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.attempts, 2);
    char *m = metrics_text(f);
    assert_non_null(strstr(m, "http_client_retries_total{upstream=\"one\"} 5\n"));
    free(m);
}

static void test_post_not_retried(void **state)
{
    fixture *f = *state;
    result r = call(f, req_of("one", HTTP_POST, "/drop"));
    assert_int_equal(r.err, MS_ECONN);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(atomic_load(&f->s[0]->requests), 1);

    atomic_store(&f->s[0]->fail_503_left, 1);
    r = call(f, req_of("one", HTTP_POST, "/flaky"));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(atomic_load(&f->s[0]->requests), 2);

    /* the same drop for a GET is retried (and dropped each time) */
    r = call(f, req_of("one", HTTP_GET, "/drop"));
    assert_int_equal(r.err, MS_ECONN);
    assert_int_equal(r.attempts, 3);
    assert_int_equal(atomic_load(&f->s[0]->requests), 5);
}

static void test_round_robin(void **state)
{
    fixture *f = *state;
    char spec[128];
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d, http://127.0.0.1:%d/", f->s[0]->port,
             f->s[1]->port);
    add_upstream(f, "two", spec);
    for (int i = 0; i < 6; i++) {
        result r = call(f, req_of("two", HTTP_GET, "/ok"));
        assert_int_equal(r.status, 200);
    }
    assert_int_equal(atomic_load(&f->s[0]->requests), 3);
    assert_int_equal(atomic_load(&f->s[1]->requests), 3);
}

static void test_dead_instance(void **state)
{
    fixture *f = *state;
    char spec[128];
    int dead = dead_port();
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d,http://127.0.0.1:%d", dead, f->s[0]->port);
    add_upstream(f, "half", spec);
    /* the first call goes to the dead one first: a connect failure is retried, even for a
     * POST (nothing was sent) */
    result r = call(f, req_of("half", HTTP_POST, "/ok"));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.attempts, 2);
    uint64_t down_at = uv_now(&f->loop);
    for (int i = 0; i < 4; i++) {
        r = call(f, req_of("half", HTTP_GET, "/ok"));
        assert_int_equal(r.status, 200);
        /* the dead one is down for a second: not tried again (after, a probe may try it) */
        if (uv_now(&f->loop) < down_at + 1000)
            assert_int_equal(r.attempts, 1);
    }
    assert_int_equal(atomic_load(&f->s[0]->requests), 5);
    char *m = metrics_text(f);
    char want[200];
    snprintf(want, sizeof want,
             "http_client_instances_down{upstream=\"half\",instance=\"127.0.0.1:%d\"} 1\n", dead);
    assert_non_null(strstr(m, want));
    free(m);

    /* every instance down: still tried */
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d", dead);
    add_upstream(f, "gone", spec);
    r = call(f, req_of("gone", HTTP_GET, "/ok"));
    assert_int_equal(r.err, MS_ECONN);
    assert_int_equal(r.attempts, 3);

    /* a client gone takes its view of the instances with it */
    ms_http_client_free(f->c);
    f->c = NULL;
    m = metrics_text(f);
    want[strlen(want) - 2] = '0';
    assert_non_null(strstr(m, want));
    free(m);
}

typedef struct {
    int calls, n;
    int err[3], status[3];
    char body[3][64];
    char content_type[3][32];
} join_result;

static void on_all(const ms_http_client_result *results, int n, void *arg)
{
    join_result *j = arg;
    j->calls++;
    j->n = n;
    for (int i = 0; i < n && i < 3; i++) {
        j->err[i] = results[i].err;
        j->status[i] = results[i].resp.status;
        snprintf(j->body[i], sizeof j->body[i], "%.*s", (int)results[i].resp.body_len,
                 results[i].resp.body);
        const char *ct = ms_http_client_resp_header(&results[i].resp, "Content-Type");
        snprintf(j->content_type[i], sizeof j->content_type[i], "%s", ct ? ct : "");
    }
}

static bool join_done(void *arg)
{
    return ((join_result *)arg)->calls > 0;
}

static void test_fanout(void **state)
{
    fixture *f = *state;
    ms_http_client_req reqs[3] = {req_of("one", HTTP_GET, "/ok"), req_of("one", HTTP_POST, "/drop"),
                                  req_of("one", HTTP_GET, "/flaky")};
    join_result j = {0};
    assert_int_equal(ms_http_client_all(f->c, reqs, 3, on_all, &j), 0);
    run_until(f, NULL, join_done, &j);
    assert_int_equal(j.calls, 1);
    assert_int_equal(j.n, 3);
    assert_int_equal(j.err[0], 0);
    assert_int_equal(j.status[0], 200);
    assert_string_equal(j.body[0], "hello");
    assert_string_equal(j.content_type[0], "text/plain");
    assert_string_equal(j.content_type[1], "");
    assert_int_equal(j.err[1], MS_ECONN);
    assert_int_equal(j.status[1], 0);
    assert_int_equal(j.err[2], 0);
    assert_string_equal(j.body[2], "ok");
    /* an invalid request refuses the whole fan-out: nothing starts, no callback */
    reqs[1].upstream = "nope";
    assert_int_equal(ms_http_client_all(f->c, reqs, 3, on_all, &j), MS_EINVAL);
    assert_int_equal(j.calls, 1);
}

static void test_traceparent(void **state)
{
    fixture *f = *state;
    const char *in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    ms_http_client_req req = req_of("one", HTTP_GET, "/trace");
    req.traceparent = in;
    result r = call(f, req);
    assert_int_equal(r.status, 200);
    assert_int_equal(strlen(r.body), MS_TRACEPARENT_LEN);
    assert_memory_equal(r.body, in, 36);               /* version and trace id */
    assert_memory_not_equal(r.body + 36, in + 36, 16); /* a new span id */
    assert_string_equal(r.body + 52, "-01");

    req.traceparent = NULL; /* none: a new trace */
    r = call(f, req);
    assert_int_equal(strlen(r.body), MS_TRACEPARENT_LEN);
    assert_memory_equal(r.body, "00-", 3);
    assert_memory_not_equal(r.body + 3, in + 3, 32);

    /* an invalid one starts a new trace (parsing is tested in test_trace.c) */
    req.traceparent = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    r = call(f, req);
    assert_int_equal(strlen(r.body), MS_TRACEPARENT_LEN);
    assert_memory_not_equal(r.body + 3, "4bf92f3577b34da6a3ce929d0e0e4736", 32);
}

static void test_upstream_parse(void **state)
{
    ms_http_upstream_list l;
    assert_int_equal(ms_http_upstream_parse("http://a:1,http://b.example:2/", &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.addr[0].host, "a");
    assert_int_equal(l.addr[0].port, 1);
    assert_string_equal(l.addr[1].host, "b.example");
    assert_int_equal(l.addr[1].port, 2);
    assert_int_equal(ms_http_upstream_parse(" http://127.0.0.1:8083 , HTTP://[::1]:65535/", &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.addr[1].host, "::1");
    assert_int_equal(l.addr[1].port, 65535);

    const char *bad[][2] = {
        {"http://a:1,http://b", "http://b"},
        {"https://a:1", "https://a:1"},
        {"http://a:1/path", "http://a:1/path"},
        {"http://a:0", "http://a:0"},
        {"http://a:65536", "http://a:65536"},
        {"http://a:1,,http://b:2", "\"\""},
        {"a:1", "a:1"},
        {"http://:1", "http://:1"},
        {"http://a:1x", "http://a:1x"},
        {"http://u@a:1", "http://u@a:1"},
        {"http://a:1?x", "http://a:1?x"},
        {"http://[::1:1", "http://[::1:1"},
        {"", "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ms_http_upstream_parse(bad[i][0], &l), MS_EINVAL);
        assert_int_equal(l.n, 0);
        if (!strstr(l.error, bad[i][1]))
            fail_msg("%s: error \"%s\" does not name the entry", bad[i][0], l.error);
    }
}

static void test_too_big(void **state)
{
    fixture *f = *state;
    result r = call(f, req_of("one", HTTP_GET, "/big-body"));
    assert_int_equal(r.err, MS_ETOOBIG);
    assert_int_equal(r.attempts, 1);
    r = call(f, req_of("one", HTTP_GET, "/big-headers"));
    assert_int_equal(r.err, MS_ETOOBIG);
    assert_int_equal(r.attempts, 1);
}

static void test_bad_requests(void **state)
{
    fixture *f = *state;
    result r = {0};
    ms_http_client_req req = req_of("nope", HTTP_GET, "/ok");
    assert_int_equal(ms_http_client_request(f->c, &req, on_result, &r), MS_EINVAL);
    req = req_of("one", HTTP_GET, "no-slash");
    assert_int_equal(ms_http_client_request(f->c, &req, on_result, &r), MS_EINVAL);
    req = req_of("one", HTTP_GET, "/a b");
    assert_int_equal(ms_http_client_request(f->c, &req, on_result, &r), MS_EINVAL);
    ms_http_header h[] = {{"Host", "evil"}};
    req = req_of("one", HTTP_GET, "/ok");
    req.headers = h;
    req.nheaders = 1;
    assert_int_equal(ms_http_client_request(f->c, &req, on_result, &r), MS_EINVAL);
    ms_http_header h2[] = {{"X-A", "1\r\nX-B: 2"}};
    req.headers = h2;
    assert_int_equal(ms_http_client_request(f->c, &req, on_result, &r), MS_EINVAL);
    assert_false(r.done);
}

static bool server_got_one(void *arg)
{
    return atomic_load(&((fixture *)arg)->s[0]->requests) >= 1;
}

static void test_free_pending(void **state)
{
    fixture *f = *state;
    result r = {0};
    ms_http_client_req req = req_of("one", HTTP_GET, "/slow");
    assert_int_equal(ms_http_client_request(f->c, &req, on_result, &r), 0);
    ms_http_client_req reqs[2] = {req_of("one", HTTP_GET, "/slow"),
                                  req_of("one", HTTP_GET, "/slow")};
    join_result j = {0};
    assert_int_equal(ms_http_client_all(f->c, reqs, 2, on_all, &j), 0);
    run_until(f, NULL, server_got_one, f); /* connected and sent */
    ms_http_client_free(f->c);             /* fails the pending calls, calling back now */
    assert_true(r.done);
    assert_int_equal(r.err, MS_ESHUTDOWN);
    assert_int_equal(j.calls, 1);
    assert_int_equal(j.err[0], MS_ESHUTDOWN);
    assert_int_equal(j.err[1], MS_ESHUTDOWN);
    f->c = NULL; /* teardown's free is then a no-op; the loop drains the handles */
}

static void test_bodies(void **state)
{
    fixture *f = *state;
    ms_http_client_req req = req_of("one", HTTP_POST, "/echo");
    req.body = "{\"a\":1}";
    req.body_len = 7;
    req.content_type = "application/json";
    result r = call(f, req);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "POST {\"a\":1}");
    r = call(f, req_of("one", HTTP_GET, "/chunked"));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "abcdefg");
    r = call(f, req_of("one", HTTP_HEAD, "/ok")); /* Content-Length: 5, and no body follows */
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    r = call(f, req_of("one", HTTP_GET, "/ok")); /* the same connection, still in step */
    assert_string_equal(r.body, "hello");
    assert_int_equal(atomic_load(&f->s[0]->accepts), 1);
}

static void test_name_lookup(void **state)
{
    fixture *f = *state;
    /* the client connects to the first address a name resolves to; the test servers listen on
     * 127.0.0.1 only */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo("localhost", "80", &hints, &res) != 0 || res->ai_family != AF_INET) {
        if (res)
            freeaddrinfo(res);
        skip();
    }
    freeaddrinfo(res);
    char spec[128];
    snprintf(spec, sizeof spec, "http://localhost:%d", f->s[0]->port);
    add_upstream(f, "named", spec);
    result r = call(f, req_of("named", HTTP_GET, "/ok"));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.instance, spec + 7);
    snprintf(spec, sizeof spec, "http://no-such-host.invalid:%d", f->s[0]->port);
    add_upstream(f, "nowhere", spec);
    r = call(f, req_of("nowhere", HTTP_GET, "/ok"));
    assert_int_equal(r.err, MS_ECONN);
}

typedef struct {
    fixture *f;
    uint64_t until;
} wait_time;

static bool time_reached(void *arg)
{
    wait_time *w = arg;
    return uv_now(&w->f->loop) >= w->until;
}

static void test_probe_back(void **state)
{
    fixture *f = *state;
    char spec[128];
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d,http://127.0.0.1:%d", f->s[0]->port,
             f->s[1]->port);
    add_upstream(f, "pair", spec);
    /* a 503 (to a POST: not retried) marks the first instance down */
    atomic_store(&f->s[0]->fail_503_left, 1);
    result r = call(f, req_of("pair", HTTP_POST, "/flaky"));
    assert_int_equal(r.status, 503);
    uint64_t down_at = uv_now(&f->loop);
    for (int i = 0; i < 3; i++) {
        r = call(f, req_of("pair", HTTP_GET, "/ok"));
        assert_int_equal(r.status, 200);
    }
    if (uv_now(&f->loop) < down_at + 1000) /* still inside its time down: skipped */
        assert_int_equal(atomic_load(&f->s[0]->requests), 1);
    char *m = metrics_text(f);
    char want[200];
    snprintf(want, sizeof want,
             "http_client_instances_down{upstream=\"pair\",instance=\"127.0.0.1:%d\"} 1\n",
             f->s[0]->port);
    assert_non_null(strstr(m, want));
    free(m);
    /* after its time down, the next calls probe it and bring it back */
    wait_time w = {f, down_at + 1000};
    run_until(f, NULL, time_reached, &w);
    int before = atomic_load(&f->s[0]->requests);
    for (int i = 0; i < 2; i++) {
        r = call(f, req_of("pair", HTTP_GET, "/ok"));
        assert_int_equal(r.status, 200);
    }
    assert_int_equal(atomic_load(&f->s[0]->requests), before + 1);
    m = metrics_text(f);
    want[strlen(want) - 2] = '0';
    assert_non_null(strstr(m, want));
    free(m);
}

typedef struct {
    ms_http_client *c;
} client_ref;

static bool client_no_idle(void *arg)
{
    return ms_http_client_idle_count(((client_ref *)arg)->c, "one") == 0;
}

static void test_idle_cap_and_timeout(void **state)
{
    fixture *f = *state;
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    cfg.max_idle = 1;
    cfg.idle_timeout_ms = 50;
    client_ref ref = {ms_http_client_new(&f->loop, &cfg)};
    char spec[128];
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d", f->s[0]->port);
    ms_http_upstream_list l;
    assert_int_equal(ms_http_upstream_parse(spec, &l), 0);
    assert_int_equal(ms_http_client_add_upstream(ref.c, "one", &l), 0);
    assert_int_equal(ms_http_client_add_upstream(ref.c, "one", &l), MS_EINVAL);
    /* two at once: two connections, of which one is kept */
    ms_http_client_req reqs[2] = {req_of("one", HTTP_GET, "/ok"), req_of("one", HTTP_GET, "/ok")};
    join_result j = {0};
    assert_int_equal(ms_http_client_all(ref.c, reqs, 2, on_all, &j), 0);
    run_until(f, NULL, join_done, &j);
    assert_int_equal(j.status[0], 200);
    assert_int_equal(j.status[1], 200);
    assert_int_equal(atomic_load(&f->s[0]->accepts), 2);
    assert_int_equal(ms_http_client_idle_count(ref.c, "one"), 1);
    /* and that one closes once idle for longer than the timeout */
    run_until(f, NULL, client_no_idle, &ref);
    ms_http_client_free(ref.c);
}

static void set_upstream(ms_http_client *c, const char *name, const char *spec)
{
    ms_http_upstream_list l;
    assert_int_equal(ms_http_upstream_parse(spec, &l), 0);
    assert_int_equal(ms_http_client_set_upstream(c, name, &l), 0);
}

static void test_set_upstream(void **state)
{
    fixture *f = *state;
    char spec[128], want[200];
    int dead = dead_port();
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d,http://127.0.0.1:%d", dead, f->s[0]->port);
    add_upstream(f, "moving", spec);
    result r = call(f, req_of("moving", HTTP_GET, "/ok")); /* marks the dead one down */
    assert_int_equal(r.status, 200);
    assert_int_equal(r.attempts, 2);
    assert_int_equal(ms_http_client_idle_count(f->c, "moving"), 1);

    /* a slow call in flight on s0 while s0 leaves the list: it still finishes */
    result slow = {0};
    ms_http_client_req sreq = req_of("moving", HTTP_GET, "/slow");
    assert_int_equal(ms_http_client_request(f->c, &sreq, on_result, &slow), 0);
    wait_time w = {f, uv_now(&f->loop) + 100};
    run_until(f, NULL, time_reached, &w);
    assert_false(slow.done);
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d,http://127.0.0.1:%d", dead, f->s[1]->port);
    set_upstream(f->c, "moving", spec);
    assert_int_equal(ms_http_client_idle_count(f->c, "moving"), 0);
    /* the dead one is in both lists: still down, so calls go to s1 in one try */
    for (int i = 0; i < 3; i++) {
        r = call(f, req_of("moving", HTTP_GET, "/ok"));
        assert_int_equal(r.status, 200);
        assert_int_equal(r.attempts, 1);
    }
    assert_int_equal(atomic_load(&f->s[1]->requests), 3);
    char *m = metrics_text(f);
    snprintf(want, sizeof want,
             "http_client_instances_down{upstream=\"moving\",instance=\"127.0.0.1:%d\"} 1\n", dead);
    assert_non_null(strstr(m, want));
    free(m);
    run_until(f, &slow.done, NULL, NULL);
    assert_int_equal(slow.err, 0);
    assert_int_equal(slow.status, 200);
    assert_string_equal(slow.body, "late");
    /* the removed instance's connection is not pooled */
    assert_int_equal(ms_http_client_idle_count(f->c, "moving"), 1);

    /* the dead one removed: its down view goes */
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d", f->s[1]->port);
    set_upstream(f->c, "moving", spec);
    m = metrics_text(f);
    want[strlen(want) - 2] = '0';
    assert_non_null(strstr(m, want));
    free(m);
    r = call(f, req_of("moving", HTTP_GET, "/ok"));
    assert_int_equal(r.status, 200);
    assert_int_equal(atomic_load(&f->s[1]->accepts), 1); /* the kept instance kept its pool */

    ms_http_upstream_list empty = {0};
    assert_int_equal(ms_http_client_set_upstream(f->c, "moving", &empty), MS_EINVAL);
    assert_int_equal(ms_http_client_set_upstream(f->c, "nope", &empty), MS_EINVAL);
    /* a call in flight on an instance removed, then added back as a new one */
    slow = (result){0};
    assert_int_equal(ms_http_client_request(f->c, &sreq, on_result, &slow), 0);
    w.until = uv_now(&f->loop) + 50;
    run_until(f, NULL, time_reached, &w);
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d", f->s[0]->port);
    set_upstream(f->c, "moving", spec);
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d", f->s[1]->port);
    set_upstream(f->c, "moving", spec);
    run_until(f, &slow.done, NULL, NULL);
    assert_int_equal(slow.status, 200);
}

/* A second client on the fixture's loop and metrics, with its own settings. */
static ms_http_client *client_with(fixture *f, ms_http_client_config *cfg, const char *name,
                                   int nservers)
{
    cfg->metrics = f->m;
    ms_http_client *c = ms_http_client_new(&f->loop, cfg);
    char spec[128];
    if (nservers == 1)
        snprintf(spec, sizeof spec, "http://127.0.0.1:%d", f->s[0]->port);
    else
        snprintf(spec, sizeof spec, "http://127.0.0.1:%d,http://127.0.0.1:%d", f->s[0]->port,
                 f->s[1]->port);
    ms_http_upstream_list l;
    assert_int_equal(ms_http_upstream_parse(spec, &l), 0);
    assert_int_equal(ms_http_client_add_upstream(c, name, &l), 0);
    return c;
}

static result call_on(fixture *f, ms_http_client *c, ms_http_client_req req)
{
    result r = {0};
    assert_int_equal(ms_http_client_request(c, &req, on_result, &r), 0);
    run_until(f, &r.done, NULL, NULL);
    return r;
}

static bool has_text(char *text, const char *want)
{
    bool yes = strstr(text, want) != NULL;
    free(text);
    return yes;
}

static char *status_text(fixture *f)
{
    ms_buf b;
    ms_buf_init(&b, 256);
    ms_http_client_status_json(f->m, &b);
    ms_buf_add(&b, "", 1);
    return b.p;
}

static result slow_result; /* static: a pending call may be failed after the test returned */

static void test_least_request(void **state)
{
    fixture *f = *state;
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    cfg.balance = MS_BALANCE_LEAST_REQUEST;
    ms_http_client *c = client_with(f, &cfg, "lr", 2);
    /* one call held by an instance: the other is less busy, so it takes every new call */
    slow_result = (result){0};
    ms_http_client_req sreq = req_of("lr", HTTP_GET, "/slow");
    assert_int_equal(ms_http_client_request(c, &sreq, on_result, &slow_result), 0);
    for (int i = 0;
         i < 200 && atomic_load(&f->s[0]->requests) + atomic_load(&f->s[1]->requests) == 0; i++)
        run_until(f, NULL, time_reached, &(wait_time){f, uv_now(&f->loop) + 10});
    int busy = atomic_load(&f->s[0]->requests) == 1 ? 0 : 1;
    for (int i = 0; i < 6; i++) {
        result r = call_on(f, c, req_of("lr", HTTP_GET, "/ok"));
        assert_int_equal(r.status, 200);
    }
    assert_int_equal(atomic_load(&f->s[1 - busy]->requests), 6);
    assert_true(has_text(status_text(f), "\"active_requests\":1}"));
    ms_http_client_free(c);
    assert_int_equal(slow_result.err, MS_ESHUTDOWN);
}

static void test_ejection(void **state)
{
    fixture *f = *state;
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    cfg.eject_consecutive = 3;
    cfg.eject_base_ms = 300;
    ms_http_client *c = client_with(f, &cfg, "ej", 2);
    atomic_store(&f->s[0]->fail_503_left, 1000); /* s0 answers 500s (not marked down) */
    int fails = 0;
    for (int i = 0; i < 12; i++)
        fails += call_on(f, c, req_of("ej", HTTP_POST, "/err")).status == 500;
    /* ejected after its third 500 in a row: no traffic since */
    assert_int_equal(fails, 3);
    assert_int_equal(atomic_load(&f->s[0]->requests), 3);
    char want[200];
    snprintf(want, sizeof want,
             "http_client_ejections_total{upstream=\"ej\",instance=\"127.0.0.1:%d\"} 1\n",
             f->s[0]->port);
    assert_true(has_text(metrics_text(f), want));
    assert_true(has_text(metrics_text(f), "http_client_instances_ejected{upstream=\"ej\"} 1\n"));
    snprintf(want, sizeof want,
             "{\"address\":\"127.0.0.1:%d\",\"state\":\"ejected\",\"ejections\":1", f->s[0]->port);
    assert_true(has_text(status_text(f), want));
    /* after its time out, one probe: it fails, so out again (for twice as long) */
    wait_time w = {f, uv_now(&f->loop) + 300};
    run_until(f, NULL, time_reached, &w);
    assert_int_equal(call_on(f, c, req_of("ej", HTTP_POST, "/err")).status, 500);
    for (int i = 0; i < 4; i++)
        assert_int_equal(call_on(f, c, req_of("ej", HTTP_POST, "/err")).status, 200);
    assert_int_equal(atomic_load(&f->s[0]->requests), 4);
    want[strlen(want) - 1] = '2';
    assert_true(has_text(status_text(f), want));
    /* recovered: the next probe brings it back */
    atomic_store(&f->s[0]->fail_503_left, 0);
    w.until = uv_now(&f->loop) + 600;
    run_until(f, NULL, time_reached, &w);
    for (int i = 0; i < 4; i++)
        assert_int_equal(call_on(f, c, req_of("ej", HTTP_POST, "/err")).status, 200);
    assert_int_equal(atomic_load(&f->s[0]->requests), 6);
    assert_true(has_text(metrics_text(f), "http_client_instances_ejected{upstream=\"ej\"} 0\n"));
    ms_http_client_free(c);
}

static void test_breaker(void **state)
{
    fixture *f = *state;
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    cfg.breaker_open_ms = 300;
    ms_http_client *c = client_with(f, &cfg, "br", 1);
    atomic_store(&f->s[0]->fail_503_left, 20);
    for (int i = 0; i < 20; i++)
        assert_int_equal(call_on(f, c, req_of("br", HTTP_POST, "/err")).status, 500);
    /* 20 of 20 failed: open, calls fail fast without trying */
    result r = call_on(f, c, req_of("br", HTTP_GET, "/ok"));
    assert_int_equal(r.err, MS_ECONN);
    assert_int_equal(r.attempts, 0);
    assert_int_equal(atomic_load(&f->s[0]->requests), 20);
    assert_true(has_text(metrics_text(f), "http_client_breaker_state{upstream=\"br\"} 1\n"));
    assert_true(
        has_text(metrics_text(f),
                 "http_client_requests_total{upstream=\"br\",status=\"circuit_open\"} 1\n"));
    assert_true(has_text(status_text(f), "\"breaker\":{\"state\":\"open\",\"override\":\"auto\"}"));
    /* forced closed, calls go through; forced open, none does */
    assert_int_equal(ms_http_client_breaker_override(f->m, "br", MS_BREAKER_FORCE_CLOSED), 0);
    assert_true(has_text(status_text(f), "\"override\":\"closed\""));
    assert_int_equal(call_on(f, c, req_of("br", HTTP_GET, "/ok")).status, 200);
    assert_int_equal(ms_http_client_breaker_override(f->m, "br", MS_BREAKER_AUTO), 0);
    /* half-open after its time: three trials succeed, it closes */
    wait_time w = {f, uv_now(&f->loop) + 300};
    run_until(f, NULL, time_reached, &w);
    assert_int_equal(call_on(f, c, req_of("br", HTTP_GET, "/ok")).status, 200);
    assert_true(has_text(metrics_text(f), "http_client_breaker_state{upstream=\"br\"} 2\n"));
    assert_int_equal(call_on(f, c, req_of("br", HTTP_GET, "/ok")).status, 200);
    assert_int_equal(call_on(f, c, req_of("br", HTTP_GET, "/ok")).status, 200);
    assert_true(has_text(metrics_text(f), "http_client_breaker_state{upstream=\"br\"} 0\n"));
    assert_int_equal(ms_http_client_breaker_override(f->m, "br", MS_BREAKER_FORCE_OPEN), 0);
    r = call_on(f, c, req_of("br", HTTP_GET, "/ok"));
    assert_int_equal(r.err, MS_ECONN);
    assert_int_equal(r.attempts, 0);
    assert_int_equal(ms_http_client_breaker_override(f->m, "nope", MS_BREAKER_FORCE_OPEN),
                     MS_ENOTFOUND);
    ms_http_client_free(c);
    /* no client has it any more */
    assert_int_equal(ms_http_client_breaker_override(f->m, "br", MS_BREAKER_AUTO), MS_ENOTFOUND);
    assert_false(has_text(status_text(f), "\"br\""));
}

/* The breaker judges calls: a dead instance's failures that retries hide must not open it. */
static void test_breaker_judges_calls(void **state)
{
    fixture *f = *state;
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    cfg.down_base_ms = cfg.down_max_ms = 1; /* the dead one is tried again by nearly every call */
    cfg.eject_consecutive = 1000;
    cfg.retry_min_per_s = 1000; /* half the calls retry: far past the budget's 20 % */
    cfg.metrics = f->m;
    ms_http_client *c = ms_http_client_new(&f->loop, &cfg);
    char spec[128];
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d,http://127.0.0.1:%d", dead_port(),
             f->s[0]->port);
    ms_http_upstream_list l;
    assert_int_equal(ms_http_upstream_parse(spec, &l), 0);
    assert_int_equal(ms_http_client_add_upstream(c, "half", &l), 0);
    int retried = 0;
    for (int i = 0; i < 40; i++) {
        wait_time w = {f, uv_now(&f->loop) + 2};
        run_until(f, NULL, time_reached, &w);
        result r = call_on(f, c, req_of("half", HTTP_GET, "/ok"));
        assert_int_equal(r.status, 200);
        retried += r.attempts > 1;
    }
    assert_true(retried >= 20); /* half the attempts or more failed... */
    /* ...and the breaker, which saw 40 calls succeed, stayed closed */
    assert_true(has_text(metrics_text(f), "http_client_breaker_state{upstream=\"half\"} 0\n"));
    ms_http_client_free(c);
}

typedef struct {
    fixture *f;
    const char *want;
} status_wait;

static bool status_has(void *arg)
{
    status_wait *w = arg;
    return has_text(status_text(w->f), w->want);
}

static void test_health_checks(void **state)
{
    fixture *f = *state;
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    cfg.health_path = "/health";
    cfg.health_interval_ms = 20;
    ms_http_client *c = client_with(f, &cfg, "hc", 2);
    atomic_store(&f->s[0]->unhealthy, true);
    char want[200];
    snprintf(want, sizeof want, "{\"address\":\"127.0.0.1:%d\",\"state\":\"unhealthy\"",
             f->s[0]->port);
    status_wait w = {f, want};
    run_until(f, NULL, status_has, &w);
    char s1[64];
    snprintf(s1, sizeof s1, "127.0.0.1:%d", f->s[1]->port);
    for (int i = 0; i < 6; i++) { /* an instance failing its checks gets no calls */
        result r = call_on(f, c, req_of("hc", HTTP_POST, "/echo"));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.instance, s1);
    }
    atomic_store(&f->s[0]->unhealthy, false);
    snprintf(want, sizeof want, "{\"address\":\"127.0.0.1:%d\",\"state\":\"healthy\"",
             f->s[0]->port);
    run_until(f, NULL, status_has, &w);
    ms_http_client_free(c);
}

/* ---- the retry budget: retries add at most a fifth to the attempts an upstream gets ---- */

enum { BUDGET_CAP = 100, BUDGET_MIN_PER_S = 3, BUDGET_RESERVE = 3 * BUDGET_MIN_PER_S };

/* Calls kept `width` in flight (1: one after another) until `total` have been made. */
typedef struct {
    ms_http_client *c;
    ms_http_client_req req;
    int total, started, done, refused, attempts, answered_503;
} wave;

static void on_wave(int err, const ms_http_client_resp *r, void *arg);

static void wave_next(wave *w)
{
    w->started++;
    if (ms_http_client_request(w->c, &w->req, on_wave, w) != 0)
        w->refused++, w->done++;
}

static void on_wave(int err, const ms_http_client_resp *r, void *arg)
{
    wave *w = arg;
    w->done++;
    w->attempts += r->attempts;
    w->answered_503 += err == 0 && r->status == 503;
    if (w->started < w->total)
        wave_next(w);
}

static bool wave_done(void *arg)
{
    wave *w = arg;
    return w->done == w->total;
}

static wave run_wave(fixture *f, ms_http_client *c, const char *path, int total, int width)
{
    wave w = {.c = c, .req = req_of("budget", HTTP_GET, path), .total = total};
    for (int i = 0; i < width && w.started < total; i++)
        wave_next(&w);
    run_until(f, NULL, wave_done, &w);
    assert_int_equal(w.refused, 0);
    return w;
}

/* A client whose only instance (s0) answers /flaky with 503 from now on, with the breaker held
 * closed and no ejection: every call makes its first attempt, the budget alone limits retries. */
static ms_http_client *failing_upstream(fixture *f)
{
    atomic_store(&f->s[0]->fail_503_left, 1 << 30);
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    cfg.eject_consecutive = 1000;
    ms_http_client *c = client_with(f, &cfg, "budget", 1);
    assert_int_equal(ms_http_client_breaker_override(f->m, "budget", MS_BREAKER_FORCE_CLOSED), 0);
    return c;
}

/* The reserve's retries since `since` (uv_now): full at the start, refilled at 3 a second. */
static int floor_since(fixture *f, uint64_t since)
{
    uint64_t ms = uv_now(&f->loop) - since;
    return BUDGET_RESERVE + (int)((ms * BUDGET_MIN_PER_S + 999) / 1000);
}

static long budget_skipped(fixture *f)
{
    char *text = metrics_text(f);
    const char *key = "http_client_retries_skipped_total{upstream=\"budget\",reason=\"budget\"} ";
    const char *p = strstr(text, key);
    long n = p ? atol(p + strlen(key)) : -1;
    free(text);
    return n;
}

static void check_failing_wave(fixture *f, int width)
{
    enum { M = 500 };
    uint64_t start = uv_now(&f->loop);
    ms_http_client *c = failing_upstream(f);
    int before = atomic_load(&f->s[0]->requests);
    wave w = run_wave(f, c, "/flaky", M, width);
    int got = atomic_load(&f->s[0]->requests) - before, retries = got - M;
    assert_int_equal(got, w.attempts); /* every attempt reached the upstream */
    assert_int_equal(w.answered_503, M);
    /* at most a fifth more attempts than calls, plus the reserve's few */
    assert_true(got <= M + M / 5 + floor_since(f, start));
    /* and the budget was spent: one after another, each fifth banked is a retry made */
    assert_true(retries >= (width == 1 ? M / 5 : M / 10));
    assert_true(budget_skipped(f) >= M / 2);
    ms_http_client_free(c);
}

static void test_retry_budget_sequential(void **state)
{
    check_failing_wave(*state, 1);
}

static void test_retry_budget_concurrent(void **state)
{
    check_failing_wave(*state, 50);
}

/* A long healthy time banks at most BUDGET_CAP retries for the failing burst after it. */
static void test_retry_budget_capped(void **state)
{
    fixture *f = *state;
    enum { HEALTHY = 1000, BURST = 100 };
    ms_http_client *c = failing_upstream(f);
    wave ok = run_wave(f, c, "/ok", HEALTHY, 20);
    assert_int_equal(ok.attempts, HEALTHY); /* 200 retries deposited, only 100 kept */
    uint64_t start = uv_now(&f->loop);
    int before = atomic_load(&f->s[0]->requests);
    wave w = run_wave(f, c, "/flaky", BURST, 1);
    int retries = atomic_load(&f->s[0]->requests) - before - BURST;
    assert_int_equal(retries, w.attempts - BURST);
    /* each call wants 2 retries (200): the bank and the burst's own deposits pay for 120 */
    assert_true(retries >= BUDGET_CAP + BURST / 5);
    assert_true(retries <= BUDGET_CAP + BURST / 5 + floor_since(f, start));
    ms_http_client_free(c);
}

/* A quiet upstream still retries: the reserve pays for the retries its few calls cannot. */
static void test_retry_budget_floor(void **state)
{
    fixture *f = *state;
    ms_http_client *c = failing_upstream(f);
    wave w = run_wave(f, c, "/flaky", 3, 1);
    assert_int_equal(w.attempts, 3 + 6); /* 0.6 deposited: all six retries from the reserve */
    ms_http_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_200, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_closed_by_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_503, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_robin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_instance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fanout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_traceparent, setup, teardown),
        cmocka_unit_test(test_upstream_parse),
        cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_cap_and_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_least_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ejection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_judges_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_budget_sequential, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_budget_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_budget_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_budget_floor, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
