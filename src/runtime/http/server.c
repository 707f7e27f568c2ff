/*
 * server.c — loop threads, listeners, signals, graceful drain, and the built-in routes.
 * One server per process: its state is file-static, written before the threads start and
 * read-only afterwards (except each loop's own fields, touched only by its thread).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/http_internal.h"
#include "runtime/http/http_metrics.h"
#include "runtime/http/http_tls.h"
#include "runtime/http/problem.h"
#include "runtime/obs/batch.h"
#include "runtime/core/banned.h"

static struct {
    const ms_server_config *cfg;
    const ms_router *router;
    ms_loop *loops; /* nloops public ones, then the admin loop when there is one */
    int nloops, nall;
    ms_server_admin admin; /* router NULL: none */
    ms_http_metrics *admin_metrics;
    ms_http_metrics **shards;
    const ms_loop_hooks *hooks;
    int signals;
    /* a scrape on one loop reads every loop's pool; a draining loop frees its own */
    pthread_mutex_t pools_lock;
    uv_async_t loop_ended; /* a loop thread tells the main thread it has returned */
} srv = {.pools_lock = PTHREAD_MUTEX_INITIALIZER};

void ms_server_config_defaults(ms_server_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->service = "microshop";
    cfg->host = "127.0.0.1";
    cfg->port = 8080;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->threads = cores > 0 ? (int)cores : 1;
    cfg->headers_timeout_ms = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->body_timeout_ms = 30000;
    cfg->body_deadline_ms = 60000;
    cfg->body_min_rate = 1024;
    cfg->request_timeout_ms = 10000;
    cfg->drain_timeout_ms = 10000;
    cfg->max_header_bytes = 16 * 1024;
    cfg->max_headers = 100;
    cfg->max_body_bytes = 1024 * 1024;
}

int ms_server_max_connections(int db_conns)
{
    /* Descriptors the process needs besides its clients: 64 for its own files (listeners,
     * epoll and eventfd per loop, logs, the event store and outbox files, libuv's reserves)
     * and 4 per pooled database connection (SQLite opens the database, -wal and -shm; a
     * PostgreSQL connection is one socket). Clients get 90% of what is left: the margin covers
     * what the count misses, and EMFILE on accept is handled anyway (accepting pauses). */
    struct rlimit rl;
    long soft = 1024; /* when the limit cannot be read */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        soft =
            rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1UL << 30 ? 1L << 30 : (long)rl.rlim_cur;
    long n = (soft - 64 - 4L * (db_conns > 0 ? db_conns : 0)) * 9 / 10;
    return n < 8 ? 8 : n > 1000000 ? 1000000 : (int)n;
}

/* ---- built-in routes ---- */

void ms_server__health(ms_http_request *req)
{
    ms_http_respond_json(req, 200,
                         json_pack("{s:s, s:s}", "status", "healthy", "service", srv.cfg->service));
}

static int ping_work(ms_db_conn *c, void *arg)
{
    (void)arg;
    return ms_db_ping(c);
}

static void ready_done(int rc, void *arg)
{
    ms_http_request *req = arg;
    if (rc < 0) {
        ms_problem_from_error(req, MS_ECONN, "the database is not reachable");
        return;
    }
    ms_http_respond_json(req, 200,
                         json_pack("{s:s, s:s, s:{s:s}}", "status", "ready", "service",
                                   srv.cfg->service, "checks", "database", "ok"));
}

void ms_server__ready(ms_http_request *req)
{
    if (req->loop->draining) {
        ms_problem_from_error(req, MS_ESHUTDOWN, "shutting down");
        return;
    }
    if (!req->loop->db) {
        ms_http_respond_json(
            req, 200, json_pack("{s:s, s:s}", "status", "ready", "service", srv.cfg->service));
        return;
    }
    ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, ping_work, ready_done, req);
}

void ms_server__metrics(ms_http_request *req)
{
    ms_buf out;
    ms_buf_init(&out, 16384);
    ms_metrics_render(&out);
    ms_http_respond(req, 200, MS_METRICS_CONTENT_TYPE, out.p, out.n);
    ms_buf_release(&out);
}

/* The tracer's spans and exports (trace.h), on every process's /metrics. */
static void collect_trace(ms_buf *out, void *arg)
{
    (void)arg;
    ms_trace_collect(out);
}

