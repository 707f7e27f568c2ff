/*
 * client.h — the one HTTP/1.1 client for calls between services (the order saga, the gateway,
 * the trace exporter): asynchronous on the caller's libuv loop, keep-alive pools per upstream
 * instance, deadlines, retries of idempotent calls, passive health checks, W3C traceparent.
 *
 * Threading: share-nothing. A client belongs to the loop it was made with; every function
 * below (but the upstream parser and the metrics object) is called on
 * that loop's thread only, and every callback runs there. A process with N loop threads makes
 * N clients (they may share one ms_http_client_metrics, which is thread-safe).
 *
 * Callbacks never run inside ms_http_client_request / _all: always later, from the loop, and
 * exactly once per accepted call (an MS_E* return means the call was refused and no callback
 * will come). ms_http_client_free is the exception: it fails every pending call with
 * MS_ESHUTDOWN, calling back before it returns.
 *
 * Ownership: a request's strings, headers and body are copied by the call; the caller may free
 * them when it returns. A response (status line, headers, body) belongs to the client and is
 * valid only until the callback returns: copy what must outlive it (into the incoming request's
 * arena, for instance).
 *
 * Health (passive): a connect failure, a timeout, or a 502/503/504 answer marks an instance
 * down for 1 s, doubling at each further failure up to 10 s. When that time has passed the next
 * request is let through as the probe (one at a time); its success brings the instance back. A
 * 500 does not mark an instance down: it answers for one request, not for the instance. When
 * every instance is down, a request still tries the one that comes back soonest.
 *
 * Retries: an idempotent call (GET, HEAD, PUT, DELETE, OPTIONS, or `idempotent` set) is retried
 * on a connect failure, a connection lost before any response byte, or a 502/503/504 answer; a
 * call that is not idempotent only on a connect failure (its bytes were never sent). At most
 * max_retries (2) retries, after a full-jitter backoff (random in [0, min(250, 25·2^i)] ms), on
 * another healthy instance when there is one, and never one that could not start before the
 * deadline: then the last answer (a 503) or error is what the callback gets. Retry budget, per
 * upstream and client (so per loop), counting attempts: each first attempt deposits a fifth of a
 * retry, each retry withdraws a whole one, so retries add at most 20 % to an upstream's attempts.
 * The deposits are capped at 100 retries (a long healthy time banks no bigger burst); beyond
 * them a reserve refilled at retry_min_per_s (3 a second, holding at most 3 s worth: 9) lets a
 * quiet upstream retry. Over any time T, a client's retries to an upstream ≤ 0.2 × its first
 * attempts + 100 + retry_min_per_s × (3 + T in s). A retry the budget cannot pay for is not made
 * (http_client_retries_skipped_total{reason="budget"}): the call ends with its last answer or
 * error.
 *
 * Balancing: round robin (the default), or least-request: the one of two random usable
 * instances with fewer attempts in flight in this client.
 *
 * Outlier ejection (passive, alongside the down-marking): eject_consecutive failures in a row
 * on an instance (a 5xx, 500 included, a connect failure, a timeout, or an answer slower than
 * slow_ms) eject it for eject_base_ms × its ejections so far (capped at eject_max_ms), as long
 * as at most eject_max_percent of the upstream's instances are out (always one may be, never
 * all). When that time has passed one call probes it: a success lets it back, a failure ejects
 * it again.
 *
 * Active health checks (health_path set): every health_interval_ms each instance's path is
 * fetched (no retry); 3 failures in a row take it out of rotation, 2 passes bring it back.
 *
 * Circuit breaker, per upstream and client: it judges calls, not attempts (one dead instance
 * among live ones is the ejection's business: its failures retried elsewhere must not open the
 * breaker on the live ones). Of the last 20 calls (20 at least), each judged by its last
 * attempt, when half failed or half were slow, it opens for breaker_open_ms: calls fail fast
 * with MS_ECONN, attempts 0, counted as status "circuit_open" (a retry finding it open ends
 * with the last answer). Then half-open: 3 trial calls; all succeed → closed, one fails → open
 * again. An override (ms_http_client_breaker_override) forces it open or closed for every loop.
 */
#ifndef MS_HTTP_CLIENT_H
#define MS_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/core/buf.h"
#include "runtime/http/http.h"

/* ---- upstream lists ("http://a:8083,http://b:8083", from a flag or an env variable) ---- */
enum { MS_HTTP_UPSTREAM_MAX = 16, MS_HTTP_HOST_MAX = 253 };

typedef struct ms_http_upstream_addr {
    char host[MS_HTTP_HOST_MAX + 1]; /* a name or an IPv4/IPv6 literal, without brackets */
    uint16_t port;
} ms_http_upstream_addr;

