/* Flags of serve/migrate with their environment variables and limits; see options.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/options.h"
#include "eventstore/publisher.h"
#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/http_tls.h"
#include "runtime/obs/trace.h"
#include "services/gateway/gateway_admin.h"
#include "services/payment/payment_flags.h"
#include "runtime/core/banned.h"

/* Flags only one target has, served after the common ones; `apply` checks their values and
 * hands them to the service once they are parsed. */
static const struct {
    const ms_service *svc;
    const ms_option *flags;
    const size_t *nflags;
    int (*apply)(char *err, size_t errn);
} target_flags[] = {
    {&ms_payment_service, payment_flags, &payment_nflags, payment_flags_apply},
    {&ms_gateway_service, gateway_flags, &gateway_nflags, gateway_flags_apply},
};

static int make_dirs(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(tmp, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

/* Both files or neither; loaded once here so that a bad one exits 2 before anything starts. */
static int check_tls(const serve_options *o, char *err, size_t errn)
{
    bool cert = o->tls_cert && *o->tls_cert, key = o->tls_key && *o->tls_key;
    if (cert != key) {
        snprintf(err, errn,
                 "--tls-cert and --tls-key (MICROSHOP_TLS_CERT, MICROSHOP_TLS_KEY) "
                 "go together: %s is missing",
                 cert ? "the key" : "the certificate");
        return MS_EINVAL;
    }
    if (!cert)
        return 0;
    ms_http_tls_ctx *ctx = NULL;
    int rc = ms_http_tls_ctx_new(o->tls_cert, o->tls_key, &ctx, err, errn);
    ms_http_tls_ctx_free(ctx);
    return rc;
}

int options_parse(serve_options *o, const ms_service *svc, bool with_http, int argc, char **argv,
                  int first, ms_server_config *server, ms_db_config *db)
{
    static char default_listen[32];
    snprintf(default_listen, sizeof default_listen, "127.0.0.1:%d", svc->default_port);
    ms_server_config_defaults(server);
    *o = (serve_options){
        .listen = default_listen,
        .data = "./data",
        .log_level = "info",
        .threads = server->threads,
        /* Not the seed's 20 + 30: on PostgreSQL every connection is a server process, and
         * more of them than the cores can run only queue inside the server (2 cores: a GET's
         * p99 700 ms at 20 + 30, 12 ms at 4 + 0, see docs/performance.md). At most 16, so
         * that replicas on big nodes stay within PostgreSQL's max_connections (100). */
        .pool_size = server->threads < 8 ? 2 * server->threads : 16,
        .pool_overflow = 0,
        .pool_timeout_ms = 30000,
        .pool_recycle_s = 3600,
        .pipeline_conns = MS_DB_PIPELINE_CONNS_DEFAULT,
        .busy_timeout_ms = 5000,
        .request_timeout_ms = server->request_timeout_ms,
        .headers_timeout_ms = server->headers_timeout_ms,
        .idle_timeout_ms = server->idle_timeout_ms,
        .body_timeout_ms = server->body_timeout_ms,
        .body_deadline_ms = server->body_deadline_ms,
        .body_min_rate = server->body_min_rate,
        .max_connections = server->max_connections,
        .drain_timeout_ms = server->drain_timeout_ms,
        .max_body_bytes = (long)server->max_body_bytes,
        .max_header_bytes = (long)server->max_header_bytes,
        .max_headers = server->max_headers,
        .pre_ping = true,
        /* the gateway's access line is the edge's record of every call: on unless turned off */
        .access_log = svc == &ms_gateway_service,
    };
    const long H = 3600L * 1000;
    const ms_option all[] = {
        {"data", "MICROSHOP_DATA", MS_OPT_STRING, &o->data, 0, 0,
         "directory of the SQLite files (when no database URL)"},
        {"database-url", "DATABASE_URL", MS_OPT_STRING, &o->database_url, 0, 0,
         "PostgreSQL URL; SQLite under --data when unset"},
        {"db-pool-size", "MICROSHOP_DB_POOL_SIZE", MS_OPT_INT, &o->pool_size, 1, 1000,
         "connections kept open per process (twice the cores, at most 16, unless set)"},
        {"db-pool-overflow", "MICROSHOP_DB_POOL_OVERFLOW", MS_OPT_INT, &o->pool_overflow, 0, 1000,
         "extra connections under load"},
        {"db-pool-timeout-ms", "MICROSHOP_DB_POOL_TIMEOUT_MS", MS_OPT_INT, &o->pool_timeout_ms, 1,
         H, "longest wait for a free connection (then 503)"},
        {"db-pool-recycle-s", "MICROSHOP_DB_POOL_RECYCLE_S", MS_OPT_INT, &o->pool_recycle_s, 1,
         7 * 24 * 3600, "reopen connections older than this"},
        {"db-pipeline-conns", "MICROSHOP_DB_PIPELINE_CONNS", MS_OPT_INT, &o->pipeline_conns, 1, 16,
         "PostgreSQL: each event loop's non-blocking connections for single reads"},
        {"db-pre-ping", "MICROSHOP_DB_PRE_PING", MS_OPT_BOOL, &o->pre_ping, 0, 0,
         "check a connection before use"},
        {"db-busy-timeout-ms", "MICROSHOP_DB_BUSY_TIMEOUT_MS", MS_OPT_INT, &o->busy_timeout_ms, 1,
         H, "SQLite lock wait / PostgreSQL statement timeout"},
        {"log-level", "MICROSHOP_LOG_LEVEL", MS_OPT_STRING, &o->log_level, 0, 0,
         "debug, info, warn or error"},
        /* HTTP flags follow: migrate stops before them */
        {"listen", "MICROSHOP_LISTEN", MS_OPT_STRING, &o->listen, 0, 0, "HOST:PORT to serve on"},
        {"threads", "MICROSHOP_THREADS", MS_OPT_INT, &o->threads, 1, MS_SERVER_MAX_THREADS,
         "event-loop threads (default: cores)"},
        {"request-timeout-ms", "MICROSHOP_REQUEST_TIMEOUT_MS", MS_OPT_INT, &o->request_timeout_ms,
         1, H, "deadline of a request's answer"},
        {"headers-timeout-ms", "MICROSHOP_HEADERS_TIMEOUT_MS", MS_OPT_INT, &o->headers_timeout_ms,
         1, H, "time to receive a request's headers (then 408), or to finish a TLS handshake"},
        {"idle-timeout-ms", "MICROSHOP_IDLE_TIMEOUT_MS", MS_OPT_INT, &o->idle_timeout_ms, 1, H,
         "keep-alive connection idle limit"},
        {"body-timeout-ms", "MICROSHOP_BODY_TIMEOUT_MS", MS_OPT_INT, &o->body_timeout_ms, 1, H,
         "longest pause while receiving a body (then 408)"},
        {"body-deadline-ms", "MICROSHOP_BODY_DEADLINE_MS", MS_OPT_INT, &o->body_deadline_ms, 1, H,
         "time to receive a whole body, plus --body-min-rate's allowance (then 408)"},
        {"body-min-rate", "MICROSHOP_BODY_MIN_RATE", MS_OPT_INT, &o->body_min_rate, 0, 1L << 30,
         "every this many body bytes received add a second to --body-deadline-ms (0: none)"},
        {"max-connections", "MICROSHOP_MAX_CONNECTIONS", MS_OPT_INT, &o->max_connections, 0,
         1000000,
         "open client connections per process, more are shed (0: from the open-file limit)"},
        {"drain-timeout-ms", "MICROSHOP_DRAIN_TIMEOUT_MS", MS_OPT_INT, &o->drain_timeout_ms, 1, H,
         "graceful drain limit on SIGTERM"},
        {"max-body-bytes", "MICROSHOP_MAX_BODY_BYTES", MS_OPT_INT, &o->max_body_bytes, 0, 64L << 20,
         "largest request body (then 413)"},
        /* at most 64 KiB: http-parser refuses a head over its own 80 KiB as malformed (400) */
        {"max-header-bytes", "MICROSHOP_MAX_HEADER_BYTES", MS_OPT_INT, &o->max_header_bytes, 1024,
         64L * 1024, "largest request head (then 431)"},
        {"max-headers", "MICROSHOP_MAX_HEADERS", MS_OPT_INT, &o->max_headers, 1, 10000,
         "most header fields (then 431)"},
        {"access-log", "MICROSHOP_ACCESS_LOG", MS_OPT_BOOL, &o->access_log, 0, 0,
         "log every request (on or off; the gateway's default is on)"},
        {"tls-cert", "MICROSHOP_TLS_CERT", MS_OPT_STRING, &o->tls_cert, 0, 0,
         "PEM certificate chain: the listener speaks TLS 1.3 only (with --tls-key)"},
        {"tls-key", "MICROSHOP_TLS_KEY", MS_OPT_STRING, &o->tls_key, 0, 0,
         "PEM private key of --tls-cert"},
    };
    size_t n = with_http ? sizeof all / sizeof all[0] : 9;
    ms_option opts[sizeof all / sizeof all[0] + 8];
    memcpy(opts, all, n * sizeof all[0]);
    int (*apply)(char *err, size_t errn) = NULL;
    for (size_t i = 0; with_http && i < sizeof target_flags / sizeof target_flags[0]; i++) {
        if (target_flags[i].svc != svc)
            continue;
        if (*target_flags[i].nflags > sizeof opts / sizeof opts[0] - n)
            MS_BUG("a target has more flags than options_parse has room for");
        memcpy(opts + n, target_flags[i].flags, *target_flags[i].nflags * sizeof all[0]);
        n += *target_flags[i].nflags;
        apply = target_flags[i].apply;
    }
    char err[256];
    int rc = ms_config_parse(opts, n, argc, argv, first, err, sizeof err);
    if (rc == 1)
        return 1;
    ms_log_level level = MS_LOG_INFO; /* set below whenever rc stays 0 */
    if (rc == 0 && ms_log_level_parse(o->log_level, &level) < 0) {
        snprintf(err, sizeof err, "--log-level must be debug, info, warn or error, not '%s'",
                 o->log_level);
        rc = MS_EINVAL;
    }
    if (rc == 0 && with_http && ms_config_split_listen(o->listen, o->host, &o->port) < 0) {
        snprintf(err, sizeof err,
                 "--listen must be HOST:PORT with a numeric address, like 127.0.0.1:%d, not '%s'",
                 svc->default_port, o->listen);
        rc = MS_EINVAL;
    }
    if (rc == 0 && o->database_url && strncmp(o->database_url, "postgres://", 11) != 0 &&
        strncmp(o->database_url, "postgresql://", 13) != 0) {
        snprintf(err, sizeof err, "DATABASE_URL must start with postgresql:// or postgres://");
        rc = MS_EINVAL;
    }
    /* read again by the outbox relays (outbox_feed.c); checked here so a typo exits 2 at start */
    const char *nats_url = getenv("NATS_URL");
    if (rc == 0 && with_http && nats_url && *nats_url && ms_nats_url_check(nats_url) != 0) {
        snprintf(err, sizeof err,
                 "NATS_URL must be nats://HOST:PORT (a comma-separated list for a cluster)");
        rc = MS_EINVAL;
    }
    if (rc == 0 && with_http)
        rc = check_tls(o, err, sizeof err);
    if (rc == 0 && apply)
        rc = apply(err, sizeof err);
    /* the data directory holds the SQLite files, and on any backend the outbox feed */
    if (rc == 0) {
        struct stat st;
        if (make_dirs(o->data) < 0 || stat(o->data, &st) < 0 || !S_ISDIR(st.st_mode) ||
            access(o->data, W_OK) < 0) {
            snprintf(err, sizeof err, "the data directory '%s' cannot be created or written",
                     o->data);
            rc = MS_EINVAL;
        } else {
            snprintf(o->sqlite_path, sizeof o->sqlite_path, "%s/%s.db", o->data, svc->name);
        }
    }
    if (rc < 0) {
        fprintf(stderr, "microshop %s: %s\n", svc->name, err);
        return 2;
    }
    ms_log_init(svc->name, level);
    ms_trace_log_hook_install();

    server->service = svc->name;
    server->host = o->host;
    server->port = o->port;
    server->threads = (int)o->threads;
    server->request_timeout_ms = (uint32_t)o->request_timeout_ms;
    server->headers_timeout_ms = (uint32_t)o->headers_timeout_ms;
    server->idle_timeout_ms = (uint32_t)o->idle_timeout_ms;
    server->body_timeout_ms = (uint32_t)o->body_timeout_ms;
    server->body_deadline_ms = (uint32_t)o->body_deadline_ms;
    server->body_min_rate = (uint32_t)o->body_min_rate;
    server->max_connections = (int)o->max_connections;
    server->drain_timeout_ms = (uint32_t)o->drain_timeout_ms;
    server->max_body_bytes = (size_t)o->max_body_bytes;
    server->max_header_bytes = (size_t)o->max_header_bytes;
    server->max_headers = (int)o->max_headers;
    /* the gateway writes its own access line (access_log.c) in place of the runtime's */
    server->access_log = o->access_log && svc != &ms_gateway_service;
    if (svc == &ms_gateway_service)
        gateway_access_log_enable(o->access_log);
    if (o->tls_cert && *o->tls_cert) {
        server->tls_cert = o->tls_cert;
        server->tls_key = o->tls_key;
    }

    *db = (ms_db_config){
        .backend = o->database_url ? MS_DB_POSTGRES : MS_DB_SQLITE,
        .sqlite_path = o->sqlite_path,
        .pg_conninfo = o->database_url,
        .busy_timeout_ms = (int)o->busy_timeout_ms,
        .pool_size = (int)o->pool_size,
        .pool_overflow = (int)o->pool_overflow,
        .pool_timeout_ms = (int)o->pool_timeout_ms,
        .pool_recycle_s = (int)o->pool_recycle_s,
        .pool_pre_ping = o->pre_ping,
        .pipeline_conns = (int)o->pipeline_conns,
    };
    return 0;
}