static void collect_http(ms_buf *out, void *arg)
{
    (void)arg;
    ms_http_metrics_render(out, srv.cfg->service, srv.router, srv.shards, srv.nloops);
}

static void collect_db(ms_buf *out, void *arg)
{
    (void)arg;
    ms_db_pool_stats sum = {0};
    pthread_mutex_lock(&srv.pools_lock);
    for (int i = 0; i < srv.nloops; i++) {
        ms_db_pool_stats s;
        if (!srv.loops[i].db)
            continue;
        ms_db_pool_get_stats(srv.loops[i].db, &s);
        sum.size += s.size;
        sum.overflow += s.overflow;
        sum.open += s.open;
        sum.in_use += s.in_use;
        sum.waiting += s.waiting;
        sum.checkouts_total += s.checkouts_total;
        sum.timeouts_total += s.timeouts_total;
        sum.reconnects_total += s.reconnects_total;
        sum.wait_seconds_sum += s.wait_seconds_sum;
        sum.pipelined_open += s.pipelined_open;
        sum.pipelined_in_flight += s.pipelined_in_flight;
    }
    pthread_mutex_unlock(&srv.pools_lock);
    const char *svc = srv.cfg->service;
    ms_metrics_family(out, "db_pool_size", "gauge", "Connections the pool keeps open.");
    ms_metrics_sample(out, "db_pool_size", sum.size, "service", svc, NULL);
    ms_metrics_family(out, "db_pool_max_overflow", "gauge",
                      "Extra connections the pool may open under load.");
    ms_metrics_sample(out, "db_pool_max_overflow", sum.overflow, "service", svc, NULL);
    ms_metrics_family(out, "db_pool_connections", "gauge", "Open pooled connections by state.");
    ms_metrics_sample(out, "db_pool_connections", sum.in_use, "service", svc, "state", "in_use",
                      NULL);
    ms_metrics_sample(out, "db_pool_connections", sum.open - sum.in_use, "service", svc, "state",
                      "idle", NULL);
    ms_metrics_family(out, "db_pool_waiting", "gauge", "Requests waiting for a connection.");
    ms_metrics_sample(out, "db_pool_waiting", sum.waiting, "service", svc, NULL);
    ms_metrics_family(out, "db_pool_checkouts_total", "counter", "Connections handed out.");
    ms_metrics_sample(out, "db_pool_checkouts_total", (double)sum.checkouts_total, "service", svc,
                      NULL);
    ms_metrics_family(out, "db_pool_timeouts_total", "counter",
                      "Waits for a connection that ended at the deadline (answered 503).");
    ms_metrics_sample(out, "db_pool_timeouts_total", (double)sum.timeouts_total, "service", svc,
                      NULL);
    ms_metrics_family(out, "db_pool_reconnects_total", "counter",
                      "Connections reopened after a failed ping or recycling.");
    ms_metrics_sample(out, "db_pool_reconnects_total", (double)sum.reconnects_total, "service", svc,
                      NULL);
    ms_metrics_family(out, "db_pool_wait_seconds_total", "counter",
                      "Time spent waiting for a connection.");
    ms_metrics_sample(out, "db_pool_wait_seconds_total", sum.wait_seconds_sum, "service", svc,
                      NULL);
    /* PostgreSQL only: the loops' own non-blocking connections for single-statement reads */
    ms_metrics_family(out, "db_pool_pipelined_connections", "gauge",
                      "Open pipelined read connections (PostgreSQL; also in db_pool_connections).");
    ms_metrics_sample(out, "db_pool_pipelined_connections", sum.pipelined_open, "service", svc,
                      NULL);
    ms_metrics_family(out, "db_pool_pipelined_in_flight", "gauge",
                      "Statements sent on pipelined connections and not yet answered.");
    ms_metrics_sample(out, "db_pool_pipelined_in_flight", sum.pipelined_in_flight, "service", svc,
                      NULL);
}

/* ---- listeners ---- */

void ms_server_set_admin(const ms_server_admin *admin)
{
    if (admin)
        srv.admin = *admin;
    else
        memset(&srv.admin, 0, sizeof srv.admin);
}