typedef struct ms_http_upstream_list {
    int n;
    ms_http_upstream_addr addr[MS_HTTP_UPSTREAM_MAX];
    char error[384]; /* on MS_EINVAL: what is wrong, naming the entry */
} ms_http_upstream_list;

/*
 * Parses a comma-separated list of http://host:port[/] (spaces around entries are ignored; the
 * port is required; no path, user, query or https). Returns 0, or MS_EINVAL with out->error
 * naming the bad entry. Thread-safe.
 */
int ms_http_upstream_parse(const char *spec, ms_http_upstream_list *out);

/* ---- metrics (one object for the process, shared by the clients of every loop) ---- */
typedef struct ms_http_client_metrics ms_http_client_metrics;
ms_http_client_metrics *ms_http_client_metrics_new(void);
void ms_http_client_metrics_free(ms_http_client_metrics *m);
/*
 * A collector for ms_metrics_register(ms_http_client_metrics_render, m): writes
 * http_client_requests_total{upstream,status} (status: the HTTP status, or timeout,
 * unreachable, too_big, bad_response, shutdown, circuit_open),
 * http_client_request_duration_seconds{upstream} (a histogram of whole calls, retries included),
 * http_client_retries_total{upstream}, http_client_retries_skipped_total{upstream,reason},
 * http_client_instances_down{upstream,instance} (how many loops see the instance down now),
 * http_client_instances_unhealthy{upstream,instance} (how many loops' active checks fail it),
 * http_client_breaker_state{upstream} (0 closed, 1 open, 2 half-open: the highest over the
 * loops), http_client_ejections_total{upstream,instance}, http_client_instances_ejected{upstream}
 * and http_client_active_requests{upstream} (attempts in flight, over the loops).
 */
void ms_http_client_metrics_render(ms_buf *out, void *metrics);

/* ---- process-wide view and control (thread-safe; kept on the shared metrics object, which
 * every loop's client of the process reports to) ---- */
typedef enum {
    MS_BREAKER_AUTO,         /* the breaker follows the calls' outcomes */
    MS_BREAKER_FORCE_OPEN,   /* every call to the upstream fails fast (MS_ECONN, no try) */
    MS_BREAKER_FORCE_CLOSED, /* calls go through whatever the outcomes */
} ms_breaker_override;
/* Sets an upstream's breaker override for every client reporting to m; MS_ENOTFOUND when no
 * client has that upstream. */
int ms_http_client_breaker_override(ms_http_client_metrics *m, const char *upstream,
                                    ms_breaker_override o);
/*
 * Writes the upstreams as JSON, merged over the loops' clients:
 * {"upstreams":[{"name":"order","breaker":{"state":"closed|open|half_open",
 *   "override":"auto|open|closed"},"instances":[{"address":"host:port",
 *   "state":"healthy|ejected|unhealthy","ejections":N,"active_requests":N}]}]}
 */
void ms_http_client_status_json(ms_http_client_metrics *m, ms_buf *out);

typedef enum {
    MS_BALANCE_ROUND_ROBIN,
    MS_BALANCE_LEAST_REQUEST, /* the less busy of two random healthy instances */
} ms_http_balance;

/* ---- the client ---- */
typedef struct ms_http_client ms_http_client;

typedef struct ms_http_client_config {
    uint32_t connect_timeout_ms;     /* one connect, capped by the call's deadline (1000) */
    uint32_t default_timeout_ms;     /* the deadline of a call that gives none (10000) */
    uint32_t idle_timeout_ms;        /* an idle pooled connection closes after (30000: under the
                                        server's 60 s, so the client closes first) */
    int max_idle;                    /* idle connections kept per instance (32) */
    int max_retries;                 /* retries after the first attempt (2; -1: none) */
    uint32_t down_base_ms;           /* an instance's first time down (1000) */
    uint32_t down_max_ms;            /* its longest (10000) */
    size_t max_header_bytes;         /* a response's status line and headers (16 KiB) */
    size_t max_body_bytes;           /* a response body (4 MiB) */
    ms_http_client_metrics *metrics; /* NULL: none recorded */
    ms_http_balance balance;         /* MS_BALANCE_ROUND_ROBIN */
    uint32_t slow_ms;                /* an attempt answered later is "slow" (1000) */
    int eject_consecutive;           /* failures (or slow answers) in a row that eject (5) */
    uint32_t eject_base_ms;          /* an ejection lasts base × times ejected (30000) */
    uint32_t eject_max_ms;           /* at most (300000) */
    int eject_max_percent;           /* of an upstream's instances ejected at once (10; at
                                        least one, never all) */
    uint32_t breaker_open_ms;        /* an open breaker's time before half-open (5000) */
    const char *health_path;         /* NULL: no active health checks; else GET it (copied) */
    uint32_t health_interval_ms;     /* between two checks of an instance (2000) */
    uint32_t retry_min_per_s;        /* the retry budget's floor: retries a second an upstream
                                        may make beyond its 20 % (3; 9 at most at once) */
} ms_http_client_config;

