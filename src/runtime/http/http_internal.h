/*
 * http_internal.h — what the connection code (http_conn.c) and the server (server.c) share.
 * Not for use outside src/runtime/.
 */
#ifndef MS_HTTP_INTERNAL_H
#define MS_HTTP_INTERNAL_H

#include "runtime/http/server.h"

/* Serves a socket the loop has just accepted (non-blocking, close-on-exec); takes `fd`. */
void ms_http__adopt(ms_loop *l, int fd);
/* Draining: closes idle connections; busy ones close after their current answer. */
void ms_http__drain(ms_loop *l);
/* Closes every connection now (drain deadline passed). */
void ms_http__close_all(ms_loop *l);

/* Accepts on the listening socket `fd` (taken) from the loop's thread: at most l->max_conns
 * connections, the rest shed; on EMFILE/ENFILE accepting pauses instead of spinning.
 * 0 or MS_E*. ms_server__unlisten closes it (on the loop's thread). */
int ms_server__listen(ms_loop *l, int fd);
void ms_server__unlisten(ms_loop *l);

/* Tells the server a draining loop may have lost its last connection. */
void ms_server__conns_gone(ms_loop *l);

/* The built-in routes (/health, /ready, /metrics) live in server.c. */
void ms_server__health(ms_http_request *req);
void ms_server__ready(ms_http_request *req);
void ms_server__metrics(ms_http_request *req);
/* GET and PUT /admin/log-level (log_level.c), routed beside /metrics. */
void ms_server__log_level_get(ms_http_request *req);
void ms_server__log_level_put(ms_http_request *req);

#endif