static int make_listener(const char *host, int *port, bool shared)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)*port);
        len = sizeof *in4;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)*port);
        len = sizeof *in6;
    } else {
        return MS_EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return MS_EIO;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* one socket per loop thread: the kernel spreads connections, no accept lock */
    if (shared)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 1024) < 0) {
        close(fd);
        return MS_EIO;
    }
    if (*port == 0) {
        getsockname(fd, (struct sockaddr *)&ss, &len);
        *port = ntohs(ss.ss_family == AF_INET ? in4->sin_port : in6->sin6_port);
    }
    return fd;
}

/* ---- accepting ---- */

enum {
    ACCEPT_BATCH = 64,     /* accepts per wake-up: the loop's other work gets its turn */
    ACCEPT_PAUSE_MS = 100, /* how long accepting rests when the process is out of descriptors */
};

static void on_acceptable(uv_poll_t *w, int status, int events);

static void on_accept_resume(uv_timer_t *t)
{
    ms_loop *l = t->data;
    if (!l->draining)
        uv_poll_start(&l->accept_watch, UV_READABLE, on_acceptable);
}

/*
 * No descriptor for the next connection. libuv's own answer (close a reserved descriptor,
 * accept, close, reopen) fails with one listener per thread: another loop takes the freed
 * slot, the reserve is lost, and libuv's accept loop then retried EMFILE without returning to
 * epoll (seen: 100k failed accepts in 5 s, no timer fired, closed clients never reaped). Here
 * accepting rests a moment instead, as nginx does: the connection waits in the backlog until
 * descriptors come back.
 */
static void out_of_descriptors(ms_loop *l, int err)
{
    ms_http_metrics_rejected(l->metrics, MS_HTTP_REJECT_EMFILE);
    if (!l->fds_exhausted) {
        l->fds_exhausted = true;
        ms_log(MS_LOG_WARN, "out of file descriptors: accepting paused", "error", strerror(err),
               NULL);
    }
    uv_poll_stop(&l->accept_watch);
    uv_timer_start(&l->accept_pause, on_accept_resume, ACCEPT_PAUSE_MS, 0);
}

/* Over the cap: the client hears 503 at once (best effort) instead of waiting in the backlog. */
static void shed(ms_loop *l, int fd)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Content-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
    ms_http_metrics_rejected(l->metrics, MS_HTTP_REJECT_LIMIT);
    if (l->tls) { /* plain text would only be a protocol error to a TLS client */
        close(fd);
        return;
    }
    ssize_t sent = send(fd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)sent; /* a full or reset socket only loses the courtesy */
    close(fd);
}

static void on_acceptable(uv_poll_t *w, int status, int events)
{
    ms_loop *l = w->data;
    (void)events;
    if (status < 0 || l->draining)
        return;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(l->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EINTR || err == ECONNABORTED)
                continue;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;
            if (err == EMFILE || err == ENFILE) {
                out_of_descriptors(l, err);
                return;
            }
            /* ENOBUFS, ENOMEM, EPERM (a firewall): rest too, so that it cannot spin */
            ms_log(MS_LOG_WARN, "accept failed: accepting paused", "error", strerror(err), NULL);
            uv_poll_stop(&l->accept_watch);
            uv_timer_start(&l->accept_pause, on_accept_resume, ACCEPT_PAUSE_MS, 0);
            return;
        }
        if (l->fds_exhausted) {
            l->fds_exhausted = false;
            ms_log(MS_LOG_INFO, "file descriptors available again: accepting", NULL);
        }
        if (l->nconns >= l->max_conns) {
            shed(l, fd);
            continue;
        }
        ms_http__adopt(l, fd);
    }
}

int ms_server__listen(ms_loop *l, int fd)
{
    l->listen_fd = fd;
    if (uv_poll_init_socket(&l->uv, &l->accept_watch, fd) < 0)
        return MS_EIO;
    l->accept_watch.data = l;
    uv_timer_init(&l->uv, &l->accept_pause);
    l->accept_pause.data = l;
    if (uv_poll_start(&l->accept_watch, UV_READABLE, on_acceptable) < 0)
        return MS_EIO;
    return 0;
}