/* Fills the defaults above (metrics NULL). A zero field of a config is read as its default. */
void ms_http_client_config_defaults(ms_http_client_config *cfg);

/* A client on `loop` (cfg NULL: defaults). Never NULL. */
ms_http_client *ms_http_client_new(uv_loop_t *loop, const ms_http_client_config *cfg);
/*
 * Names an upstream for requests (copied). Returns 0, MS_EINVAL for an empty list or a name
 * already added, MS_ETOOBIG past 16 upstreams.
 */
int ms_http_client_add_upstream(ms_http_client *c, const char *name,
                                const ms_http_upstream_list *list);
/*
 * Replaces an upstream's instances (scale out or in): the state of instances in both lists is
 * kept; a removed instance's idle connections close and its calls in flight finish. Returns 0,
 * or MS_EINVAL for an unknown upstream or an empty list.
 */
int ms_http_client_set_upstream(ms_http_client *c, const char *name,
                                const ms_http_upstream_list *list);
/*
 * Fails every pending call with MS_ESHUTDOWN (their callbacks run before this returns),
 * closes every connection and timer. Call on the loop thread, then let the loop run until it
 * has no handles left (uv_run): the memory goes with the last close callback.
 */
void ms_http_client_free(ms_http_client *c);

/* Idle pooled connections of an upstream, over its instances (tests, diagnostics); -1 when no
 * upstream has that name. */
int ms_http_client_idle_count(const ms_http_client *c, const char *upstream);

typedef struct ms_http_client_req {
    const char *upstream;          /* a name given to ms_http_client_add_upstream */
    int method;                    /* enum http_method */
    const char *path;              /* origin-form, query included: "/internal/v1/quotes" */
    const ms_http_header *headers; /* extra request headers (not Host, Content-Length,
                                      Transfer-Encoding, Connection or traceparent) */
    int nheaders;
    const char *content_type; /* NULL: no Content-Type */
    const void *body;
    size_t body_len;
    uint64_t deadline;       /* absolute uv_now() ms (the incoming request's deadline);
                                0: now + default_timeout_ms */
    bool idempotent;         /* retry a POST/PATCH too (an internal POST keyed by order id) */
    const char *traceparent; /* the caller's span context: the incoming request's header (the
                                server made it the request's own span), or NULL to start a
                                trace. The call is a CLIENT span under it and sends its own
                                context; a tracestate header goes along only when this is
                                valid and it is at most 512 bytes. */
} ms_http_client_req;

typedef struct ms_http_client_resp {
    int status; /* 0 when the call failed */
    const ms_http_header *headers;
    int nheaders;
    const char *body; /* NUL-terminated, body_len bytes ("" when none) */
    size_t body_len;
    int attempts;         /* tries made, retries included */
    const char *instance; /* "host:port" of the last try, NULL when none was made */
} ms_http_client_resp;

/* A response header by name (ASCII case-insensitive), or NULL. */
const char *ms_http_client_resp_header(const ms_http_client_resp *r, const char *name);

/* err: 0 with resp->status set (any status: a 4xx or 5xx is an answer), or MS_ETIMEDOUT (the
 * deadline passed), MS_ECONN (no instance reached, or the connection was lost), MS_ETOOBIG
 * (a response over the limits), MS_EIO (a malformed response), MS_ESHUTDOWN. resp is never
 * NULL. */
typedef void (*ms_http_client_cb)(int err, const ms_http_client_resp *resp, void *arg);

/* Starts a call. Returns 0 (cb will run once, later), MS_EINVAL for an unknown upstream or a
 * bad path/header, MS_ESHUTDOWN after ms_http_client_free began. */
int ms_http_client_request(ms_http_client *c, const ms_http_client_req *req, ms_http_client_cb cb,
                           void *arg);

typedef struct ms_http_client_result {
    int err;
    ms_http_client_resp resp;
} ms_http_client_result;
/* results[i] answers reqs[i]; valid until the callback returns. */
typedef void (*ms_http_client_all_cb)(const ms_http_client_result *results, int n, void *arg);

/*
 * Starts n calls at once and calls back once when every one has finished, each with its own
 * result. Returns 0, or an error of ms_http_client_request (then none was started, no callback).
 */
int ms_http_client_all(ms_http_client *c, const ms_http_client_req *reqs, int n,
                       ms_http_client_all_cb cb, void *arg);

#endif
