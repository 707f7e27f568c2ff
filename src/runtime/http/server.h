/*
 * server.h — runs one target: N loop threads (share-nothing, like nginx workers), each with
 * its own libuv loop, its own SO_REUSEPORT listening socket, its own connections and its own
 * database pool. The calling thread waits for SIGTERM/SIGINT and then drains: listeners
 * close, idle connections close, in-flight requests finish (up to drain_timeout_ms).
 * Each loop accepts on its own (accept4 on its listener): at most its share of
 * max_connections, the rest answered 503 and closed at once; when the process runs out of
 * descriptors, accepting pauses 100 ms rather than retrying in a loop.
 *
 * Every server answers /health, /ready and /metrics besides the service's own routes.
 *
 * A process may add one admin listener (ms_server_set_admin): a second address with a router
 * of its own, served by one more loop thread with the same limits and timeouts, no database
 * pool and hooks of its own. It answers /health, /ready and /metrics too; the public listener
 * may then leave /metrics to it. Its socket is not shared (no SO_REUSEPORT): a second process
 * asking for the same admin port fails to start instead of taking half of its connections.
 *
 * With a certificate (tls_cert, tls_key) the public listener speaks TLS 1.3 only; the same
 * deadlines hold, the header one covering the handshake; connections over the cap are closed
 * without the 503 (plain text would mean nothing to a TLS client).
 */
#ifndef MS_SERVER_H
#define MS_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/db/db.h"
#include "runtime/http/router.h"

enum { MS_SERVER_MAX_THREADS = 64 }; /* loop threads of a process, at most */

typedef struct ms_server_config {
    const char *service; /* "user", ... */
    const char *host;    /* numeric IPv4 or IPv6 address */
    int port;            /* 0 picks a free one (logged) */
    int threads;
    uint32_t headers_timeout_ms; /* whole header block, from its first byte (10 s) */
    uint32_t idle_timeout_ms;    /* keep-alive connection without a request (60 s) */
    uint32_t body_timeout_ms;    /* between body bytes (30 s) */
    /* Whole body, from the end of its headers: body_deadline_ms (60 s) plus one second for
     * every body_min_rate bytes received (1024; 0: no extension). A client that keeps up the
     * minimum rate is never cut off; one that trickles is answered 408 at the deadline. */
    uint32_t body_deadline_ms;
    uint32_t body_min_rate;
    /* Open client connections per process; 0 sizes it from RLIMIT_NOFILE at start (see
     * ms_server_max_connections). Split evenly across the loop threads. */
    int max_connections;
    uint32_t request_timeout_ms; /* a handler's deadline (10 s) */
    uint32_t drain_timeout_ms;   /* longest graceful drain (10 s) */
    size_t max_header_bytes;     /* 16 KiB */
    int max_headers;             /* 100 */
    size_t max_body_bytes;       /* 1 MiB */
    bool access_log;             /* one log line per request */
    /* PEM files of the public listener's certificate chain and private key: both set, it
     * speaks TLS 1.3 only (http_tls.h); both NULL, plain HTTP. The admin listener stays
     * plain. */
    const char *tls_cert;
    const char *tls_key;
} ms_server_config;

typedef struct ms_loop ms_loop;

/* A service's state per loop (an event-store port, a second pool...). Both optional. */
typedef struct ms_loop_hooks {
    /* Sets up l->service before the loop runs (called on the main thread). 0 or MS_E*. */
    int (*open)(ms_loop *l, void *arg);
    /* Releases it on the loop's thread once the loop's connections are gone during a drain;
     * must call done(l) when finished (before or after returning). */
    void (*close)(ms_loop *l, void (*done)(ms_loop *l), void *arg);
    /* Sees every answer of the listener once it is sent, whoever gave it (a handler, the
     * router's 404, a refused request), on the loop's thread: an access log. `body_bytes` is
     * the body sent, `elapsed_ns` the time since the request began. */
    void (*answered)(ms_http_request *req, int status, size_t body_bytes, uint64_t elapsed_ns,
                     void *arg);
    void *arg;
} ms_loop_hooks;

/* One loop thread. Handlers reach it as req->loop. */
struct ms_loop {
    uv_loop_t uv;
    int index;
    const ms_server_config *cfg;
    const ms_router *router;
    ms_db_pool *db; /* NULL when the service has no database */
    void *service;  /* the service's per-loop state (ms_loop_hooks) */
    bool draining;
    bool ended; /* set (atomically) by the loop thread when its loop has returned */
    /* private to the runtime */
    uv_poll_t accept_watch;  /* the listening socket is readable */
    uv_timer_t accept_pause; /* accepting resumes when it fires (after EMFILE or ENFILE) */
    int max_conns;           /* this loop's share of max_connections: more are shed */
    bool fds_exhausted;      /* the last accept failed for want of a descriptor (logged once) */
    uv_async_t wake;
    uv_timer_t drain_timer;
    uv_thread_t thread;
    const ms_loop_hooks *hooks; /* the public loops': the service's; the admin loop's: its own */
    void *conns;                /* intrusive list of ms_http_conn */
    int nconns;
    struct ms_http_metrics *metrics;
    char date[40]; /* cached "Date: ...\r\n" line */
    uint64_t date_sec;
    int listen_fd;
    struct ms_http_tls_ctx *tls; /* the public loops' when cfg->tls_cert is set, else NULL */
    bool is_admin; /* the admin listener's: its requests are operations (scrapes, span exports,
                      the console's polling) and are not traced */
};

/* Fills the documented defaults. */
void ms_server_config_defaults(ms_server_config *cfg);

/* The automatic connection cap for a process whose database pool may hold `db_conns`
 * connections: what RLIMIT_NOFILE leaves once the process's own descriptors are set aside. */
int ms_server_max_connections(int db_conns);

/* The admin listener (see the top). Strings, router and hooks must outlive ms_server_run. */
typedef struct ms_server_admin {
    const char *host; /* numeric IPv4 or IPv6 address */
    int port;         /* 0 picks a free one (logged as "admin listening") */
    ms_router *router;
    const ms_loop_hooks *hooks; /* may be NULL; open runs on the main thread, as for a loop */
    bool hide_public_metrics;   /* the public listener answers /health and /ready only */
} ms_server_admin;

/* Adds the admin listener to the next ms_server_run (start-up only: a service's start). The
 * struct is copied; NULL removes it. */
void ms_server_set_admin(const ms_server_admin *admin);

/* Runs until a signal ends it, then drains. `db` and `hooks` may be NULL. Returns 0 after a
 * clean drain, non-zero when the listeners or a loop's state could not be set up (logged). */
int ms_server_run(const ms_server_config *cfg, ms_router *router, const ms_db_config *db,
                  const ms_loop_hooks *hooks);

#endif