static void on_accept_watch_closed(uv_handle_t *h)
{
    ms_loop *l = h->data;
    close(l->listen_fd); /* only now: libuv forbids closing a descriptor it still polls */
    l->listen_fd = -1;
}

void ms_server__unlisten(ms_loop *l)
{
    uv_close((uv_handle_t *)&l->accept_watch, on_accept_watch_closed);
    uv_close((uv_handle_t *)&l->accept_pause, NULL);
}

/* ---- drain ---- */

static void on_closed_quietly(uv_handle_t *h)
{
    (void)h;
}

static void on_pool_closed(void *arg)
{
    ms_loop *l = arg;
    uv_close((uv_handle_t *)&l->wake, on_closed_quietly);
    uv_close((uv_handle_t *)&l->drain_timer, on_closed_quietly);
}

static void close_pool(ms_loop *l)
{
    if (l->db) {
        pthread_mutex_lock(&srv.pools_lock);
        ms_db_pool *pool = l->db;
        l->db = NULL; /* no scrape reads it from now on */
        pthread_mutex_unlock(&srv.pools_lock);
        ms_db_pool_close(pool, on_pool_closed, l);
        return;
    }
    on_pool_closed(l);
}

/* Called when a draining loop has no connection left: release what keeps it alive, the
 * service's state first (it may still use the pool). */
static void finish_drain(ms_loop *l)
{
    uv_timer_stop(&l->drain_timer);
    if (l->hooks && l->hooks->close && l->service) {
        l->hooks->close(l, close_pool, l->hooks->arg);
        return;
    }
    close_pool(l);
}

void ms_server__conns_gone(ms_loop *l)
{
    if (l->draining && l->nconns == 0)
        finish_drain(l);
}

static void on_drain_timeout(uv_timer_t *t)
{
    ms_loop *l = t->data;
    ms_log(MS_LOG_WARN, "drain deadline passed: closing connections", NULL);
    ms_http__close_all(l);
}

static void on_wake(uv_async_t *a)
{
    ms_loop *l = a->data;
    if (l->draining)
        return;
    l->draining = true;
    ms_server__unlisten(l);
    uv_timer_start(&l->drain_timer, on_drain_timeout, l->cfg->drain_timeout_ms, 0);
    ms_http__drain(l);
    if (l->nconns == 0)
        finish_drain(l);
}

/* The drain limit passed and a loop still waits for database work that ignores it (a lock
 * wait shorter than its own timeout but longer than the drain): leave without it. Nothing is
 * lost: the work was never acknowledged, and its transaction rolls back. */
static void on_drain_overdue(uv_timer_t *t)
{
    (void)t;
    ms_log(MS_LOG_WARN, "drain limit passed with database work in flight: exiting", NULL);
    _exit(0);
}

static void on_loop_ended(uv_async_t *a)
{
    (void)a; /* only wakes the main loop, which then looks at every loop's `ended` */
}

