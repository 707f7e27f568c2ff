/*
 * upstream_watch.h — a client's instances follow a file that a supervisor rewrites when it
 * scales a service (MICROSHOP_INSTANCES_FILE):
 *     {"services": {"order": "http://127.0.0.1:8082,http://127.0.0.1:40211", ...}}
 * each value an upstream list as ms_http_upstream_parse reads it. Once a second the watch
 * looks at the file's identity (inode, size, mtime); when it changed, it reads the file and
 * gives every service named there that the client has its new list
 * (ms_http_client_set_upstream). A file that is missing or malformed changes nothing (a
 * malformed one is logged once per change). The writer replaces the file by rename, so a
 * reader never sees half of it.
 *
 * Threading: a watch belongs to its client's loop (one per loop thread, each with its own
 * timer); start and stop on that loop's thread. The path is copied.
 */
#ifndef MS_UPSTREAM_WATCH_H
#define MS_UPSTREAM_WATCH_H

#include <stdbool.h>
#include <uv.h>

#include "runtime/http/client.h"

typedef struct ms_upstream_watch ms_upstream_watch;

/* Starts watching the file MICROSHOP_INSTANCES_FILE names for `client` on `loop`, or returns
 * NULL when the variable is unset (no supervisor). The file as it is now is applied at the
 * first tick. `announce`: log each applied change (one loop of a process says it, not all). */
ms_upstream_watch *ms_upstream_watch_start(uv_loop_t *loop, ms_http_client *client, bool announce);
/* Stops it (before its client is freed; NULL: nothing); the memory goes with the timer's
 * close callback. */
void ms_upstream_watch_stop(ms_upstream_watch *w);

/* Reads an instances file into `lists` for the services named in `names` (n of them); a
 * service the file does not name gets n == 0. 0, MS_ENOTFOUND (no file) or MS_EINVAL (with
 * `err` saying what is wrong). Thread-safe. */
int ms_upstream_file_read(const char *path, const char *const *names, int n,
                          ms_http_upstream_list *lists, char *err, size_t errn);

#endif
