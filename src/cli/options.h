/*
 * options.h — the flags shared by `serve` and `migrate`, turned into the runtime's configs.
 * Start-up only.
 */
#ifndef MS_CLI_OPTIONS_H
#define MS_CLI_OPTIONS_H

#include <stdbool.h>

#include "runtime/db/db.h"
#include "runtime/http/server.h"
#include "services/service.h"

typedef struct serve_options {
    const char *listen, *data, *database_url, *log_level;
    const char *tls_cert, *tls_key; /* both or neither */
    long threads, pool_size, pool_overflow, pool_timeout_ms, pool_recycle_s, busy_timeout_ms;
    long pipeline_conns;
    long request_timeout_ms, headers_timeout_ms, idle_timeout_ms, body_timeout_ms, drain_timeout_ms;
    long max_body_bytes, max_header_bytes, max_headers;
    long body_deadline_ms, body_min_rate, max_connections;
    bool pre_ping, access_log;
    /* derived by options_finish */
    char host[64];
    int port;
    char sqlite_path[4096];
} serve_options;

/*
 * Parses and validates the flags of `argv[first..]` for `svc`, filling `server` and `db`.
 * `with_http` false keeps only the storage flags (migrate). Returns 0, 1 after --help, or 2
 * after printing the problem to stderr.
 */
int options_parse(serve_options *o, const ms_service *svc, bool with_http, int argc, char **argv,
                  int first, ms_server_config *server, ms_db_config *db);

#endif