static bool all_loops_ended(int started)
{
    for (int i = 0; i < started; i++)
        if (!__atomic_load_n(&srv.loops[i].ended, __ATOMIC_ACQUIRE))
            return false;
    return true;
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (srv.signals++ > 0) {
        ms_log(MS_LOG_WARN, "second signal: exiting now", NULL);
        _exit(128 + signum);
    }
    ms_log(MS_LOG_INFO, "draining", "signal", signum == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
    for (int i = 0; i < srv.nall; i++)
        uv_async_send(&srv.loops[i].wake);
    (void)s;
}

static void loop_main(void *arg)
{
    ms_loop *l = arg;
    char name[16];
    if (l->index == srv.nloops)
        snprintf(name, sizeof name, "admin");
    else
        snprintf(name, sizeof name, "loop-%d", l->index);
    pthread_setname_np(pthread_self(), name); /* top -H, perf and gdb show who is busy */
    uv_run(&l->uv, UV_RUN_DEFAULT);
    __atomic_store_n(&l->ended, true, __ATOMIC_RELEASE);
    uv_async_send(&srv.loop_ended);
}

static void set_threadpool_size(const ms_db_config *db)
{
    if (getenv("UV_THREADPOOL_SIZE"))
        return;
    /* every pooled connection may be busy at once, plus room for CPU work (password hashes) */
    int n = 4 + (db ? db->pool_size + db->pool_overflow : 0);
    char v[16];
    snprintf(v, sizeof v, "%d", n > 1024 ? 1024 : n);
    setenv("UV_THREADPOOL_SIZE", v, 1);
}

static void add_builtin_routes(ms_router *router, bool metrics)
{
    if (ms_router_add(router, "GET", "/health", ms_server__health) < 0 ||
        ms_router_add(router, "GET", "/ready", ms_server__ready) < 0 ||
        (metrics &&
         (ms_router_add(router, "GET", "/metrics", ms_server__metrics) < 0 ||
          ms_router_add(router, "GET", "/admin/log-level", ms_server__log_level_get) < 0 ||
          ms_router_add(router, "PUT", "/admin/log-level", ms_server__log_level_put) < 0)))
        MS_BUG("cannot add the built-in routes");
}

/* Sets up loop `l` on the listening socket `fd` (taken): its handles, pool and service
 * state. 0, or 1 after logging why not. */
static int open_loop(ms_loop *l, int fd, const ms_router *router, const ms_db_config *db,
                     const ms_loop_hooks *hooks, int max_conns)
{
    int rc;
    l->cfg = srv.cfg;
    l->router = router;
    l->hooks = hooks;
    l->listen_fd = fd;
    uv_loop_init(&l->uv);
    uv_async_init(&l->uv, &l->wake, on_wake);
    l->wake.data = l;
    uv_timer_init(&l->uv, &l->drain_timer);
    l->drain_timer.data = l;
    l->max_conns = max_conns;
    if (ms_server__listen(l, l->listen_fd) < 0)
        MS_BUG("cannot poll a listening socket");
    ms_http_metrics_set_limit(l->metrics, l->max_conns);
    if (db && (rc = ms_db_pool_new(&l->uv, db, srv.nloops, &l->db)) < 0) {
        ms_log(MS_LOG_ERROR, "cannot create the database pool", "error", ms_strerror(rc), NULL);
        return 1;
    }
    if (hooks && hooks->open && (rc = hooks->open(l, hooks->arg)) < 0) {
        ms_log(MS_LOG_ERROR, "cannot set up the service", "error", ms_strerror(rc), NULL);
        return 1;
    }
    return 0;
}

static int listen_failed(const char *what, const char *host, int port)
{
    char addr[80];
    snprintf(addr, sizeof addr, "%s:%d", host, port);
    ms_log(MS_LOG_ERROR, what, "addr", addr, "error", strerror(errno), NULL);
    return 1;
}

int ms_server_run(const ms_server_config *cfg, ms_router *router, const ms_db_config *db,
                  const ms_loop_hooks *hooks)
{
    int rc = 0;
    bool admin = srv.admin.router != NULL;
    add_builtin_routes(router, !(admin && srv.admin.hide_public_metrics));
    if (admin)
        add_builtin_routes(srv.admin.router, true);
    signal(SIGPIPE, SIG_IGN);
    set_threadpool_size(db);

    srv.cfg = cfg;
    srv.router = router;
    srv.hooks = hooks;
    srv.nloops = cfg->threads;
    srv.nall = srv.nloops + (admin ? 1 : 0);
    srv.loops = ms_xcalloc((size_t)srv.nall, sizeof(ms_loop));
    srv.shards = ms_xcalloc((size_t)cfg->threads, sizeof(ms_http_metrics *));
    ms_metrics_register(collect_http, NULL);
    ms_metrics_register(collect_trace, NULL);
    ms_metrics_register(ms_batch_collect, NULL); /* exporters' and the outbox relay's batches */
    if (db)
        ms_metrics_register(collect_db, NULL);

    int port = cfg->port, admin_port = srv.admin.port, opened = 0, started = 0;
    ms_http_tls_ctx *tls = NULL;
    if (cfg->tls_cert) {
        char err[512];
        if (ms_http_tls_ctx_new(cfg->tls_cert, cfg->tls_key, &tls, err, sizeof err) < 0) {
            ms_log(MS_LOG_ERROR, "cannot set up TLS", "error", err, NULL);
            rc = 1;
            goto out;
        }
    }
    int db_conns = db ? db->pool_size + db->pool_overflow : 0;
    if (db && db->backend == MS_DB_POSTGRES) /* each loop's pipelined read connections */
        db_conns += srv.nloops *
                    (db->pipeline_conns > 0 ? db->pipeline_conns : MS_DB_PIPELINE_CONNS_DEFAULT);
    int max_conns =
        cfg->max_connections > 0 ? cfg->max_connections : ms_server_max_connections(db_conns);
    for (int i = 0; i < srv.nall; i++)
        srv.loops[i].index = i;
    for (; opened < srv.nloops; opened++) {
        ms_loop *l = &srv.loops[opened];
        l->metrics = srv.shards[opened] = ms_http_metrics_new();
        l->tls = tls;
        int fd = make_listener(cfg->host, &port, true);
        if (fd < 0) {
            rc = listen_failed("cannot listen", cfg->host, port);
            goto out;
        }
        if ((rc = open_loop(l, fd, router, db, hooks, (max_conns + srv.nloops - 1) / srv.nloops)))
            goto out;
    }
    if (admin) {
        /* its metrics shard is not rendered: /metrics shows the public routes' traffic */
        ms_loop *l = &srv.loops[opened];
        l->metrics = srv.admin_metrics = ms_http_metrics_new();
        l->is_admin = true;
        int fd = make_listener(srv.admin.host, &admin_port, false);
        if (fd < 0) {
            rc = listen_failed("cannot listen (admin)", srv.admin.host, admin_port);
            goto out;
        }
        opened++;
        if ((rc = open_loop(l, fd, srv.admin.router, NULL, srv.admin.hooks,
                            (max_conns + srv.nloops - 1) / srv.nloops)))
            goto out;
    }

    uv_loop_t main_loop;
    uv_loop_init(&main_loop);
    uv_signal_t sigterm, sigint;
    uv_timer_t overdue;
    uv_timer_init(&main_loop, &overdue);
    uv_async_init(&main_loop, &srv.loop_ended, on_loop_ended);
    uv_signal_init(&main_loop, &sigterm);
    uv_signal_init(&main_loop, &sigint);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);

    for (; started < srv.nall; started++)
        uv_thread_create(&srv.loops[started].thread, loop_main, &srv.loops[started]);
    char addr[80], threads[16], conns[16];
    snprintf(addr, sizeof addr, "%s:%d", cfg->host, port);
    snprintf(threads, sizeof threads, "%d", cfg->threads);
    snprintf(conns, sizeof conns, "%d", srv.loops[0].max_conns * srv.nloops);
    ms_log(MS_LOG_INFO, "listening", "addr", addr, "#threads", threads, "#max_connections", conns,
           "tls", tls ? "1.3" : "off", NULL);
    if (admin) {
        snprintf(addr, sizeof addr, "%s:%d", srv.admin.host, admin_port);
        ms_log(MS_LOG_INFO, "admin listening", "addr", addr, NULL);
    }

    /* the main thread only waits for signals; it returns when every loop has drained, or
     * leaves a little after the drain limit (on_drain_overdue) */
    while (srv.signals == 0)
        uv_run(&main_loop, UV_RUN_ONCE);
    uv_timer_start(&overdue, on_drain_overdue, cfg->drain_timeout_ms + 500, 0);
    while (!all_loops_ended(started))
        uv_run(&main_loop, UV_RUN_ONCE);
    for (int i = 0; i < started; i++)
        uv_thread_join(&srv.loops[i].thread);
    uv_close((uv_handle_t *)&overdue, NULL);
    uv_close((uv_handle_t *)&srv.loop_ended, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_run(&main_loop, UV_RUN_DEFAULT);
    uv_loop_close(&main_loop);
    ms_log(MS_LOG_INFO, "stopped", NULL);

out:
    for (int i = 0; i < srv.nall; i++) {
        ms_loop *l = &srv.loops[i];
        if (started == srv.nall) /* every loop was set up and has run */
            uv_loop_close(&l->uv);
    }
    for (int i = 0; i < srv.nloops; i++)
        ms_http_metrics_free(srv.loops[i].metrics);
    ms_http_metrics_free(srv.admin_metrics);
    srv.admin_metrics = NULL;
    ms_metrics_reset();
    free(srv.loops);
    free(srv.shards);
    ms_http_tls_ctx_free(tls);
    return rc;
}
